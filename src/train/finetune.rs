//! RLDT fine-tuning against simulation rollouts (docs/algorithm.md §7), as the paper's
//! algorithm box:
//!
//! ```text
//! for iteration i:
//!     if i is an evaluation iteration (0 and every eval_every-th):
//!         evaluate the actor on the fixed evaluation seeds (plain samples, as `eval` does)
//!     else:
//!         round ← collect_round(envs, actor, exploration)
//!         for each of `rounds`:
//!             batch ← fresh trajectories (fresh_fraction) + replay (balanced success/failure)
//!             draw it once (one augmentation, bootstrap actions; rl::critic_batch)
//!             critic_steps_per_round × critic step on the drawn batch
//!             from actor_start_iteration: actor_steps_per_round × actor step on a few of them
//!         replay ← replay + round;  v_ref ← actor
//!     metrics, recording, checkpoint
//! ```
//!
//! **Seeding.** `seed` decides everything. Iteration i draws its own stream
//! `SplitMix64::stream(seed, i)`: its first number seeds libtorch's global RNG (policy noise,
//! exploration noise, augmentation, particles, query steps), the rest choose the critic batches
//! and the actor's trajectories. A training round's episodes use simulator seeds
//! `seed·1,000,003 + i·10,000 + e` (episode e); every evaluation runs the same episodes,
//! `evaluation.first_seed + e` for e < `evaluation.episodes`, with x_0 drawn per (episode
//! seed, step), so it gives what `rldt-vision eval --seed first_seed` gives for the same
//! weights, and its env steps are not counted as training env steps (`env_steps`, the x-axis
//! of the curve, counts training rounds only). So a resumed run, a run with recording off
//! and an uninterrupted one take the same decisions from the same state; the recording draws
//! from libtorch's RNG only after the updates, and the next iteration reseeds it.
//!
//! Resume restarts at the iteration after the last checkpoint with every network and
//! optimizer state restored; the replay is not saved and is rebuilt from new rollouts.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rldt_datasets::random::SplitMix64;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::finetune::{EnvSettings, FinetuneConfig, ScheduleSettings};
use crate::episodes::consecutive_seeds;
use crate::error::{io_at, Error, Result};
use crate::policy::checkpoint;
use crate::policy::PolicySpec;
use crate::rl::actor::ActorStats;
use crate::rl::replay::Replay;
use crate::rl::rldt::{CriticStats, Rldt, RldtCounters};
use crate::rl::rollout::{collect_round, RoundOutcome, Sampling};
use crate::rl::trajectory::Trajectory;
use crate::run_dir::{self, write_atomic, PendingCheckpoint};
use crate::sim::{SimConfig, VecEnv};
use crate::train::evaluation::{evaluate, EvaluationContext, EvaluationPoint};
use crate::train::metrics::{field_means, named, Metrics, MetricsLog};
use crate::viz::finetune::FinetuneRecording;
use crate::viz::{self, Recorder, Sink};

pub use super::finetune_args::FinetuneArgs;

pub struct FinetuneOptions {
    pub config: Option<FinetuneConfig>,
    pub run_dir: PathBuf,
    pub device: Device,
    pub resume: bool,
    /// Where the rerun recording goes; None: the run's own file (`particles.rrd`, or
    /// `particles.resume-<iteration>.rrd` when resuming).
    pub recording: Option<Sink>,
    /// Copy the stored start evaluation of the pretrained checkpoint when one matches
    /// (`train::evaluation`): only with the recording off (its probe states come from the
    /// start evaluation's episodes); `--fresh-start-evaluation` turns it off.
    pub reuse_start_evaluation: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneState {
    /// Iterations completed.
    pub iteration: usize,
    pub env_steps: usize,
    pub counters: RldtCounters,
}

#[derive(Debug, Clone)]
pub struct FinetuneSummary {
    pub run_dir: PathBuf,
    pub checkpoint: PathBuf,
    /// The recording file (when recording to the run's own file).
    pub recording: PathBuf,
    pub iterations: usize,
    pub resumed_from: Option<usize>,
    pub env_steps: usize,
    /// Every in-run evaluation of this process.
    pub evaluations: Vec<EvaluationPoint>,
}

pub const STATE_FILE: &str = "finetune_state.json";

/// A training round's metrics (`rollout/*`).
#[derive(Debug, Default, Serialize)]
struct RoundStats {
    success_rate: f64,
    episodes: usize,
}

impl RoundStats {
    fn of(round: &RoundOutcome) -> Self {
        Self { success_rate: round.successes as f64 / round.episodes.max(1) as f64, episodes: round.episodes }
    }
}

/// How the rollouts went (`rollout/*`).
#[derive(Debug, Default, Serialize)]
struct RolloutHealth {
    exploration_gap: f64,
    worker_failures: usize,
}

/// Seconds of the collection round (`time/*`).
#[derive(Debug, Default, Serialize)]
struct PhaseTimes {
    rollout_s: f64,
}

/// Seconds of the iteration's critic and actor steps (`time/*`).
#[derive(Debug, Default, Serialize)]
struct UpdateTimes {
    critic_s: f64,
    actor_s: f64,
}

/// The replay after an iteration (`replay/*`).
#[derive(Debug, Default, Serialize)]
struct ReplayStats {
    trajectories: usize,
    memory_mb: f64,
}

/// What the updates of one iteration produced.
#[derive(Default)]
struct Updates {
    critic: Vec<CriticStats>,
    actor: Vec<ActorStats>,
    critic_s: f64,
    actor_s: f64,
}

/// Everything a run holds between iterations.
struct Run {
    config: FinetuneConfig,
    run_dir: PathBuf,
    rldt: Rldt,
    envs: VecEnv,
    metrics: MetricsLog,
    recording: FinetuneRecording,
    sink: Sink,
    start_iteration: usize,
    env_steps: usize,
    last_checkpoint: Option<PathBuf>,
    /// Held while the run writes its directory (released when `Run` drops).
    _lock: run_dir::RunLock,
}

pub fn finetune(options: FinetuneOptions) -> Result<FinetuneSummary> {
    let mut run = open(&options)?;
    let config = run.config.clone();
    let (schedule, rollout) = (&config.schedule, &config.rollout);
    let mut replay = Replay::new(schedule.replay_trajectories);
    let mut evaluations = Vec::new();
    let progress = progress_bar(schedule.iterations, run.start_iteration);
    let run_dir = run.run_dir.clone();
    let recording_off = matches!(options.recording, Some(Sink::Off));
    let evaluation = EvaluationContext::of(&run_dir, &config.pretrained, &config.env, &config.evaluation)
        .reusing_start(options.reuse_start_evaluation && recording_off)
        .keeping_resumed(recording_off);
    for iteration in run.start_iteration..schedule.iterations {
        let mut rng = SplitMix64::stream(config.seed, iteration as u64);
        tch::manual_seed((rng.next_u64() >> 1) as i64);
        let eval_only = iteration % schedule.eval_every == 0;
        progress.set_message(format!(
            "iteration {iteration}: {}",
            if eval_only { "evaluation rollouts" } else { "rollouts" }
        ));

        // 1. The collection round: the fixed evaluation episodes with plain samples, or a
        //    training round with exploration.
        let started = Instant::now();
        let steps_before = run.env_steps;
        let round = if eval_only {
            let (point, round) = evaluate(&mut run.envs, &run.rldt.actor, iteration, steps_before, &evaluation)?;
            evaluations.push(point);
            round
        } else {
            let first = config.seed.wrapping_mul(1_000_003).wrapping_add(iteration as u64 * 10_000);
            let seeds = consecutive_seeds(first, run.envs.len() * rollout.episodes_per_env);
            let round =
                collect_round(&mut run.envs, &run.rldt.actor, &seeds, Sampling::Explore(&rollout.exploration_steps))?;
            run.env_steps += round.env_steps;
            round
        };
        let rollout_s = started.elapsed().as_secs_f64();

        // 2. Critic and actor updates on fresh + replayed trajectories.
        let mut updates = None;
        if !eval_only && round.trajectories.is_empty() {
            eprintln!(
                "[finetune] iteration {iteration}: no complete trajectory (every worker failed); skipping updates"
            );
        } else if !eval_only {
            let mut done = Updates::default();
            for r in 0..schedule.rounds {
                progress.set_message(format!("iteration {iteration}: round {}/{}", r + 1, schedule.rounds));
                let batch = critic_batch(&round.trajectories, &replay, schedule, &mut rng);
                let started = Instant::now();
                let drawn = run.rldt.draw_critic_batch(&batch).map_err(at(iteration, &run))?;
                for _ in 0..schedule.critic_steps_per_round {
                    done.critic
                        .push(run.rldt.critic_step(&drawn, config.critic.heads_lr).map_err(at(iteration, &run))?);
                }
                done.critic_s += started.elapsed().as_secs_f64();
                if iteration >= schedule.actor_start_iteration {
                    let started = Instant::now();
                    for _ in 0..schedule.actor_steps_per_round {
                        let k = schedule.actor_batch_trajectories.min(batch.len());
                        let chosen: Vec<&Trajectory> = (0..k).map(|_| batch[rng.below(batch.len())]).collect();
                        done.actor.extend(run.rldt.actor_step(&chosen).map_err(at(iteration, &run))?);
                    }
                    done.actor_s += started.elapsed().as_secs_f64();
                }
            }
            run.rldt.end_iteration()?;
            updates = Some(done);
        }

        // 3. A training round joins the replay; metrics, recording and checkpoint.
        let mut metrics = iteration_metrics(evaluations.last().filter(|_| eval_only), &round, rollout_s, run.env_steps);
        let fresh: Vec<&Trajectory> = match updates {
            Some(updates) => {
                let n = round.trajectories.len();
                round.trajectories.into_iter().for_each(|t| replay.push(t));
                metrics.extend(update_metrics(&updates, &replay));
                replay.newest(n)
            }
            None => round.trajectories.iter().collect(),
        };
        run.metrics.log(iteration as i64, &metrics)?;
        run.recording.iteration(iteration, (steps_before, run.env_steps), &metrics, &fresh, &run.rldt)?;
        progress.inc(1);
        run.checkpoint_if_due(iteration + 1)?;
    }
    progress.finish();
    run.finish(evaluations, options.resume)
}

/// A critic batch: `fresh_fraction` of `critic_batch_trajectories` drawn from this round
/// (all of it while the replay is empty), the rest from the replay, shuffled.
fn critic_batch<'a>(
    fresh: &'a [Trajectory],
    replay: &'a Replay,
    schedule: &ScheduleSettings,
    rng: &mut SplitMix64,
) -> Vec<&'a Trajectory> {
    let want = schedule.critic_batch_trajectories;
    let n_fresh =
        if replay.is_empty() { want } else { ((want as f64 * schedule.fresh_fraction).round() as usize).min(want) };
    let mut batch: Vec<&Trajectory> = (0..n_fresh).map(|_| &fresh[rng.below(fresh.len())]).collect();
    batch.extend(replay.sample_balanced(want - n_fresh, rng));
    rng.shuffle(&mut batch);
    batch
}

/// The collection round's metrics: `eval/*` for an evaluation, else `rollout/*`.
fn iteration_metrics(
    evaluation: Option<&EvaluationPoint>,
    round: &RoundOutcome,
    rollout_s: f64,
    env_steps: usize,
) -> Metrics {
    let mut metrics = match evaluation {
        Some(point) => {
            named("eval", point).into_iter().filter(|(k, _)| k != "eval/iteration" && k != "eval/env_steps").collect()
        }
        None => named("rollout", &RoundStats::of(round)),
    };
    let health = RolloutHealth { exploration_gap: round.mean_gap, worker_failures: round.worker_failures };
    metrics.extend(named("rollout", &health));
    metrics.push(("env_steps".into(), env_steps as f64));
    metrics.extend(named("time", &PhaseTimes { rollout_s }));
    metrics
}

/// The updates' metrics (means over the iteration's steps) and the replay they leave.
fn update_metrics(updates: &Updates, replay: &Replay) -> Metrics {
    let mut metrics = field_means("critic", &updates.critic);
    metrics.extend(named("time", &UpdateTimes { critic_s: updates.critic_s, actor_s: updates.actor_s }));
    let memory_mb = replay.memory_bytes() as f64 / 1e6;
    metrics.extend(named("replay", &ReplayStats { trajectories: replay.len(), memory_mb }));
    if !updates.actor.is_empty() {
        metrics.extend(field_means("actor", &updates.actor));
        let fields: Vec<_> = updates.actor.iter().map(|s| s.field.clone()).collect();
        metrics.extend(field_means("svgd", &fields));
    }
    metrics
}

/// The error of a failed update, with the iteration and the checkpoints directory filled in
/// for a divergence (the last checkpoint is left as it was).
fn at(iteration: usize, run: &Run) -> impl Fn(Error) -> Error {
    let checkpoints = run_dir::checkpoints_dir(&run.run_dir);
    move |error| match error {
        Error::NonFinite { what, value, .. } => {
            Error::NonFinite { step: iteration as i64, what, value, checkpoints: checkpoints.clone() }
        }
        other => other,
    }
}

/// The fine-tuning workers: the policy's cameras at its image size, full-length episodes (the
/// success mask or the sparse rewards handle the steps after success).
pub(crate) fn open_workers(env: &EnvSettings, spec: &PolicySpec, workers: usize) -> Result<VecEnv> {
    let cameras = spec.obs.image_keys.iter().map(|k| k.trim_end_matches("_image").to_owned()).collect();
    let mut sim = SimConfig::for_task(env.task, cameras, spec.image_size.max(1) as usize);
    sim.horizon = env.horizon;
    sim.stop_on_success = false;
    sim.mujoco_gl = env.mujoco_gl.clone();
    sim.init_timeout_s = env.init_timeout_s;
    sim.step_timeout_s = env.step_timeout_s;
    VecEnv::new(&sim, workers).map_err(|e| Error::Sim(Box::new(e)))
}

pub(crate) fn progress_bar(iterations: usize, start: usize) -> ProgressBar {
    let progress = ProgressBar::new(iterations as u64).with_position(start as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "[finetune] {bar:30} {pos}/{len} iterations · {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("template"),
    );
    progress
}

/// The run directory (fresh, or resumed from its latest checkpoint), the networks from the
/// pretrained checkpoint, the metrics log, the recording and the workers.
fn open(options: &FinetuneOptions) -> Result<Run> {
    let run_dir = options.run_dir.clone();
    let run_error = |message: String| Error::RunDir { dir: run_dir.clone(), message };
    let run_dir::OpenedRun { config, latest, lock } =
        run_dir::open_run(&run_dir, options.resume, options.config.clone(), FinetuneConfig::load)?;
    let config_path = run_dir.join("config.json");
    let config_error = |message: String| Error::Config { file: config_path.clone(), message };
    if config.env.stop_on_success {
        return Err(config_error("field `env.stop_on_success`: fine-tuning needs full-length episodes (false): the success mask handles the steps after success".into()));
    }
    std::fs::create_dir_all(&run_dir).map_err(io_at(&run_dir))?;
    write_atomic(&config_path, serde_json::to_string_pretty(&config).expect("config serialises").as_bytes())?;

    // Networks: actor and v_ref from the pretrained EMA weights, critic and target.
    let pretrained = checkpoint::resolve(&config.pretrained)?;
    checkpoint::require_single_frame(&pretrained)?;
    tch::manual_seed(config.seed as i64);
    let mut rldt = Rldt::new(&pretrained, &config.critic, &config.actor, options.device)?;
    let k_steps = rldt.actor.spec().config.num_denoising_steps;
    if config.actor.adjoint_matching.is_none() {
        // RLDT's query steps (QAM reads no `objective` field but `particles`).
        config.actor.objective.check(k_steps).map_err(config_error)?;
    }
    if let Some(&k) = config.rollout.exploration_steps.iter().find(|&&k| k >= k_steps) {
        return Err(config_error(format!(
            "rollout.exploration_steps: step {k} does not exist in a policy with K = {k_steps} denoising steps (0..{k_steps})"
        )));
    }
    let (mut start_iteration, mut env_steps) = (0, 0);
    if let (true, Some(dir)) = (options.resume, &latest) {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
        let state: FinetuneState =
            serde_json::from_str(&text).map_err(|e| run_error(format!("{}: {e}", path.display())))?;
        rldt.load(dir, state.counters)?;
        run_dir::prune_checkpoints(&run_dir, config.checkpoint.keep)?;
        (start_iteration, env_steps) = (state.iteration, state.env_steps);
        eprintln!(
            "[finetune] resuming {}: {start_iteration} iterations done, continuing with iteration {start_iteration} \
             (0-based; the replay is rebuilt from new rollouts)",
            dir.display()
        );
    }
    // Metric lines carry the 0-based iteration as `step`: keep those of completed iterations.
    let metrics = MetricsLog::open(&run_dir, options.resume.then_some(start_iteration as i64 - 1))?;
    let sink = options
        .recording
        .clone()
        .unwrap_or_else(|| Sink::File(viz::run_recording_path(&run_dir, options.resume.then_some(start_iteration))));
    let recorder =
        Recorder::open(&sink, &format!("rldt-vision:{}", run_dir.display())).map_err(|e| run_error(e.to_string()))?;
    let spec = rldt.actor.spec().clone();
    let recording = FinetuneRecording::new(recorder, &config.recording, &spec, &run_dir)?;

    let envs = open_workers(&config.env, &spec, config.rollout.envs)?;
    Ok(Run {
        _lock: lock,
        config,
        run_dir,
        rldt,
        envs,
        metrics,
        recording,
        sink,
        start_iteration,
        env_steps,
        last_checkpoint: latest,
    })
}

impl Run {
    /// An atomic checkpoint after `done` iterations, every `checkpoint.every` and after the last.
    fn checkpoint_if_due(&mut self, done: usize) -> Result<()> {
        if done % self.config.checkpoint.every != 0 && done != self.config.schedule.iterations {
            return Ok(());
        }
        let pending = PendingCheckpoint::begin(&self.run_dir, done as i64)?;
        let counters = self.rldt.save(&pending.path(""))?;
        let state = FinetuneState { iteration: done, env_steps: self.env_steps, counters };
        let text = serde_json::to_string_pretty(&state).expect("state serialises");
        write_atomic(&pending.path(STATE_FILE), text.as_bytes())?;
        self.last_checkpoint = Some(pending.commit(self.config.checkpoint.keep)?);
        Ok(())
    }

    fn finish(self, evaluations: Vec<EvaluationPoint>, resumed: bool) -> Result<FinetuneSummary> {
        let run_error = |message: String| Error::RunDir { dir: self.run_dir.clone(), message };
        self.recording.recorder.flush().map_err(|e| run_error(e.to_string()))?;
        let checkpoint = self.last_checkpoint.clone().ok_or_else(|| run_error("no checkpoint was written".into()))?;
        Ok(FinetuneSummary {
            checkpoint,
            recording: match &self.sink {
                Sink::File(path) => path.clone(),
                _ => PathBuf::new(),
            },
            iterations: self.config.schedule.iterations,
            resumed_from: resumed.then_some(self.start_iteration),
            env_steps: self.env_steps,
            evaluations,
            run_dir: self.run_dir,
        })
    }
}
