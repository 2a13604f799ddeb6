//! `rldt-vision bench finetune`: wall time of one critic step (a batch of N trajectories × T
//! chunks: targets from 2 fresh policy samples per next state through the EMA target, TD(λ),
//! the TD loss, backward, AdamW, target EMA) and one actor step (M trajectories × T states × P
//! particles: chains, a†, ∇Q, SVGD field, losses, backward, AdamW) for the policy of a
//! pretraining config, on synthetic trajectories of those shapes. With `--torch`, the same
//! computation runs in PyTorch eager (`scripts/bench_finetune_torch.py`) in the same call.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rldt_datasets::batch::DatasetStats;
use rldt_datasets::random::SplitMix64;
use rldt_datasets::MinMax;
use serde_json::{json, Value};
use tch::{nn, Device};

use crate::config::finetune::{ActorSettings, CriticSettings, ReferencePolicy};
use crate::config::PretrainConfig;
use crate::error::{Error, Result};
use crate::policy::checkpoint;
use crate::policy::{FlowPolicy, PolicySpec};
use crate::rl::actor::ActorObjective;
use crate::rl::replay::Trajectory;
use crate::rl::rldt::Rldt;

pub struct FinetuneBenchOptions {
    pub config: PretrainConfig,
    pub image_size: usize,
    /// P and A (paper Square: 9 and 7).
    pub proprio_dim: usize,
    pub action_dim: usize,
    pub critic_trajectories: usize,
    pub actor_trajectories: usize,
    pub chunks: usize,
    pub particles: i64,
    pub steps: usize,
    pub device: Device,
    pub threads: i32,
    pub torch_python: Option<PathBuf>,
    /// Run the PyTorch side with glibc's malloc told to keep freed memory, as rldt-vision does.
    pub torch_keep_freed_memory: bool,
    pub scratch_dir: PathBuf,
}

fn synthetic_trajectory(spec: &PolicySpec, chunks: usize, rng: &mut SplitMix64) -> Trajectory {
    let (s, p) = (spec.image_size as usize, spec.proprio_dim as usize);
    let exec = (spec.config.exec_horizon * spec.action_dim) as usize;
    let mut uniform =
        |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * scale).collect() };
    let rewards: Vec<f32> = (0..chunks).map(|t| if t + 1 == chunks { 1.0 } else { 0.0 }).collect();
    let images = (0..spec.obs.image_keys.len())
        .map(|_| uniform((chunks + 1) * s * s * 3, 1.0).iter().map(|v| ((v + 1.0) * 127.0) as u8).collect())
        .collect();
    Trajectory {
        images,
        proprio: uniform((chunks + 1) * p, 1.0),
        actions: uniform(chunks * exec, 1.0),
        raw_rewards: rewards.clone(),
        raw_dones: rewards.clone(),
        rewards: rewards.clone(),
        mask: vec![1.0; chunks],
        dones: rewards,
        success: true,
        chunks,
    }
}

pub fn bench_finetune(options: &FinetuneBenchOptions) -> Result<Value> {
    let config = &options.config;
    let (p, a) = (options.proprio_dim, options.action_dim);
    // Identity statistics: the data are synthetic.
    let spec = PolicySpec {
        config: config.policy.clone(),
        obs: config.dataset.obs.clone(),
        image_size: options.image_size as i64,
        proprio_dim: p as i64,
        action_dim: a as i64,
        stats: DatasetStats {
            proprio: MinMax { min: vec![-1.0; p], max: vec![1.0; p] },
            actions: MinMax { min: vec![-1.0; a], max: vec![1.0; a] },
        },
    };
    // A fresh "pretrained" checkpoint for Rldt to load.
    let dir = options.scratch_dir.join("bench_finetune_policy");
    std::fs::create_dir_all(&dir).map_err(crate::error::io_at(&dir))?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(options.device);
    let _policy = FlowPolicy::new(&vs.root(), spec.clone())?;
    std::fs::write(dir.join(checkpoint::SPEC_FILE), serde_json::to_string(&spec).expect("spec"))
        .map_err(crate::error::io_at(&dir))?;
    checkpoint::save_weights(&vs, &dir.join(checkpoint::EMA_WEIGHTS_FILE))?;
    let critic_settings = CriticSettings {
        gamma: 0.999,
        lambda: 0.5,
        heads_lr: 1e-3,
        encoder_lr: 4e-5,
        target_ema: 0.995,
        target_samples: 2,
    };
    let actor_settings = ActorSettings {
        objective: ActorObjective { particles: options.particles, ..ActorObjective::paper() },
        lr: 2e-5,
        warmup_steps: 64,
        reference: ReferencePolicy::PreviousIterate,
    };
    let mut rldt = Rldt::new(&dir, &critic_settings, &actor_settings, options.device)?;
    let mut rng = SplitMix64::new(3);
    let critic_batch: Vec<Trajectory> =
        (0..options.critic_trajectories).map(|_| synthetic_trajectory(&spec, options.chunks, &mut rng)).collect();
    let critic_refs: Vec<&Trajectory> = critic_batch.iter().collect();
    let actor_refs: Vec<&Trajectory> = critic_batch.iter().take(options.actor_trajectories).collect();
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?; // warm-up
        let started = Instant::now();
        for _ in 0..options.steps {
            f()?;
        }
        Ok(started.elapsed().as_secs_f64() / options.steps as f64)
    };
    let critic_s = time(&mut || rldt.critic_step(&critic_refs, 1e-3).map(|_| ()))?;
    let actor_s = time(&mut || rldt.actor_step(&actor_refs).map(|_| ()))?;
    let mut report = json!({
        "bench": "finetune",
        "machine": super::cpu_description(),
        "device": crate::device::describe(options.device),
        "threads": options.threads,
        "keep_freed_memory": crate::host_memory::in_effect(),
        "config": config.name,
        "shapes": {
            "critic": {"trajectories": options.critic_trajectories, "chunks": options.chunks},
            "actor": {"trajectories": options.actor_trajectories, "states": options.actor_trajectories * options.chunks, "particles": options.particles},
            "image": [options.image_size, options.image_size, 3], "cameras": config.dataset.obs.image_keys,
            "exec_horizon": config.policy.exec_horizon, "pred_horizon": config.policy.pred_horizon, "denoising_steps": config.policy.num_denoising_steps,
        },
        "steps_timed": options.steps,
        "rust_tch": {"critic_step_s": critic_s, "actor_step_s": actor_s},
    });
    if let Some(python) = &options.torch_python {
        let torch = run_torch(python, options, p, a)?;
        report["tch_over_torch"] = json!({
            "critic": critic_s / torch["critic_step_s"].as_f64().unwrap_or(f64::NAN),
            "actor": actor_s / torch["actor_step_s"].as_f64().unwrap_or(f64::NAN),
        });
        report["pytorch_eager"] = torch;
        report["pytorch_eager"]["keep_freed_memory"] = options.torch_keep_freed_memory.into();
    }
    Ok(report)
}

fn run_torch(python: &Path, options: &FinetuneBenchOptions, proprio_dim: usize, action_dim: usize) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_finetune_torch.py");
    let mut command = Command::new(python);
    if options.torch_keep_freed_memory {
        crate::host_memory::keep_freed_memory_in(&mut command);
    }
    let output = command
        .arg(&script)
        .args(["--config-json", &serde_json::to_string(&options.config).expect("config")])
        .args([
            "--image-size",
            &options.image_size.to_string(),
            "--proprio-dim",
            &proprio_dim.to_string(),
            "--action-dim",
            &action_dim.to_string(),
        ])
        .args([
            "--critic-trajectories",
            &options.critic_trajectories.to_string(),
            "--actor-trajectories",
            &options.actor_trajectories.to_string(),
        ])
        .args([
            "--chunks",
            &options.chunks.to_string(),
            "--particles",
            &options.particles.to_string(),
            "--steps",
            &options.steps.to_string(),
        ])
        .args([
            "--threads",
            &options.threads.to_string(),
            "--device",
            if options.device.is_cuda() { "cuda" } else { "cpu" },
        ])
        .output()
        .map_err(|source| Error::Io { path: python.into(), source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Device(format!(
            "{} failed: {}",
            script.display(),
            stderr.lines().rev().take(12).collect::<Vec<_>>().join("\n")
        )));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::Device(format!("{}: output is not JSON ({e})", script.display())))
}
