//! Tier 2 (venv with Ray and robosuite, release binary built by the test itself through
//! scripts/setup's cargo): `scripts/sweep.py` on a local Ray instance runs a tiny grid —
//! its `prepare` steps (collect 4 Lift demos, pretrain 200 steps), two RLDT trials of a
//! 3-iteration Lift fine-tune (seeds 0 and 1, one CPU each, side by side) and one trial
//! whose config the binary refuses — reports the failure and carries on, writes one summary
//! per finished trial with every in-run evaluation, writes the table into a page between its
//! markers, and skips finished trials when run again. Bounded: the sweep must finish within 8
//! minutes (~1.5 min alone here).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn sweep(grid: &Path, extra: &[&str]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();
    let output = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/sweep.py"))
        .arg(grid)
        .args(["--num-cpus", "2", "--bin", env!("CARGO_BIN_EXE_rldt-vision")])
        .args(extra)
        .env("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(480), "the sweep took {:?}", started.elapsed());
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn a_two_trial_sweep_runs_on_local_ray_reports_a_failure_and_skips_finished_trials() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();

    // The tiny fine-tune: iteration 0 evaluates (4 episodes), iterations 1–2 train on 2
    // episodes of horizon 8 each, the last checkpoint evaluates nothing more.
    let tiny = json!({
        "env.horizon": 8, "rollout.envs": 1, "rollout.episodes_per_env": 2,
        "schedule.iterations": 3, "schedule.eval_every": 10, "schedule.rounds": 1,
        "schedule.critic_steps_per_round": 2, "schedule.actor_steps_per_round": 1,
        "schedule.actor_start_iteration": 2, "schedule.critic_batch_trajectories": 2,
        "schedule.actor_batch_trajectories": 2, "schedule.replay_trajectories": 8,
        "evaluation.episodes": 4, "evaluation.first_seed": 100000
    });
    let mut pretraining: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("configs/pretrain/lift_lowdim.json")).unwrap())
            .unwrap();
    pretraining["dataset"]["path"] = path("lift.hdf5").into();
    pretraining["dataset"]["train_demos"]["first_n"] = Value::Null;
    pretraining["dataset"]["valid_demos"] = Value::Null;
    pretraining["train"]["steps"] = 200.into();
    pretraining["train"]["warmup_steps"] = 10.into();
    pretraining["train"]["valid_every"] = 200.into();
    pretraining["train"]["checkpoint_every"] = 200.into();
    std::fs::write(dir.join("pretrain.json"), pretraining.to_string()).unwrap();
    let grid = json!({
        "evidence": path("evidence"),
        "runs": path("runs"),
        "seeds": [0, 1],
        "set": tiny,
        "resources": {"cpus": 1, "gpus": 0},
        "benchmarks": [{
            "name": "tiny_lift",
            "task": "lift",
            "table_in": path("page.md"),
            "pretrained": path("pretrained"),
            "prepare": [
                {"creates": path("lift.hdf5"),
                 "command": ["collect", "--task", "lift", "--episodes", "4", "--cameras", "", "--object-keys", "--out", path("lift.hdf5")]},
                {"creates": path("pretrained/checkpoints/latest"),
                 "command": ["pretrain", "--config", path("pretrain.json"), "--run-dir", path("pretrained"), "--device", "cpu"]}
            ],
            "methods": {
                "svgd": {"config": "configs/finetune/lift_lowdim.json"},
                "broken": {"config": "configs/finetune/lift_lowdim.json", "set": {"env.stop_on_success": true}}
            }
        }]
    });
    // The report writes its table between these markers and leaves the rest of the page alone.
    let page = "# A page\n<!-- sweep table tiny_lift -->\nstale line\n<!-- end sweep table tiny_lift -->\nafter\n";
    std::fs::write(dir.join("page.md"), page).unwrap();
    let grid_file = dir.join("grid.json");
    std::fs::write(&grid_file, serde_json::to_string_pretty(&grid).unwrap()).unwrap();

    // Seed-major order: both methods' seed 0 before either seed 1 (methods in the file's order,
    // which serde_json writes sorted by key).
    let (_, listed) = sweep(&grid_file, &["--dry-run"]);
    let order: Vec<&str> = listed.lines().filter_map(|l| l.strip_prefix("[sweep] to run   tiny_lift/")).collect();
    assert_eq!(order, ["broken_s0", "svgd_s0", "broken_s1", "svgd_s1"], "{listed}");

    let (ok, text) = sweep(&grid_file, &["--seeds", "0,1"]);
    assert!(!ok, "a failed trial makes the sweep exit non-zero:\n{text}");
    assert!(text.contains("4 trials to run, 0 done already"), "{text}");
    for seed in [0, 1] {
        assert!(text.contains(&format!("FAILED tiny_lift/broken_s{seed}")), "{text}");
        assert!(text.contains(&format!("done tiny_lift/svgd_s{seed}")), "{text}");
        let summary: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("evidence/tiny_lift/svgd_s{seed}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(summary["seed"], seed);
        assert_eq!(summary["config"]["seed"], seed);
        assert_eq!(summary["config"]["schedule"]["iterations"], 3);
        let evaluations = summary["evaluations"].as_array().unwrap();
        assert_eq!(evaluations.len(), 1, "iteration 0 evaluates: {summary}");
        assert_eq!((evaluations[0]["episodes"].as_u64(), evaluations[0]["env_steps"].as_u64()), (Some(4), Some(0)));
        assert_eq!(summary["pretrained_sha256"].as_str().map(str::len), Some(64));
        assert!(!dir.join(format!("evidence/tiny_lift/broken_s{seed}.json")).exists());
    }
    assert!(text.contains("stop_on_success"), "the failure's log tail names the cause:\n{text}");
    // The trials' start evaluation is stored beside the pretrained weights for later trials.
    let checkpoints = std::fs::read_dir(dir.join("pretrained/checkpoints")).unwrap();
    let stored = checkpoints
        .flatten()
        .any(|c| c.path().join("evaluations/lift_horizon8_k8_seed100000_episodes4.json").is_file());
    assert!(stored, "no stored start evaluation under {}", dir.join("pretrained/checkpoints").display());

    // Run again: the finished trials are skipped, only the failed ones are retried.
    let (ok, text) = sweep(&grid_file, &["--methods", "svgd"]);
    assert!(ok, "{text}");
    assert!(text.contains("0 trials to run, 2 done already"), "{text}");
    let page = std::fs::read_to_string(dir.join("page.md")).unwrap();
    assert!(page.starts_with("# A page\n<!-- sweep table tiny_lift -->\n| run | 0 |"), "{page}");
    assert!(page.ends_with("\n<!-- end sweep table tiny_lift -->\nafter\n"), "{page}");
    assert!(!page.contains("stale line"), "{page}");
    for seed in [0, 1] {
        assert!(page.contains(&format!("| svgd, seed {seed} | ")), "{page}");
    }
    assert!(page.contains("| **mean svgd** (2 seeds) | "), "{page}");
}
