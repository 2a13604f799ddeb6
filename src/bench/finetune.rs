//! `rldt-vision bench finetune`: wall time of drawing a critic batch (N trajectories × T
//! chunks: one augmentation, 2 bootstrap policy samples per next state), of one critic step on
//! it (targets through the EMA target on the cached samples, TD(λ), the TD loss and backward
//! in `--mini-batch-split` parts, AdamW, target EMA) and of one actor step (M trajectories × T states × P
//! particles: chains, a†, ∇Q, SVGD field, losses, backward, AdamW) for the policy of a
//! pretraining config, on synthetic trajectories of those shapes. With `--torch`, the same
//! computation runs in PyTorch eager (`scripts/bench_finetune_torch.py`) in the same call.
//! Beside them, one minibatch step of each on-policy baseline (`--reinflow-minibatch` chunks;
//! ReinFlow: the noisy chain's log-likelihood under θ and φ; FPO++: the CFM losses of 8 draws
//! per chunk; then V, the loss, backward, clipping, AdamW) with the settings of
//! `configs/finetune/square_{reinflow,fpo}.json`, one QAM actor step (one trajectory per state,
//! `configs/finetune/square_state_qam.json`'s λ and K' = 32) with a draw and a critic step of
//! QAM's ensemble (10 heads on every trajectory, mean − 0.5·std target, 1 bootstrap sample), and the
//! update seconds per env step of each algorithm at its paper schedule (RLDT and QAM: 16 rounds
//! × (32 critic + 2 actor) steps, the on-policy baselines: 10 epochs × 20 minibatches, all per
//! 51,200 env steps).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rldt_datasets::random::SplitMix64;
use serde_json::{json, Value};
use tch::{nn, Device};

use crate::config::PretrainConfig;
use crate::device::{set_threads, DeviceChoice};
use crate::error::{Error, Result};
use crate::policy::checkpoint;
use crate::policy::frames::Frames;
use crate::policy::{FlowPolicy, PolicySpec};
use crate::rl::actor::ActorObjective;
use crate::rl::actor::{ActorSettings, ReferencePolicy};
use crate::rl::adjoint_matching::AdjointMatchingSettings;
use crate::rl::critic::{CriticSettings, HeadTrajectories, TargetOverHeads};
use crate::rl::rldt::Rldt;
use crate::rl::trajectory::Trajectory;

/// The flags of `rldt-vision bench finetune`.
#[derive(Debug, Clone, clap::Args)]
pub struct FinetuneBenchOptions {
    /// Pretraining config whose policy architecture is benchmarked.
    #[arg(long, default_value = "configs/pretrain/square.json")]
    pub config: PathBuf,
    #[arg(long, default_value_t = 96)]
    pub image_size: usize,
    /// P and A (paper Square: 9 and 7).
    #[arg(long, default_value_t = 9)]
    pub proprio_dim: usize,
    #[arg(long, default_value_t = 7)]
    pub action_dim: usize,
    /// Trajectories per critic batch (paper: 128; memory-bound on CPU).
    #[arg(long, default_value_t = 128)]
    pub critic_trajectories: usize,
    /// Trajectories whose states form the actor batch (paper: 16).
    #[arg(long, default_value_t = 16)]
    pub actor_trajectories: usize,
    /// Chunks per trajectory (paper: 100).
    #[arg(long, default_value_t = 100)]
    pub chunks: usize,
    #[arg(long, default_value_t = 8)]
    pub particles: i64,
    /// Fraction of each synthetic trajectory masked out after a success (0: success at the
    /// last chunk, every state read, the worst case; Square at 90% success reads far fewer).
    /// The PyTorch script passes every state, as the paper's code does.
    #[arg(long, default_value_t = 0.0)]
    pub masked_fraction: f64,
    /// Parts of a critic and an actor step's gradient pass (paper: 4).
    #[arg(long, default_value_t = 4)]
    pub mini_batch_split: usize,
    #[arg(long, default_value_t = 2)]
    pub steps: usize,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// libtorch threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Run scripts/bench_finetune_torch.py with this Python in the same invocation.
    #[arg(long = "torch")]
    pub torch_python: Option<PathBuf>,
    /// Give the PyTorch process the host-memory policy rldt-vision runs with
    /// (`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=…`, see `host_memory`) instead of glibc's
    /// defaults.
    #[arg(long, requires = "torch_python")]
    pub torch_keep_freed_memory: bool,
    /// Chunks per ReinFlow / FPO++ minibatch (authors' Square config: 640).
    #[arg(long, default_value_t = 640)]
    pub reinflow_minibatch: usize,
    #[arg(skip = PathBuf::from("data/bench"))]
    pub scratch_dir: PathBuf,
}

/// A trajectory of random frames and actions that succeeds at chunk s = T − 1 − ⌊f·T⌋ and is
/// masked after it (shaped as docs/algorithm.md §3: r' = 1 at s, done from s on).
fn synthetic_trajectory(spec: &PolicySpec, chunks: usize, masked_fraction: f64, rng: &mut SplitMix64) -> Trajectory {
    let (s, p) = (spec.image_size as usize, spec.proprio_dim as usize);
    let exec = (spec.config.exec_horizon * spec.action_dim) as usize;
    let mut uniform =
        |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * scale).collect() };
    let success = chunks - 1 - ((masked_fraction.clamp(0.0, 1.0) * chunks as f64) as usize).min(chunks - 1);
    let rewards: Vec<f32> = (0..chunks).map(|t| if t == success { 1.0 } else { 0.0 }).collect();
    let dones: Vec<f32> = (0..chunks).map(|t| if t >= success { 1.0 } else { 0.0 }).collect();
    let images = (0..spec.obs.image_keys.len())
        .map(|_| uniform((chunks + 1) * s * s * 3, 1.0).iter().map(|v| ((v + 1.0) * 127.0) as u8).collect())
        .collect();
    let proprio = uniform((chunks + 1) * p, 1.0);
    Trajectory {
        frames: Frames { image_size: s, proprio_dim: p, images, proprio },
        actions: uniform(chunks * exec, 1.0),
        raw_rewards: rewards.clone(),
        raw_dones: (0..chunks).map(|t| if t + 1 == chunks { 1.0 } else { 0.0 }).collect(),
        rewards,
        mask: (0..chunks).map(|t| if t <= success { 1.0 } else { 0.0 }).collect(),
        dones,
        success: true,
        chunks,
    }
}

pub fn bench_finetune(options: &FinetuneBenchOptions) -> Result<Value> {
    let config = &PretrainConfig::load(&options.config)?;
    let device = options.device.resolve()?;
    let threads = set_threads(options.threads);
    let (p, a) = (options.proprio_dim, options.action_dim);
    let spec = super::synthetic_spec(config, options.image_size, p, a);
    // A fresh "pretrained" checkpoint for Rldt to load.
    let dir = options.scratch_dir.join("bench_finetune_policy");
    std::fs::create_dir_all(&dir).map_err(crate::error::io_at(&dir))?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
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
        mini_batch_split: options.mini_batch_split,
        heads: 2,
        head_trajectories: HeadTrajectories::Interleaved,
        target_over_heads: TargetOverHeads::Min,
    };
    let actor_settings = ActorSettings {
        objective: ActorObjective { particles: options.particles, ..ActorObjective::paper() },
        lr: 2e-5,
        warmup_steps: 64,
        reference: ReferencePolicy::PreviousIterate,
        mini_batch_split: options.mini_batch_split,
        adjoint_matching: None,
    };
    // The PyTorch side runs first, in its own process, before this one allocates its batches:
    // the two never hold memory at the same time (this process keeps what it frees).
    let torch = match &options.torch_python {
        Some(python) => Some(run_torch(python, options, (config, device, threads), (p, a))?),
        None => None,
    };
    let mut rldt = Rldt::new(&dir, &critic_settings, &actor_settings, device)?;
    let mut rng = SplitMix64::new(3);
    let critic_batch: Vec<Trajectory> = (0..options.critic_trajectories)
        .map(|_| synthetic_trajectory(&spec, options.chunks, options.masked_fraction, &mut rng))
        .collect();
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
    let draw_s = time(&mut || rldt.draw_critic_batch(&critic_refs).map(|_| ()))?;
    let drawn = rldt.draw_critic_batch(&critic_refs)?;
    let critic_s = time(&mut || rldt.critic_step(&drawn, 1e-3).map(|_| ()))?;
    drop(drawn);
    let actor_s = time(&mut || rldt.actor_step(&actor_refs).map(|_| ()))?;
    drop(rldt);
    let peak_rss_mb = super::peak_rss_mb();
    let qam_settings = ActorSettings {
        objective: ActorObjective { particles: 1, ..ActorObjective::paper() },
        adjoint_matching: Some(AdjointMatchingSettings {
            inverse_temperature: 30.0,
            clip_endpoint: true,
            denoising_steps: 32,
            q_gradient_from_target: true,
        }),
        ..actor_settings.clone()
    };
    let qam_critic_settings = CriticSettings {
        heads: 10,
        head_trajectories: HeadTrajectories::All,
        target_over_heads: TargetOverHeads::MeanMinusStd(0.5),
        target_samples: 1,
        ..critic_settings.clone()
    };
    let mut qam = Rldt::new(&dir, &qam_critic_settings, &qam_settings, device)?;
    let qam_draw_s = time(&mut || qam.draw_critic_batch(&critic_refs).map(|_| ()))?;
    let drawn = qam.draw_critic_batch(&critic_refs)?;
    let qam_critic_s = time(&mut || qam.critic_step(&drawn, 1e-3).map(|_| ()))?;
    drop(drawn);
    let qam_actor_s = time(&mut || qam.actor_step(&actor_refs).map(|_| ()))?;
    drop(qam);
    let reinflow_s = time_on_policy_step("reinflow", &dir, &spec, options, device, &mut rng, &time)?;
    let fpo_s = time_on_policy_step("fpo", &dir, &spec, options, device, &mut rng, &time)?;
    let dppo_s = time_on_policy_step("dppo", &dir, &spec, options, device, &mut rng, &time)?;
    // Update seconds per env step at each algorithm's paper schedule (51,200 env steps per
    // iteration: 64 envs × 2 episodes × 400 steps).
    let env_steps = 51_200.0;
    let rldt_update_s = 16.0 * (draw_s + 32.0 * critic_s + 2.0 * actor_s);
    let qam_update_s = 16.0 * (qam_draw_s + 32.0 * qam_critic_s + 2.0 * qam_actor_s);
    let reinflow_update_s = 10.0 * 20.0 * reinflow_s;
    let fpo_update_s = 10.0 * 20.0 * fpo_s;
    let dppo_update_s = 10.0 * 20.0 * dppo_s;
    let mut report = json!({
        "bench": "finetune",
        "machine": super::cpu_description(),
        "device": crate::device::describe(device),
        "threads": threads,
        "keep_freed_memory": crate::host_memory::in_effect(),
        "config": config.name,
        "shapes": {
            "critic": {"trajectories": options.critic_trajectories, "chunks": options.chunks, "masked_fraction": options.masked_fraction},
            "actor": {"trajectories": options.actor_trajectories, "states": actor_refs.iter().map(|t| t.mask.iter().filter(|&&m| m > 0.0).count()).sum::<usize>(), "particles": options.particles},
            "image": [options.image_size, options.image_size, 3], "cameras": config.dataset.obs.image_keys,
            "exec_horizon": config.policy.exec_horizon, "pred_horizon": config.policy.pred_horizon, "denoising_steps": config.policy.num_denoising_steps,
        },
        "steps_timed": options.steps,
        "mini_batch_split": options.mini_batch_split,
        "rust_tch": {"critic_batch_draw_s": draw_s, "critic_step_s": critic_s, "actor_step_s": actor_s, "peak_rss_mb_after_rldt": peak_rss_mb, "reinflow_minibatch_step_s": reinflow_s, "fpo_minibatch_step_s": fpo_s, "dppo_minibatch_step_s": dppo_s, "qam_critic_batch_draw_s": qam_draw_s, "qam_critic_step_s": qam_critic_s, "qam_actor_step_s": qam_actor_s},
        "reinflow_minibatch_chunks": options.reinflow_minibatch,
        "update_s_per_env_step": {
            "rldt": rldt_update_s / env_steps,
            "reinflow": reinflow_update_s / env_steps,
            "fpo": fpo_update_s / env_steps,
            "dppo": dppo_update_s / env_steps,
            "qam": qam_update_s / env_steps,
        },
    });
    if let Some(torch) = torch {
        let ratio = |ours: f64, key: &str| ours / torch[key].as_f64().unwrap_or(f64::NAN);
        report["tch_over_torch"] = json!({
            "critic_batch_draw": ratio(draw_s, "critic_batch_draw_s"),
            "critic_step": ratio(critic_s, "critic_step_s"),
            // A round's 32 critic steps with their one draw.
            "critic_call_32_steps": (draw_s + 32.0 * critic_s)
                / (torch["critic_batch_draw_s"].as_f64().unwrap_or(f64::NAN)
                    + 32.0 * torch["critic_step_s"].as_f64().unwrap_or(f64::NAN)),
            "actor_step": ratio(actor_s, "actor_step_s"),
        });
        report["pytorch_eager"] = torch;
        report["pytorch_eager"]["keep_freed_memory"] = options.torch_keep_freed_memory.into();
    }
    Ok(report)
}

fn run_torch(
    python: &Path,
    options: &FinetuneBenchOptions,
    (config, device, threads): (&PretrainConfig, Device, i32),
    (proprio_dim, action_dim): (usize, usize),
) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_finetune_torch.py");
    let mut command = Command::new(python);
    if options.torch_keep_freed_memory {
        crate::host_memory::keep_freed_memory_in(&mut command);
    }
    let output = command
        .arg(&script)
        .args(["--config-json", &serde_json::to_string(&config).expect("config")])
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
            "--mini-batch-split",
            &options.mini_batch_split.to_string(),
            "--masked-fraction",
            &options.masked_fraction.to_string(),
        ])
        .args(["--threads", &threads.to_string(), "--device", if device.is_cuda() { "cuda" } else { "cpu" }])
        .output()
        .map_err(|source| Error::Io { path: python.into(), source })?;
    super::baseline_result(&script, output, 12)
}

/// One minibatch step of an on-policy baseline (`algorithm`: `reinflow`, `fpo` or `dppo`, with the
/// settings of `configs/finetune/square_<algorithm>.json`) on synthetic chunks: the update's
/// whole cost per minibatch.
fn time_on_policy_step(
    algorithm: &str,
    dir: &Path,
    spec: &PolicySpec,
    options: &FinetuneBenchOptions,
    device: Device,
    rng: &mut SplitMix64,
    time: &dyn Fn(&mut dyn FnMut() -> Result<()>) -> Result<f64>,
) -> Result<f64> {
    use crate::rl::onpolicy::OnPolicyTrajectory;
    let file = format!("configs/finetune/square_{algorithm}.json");
    let config = crate::config::finetune::OnPolicyConfig::load(Path::new(&file))?;
    let mut ppo = config.ppo;
    ppo.update_epochs = 1;
    ppo.minibatch_size = options.reinflow_minibatch;
    ppo.target_kl = None;
    let d = spec.config.pred_horizon * spec.action_dim;
    let k = spec.config.num_denoising_steps;
    let (mut learner, width): (Box<dyn OnPolicyLearnerStep>, i64) = match (config.reinflow, config.fpo, config.dppo) {
        (Some(mut chain), _, _) => {
            chain.denoising_steps = k;
            (Box::new(crate::rl::reinflow::Reinflow::new(dir, &chain, &ppo, device)?), (k + 1) * d)
        }
        (_, Some(fpo), _) => {
            let n = fpo.samples_per_chunk as i64;
            (Box::new(crate::rl::fpo::Fpo::new(dir, &fpo, &ppo, device)?), d + n + n * d + n)
        }
        (_, _, Some(mut dppo)) => {
            dppo.denoising_steps = k;
            (Box::new(crate::rl::dppo::Dppo::new(dir, &dppo, &ppo, device)?), (k + 1) * d + k)
        }
        _ => {
            let message = "no `reinflow`, `fpo` or `dppo` section".into();
            return Err(crate::error::Error::Config { file: file.into(), message });
        }
    };
    let chunks = options.chunks.max(1);
    // Exactly one minibatch: `reinflow_minibatch` chunks over as many trajectories as needed.
    let mut chunks_left = options.reinflow_minibatch;
    let mut trajectories = Vec::new();
    while chunks_left > 0 {
        let keep = chunks_left.min(chunks);
        chunks_left -= keep;
        let mut trajectory = synthetic_trajectory(spec, chunks, 0.0, rng);
        trajectory.chunks = keep;
        trajectory.raw_rewards.truncate(keep);
        let replay = (0..keep).map(|_| (0..width).map(|_| rng.uniform() as f32).collect()).collect();
        trajectories.push(OnPolicyTrajectory {
            trajectory,
            replay,
            log_probs: vec![0.5; keep],
            values: vec![0.0; keep],
        });
    }
    time(&mut || learner.step(&trajectories, rng))
}

/// The one call the bench makes on either learner.
trait OnPolicyLearnerStep {
    fn step(&mut self, trajectories: &[crate::rl::onpolicy::OnPolicyTrajectory], rng: &mut SplitMix64) -> Result<()>;
}

impl<L: crate::rl::onpolicy::OnPolicyLearner> OnPolicyLearnerStep for L {
    fn step(&mut self, trajectories: &[crate::rl::onpolicy::OnPolicyTrajectory], rng: &mut SplitMix64) -> Result<()> {
        self.update(trajectories, 50, true, rng).map(|_| ())
    }
}
