//! What the end-to-end test binaries share (`mod common;` in each): a scratch directory per
//! test, a tiny pretrained run on synthetic Square-schema data, and the metric lines of a run.
//! Each binary uses a part of it, hence `dead_code` allowed here.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rldt_datasets::synthetic::{write_synthetic, SyntheticSpec};
use rldt_vision::config::PretrainConfig;
use rldt_vision::train::pretrain::{pretrain, PretrainOptions};
use serde_json::Value;
use tch::Device;

/// An empty directory `<target tmp>/<binary>/<name>` (removed first if a previous run left it).
pub fn scratch(binary: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(binary).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny pretrained run in `dir/run`: `configs/pretrain/synthetic_cpu.json` on 10 synthetic
/// 32×32 Square-schema demos (`dir/synthetic.hdf5`), hidden width 64, 4 steps of batch 8, with
/// `edit` applied last. Returns the run directory.
pub fn tiny_pretrained(dir: &Path, edit: impl Fn(&mut PretrainConfig)) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = dir.join("synthetic.hdf5");
    write_synthetic(&data, SyntheticSpec { demos: 10, image_size: 32, seed: 1 }).unwrap();
    let mut config = PretrainConfig::load(&root.join("configs/pretrain/synthetic_cpu.json")).unwrap();
    config.dataset.path = data;
    config.policy.velocity_head.hidden_dim = 64;
    config.train.batch_size = 8;
    config.train.steps = 4;
    config.train.warmup_steps = 1;
    config.train.valid_every = 4;
    config.train.checkpoint_every = 4;
    edit(&mut config);
    pretrain(PretrainOptions { config: Some(config), run_dir: dir.join("run"), device: Device::Cpu, resume: false })
        .unwrap();
    dir.join("run")
}

/// Every line of `run_dir/metrics.jsonl`, parsed.
pub fn metric_lines(run_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `eval` on CPU with one worker, plain sampling, no video: `episodes` from `seed`, `horizon`
/// steps each.
pub fn eval_options(
    checkpoint: PathBuf,
    task: rldt_vision::sim::Task,
    episodes: usize,
    seed: u64,
    horizon: usize,
) -> rldt_vision::eval::EvalOptions {
    rldt_vision::eval::EvalOptions {
        checkpoint,
        online_weights: false,
        task,
        episodes,
        workers: 1,
        seed,
        device: rldt_vision::device::DeviceChoice::Cpu,
        mujoco_gl: "egl".into(),
        video: None,
        video_episodes: vec![],
        horizon: Some(horizon),
        best_of_n: 1,
        rank_by: rldt_vision::rl::best_of_n::RankBy::Mean,
        critic_calibration: false,
        q_ascent: 0.0,
        ascent_direction: rldt_vision::rl::q_ascent::AscentDirection::Gradient,
    }
}
