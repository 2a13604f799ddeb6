//! The `rldt-vision` command-line grammar (clap): every subcommand, flag and default. What
//! each command does is in `main.rs`, which dispatches on these types.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rldt_vision::device::DeviceChoice;
use rldt_vision::sim::Task;

#[derive(Parser)]
#[command(
    name = "rldt-vision",
    version,
    about = "Flow-matching visuomotor policies: pretrain on Robomimic demos, fine-tune with RLDT"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Pretrain a flow policy on Robomimic HDF5 demonstrations.
    Pretrain {
        /// Pretraining config (JSON). Optional with --resume (the run's config.json is used).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Dataset file, overriding `dataset.path` of the config.
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// Run directory (default runs/<config name>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
        /// Continue the run in --run-dir from its latest checkpoint.
        #[arg(long)]
        resume: bool,
        /// libtorch threads (0 = all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Fine-tune a pretrained policy with RLDT against simulation rollouts.
    Finetune {
        #[arg(long, value_enum)]
        task: Task,
        /// Fine-tuning config (default configs/finetune/<task>.json: the paper's settings).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Pretraining run or checkpoint directory, overriding the config's `pretrained`.
        #[arg(long)]
        pretrained: Option<PathBuf>,
        /// Run directory (default runs/<config name>).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Continue the run in --run-dir from its latest checkpoint.
        #[arg(long)]
        resume: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Recording of particle fields, metrics and rollout frames: `spawn` a viewer, or
        /// `connect ADDR` (host:port or a rerun+http URL) to a running one. Default: a file
        /// in the run directory.
        #[arg(long, num_args = 1..=2, value_names = ["MODE", "ADDR"])]
        viewer: Vec<String>,
        /// No recording at all.
        #[arg(long, conflicts_with = "viewer")]
        no_record: bool,
    },
    /// Open a run's recording (particles.rrd and any resume files) in the rerun viewer.
    Inspect {
        /// A run directory, or an .rrd file.
        path: PathBuf,
        /// Serve the web viewer on 127.0.0.1 instead of opening the native viewer.
        #[arg(long)]
        web: bool,
        #[arg(long, default_value_t = 9090)]
        web_port: u16,
        /// No viewer: verify the recording files (`rerun rrd verify`) and list their entities.
        #[arg(long, conflicts_with = "web")]
        check: bool,
    },
    /// Write procedurally drawn demos in the Robomimic Square schema (test fixtures and
    /// `bench pretrain`; not simulator data).
    SynthDataset {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 40)]
        demos: usize,
        #[arg(long, default_value_t = 96)]
        image_size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Collect scripted-expert demonstrations into a Robomimic HDF5 file.
    Collect {
        #[arg(long, value_enum)]
        task: Task,
        #[arg(long)]
        episodes: usize,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Cameras, comma-separated (robomimic image datasets: agentview,robot0_eye_in_hand).
        #[arg(long, value_delimiter = ',', default_value = "agentview")]
        cameras: Vec<String>,
        #[arg(long, default_value_t = 84)]
        image_size: usize,
        /// Seed of the first episode; episode e uses seed + e.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Std of Gaussian noise added to the expert's actions.
        #[arg(long, default_value_t = 0.0)]
        noise: f64,
        /// Also write failed episodes (default: successful ones only).
        #[arg(long)]
        keep_failures: bool,
        /// Also write next_obs/* (doubles the file size).
        #[arg(long)]
        next_obs: bool,
        /// MuJoCo's headless GL backend.
        #[arg(long, default_value = "egl")]
        mujoco_gl: String,
    },
    /// Evaluate a policy checkpoint in simulation: success rate (95% interval), episode
    /// lengths, per-episode JSON, optional GIF.
    Eval {
        /// A checkpoint directory, or a run directory (its latest checkpoint).
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, value_enum)]
        task: Task,
        #[arg(long, default_value_t = 50)]
        episodes: usize,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Seed of the first episode (episode e uses seed + e); kept apart from collection seeds.
        #[arg(long, default_value_t = 100_000)]
        seed: u64,
        /// Use the online weights instead of the EMA weights.
        #[arg(long)]
        online_weights: bool,
        /// Write a GIF of `--video-episodes` here.
        #[arg(long)]
        video: Option<PathBuf>,
        #[arg(long, value_delimiter = ',', default_value = "0")]
        video_episodes: Vec<usize>,
        /// Episode length limit (default: the task's).
        #[arg(long)]
        horizon: Option<usize>,
        /// Per-episode JSON report (default: <checkpoint>/eval_<task>.json).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long, default_value = "egl")]
        mujoco_gl: String,
    },
    /// The paper's 2-D figure as an experiment: a bimodal flow policy, a two-peak Q, RLDT actor
    /// steps with the SVGD field and with the delta ablation. Prints one JSON report per run.
    Toy {
        #[arg(long, value_delimiter = ',', default_value = "svgd,delta")]
        fields: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
        seeds: Vec<i64>,
        /// Flow-matching steps on the bimodal data before the RLDT steps.
        #[arg(long, default_value_t = 1500)]
        pretrain_steps: i64,
        #[arg(long, default_value_t = 300)]
        actor_steps: i64,
        #[arg(long, default_value_t = 1e-3)]
        actor_lr: f64,
        /// α(s) = scale × mean ‖∇Q‖ (paper: 0.001).
        #[arg(long, default_value_t = 0.001)]
        temperature_scale: f64,
        /// Reset v_ref to the current policy every N actor steps; 0 = frozen pretrained.
        #[arg(long, default_value_t = 10)]
        reference_every: i64,
        #[arg(long, default_value_t = 0.5)]
        consistency_weight: f64,
        #[arg(long, default_value_t = 0.2)]
        constraint_weight: f64,
        /// A fixed kernel bandwidth h instead of the median rule.
        #[arg(long)]
        fixed_bandwidth: Option<f64>,
        /// Denoising steps k at which a† is queried (paper: all, 0..7).
        #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7")]
        query_steps: Vec<i64>,
        /// Particle chains per state (paper: 8).
        #[arg(long, default_value_t = 8)]
        particles: i64,
        /// Each (field, seed) run records to <DIR>/<field>_seed<seed>/particles.rrd.
        #[arg(long, default_value = "runs/toy")]
        record_dir: PathBuf,
        /// Particle snapshots every N actor steps.
        #[arg(long, default_value_t = 10)]
        record_every: i64,
        /// Recording of particle fields, metrics and rollout frames: `spawn` a viewer, or
        /// `connect ADDR` (host:port or a rerun+http URL) to a running one. Default: a file
        /// in the run directory.
        #[arg(long, num_args = 1..=2, value_names = ["MODE", "ADDR"])]
        viewer: Vec<String>,
        /// No recording at all.
        #[arg(long, conflicts_with = "viewer")]
        no_record: bool,
    },
    /// Benchmarks; print JSON.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
pub enum Bench {
    /// Wall time of the 2-D toy fine-tune with recording off and on (same run, same seed).
    Recording {
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[arg(long, default_value_t = 300)]
        actor_steps: i64,
        #[arg(long, default_value_t = 10)]
        record_every: i64,
        /// Repetitions of each (off, on) pair; the medians are reported.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Seconds per critic step and per actor step of RLDT at chosen shapes (optionally vs
    /// PyTorch eager doing the same computation).
    Finetune {
        #[arg(long, default_value = "configs/pretrain/square.json")]
        config: PathBuf,
        #[arg(long, default_value_t = 96)]
        image_size: usize,
        #[arg(long, default_value_t = 9)]
        proprio_dim: usize,
        #[arg(long, default_value_t = 7)]
        action_dim: usize,
        /// Trajectories per critic batch (paper: 128; memory-bound on CPU).
        #[arg(long, default_value_t = 128)]
        critic_trajectories: usize,
        /// Trajectories whose states form the actor batch (paper: 16).
        #[arg(long, default_value_t = 16)]
        actor_trajectories: usize,
        /// Chunks per trajectory (paper: 100).
        #[arg(long, default_value_t = 100)]
        chunks: usize,
        #[arg(long, default_value_t = 8)]
        particles: i64,
        #[arg(long, default_value_t = 2)]
        steps: usize,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Run scripts/bench_finetune_torch.py with this Python in the same invocation.
        #[arg(long)]
        torch: Option<PathBuf>,
        /// Give the PyTorch process the host-memory policy rldt-vision runs with
        /// (`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=…`, see `host_memory`) instead of
        /// glibc's defaults.
        #[arg(long, requires = "torch")]
        torch_keep_freed_memory: bool,
    },
    /// Env steps/s for 1..N workers: chunk-end vs per-step rendering, vs a DPPO-style Python
    /// loop (every step rendered), and worker memory.
    Rollout {
        #[arg(long, value_enum, default_value = "square")]
        task: Task,
        #[arg(long, value_delimiter = ',', default_value = "agentview")]
        cameras: Vec<String>,
        #[arg(long, default_value_t = 84)]
        image_size: usize,
        #[arg(long, default_value_t = 2)]
        max_workers: usize,
        /// Ta: actions per chunk.
        #[arg(long, default_value_t = 4)]
        exec_horizon: usize,
        #[arg(long, default_value_t = 25)]
        chunks: usize,
        /// Skip the Python baseline.
        #[arg(long)]
        no_python: bool,
        #[arg(long, default_value = "egl")]
        mujoco_gl: String,
    },
    /// Pretraining step and data-loading throughput (optionally vs PyTorch eager).
    Pretrain {
        #[arg(long, default_value = "configs/pretrain/synthetic_cpu.json")]
        config: PathBuf,
        #[arg(long, default_value_t = 96)]
        image_size: usize,
        /// Batch size (default: the config's).
        #[arg(long)]
        batch_size: Option<usize>,
        #[arg(long, default_value_t = 5)]
        warmup_steps: usize,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Run scripts/bench_pretrain_torch.py with this Python in the same invocation.
        #[arg(long)]
        torch: Option<PathBuf>,
        /// Give the PyTorch process rldt-vision's host-memory policy (see `host_memory`).
        #[arg(long, requires = "torch")]
        torch_keep_freed_memory: bool,
    },
}
