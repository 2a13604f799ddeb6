//! `rldt-vision eval`: success rate of a policy checkpoint in simulation.
//!
//! W workers run N episodes on the episode engine (`crate::episodes`; episode e uses seed
//! `seed + e`, robomimic's stop-on-success); at every chunk boundary the policy samples one
//! chunk for all running episodes as one batch: plain ODE samples (no exploration noise) from
//! x_0 drawn per (episode seed, step) (`FlowPolicy::episode_noise`), so an episode's chunks
//! do not depend on the worker count or on the other episodes. It executes the first Ta
//! actions; the cameras render only at the chunk's end. A fine-tune's in-run evaluation
//! (`rl::rollout::collect_round` with `Sampling::Evaluate`) samples the same way, so both
//! give the same per-episode results for the same weights, seeds and libtorch thread count.
//! Reports the success rate with a 95% Wilson interval, the mean episode length, per-episode
//! results (seed, success, length), which weights ran, and a GIF of chosen episodes (first
//! camera, every step rendered for those). With `--best-of-n N` (a fine-tuning checkpoint
//! with a critic) each chunk is the best of N proposals by the critic's Q (`rl::best_of_n`);
//! N = 1 is the plain evaluation. With `--critic-calibration` the critic also scores every
//! executed chunk, and the report says how well those scores separate succeeding from failing
//! episodes (`rl::critic_calibration`). With `--q-ascent η` every executed chunk first moves a
//! distance η along the critic's ∇_a Q (`rl::q_ascent`).

use std::path::{Path, PathBuf};

use crate::device::DeviceChoice;
use crate::episodes::{
    consecutive_seeds, run_episodes, Decision, Ending, EpisodeEnvs, EpisodeId, EpisodeSink, Running,
};
use crate::error::{Error, Result};
use crate::policy::checkpoint::{self, Weights};
use crate::policy::env_obs::{env_chunks, obs_batch};
use crate::rl::best_of_n::{CriticRanker, RankBy};
use crate::rl::critic_calibration::{calibration, CriticCalibration};
use crate::rl::q_ascent::{ascend, AscentDirection, AscentSums, QAscent};
use crate::sim::{ChunkOutcome, Observation, Render, SimConfig, SimError, Task, VecEnv};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// What to evaluate and how; the flags of `rldt-vision eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalOptions {
    /// A checkpoint directory, or a run directory (its latest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long, value_enum)]
    pub task: Task,
    #[arg(long, default_value_t = 50)]
    pub episodes: usize,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seed of the first episode (episode e uses seed + e); kept apart from collection seeds.
    #[arg(long, default_value_t = 100_000)]
    pub seed: u64,
    /// Use the online weights instead of the EMA weights.
    #[arg(long)]
    pub online_weights: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, default_value = "egl")]
    pub mujoco_gl: String,
    /// Write a GIF of `--video-episodes` here.
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Episodes (indices into 0..episodes) of the GIF.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub video_episodes: Vec<usize>,
    /// Episode length limit (default: the task's).
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Run the best of N policy proposals per chunk, ranked by the checkpoint's critic (RLDT
    /// and QAM fine-tuning checkpoints); 1 = plain evaluation.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub best_of_n: u32,
    /// How best-of-n scores a proposal: the mean over the critic's heads or their minimum.
    #[arg(long, value_enum, default_value = "mean")]
    pub rank_by: RankBy,
    /// Score every executed chunk with the checkpoint's critic (mean over heads) and report
    /// how well the scores separate succeeding from failing episodes (AUC, Brier).
    #[arg(long)]
    pub critic_calibration: bool,
    /// Move every executed chunk this far (normalised units, over the executed part) along the
    /// checkpoint critic's ∇_a Q before it runs (`rl::q_ascent`); 0 = plain evaluation.
    #[arg(long, default_value_t = 0.0)]
    pub q_ascent: f64,
    /// The direction of `--q-ascent`: the critic's gradient, or a random one (the control).
    #[arg(long, value_enum, default_value = "gradient")]
    pub ascent_direction: AscentDirection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodeResult {
    pub episode: usize,
    pub seed: u64,
    pub success: bool,
    /// Steps until the first success (the episode's length under stop-on-success), else all
    /// steps run.
    pub length: usize,
    /// Set when a worker failure truncated the episode.
    pub worker_failure: Option<String>,
    /// With `--critic-calibration`: the critic's q of each executed chunk, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic_q: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub checkpoint: PathBuf,
    /// Which of the checkpoint's weights ran: "ema" or "online".
    pub weights: String,
    /// Proposals per chunk ranked by the critic (1: plain evaluation).
    #[serde(default = "one")]
    pub best_of_n: u32,
    /// With best-of-n: how the heads scored (`rank_by`) and Σ‖a* − ā‖ / Σ mean_j ‖a_j − ā‖
    /// over every ranked state (1: chosen like chance; > 1: the outlying proposals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of_n_ranking: Option<Ranking>,
    /// With `--critic-calibration`: the critic's scores of the executed chunks against the
    /// episodes' outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic_calibration: Option<CriticCalibration>,
    /// With `--q-ascent`: the step, the mean ‖∇_a Q‖ and the critic's own mean gain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_ascent: Option<QAscent>,
    pub task: String,
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
    /// 95% Wilson score interval of the success rate.
    pub success_rate_ci95: [f64; 2],
    pub mean_episode_length: f64,
    pub env_steps: usize,
    pub seconds: f64,
    pub per_episode: Vec<EpisodeResult>,
}

fn one() -> u32 {
    1
}

/// How a best-of-n evaluation ranked, and how far from its proposals' mean it chose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ranking {
    pub rank_by: RankBy,
    pub spread_ratio: f64,
    /// Mean over ranked states of the std of Q (as ranked) over the state's proposals.
    #[serde(default)]
    pub q_std_within_state: f64,
    /// Std over ranked states of the mean Q of their proposals.
    #[serde(default)]
    pub q_std_across_states: f64,
}

impl EvalReport {
    /// The report of `results` (any order; sorted by episode here).
    pub fn of(
        checkpoint: PathBuf,
        weights: &str,
        best_of_n: u32,
        task: Task,
        mut results: Vec<EpisodeResult>,
        env_steps: usize,
        seconds: f64,
    ) -> Self {
        results.sort_by_key(|r| r.episode);
        let n = results.len();
        let successes = results.iter().filter(|r| r.success).count();
        EvalReport {
            checkpoint,
            weights: weights.into(),
            best_of_n,
            best_of_n_ranking: None,
            critic_calibration: None,
            q_ascent: None,
            task: task.name().into(),
            episodes: n,
            successes,
            success_rate: successes as f64 / n.max(1) as f64,
            success_rate_ci95: wilson_interval(successes, n),
            // fold from +0.0: an empty f64 `sum` is −0.0, which prints as "-0 steps".
            mean_episode_length: results.iter().fold(0.0, |total, r| total + r.length as f64) / n.max(1) as f64,
            env_steps,
            seconds,
            per_episode: results,
        }
    }
}

impl EpisodeResult {
    /// The result line of an episode that ended (`failure`: the worker error that cut it).
    pub fn of(id: EpisodeId, ending: Ending, failure: Option<&SimError>) -> Self {
        EpisodeResult {
            episode: id.index,
            seed: id.seed,
            success: ending.success,
            length: ending.steps_to_success.unwrap_or(ending.steps),
            worker_failure: failure.map(ToString::to_string),
            critic_q: None,
        }
    }
}

/// 95% Wilson score interval for `successes` out of `n`.
pub fn wilson_interval(successes: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (z, n_f) = (1.959_963_984_540_054, n as f64);
    let p = successes as f64 / n_f;
    let denominator = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denominator;
    let half = z * (p * (1.0 - p) / n_f + z * z / (4.0 * n_f * n_f)).sqrt() / denominator;
    // At 0 (or n) successes the bound is exactly 0 (or 1); rounding would leave ~1e-17.
    let lower = if successes == 0 { 0.0 } else { (centre - half).max(0.0) };
    let upper = if successes == n { 1.0 } else { (centre + half).min(1.0) };
    [lower, upper]
}

/// The evaluation's sink: one result line per episode, and the frames of the video episodes.
struct ResultSink<'a> {
    options: &'a EvalOptions,
    video_camera: Option<String>,
    video_frames: Vec<Vec<u8>>,
    results: Vec<EpisodeResult>,
    progress: ProgressBar,
}

impl ResultSink<'_> {
    fn records_video(&self, episode: usize) -> bool {
        self.options.video.is_some() && self.options.video_episodes.contains(&episode)
    }

    fn push(&mut self, result: EpisodeResult) {
        self.results.push(result);
        let successes = self.results.iter().filter(|r| r.success).count();
        self.progress.inc(1);
        self.progress.set_message(format!("{successes}/{} successful", self.results.len()));
    }
}

impl EpisodeSink for ResultSink<'_> {
    /// Whether this episode's frames go into the video.
    type Record = bool;
    type Extra = ();

    fn start(&mut self, id: EpisodeId, first: &Observation, _: &mut dyn EpisodeEnvs) -> Result<bool> {
        let video = self.records_video(id.index);
        if let (true, Some(camera)) = (video, &self.video_camera) {
            self.video_frames.push(first.images[camera].clone());
        }
        Ok(video)
    }

    fn chunk(&mut self, video: &mut bool, _: (), outcome: &ChunkOutcome) -> Result<()> {
        if let (true, Some(camera)) = (*video, &self.video_camera) {
            self.video_frames.extend(outcome.frames.iter().map(|f| f.images[camera].clone()));
        }
        Ok(())
    }

    fn finish(&mut self, id: EpisodeId, _: bool, ending: Ending) -> Result<()> {
        self.push(EpisodeResult::of(id, ending, None));
        Ok(())
    }

    fn failed(&mut self, id: EpisodeId, ending: Ending, error: &SimError) -> Result<()> {
        self.push(EpisodeResult::of(id, ending, Some(error)));
        Ok(())
    }
}

/// The weights `eval` runs: the EMA weights of a pretraining checkpoint (what later stages
/// load), or the online ones when asked (`--online-weights`). A fine-tuning checkpoint
/// (`finetune_state.json` or `onpolicy_state.json`) holds the actor's weights only (no
/// algorithm here keeps an EMA of the actor), so its online weights are its policy. Any other
/// checkpoint without `ema.safetensors` is refused rather than silently run on other weights.
pub fn weights_to_evaluate(dir: &std::path::Path, online_requested: bool) -> Result<Weights> {
    let fine_tuned = [crate::train::finetune::STATE_FILE, crate::train::onpolicy::STATE_FILE]
        .iter()
        .any(|state| dir.join(state).exists());
    if online_requested || fine_tuned {
        Ok(Weights::Online)
    } else if dir.join(checkpoint::EMA_WEIGHTS_FILE).exists() {
        Ok(Weights::Ema)
    } else {
        Err(Error::Usage(format!(
            "checkpoint {} holds no {} (the EMA weights a pretraining checkpoint is evaluated with); \
             pass --online-weights to evaluate its {} instead",
            dir.display(),
            checkpoint::EMA_WEIGHTS_FILE,
            checkpoint::ONLINE_WEIGHTS_FILE
        )))
    }
}

pub fn evaluate(options: &EvalOptions) -> Result<EvalReport> {
    let started_at = std::time::Instant::now();
    let dir = checkpoint::resolve(&options.checkpoint)?;
    let weights = weights_to_evaluate(&dir, options.online_weights)?;
    checkpoint::require_single_frame(&dir)?;
    let device = options.device.resolve()?;
    let (_vs, policy) = checkpoint::load(&dir, weights, device)?;
    if !(options.q_ascent.is_finite() && options.q_ascent >= 0.0) {
        return Err(Error::Usage(format!("--q-ascent must be a finite distance ≥ 0, got {}", options.q_ascent)));
    }
    if options.q_ascent > 0.0 && options.best_of_n > 1 {
        return Err(Error::Usage("--q-ascent and --best-of-n are two different uses of the critic: pass one".into()));
    }
    let ranker = match (options.best_of_n, options.critic_calibration, options.q_ascent > 0.0) {
        (1, false, false) => None,
        _ => Some(CriticRanker::load(&dir, &policy, device)?),
    };
    let spec = policy.spec().clone();
    let cameras: Vec<String> = spec.obs.image_keys.iter().map(|k| k.trim_end_matches("_image").to_owned()).collect();
    let mut sim = SimConfig::for_task(options.task, cameras, spec.image_size.max(1) as usize);
    sim.mujoco_gl = options.mujoco_gl.clone();
    if let Some(h) = options.horizon {
        sim.horizon = h;
    }
    let sim_error = |e: crate::sim::SimError| Error::Sim(Box::new(e));
    let mut envs = VecEnv::new(&sim, options.workers.max(1).min(options.episodes.max(1))).map_err(sim_error)?;
    let progress = ProgressBar::new(options.episodes as u64);
    progress.set_style(
        ProgressStyle::with_template("[eval] {bar:30} {pos}/{len} episodes · {msg} [{elapsed_precise}<{eta_precise}]")
            .expect("template"),
    );
    let mut sink = ResultSink {
        options,
        video_camera: spec.obs.image_keys.first().cloned(),
        video_frames: Vec::new(),
        results: Vec::new(),
        progress,
    };
    // Σ‖a* − ā‖ and Σ mean_j ‖a_j − ā‖ of best-of-n (rl::best_of_n).
    let mut spread = (0.0, 0.0);
    let mut q_spread = crate::rl::best_of_n::QSpread::default();
    // With --critic-calibration: per episode index, the critic's q of each executed chunk.
    let mut scores: std::collections::HashMap<usize, Vec<f64>> = std::collections::HashMap::new();
    let mut ascent = AscentSums::default();
    // Plain ODE samples for every running episode as one batch; every step is rendered while
    // a video episode runs, else only chunk ends.
    let actor = |running: &[&Running<bool>]| {
        let observations: Vec<&Observation> = running.iter().map(|r| &r.obs).collect();
        let batch =
            obs_batch(&spec, &observations, device).map_err(|message| Error::RunDir { dir: dir.clone(), message })?;
        let keys: Vec<(u64, usize)> = running.iter().map(|r| (r.id.seed, r.steps)).collect();
        let normalised = tch::no_grad(|| match (&ranker, options.best_of_n) {
            (Some(ranker), n) if n > 1 => {
                let chosen = ranker.select(&policy, &batch, &keys, n as usize, options.rank_by);
                spread.0 += chosen.chosen_distance;
                spread.1 += chosen.candidate_distance;
                q_spread.add(chosen.q_spread);
                chosen.chunks
            }
            _ => {
                let cond = policy.condition(&batch, false);
                policy.sample_chain(&cond, &policy.episode_noise(&keys)).get(spec.config.num_denoising_steps)
            }
        });
        let normalised = match &ranker {
            Some(ranker) if options.q_ascent > 0.0 => {
                let (stepped, sums) =
                    ascend(ranker, &policy, &batch, &keys, &normalised, options.q_ascent, options.ascent_direction);
                ascent.add(sums);
                stepped
            }
            _ => normalised,
        };
        if let (Some(ranker), true) = (&ranker, options.critic_calibration) {
            for (r, q) in running.iter().zip(ranker.executed_q(&policy, &batch, &normalised)) {
                scores.entry(r.id.index).or_default().push(q);
            }
        }
        let chunks = tch::no_grad(|| policy.env_actions(&normalised));
        let render = if running.iter().any(|r| r.record) { Render::Every } else { Render::Last };
        Ok(Decision::plain(env_chunks(&spec, &chunks), render))
    };
    let seeds = consecutive_seeds(options.seed, options.episodes);
    let tally = run_episodes(&mut envs, &seeds, actor, &mut sink, &|| false)?;
    sink.progress.finish();
    if let (Some(path), false) = (&options.video, sink.video_frames.is_empty()) {
        write_gif(path, &sink.video_frames, spec.image_size as u32)?;
    }
    let weights = match weights {
        Weights::Ema => "ema",
        Weights::Online => "online",
    };
    let seconds = started_at.elapsed().as_secs_f64();
    let mut report =
        EvalReport::of(dir, weights, options.best_of_n, options.task, sink.results, tally.env_steps, seconds);
    if options.critic_calibration {
        let mut outcomes: Vec<(bool, Vec<f64>)> = Vec::with_capacity(report.per_episode.len());
        for result in &mut report.per_episode {
            let q = scores.remove(&result.episode).unwrap_or_default();
            result.critic_q = Some(q.iter().map(|&v| v as f32).collect());
            outcomes.push((result.success, q));
        }
        report.critic_calibration = Some(calibration(&outcomes));
    }
    if options.q_ascent > 0.0 {
        report.q_ascent = Some(ascent.report(options.q_ascent, options.ascent_direction));
    }
    if options.best_of_n > 1 {
        let (q_std_within_state, q_std_across_states) = q_spread.stds();
        report.best_of_n_ranking = Some(Ranking {
            rank_by: options.rank_by,
            spread_ratio: spread.0 / spread.1.max(f64::MIN_POSITIVE),
            q_std_within_state,
            q_std_across_states,
        });
    }
    Ok(report)
}

/// Frames (u8 RGB, size×size) → an animated GIF at 20 frames per second (the control rate).
fn write_gif(path: &Path, frames: &[Vec<u8>], size: u32) -> Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Frame, RgbaImage};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(crate::error::io_at(parent))?;
    }
    let file = std::fs::File::create(path).map_err(crate::error::io_at(path))?;
    let mut encoder = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    let gif_error = |e: image::ImageError| Error::Io { path: path.into(), source: std::io::Error::other(e) };
    encoder.set_repeat(Repeat::Infinite).map_err(gif_error)?;
    for rgb in frames {
        let rgba: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        let image = RgbaImage::from_raw(size, size, rgba).expect("frame size matches");
        encoder.encode_frame(Frame::from_parts(image, 0, 0, Delay::from_numer_denom_ms(50, 1))).map_err(gif_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_evaluation_reports_plus_zero() {
        let report = EvalReport::of(PathBuf::from("ckpt"), "ema", 1, Task::Lift, vec![], 0, 0.0);
        assert!(report.mean_episode_length == 0.0 && report.mean_episode_length.is_sign_positive());
        assert_eq!(format!("{:.0}", report.mean_episode_length), "0");
    }

    #[test]
    fn wilson_reference_values() {
        // Reference (Wilson 1927, z = 1.96): 8/10 → [0.4902, 0.9433]; 0/10 → [0, 0.2775].
        let [lo, hi] = wilson_interval(8, 10);
        assert!((lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3, "{lo} {hi}");
        let [lo, hi] = wilson_interval(0, 10);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-3, "{hi}");
    }
}
