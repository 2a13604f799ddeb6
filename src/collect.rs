//! `rldt-vision collect`: scripted-expert demonstrations written as Robomimic HDF5.
//!
//! W workers run episodes on the episode engine (`crate::episodes`; episode e uses seed
//! `seed + e`); the task's scripted
//! expert (privileged state, `scripts/rldt_sim/experts.py`) acts in chunks of steps, every step
//! rendered and its MuJoCo state recorded. Each finished episode that succeeded (or every
//! episode with `keep_failures`) becomes `data/demo_N` with `actions`, `rewards`, `dones`,
//! `states`, `obs/*` (cameras + low-dim keys), optionally `next_obs/*`, and `model_file`; the
//! masks are rewritten and the file flushed after every demo, so an interrupted collect
//! leaves a valid file with the demos done so far. Ctrl-C or SIGTERM (when `stop_on_signal`)
//! ends the collection at the next chunk boundary, between writes; the summary says
//! `interrupted` and the CLI exits 130. An existing `--out` is refused unless `--force`.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use rldt_datasets::writer::{split_train_valid, DemoRecord, ObsArray, RobomimicWriter};

use crate::episodes::{
    consecutive_seeds, run_episodes, Decision, Ending, EpisodeEnvs, EpisodeId, EpisodeSink, Running,
};
use crate::error::{Error, Result};
use crate::sim::{Action, ChunkOutcome, Observation, Render, SimConfig, Task, VecEnv};

/// What to collect; the flags of `rldt-vision collect`.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectOptions {
    #[arg(long, value_enum)]
    pub task: Task,
    #[arg(long)]
    pub episodes: usize,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Cameras, comma-separated (robomimic image datasets: agentview,robot0_eye_in_hand);
    /// `--cameras ""` for none (low-dim data only, no rendering).
    #[arg(long, value_delimiter = ',', default_value = "agentview")]
    pub cameras: Vec<String>,
    #[arg(long, default_value_t = 84)]
    pub image_size: usize,
    /// MuJoCo's headless GL backend.
    #[arg(long, default_value = "egl")]
    pub mujoco_gl: String,
    /// Seed of the first episode; episode e uses seed + e.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Std of Gaussian noise added to the expert's actions (then clipped to [−1, 1]).
    #[arg(long, default_value_t = 0.0)]
    pub noise: f64,
    /// Also write failed episodes (default: successful ones only).
    #[arg(long)]
    pub keep_failures: bool,
    /// Also write next_obs/* (doubles the file size).
    #[arg(long)]
    pub next_obs: bool,
    /// Also store each object observable as its own key (`cube_pos`, `SquareNut_pos`, …)
    /// beside `object`, which holds them concatenated. Without it the low-dim keys are exactly
    /// robomimic's env wrapper's (`object` and `robot<i>_*`); with it the extra keys are
    /// listed in `data.attrs["rldt_extra_obs_keys"]`.
    #[arg(long)]
    pub object_keys: bool,
    /// Replace `--out` if it exists (without it, an existing file is refused, never touched).
    #[arg(long)]
    pub force: bool,
    /// Expert steps per request.
    #[arg(skip = 20usize)]
    pub steps_per_request: usize,
    /// Install a Ctrl-C / SIGTERM handler that stops cleanly (the CLI; not library callers).
    #[arg(skip = true)]
    pub stop_on_signal: bool,
}

impl CollectOptions {
    /// robomimic's conventions for the task (stop at success), with these cameras.
    pub fn sim(&self) -> SimConfig {
        let cameras = self.cameras.iter().filter(|c| !c.is_empty()).cloned().collect();
        let mut sim = SimConfig::for_task(self.task, cameras, self.image_size);
        sim.mujoco_gl = self.mujoco_gl.clone();
        sim
    }
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
    first_obs: Observation,
    frames: Vec<Observation>,
    actions: Vec<Vec<f64>>,
    rewards: Vec<f64>,
    successes: Vec<bool>,
    states: Vec<Vec<f64>>,
    model_xml: Option<String>,
}

/// The collection's sink: every finished episode that succeeded (or every one with
/// `keep_failures`) is written as the next demo, masks rewritten and the file flushed.
struct DemoSink<'a> {
    options: &'a CollectOptions,
    writer: RobomimicWriter,
    progress: ProgressBar,
    successes: usize,
    finished: usize,
    success_steps: usize,
}

impl DemoSink<'_> {
    fn advance(&mut self) {
        self.finished += 1;
        self.progress.inc(1);
        self.progress.set_message(format!(
            "{}/{} successful, {} written",
            self.successes,
            self.finished,
            self.writer.demo_names().len()
        ));
    }
}

impl EpisodeSink for DemoSink<'_> {
    type Record = Recording;
    type Extra = ();

    fn start(&mut self, id: EpisodeId, first: &Observation, envs: &mut dyn EpisodeEnvs) -> Result<Recording> {
        let model_xml = Some(envs.model_xml(id.worker).map_err(|e| Error::Sim(Box::new(e)))?);
        Ok(Recording {
            first_obs: first.clone(),
            frames: vec![],
            actions: vec![],
            rewards: vec![],
            successes: vec![],
            states: vec![],
            model_xml,
        })
    }

    fn chunk(&mut self, recording: &mut Recording, _: (), outcome: &ChunkOutcome) -> Result<()> {
        recording.frames.extend_from_slice(&outcome.frames);
        recording.actions.extend_from_slice(&outcome.actions);
        recording.rewards.extend_from_slice(&outcome.rewards);
        recording.successes.extend_from_slice(&outcome.successes);
        recording.states.extend_from_slice(&outcome.states);
        Ok(())
    }

    fn finish(&mut self, _: EpisodeId, recording: Recording, ending: Ending) -> Result<()> {
        if ending.success {
            self.successes += 1;
            self.success_steps += recording.actions.len();
        }
        if (ending.success || self.options.keep_failures) && !recording.actions.is_empty() {
            let mut record = demo_record(recording, self.options.next_obs);
            if !self.options.object_keys {
                record.obs.retain(|(key, _)| is_robomimic_obs_key(key));
                record.next_obs.retain(|(key, _)| is_robomimic_obs_key(key));
            } else if self.writer.demo_names().is_empty() {
                let extra: Vec<&String> =
                    record.obs.iter().map(|(key, _)| key).filter(|key| !is_robomimic_obs_key(key)).collect();
                self.writer.write_data_attr("rldt_extra_obs_keys", &serde_json::to_string(&extra).expect("names"))?;
            }
            self.writer.write_demo(&record)?;
            let names = self.writer.demo_names().to_vec();
            self.writer.write_masks(&split_train_valid(&names, 10))?;
        }
        self.advance();
        Ok(())
    }

    fn failed(&mut self, _: EpisodeId, _: Ending, _: &crate::sim::SimError) -> Result<()> {
        self.advance();
        Ok(())
    }
}

pub fn collect(options: &CollectOptions) -> Result<CollectSummary> {
    let sim_error = |e: crate::sim::SimError| Error::Sim(Box::new(e));
    refuse_existing_output(&options.out, options.force)?;
    let sim = options.sim();
    let mut envs = VecEnv::new(&sim, options.workers.max(1).min(options.episodes.max(1))).map_err(sim_error)?;
    if let Some(parent) = options.out.parent() {
        std::fs::create_dir_all(parent).map_err(crate::error::io_at(parent))?;
    }
    let writer = RobomimicWriter::create(&options.out, &sim.env_args().to_string())?;
    let progress = ProgressBar::new(options.episodes as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "[collect] {bar:30} {pos}/{len} episodes · {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("template"),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if options.stop_on_signal {
        let stop = stop.clone();
        // Fails only if a handler is already installed (a second collect in one process).
        let _ = ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::SeqCst));
    }
    let interrupted = || stop.load(std::sync::atomic::Ordering::SeqCst);
    let mut sink = DemoSink { options, writer, progress, successes: 0, finished: 0, success_steps: 0 };
    // The expert acts `steps_per_request` steps at a time; its noise seed depends on the
    // episode's seed and the steps it has taken, so an episode does not depend on its worker.
    let expert = |running: &[&Running<Recording>]| {
        let actions = running
            .iter()
            .map(|r| Action::Expert {
                steps: options.steps_per_request,
                noise: options.noise,
                noise_seed: r.id.seed.wrapping_mul(1_000_003).wrapping_add(r.record.actions.len() as u64),
                record_states: true,
            })
            .collect();
        Ok(Decision::plain(actions, Render::Every))
    };
    let seeds = consecutive_seeds(options.seed, options.episodes);
    let tally = run_episodes(&mut envs, &seeds, expert, &mut sink, &interrupted)?;
    sink.progress.finish();
    let writer = sink.writer;
    if tally.stopped {
        eprintln!("[collect] interrupted: keeping the {} demos written so far", writer.demo_names().len());
    }
    let written = writer.demo_names().len();
    let names = writer.demo_names().to_vec();
    writer.finish(&split_train_valid(&names, 10))?;
    Ok(CollectSummary {
        interrupted: tally.stopped,
        episodes: tally.episodes,
        successes: tally.successes,
        written,
        mean_success_length: sink.success_steps as f64 / tally.successes.max(1) as f64,
        worker_failures: tally.worker_failures,
    })
}

/// The observation keys robomimic's robosuite wrapper (`EnvRobosuite.get_observation`)
/// produces: camera images (`<camera>_image`), `object` (robosuite's `object-state`) and every
/// robot observable (`robot<i>_…`; `robot<i>_proprio-state` never reaches here).
pub fn is_robomimic_obs_key(key: &str) -> bool {
    let robot_key = key.strip_prefix("robot").and_then(|rest| rest.split_once('_')).is_some_and(|(index, name)| {
        !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
    });
    key == "object" || key.ends_with("_image") || robot_key
}

/// An existing `out` is never overwritten silently: `force` must say so. The check comes
/// before the simulator starts, so a refused collect costs nothing and touches nothing.
pub fn refuse_existing_output(out: &std::path::Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(out) {
        Ok(_) if force => Ok(()),
        Ok(metadata) => Err(Error::Usage(format!(
            "--out {} already exists ({} bytes); pass --force to replace it, or choose another --out",
            out.display(),
            metadata.len()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::error::io_at(out)(e)),
    }
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

#[cfg(test)]
mod tests {
    use super::is_robomimic_obs_key;

    #[test]
    fn robomimic_keys_are_object_robots_and_cameras() {
        for key in ["object", "robot0_eef_pos", "robot1_gripper_qpos", "robot0_joint_pos_cos", "agentview_image"] {
            assert!(is_robomimic_obs_key(key), "{key}");
        }
        for key in
            ["cube_pos", "SquareNut_pos", "SquareNut_to_robot0_eef_quat", "gripper_to_cube_pos", "robot_x", "robotA_x"]
        {
            assert!(!is_robomimic_obs_key(key), "{key}");
        }
    }
}
