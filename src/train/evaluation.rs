//! The in-run evaluation shared by every fine-tuning algorithm: on evaluation iterations the
//! actor runs the fixed episodes `evaluation.first_seed + e` (e < `evaluation.episodes`) with
//! plain ODE samples whose x_0 is drawn per (episode seed, step) — the episodes `rldt-vision
//! eval --seed first_seed` runs — and the result goes to the `eval/*` metrics and, with every
//! episode, to `evaluations/iteration_<i>.json`. Evaluation env steps are not training env
//! steps.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::finetune::EvaluationSettings;
use crate::episodes::consecutive_seeds;
use crate::error::{io_at, Result};
use crate::eval::{wilson_interval, EvalReport};
use crate::policy::{checkpoint, FlowPolicy};
use crate::rl::rollout::{collect_round, RoundOutcome, Sampling};
use crate::run_dir::{self, write_atomic};
use crate::sim::{Task, VecEnv};

/// One in-run evaluation (`eval/*` metrics; in full, with every episode, in
/// `evaluations/iteration_<i>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluationPoint {
    pub iteration: usize,
    /// Training env steps before it (evaluation steps are not counted).
    pub env_steps: usize,
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
    /// 95% Wilson interval.
    pub success_rate_low: f64,
    pub success_rate_high: f64,
}

impl EvaluationPoint {
    fn of(iteration: usize, env_steps: usize, round: &RoundOutcome) -> Self {
        let [low, high] = wilson_interval(round.successes, round.episodes);
        EvaluationPoint {
            iteration,
            env_steps,
            episodes: round.episodes,
            successes: round.successes,
            success_rate: round.successes as f64 / round.episodes.max(1) as f64,
            success_rate_low: low,
            success_rate_high: high,
        }
    }
}

/// The file of one in-run evaluation.
#[derive(Debug, Serialize)]
struct InRunEvaluation {
    #[serde(flatten)]
    point: EvaluationPoint,
    first_seed: u64,
    /// Steps per episode (full-length episodes; success = any successful step).
    horizon: usize,
    report: EvalReport,
}

/// What an evaluation needs to know about its run.
pub struct EvaluationContext<'a> {
    pub run_dir: &'a Path,
    /// The pretrained checkpoint (its EMA weights are the actor's at iteration 0).
    pub pretrained: &'a Path,
    pub task: Task,
    pub horizon: usize,
    pub settings: &'a EvaluationSettings,
}

impl<'a> EvaluationContext<'a> {
    /// The context of a run in `run_dir` with these config sections.
    pub fn of(
        run_dir: &'a Path,
        pretrained: &'a Path,
        env: &crate::config::finetune::EnvSettings,
        settings: &'a EvaluationSettings,
    ) -> Self {
        Self { run_dir, pretrained, task: env.task, horizon: env.horizon, settings }
    }
}

/// Evaluates `policy` at `iteration` (after `env_steps` training steps) and writes
/// `evaluations/iteration_<i>.json`. Its weights: the pretrained EMA weights at iteration 0,
/// else the actor's after iteration i − 1, which the checkpoint `step_<i>` holds when one is
/// written there. The round's trajectories come back with it (the recording's probes).
pub fn evaluate(
    envs: &mut VecEnv,
    policy: &FlowPolicy,
    iteration: usize,
    env_steps: usize,
    context: &EvaluationContext,
) -> Result<(EvaluationPoint, RoundOutcome)> {
    let started = std::time::Instant::now();
    let seeds = consecutive_seeds(context.settings.first_seed, context.settings.episodes);
    let round = collect_round(envs, policy, &seeds, Sampling::Evaluate)?;
    let point = EvaluationPoint::of(iteration, env_steps, &round);
    let (checkpoint, weights) = match iteration {
        0 => (checkpoint::resolve(context.pretrained)?, "ema"),
        i => (run_dir::checkpoints_dir(context.run_dir).join(run_dir::step_name(i as i64)), "online"),
    };
    let seconds = started.elapsed().as_secs_f64();
    let report = EvalReport::of(checkpoint, weights, context.task, round.per_episode.clone(), round.env_steps, seconds);
    let file = InRunEvaluation {
        point: point.clone(),
        first_seed: context.settings.first_seed,
        horizon: context.horizon,
        report,
    };
    let dir = context.run_dir.join("evaluations");
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let path = dir.join(format!("iteration_{:05}.json", iteration));
    write_atomic(&path, serde_json::to_string_pretty(&file).expect("evaluation serialises").as_bytes())?;
    Ok((point, round))
}
