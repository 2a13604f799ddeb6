//! FPO++ as an on-policy learner (Yi, Choi et al., arXiv 2602.02481; docs/baselines.md): the
//! flow policy acts by its own ODE from x_0 ~ N(0, I) (its stochasticity), stores N_mc (τ, ε)
//! draws and their CFM losses ℓ_old per chunk at rollout time, and updates with PPO-style
//! minibatch steps on the ratio of `rl::fpo_objective` (its equations and settings) plus a
//! value loss c_V·½·mean (V(s) − R)². Evaluation runs the same ODE from per-episode noise.

use std::path::Path;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::actor_value::{ActorAndValue, ActorValueCounters};
use super::onpolicy::{advantages, minibatch_metrics, ChunkSample, OnPolicyLearner, OnPolicyTrajectory};
use super::ppo::{normalize_advantages, PpoSettings};
use super::reinflow::finite;
use crate::error::Result;
use crate::policy::{flow, FlowPolicy, ObsBatch};
use crate::train::metrics::Metrics;
use rldt_datasets::random::SplitMix64;

pub use super::fpo_objective::{
    cfm_loss_quantiles, fpo_log_ratio, reduce_cfm_loss, trust_region_loss, CfmLossReduction, FpoSettings, TrustRegion,
};

/// One minibatch step's numbers (`ppo/*` metrics).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FpoStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    /// Mean ℓ_θ over the minibatch's draws (uncapped).
    pub cfm_loss: f64,
    /// Share of draws whose ℓ_θ is above `cfm_loss_clip` (0 without a cap).
    pub cfm_loss_capped: f64,
    pub approx_kl: f64,
    pub clip_fraction: f64,
    pub ratio: f64,
    /// Share of draws whose |log ρ| reached `log_ratio_clip` (one such draw adds ≈ e^5 − 6 to
    /// the approximate KL).
    pub at_log_ratio_clip: f64,
    pub actor_grad_norm: f64,
    pub value_grad_norm: f64,
    pub advantage_std: f64,
    pub value_mean: f64,
    pub return_scale: f64,
}

/// What FPO++ trains: the actor (the flow policy) and V_ψ (`rl::actor_value`).
pub struct Fpo {
    pub nets: ActorAndValue,
    pub fpo: FpoSettings,
    pub ppo: PpoSettings,
}

impl Fpo {
    /// The actor from the pretrained checkpoint's EMA weights; V's encoder from the actor's.
    pub fn new(pretrained: &Path, fpo: &FpoSettings, ppo: &PpoSettings, device: Device) -> Result<Self> {
        Ok(Self { nets: ActorAndValue::new(pretrained, ppo, None, device)?, fpo: fpo.clone(), ppo: ppo.clone() })
    }

    /// ℓ_θ of every draw (uncapped): cond [B, C], actions [B, D], τ [B, N], ε [B, N, D] → [B, N].
    fn cfm_losses(&self, cond: &Tensor, actions: &Tensor, tau: &Tensor, epsilon: &Tensor) -> Tensor {
        let (b, n, d) = (epsilon.size()[0], epsilon.size()[1], epsilon.size()[2]);
        let a = actions.unsqueeze(1).expand([b, n, d], false).reshape([b * n, d]);
        let eps = epsilon.reshape([b * n, d]);
        let t = tau.reshape([b * n, 1]);
        let cond = cond.unsqueeze(1).expand([b, n, cond.size()[1]], false).reshape([b * n, -1]);
        let x_t = flow::interpolate(&eps, &a, &t);
        let error = self.nets.actor.velocity(&x_t, &t, &cond) - flow::target_velocity(&eps, &a);
        let pred_horizon = self.nets.actor.spec().config.pred_horizon;
        reduce_cfm_loss(&error.square(), pred_horizon, self.fpo.cfm_loss_reduction).view([b, n])
    }

    /// Splits replay numbers [B, D + N + N·D + N] into (a, τ, ε, ℓ_old).
    fn unpack(&self, replay: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        let (b, d, n) = (replay.size()[0], self.nets.actor.action_numbers(), self.fpo.samples_per_chunk as i64);
        let parts = replay.split_with_sizes([d, n, n * d, n], 1);
        (parts[0].shallow_clone(), parts[1].shallow_clone(), parts[2].view([b, n, d]), parts[3].shallow_clone())
    }

    /// The spread of the round's ℓ_old over all its draws (uncapped), to choose
    /// `cfm_loss_clip` from: `fpo/cfm_loss_old_{p50,p90,p99,max}`.
    fn old_loss_quantiles(&self, trajectories: &[OnPolicyTrajectory]) -> Metrics {
        let n = self.fpo.samples_per_chunk;
        let mut losses: Vec<f64> = trajectories
            .iter()
            .flat_map(|t| t.replay.iter())
            .flat_map(|replay| replay[replay.len() - n..].iter().map(|&l| l as f64))
            .collect();
        losses.sort_by(f64::total_cmp);
        cfm_loss_quantiles(&losses)
    }
}

impl OnPolicyLearner for Fpo {
    type Counters = ActorValueCounters;

    fn actor(&self) -> &FlowPolicy {
        &self.nets.actor
    }

    /// The policy's own ODE sample per state, N fresh (τ, ε) draws with their ℓ_old, V_old(s).
    /// Replay numbers per chunk: a [D], τ [N], ε [N·D], ℓ_old [N].
    fn act(&self, obs: &ObsBatch) -> (Tensor, Vec<ChunkSample>) {
        tch::no_grad(|| {
            let cond = self.nets.actor.condition(obs, false);
            let b = cond.size()[0];
            let k = self.nets.actor.spec().config.num_denoising_steps;
            let actions = self.nets.actor.sample_chain(&cond, &self.nets.actor.initial_noise(b, false)).get(k);
            let (n, d) = (self.fpo.samples_per_chunk as i64, self.nets.actor.action_numbers());
            let tau = Tensor::rand([b, n], (Kind::Float, cond.device()));
            let epsilon = Tensor::randn([b, n, d], (Kind::Float, cond.device()));
            let losses = self.cfm_losses(&cond, &actions, &tau, &epsilon);
            let replay = Tensor::cat(&[actions.shallow_clone(), tau, epsilon.view([b, n * d]), losses], 1);
            let replay: Vec<f32> = replay.to_device(Device::Cpu).contiguous().view([-1]).try_into().expect("f32");
            let values: Vec<f32> =
                self.nets.value.forward_t(obs, false).to_device(Device::Cpu).try_into().expect("f32");
            let width = replay.len() / b as usize;
            let samples = (0..b as usize)
                .map(|i| ChunkSample {
                    executed: Vec::new(),
                    replay: replay[i * width..(i + 1) * width].to_vec(),
                    log_prob: 0.0,
                    value: values[i],
                })
                .collect();
            (actions, samples)
        })
    }

    fn update(
        &mut self,
        trajectories: &[OnPolicyTrajectory],
        iteration: usize,
        train_actor: bool,
        rng: &mut SplitMix64,
    ) -> Result<Metrics> {
        let ppo = self.ppo.clone();
        let device = self.nets.actor.device();
        let prepared = advantages(trajectories, &self.nets.value, &mut self.nets.return_scale, &ppo, device);
        let (actor_lr, value_lr) = (ppo.actor_lr.at(iteration), ppo.value_lr.at(iteration));
        let old_loss_quantiles = self.old_loss_quantiles(trajectories);
        let mut stats = Vec::new();
        prepared.minibatch_passes(&ppo, train_actor, rng, |rows| {
            let (obs, replay, _, batch_advantages, batch_targets) = prepared.minibatch(trajectories, rows, device);
            let (actions, tau, epsilon, old_losses) = self.unpack(&replay);
            let cond = self.nets.actor.condition(&obs, ppo.augment);
            let new_losses = self.cfm_losses(&cond, &actions, &tau, &epsilon);
            let log_ratio = fpo_log_ratio(&old_losses, &new_losses, &self.fpo);
            let normalized = normalize_advantages(&batch_advantages).unsqueeze(-1);
            let policy_loss = trust_region_loss(&log_ratio, &normalized, ppo.clip_ratio, self.fpo.trust_region);
            let values = self.nets.value.forward_t(&obs, ppo.augment);
            let value_loss = (&values - &batch_targets).square().mean(Kind::Float) * 0.5;
            let loss =
                if train_actor { &policy_loss + &value_loss * ppo.value_coef } else { &value_loss * ppo.value_coef };
            finite(&loss, iteration, "FPO loss")?;
            self.nets.zero_grad();
            loss.backward();
            let (actor_grad_norm, value_grad_norm) =
                self.nets.clip_and_step(train_actor, ppo.max_grad_norm, actor_lr, value_lr);
            let cfm_loss_capped = match self.fpo.cfm_loss_clip {
                Some(cap) => {
                    tch::no_grad(|| new_losses.gt(cap).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]))
                }
                None => 0.0,
            };
            let at_log_ratio_clip = tch::no_grad(|| {
                log_ratio.abs().ge(self.fpo.log_ratio_clip).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
            });
            let (approx_kl, clip_fraction, ratio) = tch::no_grad(|| {
                let ratio = log_ratio.exp();
                let kl = ((&ratio - 1.0) - &log_ratio).mean(Kind::Float).double_value(&[]);
                let outside = (&ratio - 1.0).abs().gt(ppo.clip_ratio).to_kind(Kind::Float).mean(Kind::Float);
                (kl, outside.double_value(&[]), ratio.mean(Kind::Float).double_value(&[]))
            });
            stats.push(FpoStats {
                policy_loss: policy_loss.double_value(&[]),
                value_loss: value_loss.double_value(&[]),
                cfm_loss: new_losses.mean(Kind::Float).double_value(&[]),
                cfm_loss_capped,
                approx_kl,
                clip_fraction,
                ratio,
                at_log_ratio_clip,
                actor_grad_norm,
                value_grad_norm,
                advantage_std: batch_advantages.std(true).double_value(&[]),
                value_mean: values.mean(Kind::Float).double_value(&[]),
                return_scale: prepared.reward_scale,
            });
            Ok(approx_kl)
        })?;
        let mut metrics = minibatch_metrics(&stats);
        metrics.extend(old_loss_quantiles);
        Ok(metrics)
    }

    fn save(&self, dir: &Path) -> Result<ActorValueCounters> {
        self.nets.save(dir)
    }

    fn load(&mut self, dir: &Path, counters: ActorValueCounters) -> Result<()> {
        self.nets.load(dir, counters)
    }
}
