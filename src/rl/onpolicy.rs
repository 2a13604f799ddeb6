//! A collection round of the PPO baselines (docs/baselines.md) on the episode engine
//! (`crate::episodes`): at each chunk boundary the learner samples one chunk for all running
//! episodes as one batch and returns, per episode, what its update needs later (a ReinFlow
//! chain and its log-likelihood, FPO's (τ, ε) draws, the value V(s)); the engine hands those
//! back with the chunk's outcome. Each finished episode becomes an [`OnPolicyTrajectory`]; an
//! episode cut by a worker failure counts as unsuccessful and gives none (the engine's
//! failure policy).
//!
//! Rewards are the raw sparse chunk rewards (the sum of the chunk's per-step rewards, 1 at
//! every successful step of a full-length episode), as DPPO and ReinFlow use them, divided by
//! a running return scale at update time (`ppo::RunningReturnScale`).

use tch::{Device, Tensor};

use super::trajectory::Trajectory;
use crate::episodes::{run_episodes, Decision, Ending, EpisodeEnvs, EpisodeId, EpisodeSink, Running};
use crate::error::{Error, Result};
use crate::eval::EpisodeResult;
use crate::policy::env_obs::env_chunks;
use crate::policy::frames::Frames;
use crate::policy::{FlowPolicy, ObsBatch};
use crate::sim::{ChunkOutcome, Observation, Render, SimError, VecEnv};

/// What the learner keeps of one sampled chunk.
#[derive(Debug, Clone, Default)]
pub struct ChunkSample {
    /// The executed part of the chunk, normalised [Ta·A].
    pub executed: Vec<f32>,
    /// Algorithm-specific numbers needed to score the chunk again at update time (ReinFlow:
    /// the chain [(K' + 1)·D]; FPO: the action and its (τ, ε) draws).
    pub replay: Vec<f32>,
    /// log π_old of the chunk (ReinFlow), or the old per-draw losses' summary (FPO).
    pub log_prob: f32,
    /// V_old(s) at the chunk's start.
    pub value: f32,
}

/// One episode of a PPO round.
#[derive(Debug, Clone, Default)]
pub struct OnPolicyTrajectory {
    /// Frames, executed chunks, raw rewards and ends (`shaped` fields unused here).
    pub trajectory: Trajectory,
    /// [T] per chunk: replay numbers, old log-likelihoods and values.
    pub replay: Vec<Vec<f32>>,
    pub log_probs: Vec<f32>,
    pub values: Vec<f32>,
}

impl OnPolicyTrajectory {
    pub fn chunks(&self) -> usize {
        self.trajectory.chunks
    }
}

/// The round's outcome.
#[derive(Debug, Default)]
pub struct OnPolicyRound {
    pub trajectories: Vec<OnPolicyTrajectory>,
    pub episodes: usize,
    pub successes: usize,
    pub env_steps: usize,
    pub worker_failures: usize,
    pub per_episode: Vec<EpisodeResult>,
}

struct OnPolicySink<'a> {
    policy: &'a FlowPolicy,
    finished: Vec<OnPolicyTrajectory>,
    results: Vec<EpisodeResult>,
}

impl EpisodeSink for OnPolicySink<'_> {
    type Record = OnPolicyTrajectory;
    type Extra = ChunkSample;

    fn start(&mut self, _: EpisodeId, first: &Observation, _: &mut dyn EpisodeEnvs) -> Result<OnPolicyTrajectory> {
        let mut frames = Frames::new(self.policy.spec());
        frames.push(self.policy.spec(), first).map_err(Error::Observation)?;
        Ok(OnPolicyTrajectory { trajectory: Trajectory::start(frames), ..Default::default() })
    }

    fn chunk(&mut self, record: &mut OnPolicyTrajectory, sample: ChunkSample, outcome: &ChunkOutcome) -> Result<()> {
        let reward = outcome.rewards.iter().sum::<f64>() as f32;
        let success = outcome.successes.iter().any(|&s| s);
        record.trajectory.push_chunk(&sample.executed, reward, success, outcome.done || outcome.truncated);
        record.replay.push(sample.replay);
        record.log_probs.push(sample.log_prob);
        record.values.push(sample.value);
        record.trajectory.frames.push(self.policy.spec(), &outcome.obs).map_err(Error::Observation)
    }

    fn finish(&mut self, id: EpisodeId, record: OnPolicyTrajectory, ending: Ending) -> Result<()> {
        self.finished.push(record);
        self.results.push(EpisodeResult::of(id, ending, None));
        Ok(())
    }

    fn failed(&mut self, id: EpisodeId, ending: Ending, error: &SimError) -> Result<()> {
        self.results.push(EpisodeResult::of(id, ending, Some(error)));
        Ok(())
    }
}

/// Runs one episode per seed; `sample(obs)` answers, for a batch of B running episodes, the
/// normalised chunks [B, D] to execute and one [`ChunkSample`] each (its `executed` is filled
/// in here).
pub fn collect_on_policy_round(
    envs: &mut VecEnv,
    policy: &FlowPolicy,
    seeds: &[u64],
    mut sample: impl FnMut(&ObsBatch) -> Result<(Tensor, Vec<ChunkSample>)>,
) -> Result<OnPolicyRound> {
    let spec = policy.spec();
    let exec = spec.config.exec_horizon * spec.action_dim;
    let actor = |running: &[&Running<OnPolicyTrajectory>]| {
        let states: Vec<(&Trajectory, usize)> =
            running.iter().map(|r| (&r.record.trajectory, r.record.trajectory.chunks)).collect();
        let batch = Trajectory::states(&states, policy.device());
        let (chunks, mut samples) = sample(&batch)?;
        let executed: Vec<f32> =
            chunks.narrow(1, 0, exec).to_device(Device::Cpu).contiguous().view([-1]).try_into().expect("f32");
        for (sample, numbers) in samples.iter_mut().zip(executed.chunks_exact(exec as usize)) {
            sample.executed = numbers.to_vec();
        }
        Ok(Decision { actions: env_chunks(spec, &policy.env_actions(&chunks)), extras: samples, render: Render::Last })
    };
    let mut sink = OnPolicySink { policy, finished: Vec::new(), results: Vec::new() };
    let tally = run_episodes(envs, seeds, actor, &mut sink, &|| false)?;
    let mut per_episode = sink.results;
    per_episode.sort_by_key(|r| r.episode);
    Ok(OnPolicyRound {
        trajectories: sink.finished,
        episodes: tally.episodes,
        successes: tally.successes,
        env_steps: tally.env_steps,
        worker_failures: tally.worker_failures,
        per_episode,
    })
}

/// An update's metrics from its minibatch steps' numbers: `ppo/<field>` means over the steps
/// and `ppo/minibatch_steps`, their count.
pub fn minibatch_metrics<T: serde::Serialize + Default>(steps: &[T]) -> crate::train::metrics::Metrics {
    let mut metrics = crate::train::metrics::field_means("ppo", steps);
    metrics.push(("ppo/minibatch_steps".into(), steps.len() as f64));
    metrics
}

/// What the on-policy loop (`train::onpolicy`) needs of a baseline's learner.
pub trait OnPolicyLearner {
    /// Counters saved beside the weights (optimizer steps, the return scale).
    type Counters: serde::Serialize + serde::de::DeserializeOwned;
    /// The policy that acts and is evaluated.
    fn actor(&self) -> &FlowPolicy;
    /// Chunks [B, D] to execute for the states of `obs`, and one [`ChunkSample`] each.
    fn act(&self, obs: &ObsBatch) -> (Tensor, Vec<ChunkSample>);
    /// The iteration's update on every chunk of the round (`train_actor` false during the
    /// value warm-up); its metrics (`ppo/*` means over minibatch steps, `ppo/minibatch_steps`).
    fn update(
        &mut self,
        trajectories: &[OnPolicyTrajectory],
        iteration: usize,
        train_actor: bool,
        rng: &mut rldt_datasets::random::SplitMix64,
    ) -> Result<crate::train::metrics::Metrics>;
    /// Every network and optimizer state into `dir` (a pending checkpoint).
    fn save(&self, dir: &std::path::Path) -> Result<Self::Counters>;
    fn load(&mut self, dir: &std::path::Path, counters: Self::Counters) -> Result<()>;
}

/// The round's chunks as update samples: (trajectory, chunk) pairs with their GAE advantages
/// and value targets, and the reward scale used.
pub struct Advantages {
    pub samples: Vec<(usize, usize)>,
    pub advantages: Vec<f32>,
    pub targets: Vec<f32>,
    pub reward_scale: f64,
}

/// Rewards divided by the running return scale (when `ppo.reward_scale_running`), V(s_T) of
/// every trajectory's final observation for the bootstrap, GAE(γ, λ) per trajectory (a
/// full-length episode ends at its horizon, not in a terminal state).
pub fn advantages(
    trajectories: &[OnPolicyTrajectory],
    value: &super::value::ValueNet,
    scale: &mut super::ppo::RunningReturnScale,
    ppo: &super::ppo::PpoSettings,
    device: Device,
) -> Advantages {
    let raw: Vec<&[f32]> = trajectories.iter().map(|t| t.trajectory.raw_rewards.as_slice()).collect();
    let reward_scale = if ppo.reward_scale_running { scale.update(&raw, ppo.gamma) } else { 1.0 };
    let last: Vec<(&Trajectory, usize)> = trajectories.iter().map(|t| (&t.trajectory, t.chunks())).collect();
    let bootstrap: Vec<f32> = tch::no_grad(|| value.forward_t(&Trajectory::states(&last, device), false))
        .to_device(Device::Cpu)
        .try_into()
        .expect("f32");
    let mut out = Advantages { samples: Vec::new(), advantages: Vec::new(), targets: Vec::new(), reward_scale };
    for (n, t) in trajectories.iter().enumerate() {
        let rewards: Vec<f32> = t.trajectory.raw_rewards.iter().map(|r| (*r as f64 / reward_scale) as f32).collect();
        let mut values = t.values.clone();
        values.push(bootstrap[n]);
        let (a, r) = super::ppo::gae(&rewards, &values, &vec![false; t.chunks()], ppo.gamma, ppo.gae_lambda);
        out.advantages.extend(a);
        out.targets.extend(r);
        out.samples.extend((0..t.chunks()).map(|c| (n, c)));
    }
    out
}

impl Advantages {
    /// `ppo.update_epochs` passes over the samples, each in a fresh shuffle (`rng`) cut into
    /// minibatches of `ppo.minibatch_size`; `step(rows)` runs one minibatch and returns its
    /// approximate KL; while the actor trains, the passes stop once that exceeds
    /// `ppo.target_kl`.
    pub fn minibatch_passes(
        &self,
        ppo: &super::ppo::PpoSettings,
        train_actor: bool,
        rng: &mut rldt_datasets::random::SplitMix64,
        mut step: impl FnMut(&[usize]) -> Result<f64>,
    ) -> Result<()> {
        for _ in 0..ppo.update_epochs {
            let mut order: Vec<usize> = (0..self.samples.len()).collect();
            rng.shuffle(&mut order);
            for rows in order.chunks(ppo.minibatch_size.max(1)) {
                let approx_kl = step(rows)?;
                if train_actor && ppo.target_kl.is_some_and(|kl| approx_kl > kl) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The minibatch's states, replay numbers [B, width], old log-likelihoods, advantages and
    /// targets (each [B]) on `device`.
    pub fn minibatch(
        &self,
        trajectories: &[OnPolicyTrajectory],
        rows: &[usize],
        device: Device,
    ) -> (ObsBatch, Tensor, Tensor, Tensor, Tensor) {
        let pairs: Vec<(&Trajectory, usize)> =
            rows.iter().map(|&i| (&trajectories[self.samples[i].0].trajectory, self.samples[i].1)).collect();
        let obs = Trajectory::states(&pairs, device);
        let chunk = |i: usize| &trajectories[self.samples[i].0];
        let replay: Vec<f32> = rows.iter().flat_map(|&i| chunk(i).replay[self.samples[i].1].iter().copied()).collect();
        let replay = Tensor::from_slice(&replay).view([rows.len() as i64, -1]).to_device(device);
        let pick = |f: &dyn Fn(usize) -> f32| {
            Tensor::from_slice(&rows.iter().map(|&i| f(i)).collect::<Vec<f32>>()).to_device(device)
        };
        let old_log_prob = pick(&|i| chunk(i).log_probs[self.samples[i].1]);
        (obs, replay, old_log_prob, pick(&|i| self.advantages[i]), pick(&|i| self.targets[i]))
    }
}
