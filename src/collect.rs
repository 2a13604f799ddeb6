//! `rldt-vision collect`: scripted-expert demonstrations written as Robomimic HDF5.
//!
//! W workers run episodes in parallel (episode e uses seed `seed + e`); the task's scripted
//! expert (privileged state, `scripts/rldt_sim/experts.py`) acts in chunks of steps, every step
//! rendered and its MuJoCo state recorded. Each finished episode that succeeded (or every
//! episode with `keep_failures`) becomes `data/demo_N` with `actions`, `rewards`, `dones`,
//! `states`, `obs/*` (cameras + low-dim keys), optionally `next_obs/*`, and `model_file`; the
//! masks are rewritten and the file flushed after every demo, so an interrupted collect
//! leaves a valid file with the demos done so far. Ctrl-C or SIGTERM (when `stop_on_signal`)
//! ends the collection at the next chunk boundary, between writes.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use rldt_datasets::writer::{split_train_valid, DemoRecord, ObsArray, RobomimicWriter};

use crate::error::{Error, Result};
use crate::sim::{EpisodeSchedule, Observation, Render, SimConfig, StepResult, VecEnv};

pub struct CollectOptions {
    pub sim: SimConfig,
    pub episodes: usize,
    pub workers: usize,
    pub out: PathBuf,
    pub seed: u64,
    /// Std of Gaussian noise added to the expert's actions (then clipped to [−1, 1]).
    pub noise: f64,
    pub keep_failures: bool,
    pub next_obs: bool,
    /// Expert steps per request.
    pub steps_per_request: usize,
    /// Install a Ctrl-C / SIGTERM handler that stops cleanly (the CLI; not library callers).
    pub stop_on_signal: bool,
}

#[derive(Debug, Clone)]
pub struct CollectSummary {
    /// Stopped early by Ctrl-C / SIGTERM.
    pub interrupted: bool,
    pub episodes: usize,
    pub successes: usize,
    pub written: usize,
    pub mean_success_length: f64,
    pub worker_failures: usize,
}

/// One episode being recorded.
struct Recording {
    seed: u64,
    first_obs: Observation,
    frames: Vec<Observation>,
    actions: Vec<Vec<f64>>,
    rewards: Vec<f64>,
    successes: Vec<bool>,
    states: Vec<Vec<f64>>,
    model_xml: Option<String>,
}

pub fn collect(options: &CollectOptions) -> Result<CollectSummary> {
    let sim_error = |e: crate::sim::SimError| Error::Sim(Box::new(e));
    let mut envs = VecEnv::new(&options.sim, options.workers.max(1).min(options.episodes.max(1))).map_err(sim_error)?;
    if let Some(parent) = options.out.parent() {
        std::fs::create_dir_all(parent).map_err(crate::error::io_at(parent))?;
    }
    let mut writer = RobomimicWriter::create(&options.out, &options.sim.env_args().to_string())?;
    let progress = ProgressBar::new(options.episodes as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "[collect] {bar:30} {pos}/{len} episodes · {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("template"),
    );
    let mut schedule = EpisodeSchedule::new(options.episodes, options.seed);
    let (mut finished, mut successes, mut success_steps) = (0usize, 0usize, 0usize);
    let mut recordings: Vec<Option<Recording>> = (0..envs.len()).map(|_| None).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if options.stop_on_signal {
        let stop = stop.clone();
        // Fails only if a handler is already installed (a second collect in one process).
        let _ = ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::SeqCst));
    }
    let interrupted = || stop.load(std::sync::atomic::Ordering::SeqCst);
    while finished < options.episodes && !interrupted() {
        // Idle workers start the next episodes.
        let seeds = schedule.seeds_for_idle(recordings.iter().map(Option::is_none));
        if seeds.iter().any(Option::is_some) {
            let first = envs.reset(&seeds).map_err(sim_error)?;
            for (i, (seed, obs)) in seeds.iter().zip(first).enumerate() {
                if let (Some(seed), Some(obs)) = (seed, obs) {
                    let model_xml = Some(envs.env_mut(i).model_xml().map_err(sim_error)?);
                    recordings[i] = Some(Recording {
                        seed: *seed,
                        first_obs: obs,
                        frames: vec![],
                        actions: vec![],
                        rewards: vec![],
                        successes: vec![],
                        states: vec![],
                        model_xml,
                    });
                }
            }
        }
        let jobs: Vec<Option<(usize, f64, u64)>> = recordings
            .iter()
            .map(|r| {
                r.as_ref().map(|r| {
                    (
                        options.steps_per_request,
                        options.noise,
                        r.seed.wrapping_mul(1_000_003).wrapping_add(r.actions.len() as u64),
                    )
                })
            })
            .collect();
        let results = envs.expert(&jobs, Render::Every, true).map_err(sim_error)?;
        for (i, result) in results.into_iter().enumerate() {
            let Some(result) = result else { continue };
            let recording = recordings[i].as_mut().expect("active");
            let ended = match result {
                StepResult::WorkerFailed(_) => true, // truncated by a worker failure: dropped
                StepResult::Ok(outcome) => {
                    recording.frames.extend(outcome.frames);
                    recording.actions.extend(outcome.actions);
                    recording.rewards.extend(outcome.rewards);
                    recording.successes.extend(outcome.successes);
                    recording.states.extend(outcome.states);
                    outcome.done || outcome.truncated
                }
            };
            if !ended {
                continue;
            }
            let recording = recordings[i].take().expect("active");
            finished += 1;
            let success = recording.successes.iter().any(|&s| s);
            if success {
                successes += 1;
                success_steps += recording.actions.len();
            }
            if (success || options.keep_failures) && !recording.actions.is_empty() {
                writer.write_demo(&demo_record(recording, options.next_obs))?;
                let names = writer.demo_names().to_vec();
                writer.write_masks(&split_train_valid(&names, 10))?;
            }
            progress.inc(1);
            progress.set_message(format!("{successes}/{finished} successful, {} written", writer.demo_names().len()));
        }
    }
    progress.finish();
    if interrupted() {
        eprintln!("[collect] interrupted: keeping the {} demos written so far", writer.demo_names().len());
    }
    let written = writer.demo_names().len();
    let names = writer.demo_names().to_vec();
    writer.finish(&split_train_valid(&names, 10))?;
    Ok(CollectSummary {
        interrupted: interrupted(),
        episodes: finished,
        successes,
        written,
        mean_success_length: success_steps as f64 / successes.max(1) as f64,
        worker_failures: envs.failures.len(),
    })
}

/// Robomimic's layout: obs_t is the observation *before* action_t; next_obs_t the one after.
fn demo_record(recording: Recording, with_next_obs: bool) -> DemoRecord {
    let len = recording.actions.len();
    let observations: Vec<&Observation> =
        std::iter::once(&recording.first_obs).chain(recording.frames.iter()).collect();
    let stack = |frames: &[&Observation]| -> Vec<(String, ObsArray)> {
        let first = frames[0];
        let mut arrays = Vec::new();
        for key in first.images.keys() {
            let data: Vec<u8> = frames.iter().flat_map(|o| o.images[key].iter().copied()).collect();
            let side = ((first.images[key].len() / 3) as f64).sqrt() as usize;
            arrays.push((key.clone(), ObsArray::Image { data, height: side, width: side }));
        }
        for (key, values) in &first.lowdim {
            let data: Vec<f64> = frames.iter().flat_map(|o| o.lowdim[key].iter().copied()).collect();
            arrays.push((key.clone(), ObsArray::LowDim { data, dim: values.len() }));
        }
        arrays
    };
    let state_dim = recording.states.first().map_or(0, Vec::len);
    let last_success = recording.successes.last().copied().unwrap_or(false);
    DemoRecord {
        actions: recording.actions.iter().flatten().copied().collect(),
        action_dim: recording.actions[0].len(),
        rewards: recording.rewards.clone(),
        dones: (0..len).map(|t| (t == len - 1 && last_success) as i64).collect(),
        states: Some((recording.states.iter().flatten().copied().collect(), state_dim)),
        obs: stack(&observations[..len]),
        next_obs: if with_next_obs { stack(&observations[1..=len]) } else { Vec::new() },
        model_file: recording.model_xml,
    }
}
