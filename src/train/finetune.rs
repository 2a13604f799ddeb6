//! RLDT fine-tuning against simulation rollouts (rldt-algorithm.md §7), top to bottom:
//! run directory and resume → actor, reference, critic and target from the pretrained
//! checkpoint → workers → per iteration: a collection round (evaluation-only on iteration 0
//! and every `eval_every`-th: plain samples, no updates), then `rounds` × (a critic batch of
//! fresh + replayed trajectories, critic steps, and from `actor_start_iteration` on, actor
//! steps on the unmasked states of a few of them), the fresh trajectories into the replay,
//! v_ref reset; metrics and an atomic checkpoint.
//!
//! Resume restarts at the iteration after the last checkpoint with every network and
//! optimizer state restored; the replay is not saved and is rebuilt from new rollouts.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rldt_datasets::random::SplitMix64;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::finetune::FinetuneConfig;
use crate::error::{io_at, Error, Result};
use crate::rl::actor::ActorStats;
use crate::rl::probe::{PlaneView, ProbeStates};
use crate::rl::replay::{Replay, Trajectory};
use crate::rl::rldt::{CriticStats, Rldt, RldtCounters};
use crate::rl::rollout::collect_round;
use crate::run_dir::{self, write_atomic, PendingCheckpoint};
use crate::sim::{SimConfig, VecEnv};
use crate::train::metrics::MetricsLog;
use crate::viz::{self, particles::Dims3, Recorder, Sink};

pub struct FinetuneOptions {
    pub config: Option<FinetuneConfig>,
    pub run_dir: PathBuf,
    pub device: Device,
    pub resume: bool,
    /// Where the rerun recording goes; None: the run's own file (`particles.rrd`, or
    /// `particles.resume-<iteration>.rrd` when resuming).
    pub recording: Option<Sink>,
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
    /// (iteration, env steps before it, success rate) of every evaluation round.
    pub evaluations: Vec<(usize, usize, f64)>,
}

const STATE_FILE: &str = "finetune_state.json";
/// The probe states of the recording (kept so a resumed run records the same states).
const PROBES_FILE: &str = "probes.safetensors";

/// Names of the A numbers of one action step (robosuite OSC_POSE per arm, else a0, a1, …).
fn action_names(action_dim: usize) -> Vec<String> {
    const OSC: [&str; 7] = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"];
    match action_dim {
        7 => OSC.iter().map(|s| s.to_string()).collect(),
        14 => (0..14).map(|i| format!("arm{}_{}", i / 7, OSC[i % 7])).collect(),
        a => (0..a).map(|i| format!("a{i}")).collect(),
    }
}

fn mean<T>(items: &[T], f: impl Fn(&T) -> f64) -> f64 {
    if items.is_empty() {
        f64::NAN
    } else {
        items.iter().map(f).sum::<f64>() / items.len() as f64
    }
}

pub fn finetune(options: FinetuneOptions) -> Result<FinetuneSummary> {
    let run_dir = options.run_dir.clone();
    let run_error = |message: String| Error::RunDir { dir: run_dir.clone(), message };

    // ---- Run directory: fresh, or resume from the latest checkpoint ---------------------
    let (config, latest) = run_dir::open_run(&run_dir, options.resume, options.config.clone(), FinetuneConfig::load)?;
    let config_path = run_dir.join("config.json");
    if config.env.stop_on_success {
        return Err(Error::Config { file: config_path.clone(), message: "field `env.stop_on_success`: fine-tuning needs full-length episodes (false): the success mask handles the steps after success".into() });
    }
    std::fs::create_dir_all(&run_dir).map_err(io_at(&run_dir))?;
    write_atomic(&config_path, serde_json::to_string_pretty(&config).expect("config serialises").as_bytes())?;
    let (schedule, rollout) = (&config.schedule, &config.rollout);

    // ---- Networks --------------------------------------------------------------------------
    let pretrained = crate::eval::resolve_checkpoint(&config.pretrained)?;
    tch::manual_seed(config.seed as i64);
    let mut rldt = Rldt::new(&pretrained, &config.critic, &config.actor, options.device)?;
    let k_steps = rldt.actor.spec().config.num_denoising_steps;
    let step_error = |message: String| Error::Config { file: config_path.clone(), message };
    config.actor.objective.check(k_steps).map_err(step_error)?;
    if let Some(&k) = rollout.exploration_steps.iter().find(|&&k| k >= k_steps) {
        return Err(step_error(format!(
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
        (start_iteration, env_steps) = (state.iteration, state.env_steps);
        eprintln!(
            "[finetune] resuming {} after iteration {start_iteration} (the replay is rebuilt from new rollouts)",
            dir.display()
        );
    }
    // Metric lines carry the 0-based iteration as `step`: keep those of completed iterations.
    let mut metrics = MetricsLog::open(&run_dir, options.resume.then_some(start_iteration as i64 - 1))?;

    // ---- Recording: probe particles, metrics, rollout frames (rerun, see `viz`) ----------
    let sink = options
        .recording
        .clone()
        .unwrap_or_else(|| Sink::File(viz::run_recording_path(&run_dir, options.resume.then_some(start_iteration))));
    let recorder =
        Recorder::open(&sink, &format!("rldt-vision:{}", run_dir.display())).map_err(|e| run_error(e.to_string()))?;
    let probes_path = run_dir.join(PROBES_FILE);
    let mut probes = if probes_path.exists() { Some(ProbeStates::load(&probes_path)?) } else { None };
    let mut planes: Vec<PlaneView> = Vec::new();
    let recording = &config.recording;

    // ---- Workers ---------------------------------------------------------------------------
    let spec = rldt.actor.spec().clone();
    let cameras = spec.obs.image_keys.iter().map(|k| k.trim_end_matches("_image").to_owned()).collect();
    let mut sim = SimConfig::for_task(config.env.task, cameras, spec.image_size.max(1) as usize);
    sim.horizon = config.env.horizon;
    sim.stop_on_success = false;
    sim.mujoco_gl = config.env.mujoco_gl.clone();
    sim.init_timeout_s = config.env.init_timeout_s;
    sim.step_timeout_s = config.env.step_timeout_s;
    let mut envs = VecEnv::new(&sim, rollout.envs).map_err(|e| Error::Sim(Box::new(e)))?;

    let names = action_names(spec.action_dim as usize);
    let dims3 = Dims3 {
        indices: recording.view_3d_dims,
        names: recording.view_3d_dims.map(|i| format!("{} (step {})", names[i % names.len()], i / names.len())),
    };

    // ---- The loop --------------------------------------------------------------------------
    let mut replay = Replay::new(schedule.replay_trajectories);
    let progress = ProgressBar::new(schedule.iterations as u64).with_position(start_iteration as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "[finetune] {bar:30} {pos}/{len} iterations · {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("template"),
    );
    let mut evaluations = Vec::new();
    let mut last_checkpoint = latest.clone();
    for iteration in start_iteration..schedule.iterations {
        let mut rng = SplitMix64::stream(config.seed, iteration as u64);
        tch::manual_seed((rng.next_u64() >> 1) as i64);
        let eval_only = iteration % schedule.eval_every == 0;
        // A NaN or exploding loss stops the run; the last checkpoint is left as it was.
        let diverged = |error: Error| match error {
            Error::NonFinite { what, value, .. } => Error::NonFinite {
                step: iteration as i64,
                what,
                value,
                checkpoints: run_dir::checkpoints_dir(&run_dir),
            },
            other => other,
        };

        progress.set_message(format!(
            "iteration {iteration}: {}",
            if eval_only { "evaluation rollouts" } else { "rollouts" }
        ));
        let started = Instant::now();
        let base_seed = config.seed.wrapping_mul(1_000_003).wrapping_add(iteration as u64 * 10_000);
        let round = collect_round(
            &mut envs,
            &rldt.actor,
            rollout.episodes_per_env,
            (!eval_only).then_some(rollout.exploration_steps.as_slice()),
            base_seed,
        )?;
        let rollout_s = started.elapsed().as_secs_f64();
        let success_rate = round.successes as f64 / round.episodes.max(1) as f64;
        let steps_before = env_steps;
        env_steps += round.env_steps;
        let phase = if eval_only { "eval" } else { "rollout" };
        let round_values = [
            (&format!("{phase}/success_rate") as &str, success_rate),
            (&format!("{phase}/episodes"), round.episodes as f64),
            ("rollout/exploration_gap", round.mean_gap),
            ("rollout/worker_failures", round.worker_failures as f64),
            ("env_steps", env_steps as f64),
            ("time/rollout_s", rollout_s),
        ];
        metrics.log(iteration as i64, &round_values)?;
        recorder.set_time(iteration as i64, Some(env_steps as i64));
        recorder.metrics(&round_values);
        if recorder.is_on() {
            // Probe states: chosen once, from the first round (an evaluation on a fresh run).
            if probes.is_none() && recording.probe_states > 0 && !round.trajectories.is_empty() {
                let chosen = ProbeStates::from_trajectories(
                    &round.trajectories,
                    recording.probe_states,
                    spec.image_size.max(0) as usize,
                );
                chosen.save(&probes_path)?;
                probes = Some(chosen);
            }
            if let (Some(probes), 0) = (&probes, planes.len()) {
                viz::layout::finetune(&recorder, probes.count, &spec.obs.image_keys);
            }
            // A subsample of one episode's frames with the first executed step of each chunk.
            if let (Some(first), true) = (round.trajectories.first(), recording.rollout_frame_every > 0) {
                let (a, d) = (spec.action_dim as usize, first.actions.len() / first.chunks.max(1));
                let frame = (spec.image_size * spec.image_size * 3) as usize;
                for t in (0..first.chunks).step_by(recording.rollout_frame_every) {
                    recorder.set_time(
                        iteration as i64,
                        Some((steps_before + t * spec.config.exec_horizon as usize) as i64),
                    );
                    let cameras: Vec<(&str, &[u8])> = spec
                        .obs
                        .image_keys
                        .iter()
                        .zip(&first.images)
                        .map(|(key, images)| (key.as_str(), &images[t * frame..(t + 1) * frame]))
                        .collect();
                    recorder.rollout_frame(
                        &cameras,
                        spec.image_size as usize,
                        &first.actions[t * d..t * d + a],
                        &names,
                    );
                }
                recorder.set_time(iteration as i64, Some(env_steps as i64));
            }
        }
        if eval_only {
            evaluations.push((iteration, steps_before, success_rate));
        } else if round.trajectories.is_empty() {
            eprintln!(
                "[finetune] iteration {iteration}: no complete trajectory (every worker failed); skipping updates"
            );
        } else {
            let fresh: &[Trajectory] = &round.trajectories;
            let (mut critic_stats, mut actor_stats): (Vec<CriticStats>, Vec<ActorStats>) = (Vec::new(), Vec::new());
            let (mut critic_s, mut actor_s) = (0.0, 0.0);
            for r in 0..schedule.rounds {
                progress.set_message(format!("iteration {iteration}: round {}/{}", r + 1, schedule.rounds));
                let want = schedule.critic_batch_trajectories;
                let n_fresh = if replay.is_empty() {
                    want
                } else {
                    ((want as f64 * schedule.fresh_fraction).round() as usize).min(want)
                };
                let mut batch: Vec<&Trajectory> = (0..n_fresh).map(|_| &fresh[rng.below(fresh.len())]).collect();
                batch.extend(replay.sample_balanced(want - n_fresh, &mut rng));
                rng.shuffle(&mut batch);
                let started = Instant::now();
                for _ in 0..schedule.critic_steps_per_round {
                    let stats = rldt.critic_step(&batch, config.critic.heads_lr).map_err(diverged)?;
                    critic_stats.push(stats);
                }
                critic_s += started.elapsed().as_secs_f64();
                if iteration >= schedule.actor_start_iteration {
                    let started = Instant::now();
                    for _ in 0..schedule.actor_steps_per_round {
                        let k = schedule.actor_batch_trajectories.min(batch.len());
                        let chosen: Vec<&Trajectory> = (0..k).map(|_| batch[rng.below(batch.len())]).collect();
                        if let Some(stats) = rldt.actor_step(&chosen).map_err(diverged)? {
                            actor_stats.push(stats);
                        }
                    }
                    actor_s += started.elapsed().as_secs_f64();
                }
            }
            for trajectory in round.trajectories {
                replay.push(trajectory);
            }
            rldt.end_iteration()?;
            let mut values: Vec<(&str, f64)> = vec![
                ("critic/td_loss", mean(&critic_stats, |s| s.td_loss)),
                ("critic/q_mean", mean(&critic_stats, |s| s.q_mean)),
                ("critic/target_mean", mean(&critic_stats, |s| s.target_mean)),
                ("critic/next_value_mean", mean(&critic_stats, |s| s.next_value_mean)),
                ("time/critic_s", critic_s),
                ("time/actor_s", actor_s),
                ("replay/trajectories", replay.len() as f64),
                ("replay/memory_mb", replay.memory_bytes() as f64 / 1e6),
            ];
            if !actor_stats.is_empty() {
                values.extend([
                    ("actor/loss", mean(&actor_stats, |s| s.loss)),
                    ("actor/alignment", mean(&actor_stats, |s| s.alignment)),
                    ("actor/consistency", mean(&actor_stats, |s| s.consistency)),
                    ("actor/constraint", mean(&actor_stats, |s| s.constraint)),
                    ("svgd/bandwidth", mean(&actor_stats, |s| s.bandwidth)),
                    ("svgd/alpha", mean(&actor_stats, |s| s.alpha)),
                    ("svgd/attraction_norm", mean(&actor_stats, |s| s.attraction_norm)),
                    ("svgd/repulsion_norm", mean(&actor_stats, |s| s.repulsion_norm)),
                    ("svgd/field_norm", mean(&actor_stats, |s| s.field_norm)),
                ]);
            }
            metrics.log(iteration as i64, &values)?;
            recorder.metrics(&values);
        }
        // The probes' particles after this iteration's updates (the next iteration reseeds
        // the RNG, so recording does not change training).
        if let (true, Some(probes)) = (recorder.is_on(), &probes) {
            let new_planes = planes.len();
            let snapshots = rldt.probe_snapshots(probes, &mut planes, recording.q_map_grid);
            for (i, snap) in snapshots.iter().enumerate() {
                if i >= new_planes {
                    recorder.probe_axes(
                        i,
                        &planes[i],
                        Some(&dims3),
                        &format!(
                            "A fixed state of the run (`{PROBES_FILE}`), recorded after every iteration's updates."
                        ),
                    );
                    for (camera, key) in spec.obs.image_keys.iter().enumerate() {
                        recorder.image(&format!("probes/{i}/camera/{key}"), probes.image(camera, i), probes.image_size);
                    }
                }
                recorder.probe(i, snap, &planes[i], Some(&dims3));
            }
        }
        progress.inc(1);
        let done = iteration + 1;
        if done % config.checkpoint.every == 0 || done == schedule.iterations {
            let pending = PendingCheckpoint::begin(&run_dir, done as i64)?;
            let counters = rldt.save(&pending.path(""))?;
            let state = serde_json::to_string_pretty(&FinetuneState { iteration: done, env_steps, counters })
                .expect("state serialises");
            write_atomic(&pending.path(STATE_FILE), state.as_bytes())?;
            last_checkpoint = Some(pending.commit(config.checkpoint.keep)?);
        }
    }
    progress.finish();
    recorder.flush().map_err(|e| run_error(e.to_string()))?;
    let checkpoint = last_checkpoint.ok_or_else(|| run_error("no checkpoint was written".into()))?;
    Ok(FinetuneSummary {
        run_dir,
        checkpoint,
        recording: match sink {
            Sink::File(path) => path,
            _ => PathBuf::new(),
        },
        iterations: schedule.iterations,
        resumed_from: options.resume.then_some(start_iteration),
        env_steps,
        evaluations,
    })
}
