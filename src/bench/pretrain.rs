//! `rldt-vision bench pretrain`: samples/s of pretraining steps (flow loss forward, backward,
//! AdamW, EMA) on one pre-built batch, and samples/s of the data path on its own (gather
//! windows from the in-memory dataset, normalise, copy to the device), for the policy of a
//! pretraining config on a synthetic dataset of that config's shapes.
//! With `--torch`, `scripts/bench_pretrain_torch.py` runs the same network and batch in
//! PyTorch eager in the same invocation, and both figures are printed together.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rldt_datasets::batch::{gather, DatasetStats};
use rldt_datasets::random::SplitMix64;
use rldt_datasets::reader::{DemoSelection, RobomimicFile};
use rldt_datasets::synthetic::{write_synthetic, SyntheticSpec};
use rldt_datasets::WindowSpec;
use serde_json::{json, Value};
use tch::{nn, Device};

use crate::config::PretrainConfig;
use crate::device::{set_threads, DeviceChoice};
use crate::error::{io_at, Error, Result};
use crate::optim::ema::Ema;
use crate::optim::AdamW;
use crate::policy::{FlowPolicy, PolicySpec};
use crate::train::loader::to_device;

/// The flags of `rldt-vision bench pretrain`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    #[arg(long, default_value = "configs/pretrain/synthetic_cpu.json")]
    pub config: PathBuf,
    #[arg(long, default_value_t = 96)]
    pub image_size: usize,
    /// Batch size (default: the config's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long, default_value_t = 5)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// libtorch threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also run scripts/bench_pretrain_torch.py (PyTorch eager) with this Python.
    #[arg(long = "torch")]
    pub torch_python: Option<PathBuf>,
    /// Run the PyTorch side with glibc's malloc told to keep freed memory, as rldt-vision does
    /// (see `host_memory`).
    #[arg(long, requires = "torch_python")]
    pub torch_keep_freed_memory: bool,
    #[arg(skip = PathBuf::from("data/bench"))]
    pub scratch_dir: PathBuf,
}

pub fn bench_pretrain(options: &BenchOptions) -> Result<Value> {
    let config = &PretrainConfig::load(&options.config)?;
    let device = options.device.resolve()?;
    let threads = set_threads(options.threads);
    let batch_size = options.batch_size.unwrap_or(config.train.batch_size);
    std::fs::create_dir_all(&options.scratch_dir).map_err(io_at(&options.scratch_dir))?;
    let data_path = options.scratch_dir.join(format!("bench_synthetic_{}.hdf5", options.image_size));
    if !data_path.exists() {
        write_synthetic(&data_path, SyntheticSpec { demos: 20, image_size: options.image_size, seed: 0 })?;
    }
    let data =
        RobomimicFile::open(&data_path)?.load(&config.dataset.obs, &DemoSelection { mask: None, first_n: None })?;
    let stats = DatasetStats::of(&data);
    let window_spec = WindowSpec {
        obs_horizon: config.policy.obs_horizon as usize,
        pred_horizon: config.policy.pred_horizon as usize,
    };
    let windows = window_spec.all_windows(data.episodes.iter().map(|e| e.len));
    let mut rng = SplitMix64::new(1);
    let mut sample = |n: usize| (0..n).map(|_| windows[rng.below(windows.len())]).collect::<Vec<_>>();

    // Data path alone: gather + normalise + tensors on the device.
    let b = batch_size;
    let started = Instant::now();
    let data_batches = options.steps.max(20);
    for _ in 0..data_batches {
        let buffers = gather(&data, &window_spec, &stats, &sample(b));
        let _ = to_device(&buffers, &data, &window_spec, device);
    }
    let loading_samples_per_s = (data_batches * b) as f64 / started.elapsed().as_secs_f64();

    // Training steps on one batch.
    tch::manual_seed(0);
    let spec = PolicySpec {
        config: config.policy.clone(),
        obs: config.dataset.obs.clone(),
        image_size: options.image_size as i64,
        proprio_dim: data.proprio_dim() as i64,
        action_dim: data.action_dim as i64,
        stats: stats.clone(),
    };
    let vs = nn::VarStore::new(device);
    let policy = FlowPolicy::new(&vs.root(), spec)?;
    let mut ema_vs = nn::VarStore::new(device);
    let _ema_policy = FlowPolicy::new(&ema_vs.root(), policy.spec().clone())?;
    let mut ema = Ema::new(&vs, &mut ema_vs, config.train.ema_decay)
        .map_err(|source| Error::Tch { path: data_path.clone(), source })?;
    let [beta1, beta2] = config.train.betas;
    let mut optimizer = AdamW::new(&vs, beta1, beta2, config.train.eps, config.train.weight_decay);
    let buffers = gather(&data, &window_spec, &stats, &sample(b));
    let (obs, actions) = to_device(&buffers, &data, &window_spec, device);
    let mut step = || {
        optimizer.zero_grad();
        let loss = policy.flow_loss(&obs, &actions, true);
        loss.backward();
        optimizer.step(config.train.lr);
        ema.update();
        loss.double_value(&[]) // synchronises with the device
    };
    for _ in 0..options.warmup_steps {
        step();
    }
    let started = Instant::now();
    for _ in 0..options.steps {
        step();
    }
    let seconds = started.elapsed().as_secs_f64();
    let parameters: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let mut report = json!({
        "bench": "pretrain",
        "machine": super::cpu_description(),
        "device": crate::device::describe(device),
        "threads": threads,
        "keep_freed_memory": crate::host_memory::in_effect(),
        "config": config.name,
        "shapes": {
            "batch": b, "cameras": config.dataset.obs.image_keys, "image": [options.image_size, options.image_size, 3],
            "obs_horizon": config.policy.obs_horizon, "pred_horizon": config.policy.pred_horizon,
            "proprio_dim": data.proprio_dim(), "action_dim": data.action_dim, "parameters": parameters,
        },
        "steps_timed": options.steps,
        "rust_tch": {
            "train_step_ms": 1e3 * seconds / options.steps as f64,
            "train_samples_per_s": (options.steps * b) as f64 / seconds,
            "loading_samples_per_s": loading_samples_per_s,
        },
    });
    report["loading_over_training"] =
        json!(loading_samples_per_s / report["rust_tch"]["train_samples_per_s"].as_f64().unwrap_or(1.0));
    if let Some(python) = &options.torch_python {
        report["pytorch_eager"] = run_torch_baseline(
            python,
            options,
            (config, device, threads, batch_size),
            (data.proprio_dim(), data.action_dim),
        )?;
        report["pytorch_eager"]["keep_freed_memory"] = options.torch_keep_freed_memory.into();
        let torch_ms = report["pytorch_eager"]["train_step_ms"].as_f64().unwrap_or(f64::NAN);
        report["tch_time_over_torch_time"] = json!(1e3 * seconds / options.steps as f64 / torch_ms);
    }
    Ok(report)
}

fn run_torch_baseline(
    python: &Path,
    options: &BenchOptions,
    (config, device, threads, batch_size): (&PretrainConfig, Device, i32, usize),
    (proprio_dim, action_dim): (usize, usize),
) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_pretrain_torch.py");
    let config_json = serde_json::to_string(&config).expect("config serialises");
    let mut command = Command::new(python);
    if options.torch_keep_freed_memory {
        crate::host_memory::keep_freed_memory_in(&mut command);
    }
    let output = command
        .arg(&script)
        .args(["--config-json", &config_json])
        .args(["--image-size", &options.image_size.to_string()])
        .args(["--proprio-dim", &proprio_dim.to_string(), "--action-dim", &action_dim.to_string()])
        .args(["--batch-size", &batch_size.to_string()])
        .args(["--warmup-steps", &options.warmup_steps.to_string(), "--steps", &options.steps.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--device", if device.is_cuda() { "cuda" } else { "cpu" }])
        .output()
        .map_err(|e| Error::Io { path: python.into(), source: e })?;
    super::baseline_result(&script, output, 15)
}
