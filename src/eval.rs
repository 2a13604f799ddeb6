//! `rldt-vision eval`: success rate of a policy checkpoint in simulation.
//!
//! W workers run N episodes (episode e uses seed `seed + e`, robomimic's stop-on-success);
//! every step the policy samples one chunk for all active envs as one batch (plain ODE
//! samples from N(0, I) noise, no exploration noise), executes its first Ta actions, and the
//! cameras render only at the chunk's end. Reports the success rate with a 95% Wilson
//! interval, the mean episode length, per-episode results (seed, success, length) and a GIF
//! of chosen episodes (first camera, every step rendered for those).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tch::Device;

use crate::error::{Error, Result};
use crate::policy::checkpoint::{self, Weights};
use crate::policy::env_obs::{obs_batch, push_history, start_history};
use crate::sim::{EpisodeSchedule, Observation, Render, SimConfig, StepResult, Task, VecEnv};

pub struct EvalOptions {
    pub checkpoint: PathBuf,
    pub weights: Weights,
    pub task: Task,
    pub episodes: usize,
    pub workers: usize,
    pub seed: u64,
    pub device: Device,
    pub mujoco_gl: String,
    /// Write a GIF of these episodes (indices into 0..episodes) to `video`.
    pub video: Option<PathBuf>,
    pub video_episodes: Vec<usize>,
    pub horizon: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EpisodeResult {
    pub episode: usize,
    pub seed: u64,
    pub success: bool,
    pub length: usize,
    /// Set when a worker failure truncated the episode.
    pub worker_failure: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub checkpoint: PathBuf,
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

/// The checkpoint directory: `path` itself, or the latest checkpoint of a run directory.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(checkpoint::SPEC_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    crate::run_dir::latest_checkpoint(path)?.ok_or_else(|| Error::RunDir {
        dir: path.into(),
        message: "neither a checkpoint (policy.json) nor a run directory with checkpoints/latest".into(),
    })
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

struct Active {
    episode: usize,
    seed: u64,
    history: VecDeque<Observation>,
    length: usize,
    success: bool,
}

pub fn evaluate(options: &EvalOptions) -> Result<EvalReport> {
    let started_at = std::time::Instant::now();
    let dir = resolve_checkpoint(&options.checkpoint)?;
    // Fine-tuning checkpoints hold the actor's weights only (no EMA): use them.
    let weights = if options.weights == Weights::Ema && !dir.join(checkpoint::EMA_WEIGHTS_FILE).exists() {
        Weights::Online
    } else {
        options.weights
    };
    let (_vs, policy) = checkpoint::load(&dir, weights, options.device)?;
    let spec = policy.spec().clone();
    let cameras: Vec<String> = spec.obs.image_keys.iter().map(|k| k.trim_end_matches("_image").to_owned()).collect();
    let mut sim = SimConfig::for_task(options.task, cameras, spec.image_size.max(1) as usize);
    sim.mujoco_gl = options.mujoco_gl.clone();
    if let Some(h) = options.horizon {
        sim.horizon = h;
    }
    let sim_error = |e: crate::sim::SimError| Error::Sim(Box::new(e));
    let mut envs = VecEnv::new(&sim, options.workers.max(1).min(options.episodes.max(1))).map_err(sim_error)?;
    let to = spec.config.obs_horizon as usize;
    let progress = ProgressBar::new(options.episodes as u64);
    progress.set_style(
        ProgressStyle::with_template("[eval] {bar:30} {pos}/{len} episodes · {msg} [{elapsed_precise}<{eta_precise}]")
            .expect("template"),
    );

    let mut active: Vec<Option<Active>> = (0..envs.len()).map(|_| None).collect();
    let mut results: Vec<EpisodeResult> = Vec::new();
    let mut video_frames: Vec<Vec<u8>> = Vec::new();
    let video_camera = spec.obs.image_keys.first().cloned();
    let mut schedule = EpisodeSchedule::new(options.episodes, options.seed);
    let mut env_steps = 0usize;
    tch::manual_seed(options.seed as i64);
    while results.len() < options.episodes {
        let seeds = schedule.seeds_for_idle(active.iter().map(Option::is_none));
        if seeds.iter().any(Option::is_some) {
            for (i, obs) in envs.reset(&seeds).map_err(sim_error)?.into_iter().enumerate() {
                if let (Some(obs), Some(seed)) = (obs, seeds[i]) {
                    let episode = schedule.episode_of(seed);
                    if options.video.is_some() && options.video_episodes.contains(&episode) {
                        if let Some(camera) = &video_camera {
                            video_frames.push(obs.images[camera].clone());
                        }
                    }
                    active[i] =
                        Some(Active { episode, seed, history: start_history(obs, to), length: 0, success: false });
                }
            }
        }
        // One batched policy call for every active env.
        let indices: Vec<usize> = (0..active.len()).filter(|&i| active[i].is_some()).collect();
        let histories: Vec<&VecDeque<Observation>> =
            indices.iter().map(|&i| &active[i].as_ref().expect("active").history).collect();
        let batch = obs_batch(&spec, &histories, options.device)
            .map_err(|message| Error::RunDir { dir: dir.clone(), message })?;
        let actions = tch::no_grad(|| {
            let cond = policy.condition(&batch, false);
            let chain = policy.sample_chain(&cond, &policy.initial_noise(indices.len() as i64, false));
            policy.env_actions(&chain.get(spec.config.num_denoising_steps))
        });
        let actions: Vec<f32> = actions.to_device(Device::Cpu).flatten(0, -1).try_into().expect("f32 actions");
        let (ta, a) = (spec.config.exec_horizon as usize, spec.action_dim as usize);
        let mut chunks: Vec<Option<Vec<Vec<f64>>>> = (0..active.len()).map(|_| None).collect();
        for (row, &i) in indices.iter().enumerate() {
            chunks[i] = Some(
                (0..ta)
                    .map(|s| actions[(row * ta + s) * a..(row * ta + s + 1) * a].iter().map(|&v| v as f64).collect())
                    .collect(),
            );
        }
        let recording = indices.iter().any(|&i| {
            options.video.is_some() && options.video_episodes.contains(&active[i].as_ref().expect("active").episode)
        });
        let outcomes = envs.step(&chunks, if recording { Render::Every } else { Render::Last }).map_err(sim_error)?;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let Some(outcome) = outcome else { continue };
            let state = active[i].as_mut().expect("active");
            let (ended, failure) = match outcome {
                StepResult::WorkerFailed(e) => (true, Some(e.to_string())),
                StepResult::Ok(out) => {
                    state.length += out.actions.len();
                    env_steps += out.actions.len();
                    state.success |= out.successes.iter().any(|&s| s);
                    if options.video_episodes.contains(&state.episode) {
                        if let Some(camera) = &video_camera {
                            video_frames.extend(out.frames.iter().map(|f| f.images[camera].clone()));
                        }
                    }
                    push_history(&mut state.history, out.obs);
                    (out.done || out.truncated, None)
                }
            };
            if ended {
                let state = active[i].take().expect("active");
                results.push(EpisodeResult {
                    episode: state.episode,
                    seed: state.seed,
                    success: state.success,
                    length: state.length,
                    worker_failure: failure,
                });
                let successes = results.iter().filter(|r| r.success).count();
                progress.inc(1);
                progress.set_message(format!("{successes}/{} successful", results.len()));
            }
        }
    }
    progress.finish();
    results.sort_by_key(|r| r.episode);
    if let (Some(path), false) = (&options.video, video_frames.is_empty()) {
        write_gif(path, &video_frames, spec.image_size as u32)?;
    }
    let successes = results.iter().filter(|r| r.success).count();
    let n = results.len();
    Ok(EvalReport {
        checkpoint: dir,
        task: options.task.name().into(),
        episodes: n,
        successes,
        success_rate: successes as f64 / n.max(1) as f64,
        success_rate_ci95: wilson_interval(successes, n),
        mean_episode_length: results.iter().map(|r| r.length as f64).sum::<f64>() / n.max(1) as f64,
        env_steps,
        seconds: started_at.elapsed().as_secs_f64(),
        per_episode: results,
    })
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
    fn wilson_reference_values() {
        // Reference (Wilson 1927, z = 1.96): 8/10 → [0.4902, 0.9433]; 0/10 → [0, 0.2775].
        let [lo, hi] = wilson_interval(8, 10);
        assert!((lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3, "{lo} {hi}");
        let [lo, hi] = wilson_interval(0, 10);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-3, "{hi}");
    }
}
