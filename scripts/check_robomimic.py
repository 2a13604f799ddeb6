"""Compatibility check: robomimic 0.3.0's own code reads a file rldt-vision wrote.

1. SequenceDataset opens the file with the given image and low-dim keys (seq_length = the
   action chunk, frame_stack 1, padding on), and a torch DataLoader reads a batch.
2. The env is rebuilt from the file's env_args (EnvUtils.create_env_from_metadata) and stepped.
3. As robomimic's dataset_states_to_obs.py re-extracts observations: every demo's model and
   states[t] are loaded with env.reset_to, and the observation robomimic reads there is
   compared with the stored obs[t], key by key (the largest absolute difference per key, and
   the low-dim keys robomimic's env produces against those the file stores).
Writes one JSON object (--json-out): dataset length, demo names, and samples (index -> actions, low-dim
obs, images as u8 HWC lists) for the Rust test to compare with its own loader.
Needs PYTHONPATH=scripts/stubs (mujoco_py stand-in for robomimic 0.3.0's stale import).
"""
import argparse
import json
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--image-keys", default="agentview_image")
    ap.add_argument("--lowdim-keys", default="robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos")
    ap.add_argument("--seq-length", type=int, default=4)
    ap.add_argument("--samples", default="0,1,5")
    ap.add_argument("--json-out", required=True, help="where to write the result (robomimic prints to stdout)")
    a = ap.parse_args()

    import torch
    import robomimic.utils.env_utils as EnvUtils
    import robomimic.utils.file_utils as FileUtils
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    image_keys = [k for k in a.image_keys.split(",") if k]
    lowdim_keys = [k for k in a.lowdim_keys.split(",") if k]
    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": lowdim_keys, "rgb": image_keys}})
    dataset = SequenceDataset(
        hdf5_path=a.file, obs_keys=tuple(lowdim_keys + image_keys), dataset_keys=("actions", "rewards", "dones"),
        frame_stack=1, seq_length=a.seq_length, pad_frame_stack=True, pad_seq_length=True,
        get_pad_mask=False, goal_mode=None, hdf5_cache_mode=None, hdf5_use_swmr=True, hdf5_normalize_obs=False,
        filter_by_attribute="train", load_next_obs=False,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=0)
    batch = next(iter(loader))
    assert batch["actions"].shape[1:] == (a.seq_length, 7), batch["actions"].shape

    samples = {}
    for index in [int(i) for i in a.samples.split(",")]:
        item = dataset[index]
        sample = {"actions": item["actions"].tolist()}
        for k in lowdim_keys:
            sample[k] = item["obs"][k][0].tolist()
        for k in image_keys:
            frame = np.asarray(item["obs"][k][0])
            if frame.dtype != np.uint8:  # processed by robomimic: CHW float in [0, 1]
                frame = np.round(np.transpose(frame, (1, 2, 0)) * 255.0).astype(np.uint8)
            sample[k] = frame.reshape(-1).tolist()  # HWC u8
        samples[str(index)] = sample

    env_meta = FileUtils.get_env_metadata_from_dataset(dataset_path=a.file)
    env = EnvUtils.create_env_from_metadata(env_meta=env_meta, render=False, render_offscreen=bool(image_keys), use_image_obs=bool(image_keys))
    obs = env.reset()
    obs, reward, done, info = env.step(np.zeros(7))
    replay = replay_states(a.file, env_meta)
    with open(a.json_out, "w") as f:
        json.dump({
        "length": len(dataset),
        "demos": list(dataset.demos),
        "batch_actions_shape": list(batch["actions"].shape),
        "env_name": env.name,
        "env_obs_keys": sorted(obs.keys()),
        "samples": samples,
        "replay": replay,
    }, f)


def replay_states(path, env_meta):
    """Largest |robomimic's observation of states[t] - stored obs[t]| per low-dim key."""
    import h5py
    import robomimic.utils.env_utils as EnvUtils

    env = EnvUtils.create_env_from_metadata(env_meta=env_meta, render=False, render_offscreen=False, use_image_obs=False)
    diffs, env_keys, file_keys, steps = {}, set(), set(), 0
    with h5py.File(path, "r") as f:
        for demo in f["data"]:
            group = f["data"][demo]
            states = group["states"][()]
            env.reset()
            env.reset_to({"states": states[0], "model": group.attrs["model_file"]})
            file_keys |= {k for k in group["obs"] if not k.endswith("_image")}
            for t in range(len(states)):
                obs = env.reset_to({"states": states[t]})
                env_keys |= {k for k in obs if not k.endswith("_image")}
                for key in group["obs"]:
                    if key.endswith("_image") or key not in obs:
                        continue
                    d = float(np.max(np.abs(np.asarray(obs[key], dtype=np.float64).reshape(-1) - group["obs"][key][t].reshape(-1))))
                    diffs[key] = max(diffs.get(key, 0.0), d)
                steps += 1
    return {"max_abs_diff": diffs, "env_lowdim_keys": sorted(env_keys), "file_lowdim_keys": sorted(file_keys), "steps": steps}


if __name__ == "__main__":
    sys.exit(main())
