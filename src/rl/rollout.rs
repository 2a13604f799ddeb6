//! One collection round of fine-tuning (docs/algorithm.md §6–§7) on the episode engine
//! (`crate::episodes`): one episode per seed; at each chunk boundary the policy samples one
//! chunk for all running episodes as one batch (features once per state). A training round
//! ([`Sampling::Explore`]) draws x_0 from libtorch's RNG and adds the extrapolation-gap noise;
//! an evaluation round ([`Sampling::Evaluate`]) samples plain chunks from x_0 drawn per
//! (episode seed, step), exactly as `rldt-vision eval` does. The first Ta actions are
//! denormalised, clipped to [−1, 1] and executed (cameras render at the chunk's end only). Each finished episode becomes a [`Trajectory`]; the round's rewards are
//! then shaped together (§3, [`shape_round`]). An episode cut by a worker failure counts as
//! an unsuccessful episode and gives no trajectory (the engine's failure policy).

use tch::{Device, Kind, Tensor};

use super::exploration::explore;
use super::returns::shape_rewards_with_scale;
use super::trajectory::Trajectory;
use crate::episodes::{run_episodes, Decision, Ending, EpisodeEnvs, EpisodeId, EpisodeSink, Running};
use crate::error::{Error, Result};
use crate::eval::EpisodeResult;
use crate::policy::env_obs::env_chunks;
use crate::policy::frames::Frames;
use crate::policy::FlowPolicy;
use crate::sim::{ChunkOutcome, Observation, Render, SimError, VecEnv};

/// How a round samples its chunks.
#[derive(Debug, Clone, Copy)]
pub enum Sampling<'a> {
    /// Training: x_0 from libtorch's RNG, exploration noise scaled by the extrapolation gap
    /// of these denoising steps (§6).
    Explore(&'a [i64]),
    /// Evaluation: plain ODE samples from x_0 drawn per (episode seed, step), as `eval`.
    Evaluate,
}

#[derive(Debug, Default)]
pub struct RoundOutcome {
    pub trajectories: Vec<Trajectory>,
    /// Episodes run, failed ones included (as unsuccessful).
    pub episodes: usize,
    pub successes: usize,
    pub env_steps: usize,
    pub worker_failures: usize,
    /// Mean exploration gap d over executed chunks (0 without exploration).
    pub mean_gap: f64,
    /// One line per episode, in episode order (failed ones included).
    pub per_episode: Vec<EpisodeResult>,
}

/// The round's sink: frames and executed chunks into one [`Trajectory`] per episode.
struct TrajectorySink<'a> {
    policy: &'a FlowPolicy,
    finished: Vec<Trajectory>,
    results: Vec<EpisodeResult>,
}

impl EpisodeSink for TrajectorySink<'_> {
    type Record = Trajectory;
    /// The executed part of the chunk, normalised: [Ta·A].
    type Extra = Vec<f32>;

    fn start(&mut self, _: EpisodeId, first: &Observation, _: &mut dyn EpisodeEnvs) -> Result<Trajectory> {
        let mut frames = Frames::new(self.policy.spec());
        frames.push(self.policy.spec(), first).map_err(Error::Observation)?;
        Ok(Trajectory::start(frames))
    }

    fn chunk(&mut self, trajectory: &mut Trajectory, executed: Vec<f32>, outcome: &ChunkOutcome) -> Result<()> {
        let reward = outcome.rewards.iter().sum::<f64>() as f32;
        let success = outcome.successes.iter().any(|&s| s);
        trajectory.push_chunk(&executed, reward, success, outcome.done || outcome.truncated);
        trajectory.frames.push(self.policy.spec(), &outcome.obs).map_err(Error::Observation)
    }

    fn finish(&mut self, id: EpisodeId, trajectory: Trajectory, ending: Ending) -> Result<()> {
        self.finished.push(trajectory);
        self.results.push(EpisodeResult::of(id, ending, None));
        Ok(())
    }

    fn failed(&mut self, id: EpisodeId, ending: Ending, error: &SimError) -> Result<()> {
        self.results.push(EpisodeResult::of(id, ending, Some(error)));
        Ok(())
    }
}

/// Runs the round: episode e uses `seeds[e]`.
pub fn collect_round(
    envs: &mut VecEnv,
    policy: &FlowPolicy,
    seeds: &[u64],
    sampling: Sampling,
) -> Result<RoundOutcome> {
    let spec = policy.spec();
    let (exec, k_steps) = (spec.config.exec_horizon * spec.action_dim, spec.config.num_denoising_steps);
    let (mut gap_sum, mut gap_count) = (0.0, 0usize);
    let actor = |running: &[&Running<Trajectory>]| {
        let states: Vec<(&Trajectory, usize)> = running.iter().map(|r| (&r.record, r.record.chunks)).collect();
        let batch = Trajectory::states(&states, policy.device());
        let chunk = tch::no_grad(|| {
            let cond = policy.condition(&batch, false);
            match sampling {
                Sampling::Explore(steps) => {
                    let chain = policy.sample_chain(&cond, &policy.initial_noise(running.len() as i64, false));
                    let (chunk, gaps) = explore(policy, &chain, &cond, steps);
                    gap_sum += gaps.sum(Kind::Double).double_value(&[]);
                    gap_count += running.len();
                    chunk
                }
                Sampling::Evaluate => {
                    let keys: Vec<(u64, usize)> = running.iter().map(|r| (r.id.seed, r.steps)).collect();
                    policy.sample_chain(&cond, &policy.episode_noise(&keys)).get(k_steps)
                }
            }
        });
        let executed: Vec<f32> =
            chunk.narrow(1, 0, exec).to_device(Device::Cpu).contiguous().view([-1]).try_into().expect("f32");
        Ok(Decision {
            actions: env_chunks(spec, &policy.env_actions(&chunk)),
            extras: executed.chunks_exact(exec as usize).map(<[f32]>::to_vec).collect(),
            render: Render::Last,
        })
    };
    let mut sink = TrajectorySink { policy, finished: Vec::new(), results: Vec::new() };
    let tally = run_episodes(envs, seeds, actor, &mut sink, &|| false)?;
    let mut trajectories = sink.finished;
    shape_round(&mut trajectories);
    let mut per_episode = sink.results;
    per_episode.sort_by_key(|r| r.episode);
    Ok(RoundOutcome {
        trajectories,
        episodes: tally.episodes,
        successes: tally.successes,
        env_steps: tally.env_steps,
        worker_failures: tally.worker_failures,
        mean_gap: if gap_count > 0 { gap_sum / gap_count as f64 } else { 0.0 },
        per_episode,
    })
}

/// §3 over one collection round: change of reward, divided by one scale for the whole round
/// (max(1, the largest raw chunk reward in it)), success mask and dones.
pub fn shape_round(trajectories: &mut [Trajectory]) {
    let scale = trajectories.iter().flat_map(|t| t.raw_rewards.iter().copied()).fold(1.0f32, f32::max) as f64;
    for trajectory in trajectories {
        let rewards = Tensor::from_slice(&trajectory.raw_rewards).view([1, -1]);
        let dones = Tensor::from_slice(&trajectory.raw_dones).view([1, -1]);
        let shaped = shape_rewards_with_scale(&rewards, &dones, scale);
        trajectory.rewards = shaped.rewards.view([-1]).try_into().expect("f32");
        trajectory.mask = shaped.mask.view([-1]).try_into().expect("f32");
        trajectory.dones = shaped.dones.view([-1]).try_into().expect("f32");
    }
}
