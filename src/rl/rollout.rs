//! One collection round (rldt-algorithm.md §6–§7): every env runs `episodes_per_env`
//! episodes; at each chunk boundary the policy samples one chunk for all envs as one batch
//! (features once per state), exploration adds the extrapolation-gap noise (or none, for
//! evaluation rounds), the first Ta actions are denormalised, clipped to [−1, 1] and executed
//! (cameras render at the chunk's end only). Each finished episode becomes a [`Trajectory`];
//! the round's rewards are shaped together (§3). An episode cut by a worker failure is
//! dropped (the worker was restarted) and counted.

use std::collections::VecDeque;

use tch::{Device, Kind, Tensor};

use super::exploration::explore;
use super::replay::Trajectory;
use super::returns::shape_rewards_with_scale;
use crate::error::{Error, Result};
use crate::policy::env_obs::{normalized_proprio, obs_batch, push_history, start_history};
use crate::policy::FlowPolicy;
use crate::sim::{EpisodeSchedule, Observation, Render, StepResult, VecEnv};

#[derive(Debug, Default)]
pub struct RoundOutcome {
    pub trajectories: Vec<Trajectory>,
    pub episodes: usize,
    pub successes: usize,
    pub env_steps: usize,
    pub worker_failures: usize,
    /// Mean exploration gap d over executed chunks (0 without exploration).
    pub mean_gap: f64,
}

struct Running {
    history: VecDeque<Observation>,
    trajectory: Trajectory,
}

fn record_frame(trajectory: &mut Trajectory, policy: &FlowPolicy, obs: &Observation) -> Result<()> {
    for (camera, key) in policy.spec().obs.image_keys.iter().enumerate() {
        let image = obs.images.get(key).ok_or_else(|| Error::Device(format!("observation lacks camera `{key}`")))?;
        trajectory.images[camera].extend_from_slice(image);
    }
    trajectory.proprio.extend(normalized_proprio(policy.spec(), obs).map_err(Error::Device)?);
    Ok(())
}

/// Runs the round; `exploration_steps = None` samples plain chunks (evaluation).
pub fn collect_round(
    envs: &mut VecEnv,
    policy: &FlowPolicy,
    episodes_per_env: usize,
    exploration_steps: Option<&[i64]>,
    base_seed: u64,
) -> Result<RoundOutcome> {
    let sim_error = |e: crate::sim::SimError| Error::Sim(Box::new(e));
    let spec = policy.spec().clone();
    let (ta, a, k_steps) =
        (spec.config.exec_horizon as usize, spec.action_dim as usize, spec.config.num_denoising_steps);
    let device = policy.device();
    let mut schedule = EpisodeSchedule::new(envs.len() * episodes_per_env, base_seed);
    let mut running: Vec<Option<Running>> = (0..envs.len()).map(|_| None).collect();
    let mut outcome = RoundOutcome::default();
    let (mut gap_sum, mut gap_count) = (0.0, 0usize);
    let mut remaining = envs.len() * episodes_per_env;
    while remaining > 0 {
        let seeds = schedule.seeds_for_idle(running.iter().map(Option::is_none));
        if seeds.iter().any(Option::is_some) {
            for (i, obs) in envs.reset(&seeds).map_err(sim_error)?.into_iter().enumerate() {
                if let Some(obs) = obs {
                    let mut trajectory = Trajectory::empty(spec.obs.image_keys.len());
                    record_frame(&mut trajectory, policy, &obs)?;
                    running[i] =
                        Some(Running { history: start_history(obs, spec.config.obs_horizon as usize), trajectory });
                }
            }
        }
        let active: Vec<usize> = (0..running.len()).filter(|&i| running[i].is_some()).collect();
        if active.is_empty() {
            break;
        }
        let histories: Vec<&VecDeque<Observation>> =
            active.iter().map(|&i| &running[i].as_ref().expect("active").history).collect();
        let batch = obs_batch(&spec, &histories, device).map_err(Error::Device)?;
        let (chunk, gaps) = tch::no_grad(|| {
            let cond = policy.condition(&batch, false);
            let chain = policy.sample_chain(&cond, &policy.initial_noise(active.len() as i64, false));
            match exploration_steps {
                Some(steps) => {
                    let (chunk, gap) = explore(policy, &chain, &cond, steps);
                    (chunk, Some(gap))
                }
                None => (chain.get(k_steps), None),
            }
        });
        if let Some(gaps) = gaps {
            gap_sum += gaps.sum(Kind::Double).double_value(&[]);
            gap_count += active.len();
        }
        let executed: Vec<f32> =
            chunk.narrow(1, 0, (ta * a) as i64).to_device(Device::Cpu).contiguous().view([-1]).try_into().expect("f32");
        let env_actions: Vec<f32> =
            policy.env_actions(&chunk).to_device(Device::Cpu).contiguous().view([-1]).try_into().expect("f32");
        let mut chunks: Vec<Option<Vec<Vec<f64>>>> = (0..running.len()).map(|_| None).collect();
        for (row, &i) in active.iter().enumerate() {
            chunks[i] = Some(
                (0..ta)
                    .map(|s| {
                        env_actions[(row * ta + s) * a..(row * ta + s + 1) * a].iter().map(|&v| v as f64).collect()
                    })
                    .collect(),
            );
        }
        let results = envs.step(&chunks, Render::Last).map_err(sim_error)?;
        for (row, &i) in active.iter().enumerate() {
            let result = results[i].as_ref().expect("stepped");
            match result {
                StepResult::WorkerFailed(_) => {
                    running[i] = None; // dropped: the restarted worker starts a new episode
                    outcome.worker_failures += 1;
                    remaining -= 1;
                }
                StepResult::Ok(out) => {
                    let state = running[i].as_mut().expect("active");
                    let trajectory = &mut state.trajectory;
                    trajectory.actions.extend_from_slice(&executed[row * ta * a..(row + 1) * ta * a]);
                    trajectory.raw_rewards.push(out.rewards.iter().sum::<f64>() as f32);
                    trajectory.success |= out.successes.iter().any(|&s| s);
                    trajectory.chunks += 1;
                    outcome.env_steps += out.actions.len();
                    record_frame(trajectory, policy, &out.obs)?;
                    push_history(&mut state.history, out.obs.clone());
                    let ended = out.done || out.truncated;
                    trajectory.raw_dones.push(ended as i32 as f32);
                    if ended {
                        let finished = running[i].take().expect("active").trajectory;
                        outcome.episodes += 1;
                        outcome.successes += finished.success as usize;
                        outcome.trajectories.push(finished);
                        remaining -= 1;
                    }
                }
            }
        }
    }
    // §3: shape the round's rewards with one scale.
    let scale = outcome.trajectories.iter().flat_map(|t| t.raw_rewards.iter().copied()).fold(1.0f32, f32::max) as f64;
    for trajectory in &mut outcome.trajectories {
        let rewards = Tensor::from_slice(&trajectory.raw_rewards).view([1, -1]);
        let dones = Tensor::from_slice(&trajectory.raw_dones).view([1, -1]);
        let shaped = shape_rewards_with_scale(&rewards, &dones, scale);
        trajectory.rewards = shaped.rewards.view([-1]).try_into().expect("f32");
        trajectory.mask = shaped.mask.view([-1]).try_into().expect("f32");
        trajectory.dones = shaped.dones.view([-1]).try_into().expect("f32");
    }
    outcome.mean_gap = if gap_count > 0 { gap_sum / gap_count as f64 } else { 0.0 };
    Ok(outcome)
}
