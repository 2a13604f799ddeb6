//! Tier 2: demos collected by `rldt-vision collect` (scripted Lift expert, real robosuite) are
//! read by robomimic 0.3.0's own code — SequenceDataset + DataLoader batch, env rebuilt from
//! `env_args` — and robomimic's view of the data equals our loader's, sample for sample.

use std::path::{Path, PathBuf};
use std::process::Command;

use rldt_datasets::reader::{DemoSelection, ObsSpec, RobomimicFile};
use rldt_datasets::WindowSpec;
use rldt_vision::collect::{collect, CollectOptions};
use rldt_vision::sim::Task;
use serde_json::Value;

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn robomimic_reads_our_demos_identically() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("robomimic_compat");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lift.hdf5");
    let options = CollectOptions {
        task: Task::Lift,
        cameras: vec!["agentview".into()],
        image_size: 84,
        mujoco_gl: "egl".into(),
        episodes: 3,
        workers: 2,
        out: file.clone(),
        seed: 11,
        noise: 0.0,
        keep_failures: false,
        next_obs: false,
        force: true,
        object_keys: false,
        steps_per_request: 20,
        stop_on_signal: false,
    };
    let summary = collect(&options).unwrap();
    assert_eq!((summary.episodes, summary.successes, summary.written), (3, 3, 3), "scripted Lift must succeed");

    let json_out = dir.join("robomimic_view.json");
    let output = Command::new(project().join(".venv/bin/python"))
        .arg(project().join("scripts/check_robomimic.py"))
        .arg(&file)
        .args(["--samples", "0,1,40", "--json-out"])
        .arg(&json_out)
        .env("PYTHONPATH", project().join("scripts/stubs"))
        .env("MUJOCO_GL", "egl")
        .output()
        .unwrap();
    assert!(output.status.success(), "robomimic check failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let view: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    assert_eq!(view["env_name"], "Lift");
    assert_eq!(view["batch_actions_shape"], serde_json::json!([4, 4, 7]));
    assert_eq!(view["demos"], serde_json::json!(["demo_0", "demo_1", "demo_2"]));

    // The stored low-dim keys are robomimic's env's, and obs[t] is the observation of
    // states[t] as robomimic reads it after reset_to (what dataset_states_to_obs.py extracts).
    let replay = &view["replay"];
    assert_eq!(replay["file_lowdim_keys"], replay["env_lowdim_keys"], "{replay}");
    assert!(replay["steps"].as_u64().unwrap() > 30, "{replay}");
    let diffs = replay["max_abs_diff"].as_object().unwrap();
    assert_eq!(diffs.len(), replay["file_lowdim_keys"].as_array().unwrap().len(), "{replay}");
    for (key, diff) in diffs {
        assert!(diff.as_f64().unwrap() <= 1e-6, "obs/{key} differs from the observation of its state by {diff}");
    }

    // Our loader, same keys, same windows (obs history 1, chunk 4, padded).
    let spec = ObsSpec {
        image_keys: vec!["agentview_image".into()],
        lowdim_keys: vec!["robot0_eef_pos".into(), "robot0_eef_quat".into(), "robot0_gripper_qpos".into()],
    };
    let ours = RobomimicFile::open(&file)
        .unwrap()
        .load(&spec, &DemoSelection { mask: Some("train".into()), first_n: None })
        .unwrap();
    let window_spec = WindowSpec { obs_horizon: 1, pred_horizon: 4 };
    let windows = window_spec.all_windows(ours.episodes.iter().map(|e| e.len));
    assert_eq!(view["length"].as_u64().unwrap() as usize, windows.len(), "one sample per step, as robomimic counts");
    for (index, sample) in view["samples"].as_object().unwrap() {
        let w = windows[index.parse::<usize>().unwrap()];
        let episode = &ours.episodes[w.episode];
        let actions: Vec<f64> = sample["actions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let mine: Vec<f64> = (0..4)
            .flat_map(|j| {
                let s = window_spec.action_step(w.t, j, episode.len);
                episode.actions[s * 7..(s + 1) * 7].iter().map(|&v| v as f64).collect::<Vec<_>>()
            })
            .collect();
        for (a, b) in actions.iter().zip(&mine) {
            assert!((a - b).abs() < 1e-6, "sample {index}: actions differ: {actions:?} vs {mine:?}");
        }
        let mut offset = 0;
        for (key, dim) in [("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2)] {
            let theirs: Vec<f64> = sample[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let mine = &episode.lowdim[w.t * 9 + offset..w.t * 9 + offset + dim];
            for (a, b) in theirs.iter().zip(mine) {
                assert!((a - *b as f64).abs() < 1e-6, "sample {index}: `{key}` differs");
            }
            offset += dim;
        }
        let image: Vec<u8> =
            sample["agentview_image"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
        let frame = 84 * 84 * 3;
        assert!(image == episode.images[0][w.t * frame..(w.t + 1) * frame], "sample {index}: image differs");
    }
    let _ = Path::new(".");
}
