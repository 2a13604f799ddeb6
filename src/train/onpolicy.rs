//! The on-policy baselines' fine-tuning loop (ReinFlow, FPO++; docs/baselines.md), the same
//! shape as RLDT's (`train::finetune`), over any `rl::onpolicy::OnPolicyLearner`:
//!
//! ```text
//! for iteration i:
//!     if i is an evaluation iteration (0 and every eval_every-th):
//!         evaluate the actor on the fixed evaluation seeds (plain ODE, as `eval`)
//!     else:
//!         round ← on-policy round: per chunk what the learner keeps (ReinFlow: the noisy
//!                 chain and ℓ_old; FPO++: the (τ, ε) draws and their losses) and V_old
//!         update: GAE, then PPO-style epochs over the round's chunks (value only during
//!                 the first `value_warmup_iterations` training iterations)
//!     metrics, checkpoint
//! ```
//!
//! Seeding as RLDT's: iteration i draws `SplitMix64::stream(seed, i)`; its first number seeds
//! libtorch's RNG (sampling noise, draws, augmentation), the rest shuffle the minibatches. Training
//! episodes use seeds `seed·1,000,003 + i·10,000 + e`. Resume restarts after the last
//! checkpoint with every network, optimizer and the running return scale restored.

use std::path::PathBuf;
use std::time::Instant;

use rldt_datasets::random::SplitMix64;
use serde::{Deserialize, Serialize};
use tch::Device;

use super::evaluation::{evaluate, EvaluationContext};
use super::finetune::{open_workers, progress_bar, FinetuneSummary};
use super::metrics::{named, MetricsLog};
use crate::config::finetune::{Algorithm, OnPolicyConfig};
use crate::episodes::consecutive_seeds;
use crate::error::{io_at, Error, Result};
use crate::policy::checkpoint;
use crate::rl::dppo::Dppo;
use crate::rl::fpo::Fpo;
use crate::rl::onpolicy::{collect_on_policy_round, OnPolicyLearner};
use crate::rl::reinflow::Reinflow;
use crate::run_dir::{self, write_atomic, PendingCheckpoint};

pub struct OnPolicyOptions {
    pub config: Option<OnPolicyConfig>,
    pub run_dir: PathBuf,
    pub device: Device,
    pub resume: bool,
    /// Copy the stored start evaluation of the pretrained checkpoint when one matches
    /// (`train::evaluation`; `--fresh-start-evaluation` turns it off).
    pub reuse_start_evaluation: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPolicyState<C> {
    /// Iterations completed.
    pub iteration: usize,
    pub env_steps: usize,
    /// Training (non-evaluation) iterations completed, for the value warm-up.
    pub training_iterations: usize,
    /// The learner's own counters (optimizer steps, return scale).
    pub counters: C,
}

pub const STATE_FILE: &str = "onpolicy_state.json";

/// A training round's metrics (`rollout/*`).
#[derive(Debug, Default, Serialize)]
struct RoundStats {
    success_rate: f64,
    episodes: usize,
    worker_failures: usize,
}

/// Seconds of the iteration's phases (`time/*`).
#[derive(Debug, Default, Serialize)]
struct PhaseTimes {
    rollout_s: f64,
    update_s: f64,
}

/// Opens the run directory, builds the config's learner from the pretrained checkpoint and
/// runs the loop.
pub fn finetune_on_policy(options: OnPolicyOptions) -> Result<FinetuneSummary> {
    let run_dir = options.run_dir.clone();
    // `_lock` is held until the run returns (success or error).
    let run_dir::OpenedRun { config, latest, lock: _lock } =
        run_dir::open_run(&run_dir, options.resume, options.config.clone(), OnPolicyConfig::load)?;
    std::fs::create_dir_all(&run_dir).map_err(io_at(&run_dir))?;
    let config_path = run_dir.join("config.json");
    write_atomic(&config_path, serde_json::to_string_pretty(&config).expect("config serialises").as_bytes())?;
    let pretrained = checkpoint::resolve(&config.pretrained)?;
    checkpoint::require_single_frame(&pretrained)?;
    tch::manual_seed(config.seed as i64);
    let missing =
        |section: &str| Error::Config { file: config_path.clone(), message: format!("field `{section}` is missing") };
    match config.algorithm {
        Algorithm::Reinflow => {
            let chain = config.reinflow.as_ref().ok_or_else(|| missing("reinflow"))?;
            let learner = Reinflow::new(&pretrained, chain, &config.ppo, options.device)?;
            run(learner, &config, &options, latest)
        }
        Algorithm::Fpo => {
            let fpo = config.fpo.as_ref().ok_or_else(|| missing("fpo"))?;
            let learner = Fpo::new(&pretrained, fpo, &config.ppo, options.device)?;
            run(learner, &config, &options, latest)
        }
        Algorithm::Dppo => {
            let dppo = config.dppo.as_ref().ok_or_else(|| missing("dppo"))?;
            let learner = Dppo::new(&pretrained, dppo, &config.ppo, options.device)?;
            run(learner, &config, &options, latest)
        }
        Algorithm::Rldt | Algorithm::Qam => Err(Error::Config {
            file: config_path,
            message: "field `algorithm`: rldt and qam run through train::finetune".into(),
        }),
    }
}

fn run<L: OnPolicyLearner>(
    mut learner: L,
    config: &OnPolicyConfig,
    options: &OnPolicyOptions,
    latest: Option<PathBuf>,
) -> Result<FinetuneSummary> {
    let run_dir = options.run_dir.clone();
    let run_error = |message: String| Error::RunDir { dir: run_dir.clone(), message };
    let (mut start, mut env_steps, mut training_iterations) = (0, 0, 0);
    if let (true, Some(dir)) = (options.resume, &latest) {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
        let state: OnPolicyState<L::Counters> =
            serde_json::from_str(&text).map_err(|e| run_error(format!("{}: {e}", path.display())))?;
        learner.load(dir, state.counters)?;
        run_dir::prune_checkpoints(&run_dir, config.checkpoint.keep)?;
        (start, env_steps, training_iterations) = (state.iteration, state.env_steps, state.training_iterations);
        eprintln!(
            "[finetune] resuming {}: {start} iterations done, continuing with iteration {start} (0-based)",
            dir.display()
        );
    }
    let mut metrics_log = MetricsLog::open(&run_dir, options.resume.then_some(start as i64 - 1))?;
    let mut envs = open_workers(&config.env, learner.actor().spec(), config.rollout.envs)?;
    let evaluation = EvaluationContext::of(&run_dir, &config.pretrained, &config.env, &config.evaluation)
        .reusing_start(options.reuse_start_evaluation);
    let mut evaluations = Vec::new();
    let mut last_checkpoint = latest;

    let progress = progress_bar(config.schedule.iterations, start);
    for iteration in start..config.schedule.iterations {
        let mut rng = SplitMix64::stream(config.seed, iteration as u64);
        tch::manual_seed((rng.next_u64() >> 1) as i64);
        let started = Instant::now();
        let mut metrics = Vec::new();
        if iteration % config.schedule.eval_every == 0 {
            // 1a. Evaluation: the plain ODE on the fixed seeds; no update.
            progress.set_message(format!("iteration {iteration}: evaluation"));
            let (point, _) = evaluate(&mut envs, learner.actor(), iteration, env_steps, &evaluation)?;
            metrics.extend(
                named("eval", &point).into_iter().filter(|(k, _)| k != "eval/iteration" && k != "eval/env_steps"),
            );
            metrics.extend(named("time", &PhaseTimes { rollout_s: started.elapsed().as_secs_f64(), update_s: 0.0 }));
            evaluations.push(point);
        } else {
            // 1b. A training round, then the learner's update.
            progress.set_message(format!("iteration {iteration}: rollouts"));
            let first = config.seed.wrapping_mul(1_000_003).wrapping_add(iteration as u64 * 10_000);
            let seeds = consecutive_seeds(first, envs.len() * config.rollout.episodes_per_env);
            let round = collect_on_policy_round(&mut envs, learner.actor(), &seeds, |obs| Ok(learner.act(obs)))?;
            env_steps += round.env_steps;
            let rollout_s = started.elapsed().as_secs_f64();
            let round_stats = RoundStats {
                success_rate: round.successes as f64 / round.episodes.max(1) as f64,
                episodes: round.episodes,
                worker_failures: round.worker_failures,
            };
            metrics.extend(named("rollout", &round_stats));
            if round.trajectories.is_empty() {
                eprintln!("[finetune] iteration {iteration}: no complete trajectory (every worker failed); skipping the update");
            } else {
                progress.set_message(format!("iteration {iteration}: update"));
                let train_actor = training_iterations >= config.ppo.value_warmup_iterations;
                let updated = Instant::now();
                let update =
                    learner.update(&round.trajectories, iteration, train_actor, &mut rng).map_err(|e| match e {
                        Error::NonFinite { step, what, value, .. } => {
                            Error::NonFinite { step, what, value, checkpoints: run_dir::checkpoints_dir(&run_dir) }
                        }
                        other => other,
                    })?;
                metrics.extend(update);
                metrics.push(("ppo/actor_trained".into(), train_actor as i32 as f64));
                let update_s = updated.elapsed().as_secs_f64();
                metrics.extend(named("time", &PhaseTimes { rollout_s, update_s }));
            }
            training_iterations += 1;
        }
        metrics.push(("env_steps".into(), env_steps as f64));
        metrics_log.log(iteration as i64, &metrics)?;
        progress.inc(1);

        // 2. An atomic checkpoint every `checkpoint.every` iterations and after the last.
        let done = iteration + 1;
        if done % config.checkpoint.every == 0 || done == config.schedule.iterations {
            let pending = PendingCheckpoint::begin(&run_dir, done as i64)?;
            let counters = learner.save(&pending.path(""))?;
            let state = OnPolicyState { iteration: done, env_steps, training_iterations, counters };
            let text = serde_json::to_string_pretty(&state).expect("state serialises");
            write_atomic(&pending.path(STATE_FILE), text.as_bytes())?;
            last_checkpoint = Some(pending.commit(config.checkpoint.keep)?);
        }
    }
    progress.finish();
    let checkpoint = last_checkpoint.ok_or_else(|| run_error("no checkpoint was written".into()))?;
    Ok(FinetuneSummary {
        run_dir: run_dir.clone(),
        checkpoint,
        recording: PathBuf::new(),
        iterations: config.schedule.iterations,
        resumed_from: options.resume.then_some(start),
        env_steps,
        evaluations,
    })
}
