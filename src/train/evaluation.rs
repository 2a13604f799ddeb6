//! The in-run evaluation shared by every fine-tuning algorithm: on evaluation iterations the
//! actor runs the fixed episodes `evaluation.first_seed + e` (e < `evaluation.episodes`) with
//! plain ODE samples whose x_0 is drawn per (episode seed, step) — the episodes `rldt-vision
//! eval --seed first_seed` runs — and the result goes to the `eval/*` metrics and, with every
//! episode, to `evaluations/iteration_<i>.json`. Evaluation env steps are not training env
//! steps.
//!
//! Nothing is evaluated twice: the start evaluation of a pretrained checkpoint is stored beside
//! it and copied by later runs with the same settings, and a resumed run whose first iteration
//! evaluates keeps the file an earlier process of the run wrote for the same checkpoint (its
//! weights file's FNV-1a hash recorded in the evaluation, `weights_fnv1a`). Checkpoints come
//! due just before evaluation iterations, so without this every resume ran one again.

use std::path::{Path, PathBuf};

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

/// The file of one in-run evaluation (and of the stored start evaluation).
#[derive(Debug, Serialize, Deserialize)]
struct InRunEvaluation {
    #[serde(flatten)]
    point: EvaluationPoint,
    first_seed: u64,
    /// Steps per episode (full-length episodes; success = any successful step).
    horizon: usize,
    /// K, the Euler steps of the evaluated ODE (ReinFlow and DPPO may run K' ≠ the
    /// checkpoint's K); absent in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    denoising_steps: Option<i64>,
    /// The rldt-vision version that ran the episodes.
    #[serde(default)]
    rldt_vision: String,
    /// The stored evaluation this file copies (its episodes were not run again): the stored
    /// start evaluation, or this file itself when a resumed run kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reused_from: Option<PathBuf>,
    /// FNV-1a 64 of the evaluated checkpoint's `policy.safetensors` (iterations > 0 with a
    /// checkpoint `step_<i>`), so a resumed run knows the file evaluated its weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weights_fnv1a: Option<String>,
    report: EvalReport,
}

impl InRunEvaluation {
    /// Whether these are the episodes `context` asks for with a K-step ODE: task, seeds,
    /// episode count, horizon, K and version, every episode run to its end (no worker failure).
    fn ran_as(&self, context: &EvaluationContext, denoising_steps: i64) -> bool {
        let report = &self.report;
        self.first_seed == context.settings.first_seed
            && self.horizon == context.horizon
            && self.denoising_steps == Some(denoising_steps)
            && self.rldt_vision == env!("CARGO_PKG_VERSION")
            && report.task == context.task.name()
            && report.episodes == context.settings.episodes
            && report.per_episode.len() == context.settings.episodes
            && report.per_episode.iter().all(|e| e.worker_failure.is_none())
    }
}

/// What an evaluation needs to know about its run.
pub struct EvaluationContext<'a> {
    pub run_dir: &'a Path,
    /// The pretrained checkpoint (its EMA weights are the actor's at iteration 0).
    pub pretrained: &'a Path,
    pub task: Task,
    pub horizon: usize,
    pub settings: &'a EvaluationSettings,
    /// Copy a stored start evaluation when one matches (and store one when none does).
    pub reuse_start: bool,
    /// Keep this run's evaluation of the same checkpoint weights when a resumed run repeats
    /// the iteration (off when the recording needs the episodes' trajectories).
    pub keep_resumed: bool,
}

impl<'a> EvaluationContext<'a> {
    /// The context of a run in `run_dir` with these config sections.
    pub fn of(
        run_dir: &'a Path,
        pretrained: &'a Path,
        env: &crate::config::finetune::EnvSettings,
        settings: &'a EvaluationSettings,
    ) -> Self {
        Self {
            run_dir,
            pretrained,
            task: env.task,
            horizon: env.horizon,
            settings,
            reuse_start: true,
            keep_resumed: true,
        }
    }

    /// The same context, keeping a resumed iteration's evaluation (`true`) or not.
    pub fn keeping_resumed(self, keep_resumed: bool) -> Self {
        Self { keep_resumed, ..self }
    }

    /// The same context, with a stored start evaluation used (`true`) or not.
    pub fn reusing_start(self, reuse_start: bool) -> Self {
        Self { reuse_start, ..self }
    }
}

/// Evaluates `policy` at `iteration` (after `env_steps` training steps) and writes
/// `evaluations/iteration_<i>.json`. Its weights: the pretrained EMA weights at iteration 0,
/// else the actor's after iteration i − 1, which the checkpoint `step_<i>` holds when one is
/// written there. The round's trajectories come back with it (the recording's probes); a copied
/// start evaluation comes back with its per-episode results and no trajectories.
pub fn evaluate(
    envs: &mut VecEnv,
    policy: &FlowPolicy,
    iteration: usize,
    env_steps: usize,
    context: &EvaluationContext,
) -> Result<(EvaluationPoint, RoundOutcome)> {
    let dir = context.run_dir.join("evaluations");
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let path = dir.join(format!("iteration_{:05}.json", iteration));
    // The pretrained checkpoint at iteration 0 (its EMA weights are the actor's).
    let start_checkpoint = if iteration == 0 { Some(checkpoint::resolve(context.pretrained)?) } else { None };
    let denoising_steps = policy.spec().config.num_denoising_steps;
    let stored = start_checkpoint
        .as_deref()
        .filter(|_| context.reuse_start)
        .map(|c| stored_start_path(c, context, denoising_steps));
    if let Some(copy) = stored.as_deref().and_then(|stored| read_stored_start(stored, context, denoising_steps)) {
        let (point, round) = (copy.point.clone(), round_of(&copy.report));
        write_atomic(&path, serde_json::to_string_pretty(&copy).expect("evaluation serialises").as_bytes())?;
        return Ok((point, round));
    }
    // Iteration i > 0 evaluates the weights the checkpoint step_<i> holds, when one exists.
    let checkpoint_dir = run_dir::checkpoints_dir(context.run_dir).join(run_dir::step_name(iteration as i64));
    let weights_fnv1a = match iteration {
        0 => None,
        _ => std::fs::read(checkpoint_dir.join(checkpoint::ONLINE_WEIGHTS_FILE)).ok().map(|bytes| fnv1a_hex(&bytes)),
    };
    if let Some(kept) = weights_fnv1a
        .as_deref()
        .filter(|_| context.keep_resumed)
        .and_then(|hash| read_kept(&path, iteration, hash, context, denoising_steps))
    {
        let round = round_of(&kept.report);
        let point = EvaluationPoint { env_steps, ..kept.point.clone() };
        write_atomic(&path, serde_json::to_string_pretty(&kept).expect("evaluation serialises").as_bytes())?;
        return Ok((point, round));
    }

    let started = std::time::Instant::now();
    let seeds = consecutive_seeds(context.settings.first_seed, context.settings.episodes);
    let round = collect_round(envs, policy, &seeds, Sampling::Evaluate)?;
    let point = EvaluationPoint::of(iteration, env_steps, &round);
    let (checkpoint, weights) = match start_checkpoint {
        Some(pretrained) => (pretrained, "ema"),
        None => (checkpoint_dir, "online"),
    };
    let seconds = started.elapsed().as_secs_f64();
    let report =
        EvalReport::of(checkpoint, weights, 1, context.task, round.per_episode.clone(), round.env_steps, seconds);
    let file = InRunEvaluation {
        point: point.clone(),
        first_seed: context.settings.first_seed,
        horizon: context.horizon,
        denoising_steps: Some(denoising_steps),
        rldt_vision: env!("CARGO_PKG_VERSION").into(),
        reused_from: None,
        weights_fnv1a,
        report,
    };
    let text = serde_json::to_string_pretty(&file).expect("evaluation serialises");
    write_atomic(&path, text.as_bytes())?;
    if let Some(stored) = stored.filter(|_| round.worker_failures == 0) {
        // A checkpoint directory that cannot be written to (read-only, shared) costs the
        // reuse only.
        let parent = stored.parent().expect("a file in a directory").to_path_buf();
        let written = std::fs::create_dir_all(&parent)
            .map_err(io_at(&parent))
            .and_then(|_| write_atomic(&stored, text.as_bytes()));
        if let Err(e) = written {
            eprintln!("[finetune] the start evaluation is not stored for reuse: {e}");
        }
    }
    Ok((point, round))
}

/// Where the start evaluation of `context` with a K-step ODE is stored, beside the pretrained
/// weights.
fn stored_start_path(checkpoint: &Path, context: &EvaluationContext, denoising_steps: i64) -> PathBuf {
    let (task, horizon, s) = (context.task.name(), context.horizon, context.settings);
    checkpoint
        .join("evaluations")
        .join(format!("{task}_horizon{horizon}_k{denoising_steps}_seed{}_episodes{}.json", s.first_seed, s.episodes))
}

/// The stored start evaluation at `stored` as this run's `iteration_00000.json`, when it
/// exists and matches `context` (task, horizon, seeds, episodes, EMA weights, version) and K.
fn read_stored_start(stored: &Path, context: &EvaluationContext, denoising_steps: i64) -> Option<InRunEvaluation> {
    let text = std::fs::read_to_string(stored).ok()?;
    let file: InRunEvaluation = match serde_json::from_str(&text) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("[finetune] {}: not a stored start evaluation ({e}); evaluating again", stored.display());
            return None;
        }
    };
    let matches = file.point.iteration == 0 && file.report.weights == "ema" && file.ran_as(context, denoising_steps);
    if !matches {
        eprintln!("[finetune] {}: stored for other settings; evaluating again", stored.display());
        return None;
    }
    eprintln!("[finetune] start evaluation: copied from {} (same weights, seeds and settings)", stored.display());
    Some(InRunEvaluation { reused_from: Some(stored.to_path_buf()), ..file })
}

/// This run's evaluation file at `path` when it evaluated the checkpoint whose weights hash
/// to `weights_fnv1a` with `context`'s settings (seeds, episodes, horizon, K, version) and no
/// worker failure: a resumed run keeps it instead of running the episodes again.
fn read_kept(
    path: &Path,
    iteration: usize,
    weights_fnv1a: &str,
    context: &EvaluationContext,
    denoising_steps: i64,
) -> Option<InRunEvaluation> {
    let file: InRunEvaluation = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let matches = file.point.iteration == iteration
        && file.weights_fnv1a.as_deref() == Some(weights_fnv1a)
        && file.ran_as(context, denoising_steps);
    if !matches {
        return None;
    }
    eprintln!(
        "[finetune] iteration {iteration} evaluation: kept {} (the checkpoint's weights, same seeds and settings)",
        path.display()
    );
    Some(InRunEvaluation { reused_from: Some(path.to_path_buf()), ..file })
}

/// FNV-1a 64 of `bytes` as 16 hex digits: a weights file's identity (not a security hash).
fn fnv1a_hex(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// The round of a copied evaluation: its per-episode results, no trajectories.
fn round_of(report: &EvalReport) -> RoundOutcome {
    RoundOutcome {
        trajectories: Vec::new(),
        episodes: report.episodes,
        successes: report.successes,
        env_steps: report.env_steps,
        worker_failures: 0,
        mean_gap: 0.0,
        per_episode: report.per_episode.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a 64 reference values: "" → cbf29ce484222325, "a" → af63dc4c8601ec8c.
    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(fnv1a_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
    }
}
