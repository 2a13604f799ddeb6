"""Baseline for `rldt-vision bench rollout`: step robosuite envs the way DPPO's wrappers do.

One subprocess per env (multiprocessing, like gym's AsyncVectorEnv that DPPO uses), each env
wrapped in a multi-step wrapper that executes a chunk of Ta actions per call, robosuite's own
camera observables enabled, so every step renders. The parent sends a chunk to every worker,
waits for all, repeats. Prints one JSON object: env steps per second over all workers.
Written for this project to reproduce that access pattern; not DPPO's code.
"""
import argparse
import json
import multiprocessing as mp
import os
import time


def worker(conn, env_name, cameras, size, horizon, seed):
    os.environ.setdefault("MUJOCO_GL", "egl")
    import numpy as np
    import robosuite
    from robosuite import macros
    from robosuite.controllers import load_controller_config

    macros.IMAGE_CONVENTION = "opencv"
    env = robosuite.make(
        env_name, robots="Panda", controller_configs=load_controller_config(default_controller="OSC_POSE"),
        has_renderer=False, has_offscreen_renderer=True, use_camera_obs=True, camera_names=cameras,
        camera_heights=size, camera_widths=size, control_freq=20, horizon=horizon, ignore_done=True,
        hard_reset=False, reward_shaping=False,
    )
    np.random.seed(seed)
    env.reset()
    t = 0
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        steps = 0
        for action in msg:  # the multi-step wrapper: Ta actions, every step renders
            obs, reward, done, info = env.step(np.asarray(action))
            t += 1
            steps += 1
            if t >= horizon:
                env.reset()
                t = 0
                break
        conn.send((steps, obs["agentview_image"].shape))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--env-name", default="NutAssemblySquare")
    ap.add_argument("--cameras", default="agentview")
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--exec-horizon", type=int, default=4)
    ap.add_argument("--chunks", type=int, default=25)
    ap.add_argument("--warmup-chunks", type=int, default=2)
    ap.add_argument("--horizon", type=int, default=400)
    a = ap.parse_args()
    import numpy as np

    ctx = mp.get_context("forkserver")
    pipes, procs = [], []
    for i in range(a.workers):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(child, a.env_name, a.cameras.split(","), a.image_size, a.horizon, i), daemon=True)
        p.start()
        pipes.append(parent)
        procs.append(p)
    for c in pipes:
        assert c.recv() == "ready"
    rng = np.random.RandomState(0)

    def round_trip():
        for c in pipes:
            c.send(rng.uniform(-1, 1, size=(a.exec_horizon, 7)).tolist())
        return sum(c.recv()[0] for c in pipes)

    for _ in range(a.warmup_chunks):
        round_trip()
    start = time.perf_counter()
    steps = sum(round_trip() for _ in range(a.chunks))
    seconds = time.perf_counter() - start
    for c in pipes:
        c.send(None)
    print(json.dumps({"workers": a.workers, "env_steps": steps, "seconds": seconds, "env_steps_per_s": steps / seconds}))


if __name__ == "__main__":
    main()
