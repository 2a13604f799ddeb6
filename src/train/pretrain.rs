//! Pretraining a flow policy on Robomimic demonstrations (docs/algorithm.md §8), top to
//! bottom: run directory and resume → data → policy, EMA and optimizer → the step loop
//! (batch, flow loss, AdamW with warm-up + cosine, EMA) with logging, validation and atomic
//! checkpoints.
//!
//! A checkpoint (`runs/<name>/checkpoints/step_N/`) holds `policy.json` (spec + statistics),
//! `policy.safetensors` (online weights), `ema.safetensors` (EMA weights: what later stages
//! load), `optimizer.safetensors` (AdamW moments) and `trainer.json` (step). Every source of
//! randomness is derived from (seed, step), so `--resume` continues exactly: the weights
//! after a resumed run equal those of an uninterrupted one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rldt_datasets::batch::{gather, DatasetStats};
use rldt_datasets::random::SplitMix64;
use rldt_datasets::reader::{RobomimicDataset, RobomimicFile};
use rldt_datasets::WindowSpec;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind};

use crate::config::{PretrainConfig, PretrainSchedule};
use crate::error::{io_at, Error, Result};
use crate::optim::ema::Ema;
use crate::optim::{warmup_cosine, AdamW};
use crate::policy::checkpoint::{self, Weights};
use crate::policy::{FlowPolicy, PolicySpec};
use crate::run_dir::{self, write_atomic, PendingCheckpoint};
use crate::train::loader::{to_device, BatchStream, EpochSampler};
use crate::train::metrics::{named, MetricsLog};
use crate::train::RunFlags;

pub struct PretrainOptions {
    /// The config to run; on `resume` it must equal the run's own `config.json` (or be None).
    pub config: Option<PretrainConfig>,
    pub run_dir: PathBuf,
    pub device: Device,
    pub resume: bool,
}

/// The flags of `rldt-vision pretrain`.
#[derive(Debug, Clone, clap::Args)]
pub struct PretrainArgs {
    /// Pretraining config (JSON). Optional with --resume (the run's config.json is used).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Dataset file, overriding `dataset.path` of the config.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunFlags,
}

impl PretrainArgs {
    /// The run these flags ask for: the config (with `--dataset` applied), its run directory
    /// and the device.
    pub fn options(&self) -> Result<PretrainOptions> {
        let mut config = self.config.as_deref().map(PretrainConfig::load).transpose()?;
        if let (Some(config), Some(dataset)) = (config.as_mut(), &self.dataset) {
            config.dataset.path = dataset.clone();
        }
        let run_dir = match (&self.run.run_dir, &config) {
            (Some(dir), _) => dir.clone(),
            (None, Some(config)) => default_run_dir(config),
            (None, None) => return Err(Error::Usage("give --config (a new run) or --run-dir (with --resume)".into())),
        };
        Ok(PretrainOptions { config, run_dir, device: self.run.device.resolve()?, resume: self.run.resume })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: i64,
}

#[derive(Debug, Clone)]
pub struct PretrainSummary {
    pub run_dir: PathBuf,
    pub checkpoint: PathBuf,
    pub steps: i64,
    pub resumed_from: Option<i64>,
    /// The last logged train flow loss (from the log when a resumed run had no step left).
    pub last_train_loss: Option<f64>,
    pub last_valid_loss: Option<f64>,
    pub dataset_memory_bytes: usize,
}

/// Metrics of a logging interval (`pretrain/*`): mean flow loss, learning rate, throughput.
#[derive(Serialize)]
struct TrainInterval {
    flow_loss: f64,
    lr: f64,
    samples_per_s: f64,
}

/// The EMA policy's validation loss (`pretrain/valid_flow_loss`).
#[derive(Serialize)]
struct Validation {
    valid_flow_loss: f64,
}

const TRAINER_FILE: &str = "trainer.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The libtorch seed of step `step` (augmentation, noise and flow times of that step).
fn step_seed(seed: u64, step: i64) -> i64 {
    (SplitMix64::stream(seed, (1u64 << 40).wrapping_add(step as u64)).next_u64() >> 1) as i64
}

pub fn pretrain(options: PretrainOptions) -> Result<PretrainSummary> {
    let run_dir = options.run_dir.clone();
    let run_error = |message: String| Error::RunDir { dir: run_dir.clone(), message };

    // ---- Run directory: fresh, or resume from the latest checkpoint ---------------------
    // `_lock` is held until the run returns (success or error).
    let run_dir::OpenedRun { config, latest, lock: _lock } =
        run_dir::open_run(&run_dir, options.resume, options.config.clone(), PretrainConfig::load)?;
    let config_path = run_dir.join("config.json");
    std::fs::create_dir_all(&run_dir).map_err(io_at(&run_dir))?;
    let schedule = config.train.clone();

    // ---- Data --------------------------------------------------------------------------
    let (train_data, valid_data, image_size) = load_demos(&config)?;
    let dataset_memory_bytes = train_data.memory_bytes() + valid_data.as_ref().map_or(0, |d| d.memory_bytes());
    let window_spec = WindowSpec {
        obs_horizon: config.policy.obs_horizon as usize,
        pred_horizon: config.policy.pred_horizon as usize,
    };

    // ---- Policy, EMA, optimizer (restored on resume) -------------------------------------
    // A resumed run keeps its checkpoint's spec (architecture and statistics).
    let spec = match &latest {
        Some(dir) if options.resume => checkpoint::read_spec(dir)?,
        _ => PolicySpec::new(config.policy.clone(), config.dataset.obs.clone(), image_size, &train_data),
    };
    tch::manual_seed(step_seed(config.seed, -1));
    let resume_from = latest.as_deref().filter(|_| options.resume);
    let Networks { vs, policy, ema_vs, ema_policy, mut ema, mut optimizer, start_step } =
        networks(&spec, &schedule, options.device, resume_from)?;

    // ---- Run files -----------------------------------------------------------------------
    let config_json = serde_json::to_string_pretty(&config).expect("config serialises");
    write_atomic(&config_path, config_json.as_bytes())?;
    let mut metrics = MetricsLog::open(&run_dir, options.resume.then_some(start_step))?;
    if resume_from.is_some() {
        run_dir::prune_checkpoints(&run_dir, schedule.keep_checkpoints)?;
    }

    // ---- The loop ------------------------------------------------------------------------
    let windows = window_spec.all_windows(train_data.episodes.iter().map(|e| e.len));
    let sampler = EpochSampler::new(windows, schedule.batch_size, config.seed);
    let batches = BatchStream::spawn(
        train_data.clone(),
        spec.stats.clone(),
        window_spec,
        sampler,
        start_step as u64..schedule.steps as u64,
        schedule.loader_prefetch,
    );
    let progress = ProgressBar::new(schedule.steps as u64).with_position(start_step as u64);
    progress.set_style(
        ProgressStyle::with_template("[pretrain] {bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]")
            .expect("valid template"),
    );
    let mut last_checkpoint = latest.clone();
    let (mut last_train_loss, mut last_valid_loss) =
        (metrics.last("pretrain/flow_loss"), metrics.last("pretrain/valid_flow_loss"));
    let (mut interval_loss, mut interval_steps, mut interval_start) = (0.0, 0, Instant::now());
    for step in start_step..schedule.steps {
        let buffers = batches.next_batch().expect("loader yields one batch per step");
        tch::manual_seed(step_seed(config.seed, step));
        let (obs, actions) = to_device(&buffers, &train_data, &window_spec, options.device);
        let lr = warmup_cosine(step, schedule.steps, schedule.warmup_steps, schedule.lr, schedule.min_lr);
        optimizer.zero_grad();
        let loss = policy.flow_loss(&obs, &actions, true);
        let loss_value = loss.double_value(&[]);
        if !loss_value.is_finite() {
            progress.abandon();
            return Err(Error::NonFinite {
                step: step + 1,
                what: "pretrain/flow_loss".into(),
                value: loss_value,
                checkpoints: run_dir::checkpoints_dir(&run_dir),
            });
        }
        loss.backward();
        optimizer.step(lr);
        ema.update();

        interval_loss += loss_value;
        interval_steps += 1;
        let done = step + 1;
        progress.set_position(done as u64);
        if done % schedule.log_every == 0 || done == schedule.steps {
            let seconds = interval_start.elapsed().as_secs_f64();
            let samples_per_s = (interval_steps * schedule.batch_size) as f64 / seconds.max(1e-9);
            let flow_loss = interval_loss / interval_steps as f64;
            last_train_loss = Some(flow_loss);
            metrics.log(done, &named("pretrain", &TrainInterval { flow_loss, lr, samples_per_s }))?;
            progress.set_message(format!("loss {flow_loss:.4} · {samples_per_s:.0} samples/s"));
            (interval_loss, interval_steps, interval_start) = (0.0, 0, Instant::now());
        }
        if let Some(valid) = &valid_data {
            if done % schedule.valid_every == 0 || done == schedule.steps {
                let value = validation_loss(&ema_policy, valid, &spec.stats, &window_spec, &config, options.device);
                metrics.log(done, &named("pretrain", &Validation { valid_flow_loss: value }))?;
                last_valid_loss = Some(value);
            }
        }
        if done % schedule.checkpoint_every == 0 || done == schedule.steps {
            let networks = (&spec, &vs, &ema_vs, &optimizer);
            let written = write_checkpoint(&run_dir, done, networks, schedule.keep_checkpoints);
            last_checkpoint = Some(written.inspect_err(|_| progress.abandon())?);
        }
    }
    progress.finish();
    let checkpoint = last_checkpoint.ok_or_else(|| run_error("no checkpoint was written".into()))?;
    Ok(PretrainSummary {
        run_dir,
        checkpoint,
        steps: schedule.steps,
        resumed_from: options.resume.then_some(start_step),
        last_train_loss,
        last_valid_loss,
        dataset_memory_bytes,
    })
}

/// The online policy, its EMA copy (own VarStore, same names) and AdamW; restored from a
/// checkpoint when resuming, with the step to continue at.
struct Networks {
    vs: nn::VarStore,
    policy: FlowPolicy,
    ema_vs: nn::VarStore,
    ema_policy: FlowPolicy,
    ema: Ema,
    optimizer: AdamW,
    start_step: i64,
}

/// Builds [`Networks`] (random initialisation from libtorch's current RNG state, then the
/// checkpoint's weights and optimizer state when `resume_from` is given).
fn networks(
    spec: &PolicySpec,
    schedule: &PretrainSchedule,
    device: Device,
    resume_from: Option<&Path>,
) -> Result<Networks> {
    let mut vs = nn::VarStore::new(device);
    let policy = FlowPolicy::new(&vs.root(), spec.clone())?;
    let mut ema_vs = nn::VarStore::new(device);
    let ema_policy = FlowPolicy::new(&ema_vs.root(), spec.clone())?;
    let [beta1, beta2] = schedule.betas;
    let mut optimizer = AdamW::new(&vs, beta1, beta2, schedule.eps, schedule.weight_decay);
    let mut start_step = 0;
    if let Some(dir) = resume_from {
        checkpoint::load_weights(&mut vs, &dir.join(Weights::Online.file()))?;
        let trainer_path = dir.join(TRAINER_FILE);
        let text = std::fs::read_to_string(&trainer_path).map_err(io_at(&trainer_path))?;
        let state: TrainerState = serde_json::from_str(&text)
            .map_err(|e| Error::RunDir { dir: dir.into(), message: format!("{}: {e}", trainer_path.display()) })?;
        optimizer.load(&dir.join(OPTIMIZER_FILE), state.step)?;
        start_step = state.step;
    }
    let ema =
        Ema::new(&vs, &mut ema_vs, schedule.ema_decay).map_err(|source| Error::Tch { path: "ema".into(), source })?;
    if let Some(dir) = resume_from {
        checkpoint::load_weights(&mut ema_vs, &dir.join(Weights::Ema.file()))?;
        eprintln!("[pretrain] resuming {} at step {start_step}", dir.display());
    }
    Ok(Networks { vs, policy, ema_vs, ema_policy, ema, optimizer, start_step })
}

/// The config's training demos (shared with the loader thread), its validation demos and
/// the cameras' common side, announced on stderr.
fn load_demos(config: &PretrainConfig) -> Result<(Arc<RobomimicDataset>, Option<RobomimicDataset>, i64)> {
    let file = RobomimicFile::open(&config.dataset.path)?;
    let train_data = Arc::new(file.load(&config.dataset.obs, &config.dataset.train_demos)?);
    let valid_data = match &config.dataset.valid_demos {
        Some(selection) => Some(file.load(&config.dataset.obs, selection)?),
        None => None,
    };
    let image_size = square_image_size(&train_data)?;
    let memory_bytes = train_data.memory_bytes() + valid_data.as_ref().map_or(0, |d| d.memory_bytes());
    eprintln!(
        "[pretrain] {}: {} train demos ({} steps){}, {:.1} MB in memory",
        config.dataset.path.display(),
        train_data.episodes.len(),
        train_data.num_steps(),
        valid_data.as_ref().map_or(String::new(), |v| format!(", {} valid demos", v.episodes.len())),
        memory_bytes as f64 / 1e6
    );
    Ok((train_data, valid_data, image_size))
}

/// An atomic checkpoint after `done` steps: the spec, online and EMA weights, the optimizer
/// and the step count; keeps the newest `keep`. Non-finite weights are never saved: they stop
/// the run with the variable named, the last checkpoint intact.
fn write_checkpoint(
    run_dir: &Path,
    done: i64,
    (spec, vs, ema_vs, optimizer): (&PolicySpec, &nn::VarStore, &nn::VarStore, &AdamW),
    keep: usize,
) -> Result<PathBuf> {
    if let Some(name) = first_non_finite(vs) {
        let checkpoints = run_dir::checkpoints_dir(run_dir);
        return Err(Error::NonFinite { step: done, what: format!("weight `{name}`"), value: f64::NAN, checkpoints });
    }
    let pending = PendingCheckpoint::begin(run_dir, done)?;
    let spec_json = serde_json::to_string_pretty(spec).expect("spec serialises");
    write_atomic(&pending.path(checkpoint::SPEC_FILE), spec_json.as_bytes())?;
    checkpoint::save_weights(vs, &pending.path(Weights::Online.file()))?;
    checkpoint::save_weights(ema_vs, &pending.path(Weights::Ema.file()))?;
    optimizer.save(&pending.path(OPTIMIZER_FILE))?;
    let state = serde_json::to_string(&TrainerState { step: done }).expect("state serialises");
    write_atomic(&pending.path(TRAINER_FILE), state.as_bytes())?;
    pending.commit(keep)
}

/// The name of the first variable holding NaN or ±inf, if any: such weights are never saved.
fn first_non_finite(vs: &nn::VarStore) -> Option<String> {
    let mut variables: Vec<_> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    variables.into_iter().find(|(_, t)| !bool::try_from(t.isfinite().all()).unwrap_or(false)).map(|(name, _)| name)
}

/// All cameras must share one square size (the encoders are built for S×S).
fn square_image_size(data: &RobomimicDataset) -> Result<i64> {
    let mut sizes = data.image_shapes.iter().zip(&data.spec.image_keys);
    match sizes.next() {
        None => Ok(0),
        Some(([h, w, _], key)) => {
            if h != w {
                return Err(Error::Config {
                    file: data.file.clone(),
                    message: format!("camera `{key}` is {h}×{w}; square images are required"),
                });
            }
            for ([h2, w2, _], other) in sizes {
                if (h2, w2) != (h, w) {
                    return Err(Error::Config {
                        file: data.file.clone(),
                        message: format!(
                            "camera `{other}` is {h2}×{w2} but `{key}` is {h}×{w}; all cameras must share one size"
                        ),
                    });
                }
            }
            Ok(*h as i64)
        }
    }
}

/// Mean flow loss of the EMA policy (no augmentation) over evenly spaced validation windows,
/// with a fixed seed so successive values are comparable.
fn validation_loss(
    policy: &FlowPolicy,
    data: &RobomimicDataset,
    stats: &DatasetStats,
    spec: &WindowSpec,
    config: &PretrainConfig,
    device: Device,
) -> f64 {
    let all = spec.all_windows(data.episodes.iter().map(|e| e.len));
    let stride = all.len().div_ceil(config.train.valid_max_windows.max(1)).max(1);
    let windows: Vec<_> = all.into_iter().step_by(stride).collect();
    tch::manual_seed(step_seed(config.seed, -2));
    let (mut total, mut count) = (0.0, 0usize);
    tch::no_grad(|| {
        for chunk in windows.chunks(config.train.batch_size) {
            let buffers = gather(data, spec, stats, chunk);
            let (obs, actions) = to_device(&buffers, data, spec, device);
            total +=
                policy.flow_loss(&obs, &actions, false).to_kind(Kind::Double).double_value(&[]) * chunk.len() as f64;
            count += chunk.len();
        }
    });
    total / count.max(1) as f64
}

/// The default run directory of a config: `runs/<name>`.
pub fn default_run_dir(config: &PretrainConfig) -> PathBuf {
    Path::new("runs").join(&config.name)
}
