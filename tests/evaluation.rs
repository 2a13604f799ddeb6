//! Tier 2: a fine-tune's in-run evaluation and `rldt-vision eval` agree episode by episode
//! (seed, success, length) for the same weights and seeds, on a Lift-from-state policy
//! pretrained in its own processes; the in-run Wilson interval is the one `eval` computes.

mod common;

use std::path::Path;
use std::process::Command;

use common::metric_lines;
use rldt_vision::config::finetune::FinetuneConfig;
use rldt_vision::train::finetune::{finetune, FinetuneOptions};
use serde_json::Value;
use tch::Device;

/// A fine-tune's in-run evaluation and `rldt-vision eval` run the same episodes: for the same
/// weights (iteration 0: the pretrained EMA weights) and seeds, every episode's success and
/// length agree — although the in-run evaluation runs 2 workers with full-length episodes and
/// `eval` 1 worker with stop-on-success — because x_0 is drawn per (episode seed, step). The
/// policy (Lift from low-dim state, 4 scripted demos, 500 steps) succeeds in some episodes
/// and not in others, so a change of seeds, noise or weights would show.
#[test]
fn the_in_run_evaluation_and_eval_agree_episode_by_episode() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = common::scratch("evaluation", "in_run_vs_eval");
    // Demos and pretraining in their own processes: libtorch's RNG is one per process, and
    // the other tests of this binary draw from it concurrently, which would make the
    // pretrained policy (and so the fixture's mixed outcomes) vary from run to run.
    let bin = env!("CARGO_BIN_EXE_rldt-vision");
    let demos = dir.join("lift.hdf5");
    let collect = Command::new(bin)
        .args([
            "collect",
            "--task",
            "lift",
            "--episodes",
            "4",
            "--workers",
            "2",
            "--cameras",
            "",
            "--seed",
            "0",
            "--object-keys", // configs/pretrain/lift_lowdim.json reads cube_pos
            "--out",
        ])
        .arg(&demos)
        .output()
        .unwrap();
    assert!(collect.status.success(), "{}", String::from_utf8_lossy(&collect.stderr));
    let mut pretraining =
        rldt_vision::config::PretrainConfig::load(&root.join("configs/pretrain/lift_lowdim.json")).unwrap();
    pretraining.dataset.path = demos;
    pretraining.dataset.train_demos.first_n = None;
    pretraining.dataset.valid_demos = None;
    pretraining.train.valid_every = 500;
    pretraining.train.checkpoint_every = 500;
    let pretraining_file = dir.join("pretrain.json");
    std::fs::write(&pretraining_file, serde_json::to_string_pretty(&pretraining).unwrap()).unwrap();
    let pretrained = dir.join("pretrained");
    let run = Command::new(bin)
        .args(["pretrain", "--device", "cpu", "--config"])
        .arg(&pretraining_file)
        .arg("--run-dir")
        .arg(&pretrained)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let mut config = FinetuneConfig::load(&root.join("configs/finetune/lift_lowdim.json")).unwrap();
    config.pretrained = pretrained.clone();
    config.env.horizon = 60;
    config.schedule.iterations = 1;
    config.evaluation.episodes = 8;
    config.evaluation.first_seed = 100_000;
    let run_dir = dir.join("finetune");
    let options = FinetuneOptions {
        config: Some(config),
        run_dir: run_dir.clone(),
        device: Device::Cpu,
        resume: false,
        recording: None,
        reuse_start_evaluation: true,
    };
    let summary = finetune(options).unwrap();
    assert_eq!(summary.env_steps, 0, "evaluation steps are not training env steps");
    let in_run: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("evaluations/iteration_00000.json")).unwrap())
            .unwrap();

    let report =
        rldt_vision::eval::evaluate(&common::eval_options(pretrained, rldt_vision::sim::Task::Lift, 8, 100_000, 60))
            .unwrap();
    let outcome =
        |r: &Value| (r["seed"].as_u64().unwrap(), r["success"].as_bool().unwrap(), r["length"].as_u64().unwrap());
    let in_run: Vec<_> = in_run["report"]["per_episode"].as_array().unwrap().iter().map(outcome).collect();
    let eval: Vec<_> =
        serde_json::to_value(&report.per_episode).unwrap().as_array().unwrap().iter().map(outcome).collect();
    assert_eq!(in_run, eval, "(seed, success, length) per episode");
    let successes = eval.iter().filter(|e| e.1).count();
    assert!(
        0 < successes && successes < 8,
        "the fixture must succeed sometimes ({successes}/8) for the test to mean anything"
    );
    let line = &metric_lines(&run_dir)[0];
    let [low, high] = rldt_vision::eval::wilson_interval(successes, 8);
    assert_eq!(
        (line["eval/success_rate_low"].as_f64(), line["eval/success_rate_high"].as_f64()),
        (Some(low), Some(high))
    );
}
