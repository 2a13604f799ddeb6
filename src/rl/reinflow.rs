//! `Reinflow`: what ReinFlow trains and how, one iteration's update at a time
//! (docs/baselines.md). It owns the actor (the flow policy, its K set to K'), the noise
//! network σ_φ, the value network V_ψ and one AdamW per VarStore. The loop that calls it is
//! `train::onpolicy` (through `rl::onpolicy::OnPolicyLearner`).
//!
//! Acting (per chunk, no gradient): a noisy chain x_0:K' (`rl::noisy_chain`), its normalised
//! log-likelihood ℓ_old and V_old(s); the chunk x_K' is executed.
//! Update (per iteration, on every chunk of the round):
//!   rewards r / running return scale; GAE(γ, λ) → advantages A, value targets R;
//!   for `update_epochs` passes, shuffled minibatches of `minibatch_size` chunks:
//!     ℓ_new, H = chain_log_prob(θ, φ; stored chain)      log ρ = ℓ_new − ℓ_old
//!     L = L_clip(log ρ, normalised A) − c_H·mean H + c_V·½·mean (V_ψ(s) − R)²
//!     one AdamW step each for θ, φ (after the value warm-up) and ψ, gradients clipped;
//!     stop the iteration once approx KL > target_kl.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::critic::init_encoder_from_actor;
use super::noisy_chain::{chain_log_prob, sample_noisy_chain, NoiseNet, NoisyChainSettings};
use super::onpolicy::{advantages, minibatch_metrics, ChunkSample, OnPolicyLearner, OnPolicyTrajectory};
use super::ppo::{clip_gradients, clipped_surrogate, normalize_advantages, PpoSettings, RunningReturnScale};
use super::value::ValueNet;
use crate::error::{Error, Result};
use crate::optim::AdamW;
use crate::policy::checkpoint::{self, Weights};
use crate::policy::{FlowPolicy, ObsBatch};
use crate::train::metrics::Metrics;
use rldt_datasets::random::SplitMix64;

/// One minibatch step's numbers (`ppo/*` metrics, means over the iteration's steps).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReinflowStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub approx_kl: f64,
    pub clip_fraction: f64,
    pub ratio: f64,
    pub noise_std: f64,
    pub actor_grad_norm: f64,
    pub value_grad_norm: f64,
    pub advantage_std: f64,
    pub value_mean: f64,
    pub return_scale: f64,
}

/// Counters saved with a checkpoint beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReinflowCounters {
    pub actor_optimizer_steps: i64,
    pub noise_optimizer_steps: i64,
    pub value_optimizer_steps: i64,
    pub return_scale: RunningReturnScale,
}

pub struct Reinflow {
    pub actor_vs: nn::VarStore,
    pub actor: FlowPolicy,
    pub noise_vs: nn::VarStore,
    pub noise: NoiseNet,
    pub value_vs: nn::VarStore,
    pub value: ValueNet,
    actor_optimizer: AdamW,
    noise_optimizer: AdamW,
    value_optimizer: AdamW,
    pub chain: NoisyChainSettings,
    pub ppo: PpoSettings,
    pub return_scale: RunningReturnScale,
}

pub const NOISE_FILE: &str = "noise.safetensors";
pub const VALUE_FILE: &str = "value.safetensors";
pub const ACTOR_OPTIMIZER_FILE: &str = "actor_optimizer.safetensors";
pub const NOISE_OPTIMIZER_FILE: &str = "noise_optimizer.safetensors";
pub const VALUE_OPTIMIZER_FILE: &str = "value_optimizer.safetensors";

impl Reinflow {
    /// The actor from the pretrained checkpoint's EMA weights (its K set to K'), a fresh noise
    /// network, V's encoder initialised from the actor's.
    pub fn new(pretrained: &Path, chain: &NoisyChainSettings, ppo: &PpoSettings, device: Device) -> Result<Self> {
        let (actor_vs, mut actor) = checkpoint::load(pretrained, Weights::Ema, device)?;
        actor.set_denoising_steps(chain.denoising_steps);
        let spec = actor.spec().clone();
        let noise_vs = nn::VarStore::new(device);
        let noise = NoiseNet::new(&noise_vs.root(), actor.condition_dim(), actor.action_numbers(), chain);
        let value_vs = nn::VarStore::new(device);
        let value =
            ValueNet::new(&value_vs.root(), &spec, &ppo.value_hidden).map_err(crate::policy::PolicyError::from)?;
        init_encoder_from_actor(&value_vs, &actor_vs)
            .map_err(|message| Error::RunDir { dir: pretrained.into(), message })?;
        Ok(Self {
            actor_optimizer: AdamW::new(&actor_vs, 0.9, 0.999, 1e-8, 0.0),
            noise_optimizer: AdamW::new(&noise_vs, 0.9, 0.999, 1e-8, 0.0),
            value_optimizer: AdamW::new(&value_vs, 0.9, 0.999, 1e-8, 0.0),
            actor_vs,
            actor,
            noise_vs,
            noise,
            value_vs,
            value,
            chain: chain.clone(),
            ppo: ppo.clone(),
            return_scale: RunningReturnScale::default(),
        })
    }
}

impl OnPolicyLearner for Reinflow {
    type Counters = ReinflowCounters;

    fn actor(&self) -> &FlowPolicy {
        &self.actor
    }

    /// One noisy chunk per state of `obs`: the chunks [B, D] and per state the chain
    /// [(K' + 1)·D], ℓ_old and V_old(s).
    fn act(&self, obs: &ObsBatch) -> (Tensor, Vec<ChunkSample>) {
        tch::no_grad(|| {
            let cond = self.actor.condition(obs, false);
            let chain = sample_noisy_chain(&self.actor, &self.noise, &cond, &self.chain);
            let (log_prob, _) = chain_log_prob(&self.actor, &self.noise, &cond, &chain, &self.chain);
            let values = self.value.forward_t(obs, false);
            let b = cond.size()[0];
            let per_state: Vec<f32> =
                chain.permute([1, 0, 2]).reshape([b, -1]).to_device(Device::Cpu).view([-1]).try_into().expect("f32");
            let log_probs: Vec<f32> = log_prob.to_device(Device::Cpu).try_into().expect("f32");
            let values: Vec<f32> = values.to_device(Device::Cpu).try_into().expect("f32");
            let width = per_state.len() / b as usize;
            let samples = (0..b as usize)
                .map(|i| ChunkSample {
                    executed: Vec::new(),
                    replay: per_state[i * width..(i + 1) * width].to_vec(),
                    log_prob: log_probs[i],
                    value: values[i],
                })
                .collect();
            (chain.get(self.chain.denoising_steps), samples)
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
        let device = self.actor.device();
        let prepared = advantages(trajectories, &self.value, &mut self.return_scale, &ppo, device);
        let (actor_lr, value_lr) = (ppo.actor_lr.at(iteration), ppo.value_lr.at(iteration));
        let (k, d) = (self.chain.denoising_steps, self.actor.action_numbers());
        let mut stats = Vec::new();
        prepared.minibatch_passes(&ppo, train_actor, rng, |rows| {
            let (obs, replay, old_log_prob, batch_advantages, batch_targets) =
                prepared.minibatch(trajectories, rows, device);
            let chain = replay.view([rows.len() as i64, k + 1, d]).permute([1, 0, 2]);
            let cond = self.actor.condition(&obs, ppo.augment);
            let (log_prob, entropy) = chain_log_prob(&self.actor, &self.noise, &cond, &chain, &self.chain);
            let surrogate = clipped_surrogate(
                &(log_prob - &old_log_prob),
                &normalize_advantages(&batch_advantages),
                ppo.clip_ratio,
            );
            let values = self.value.forward_t(&obs, ppo.augment);
            let value_loss = (&values - &batch_targets).square().mean(Kind::Float) * 0.5;
            let entropy_mean = entropy.mean(Kind::Float);
            let loss = if train_actor {
                &surrogate.loss - &entropy_mean * ppo.entropy_coef + &value_loss * ppo.value_coef
            } else {
                &value_loss * ppo.value_coef
            };
            finite(&loss, iteration, "ReinFlow loss")?;
            self.actor_optimizer.zero_grad();
            self.noise_optimizer.zero_grad();
            self.value_optimizer.zero_grad();
            loss.backward();
            let mut actor_params = self.actor_vs.trainable_variables();
            actor_params.extend(self.noise_vs.trainable_variables());
            let actor_grad_norm = if train_actor { clip_gradients(&actor_params, ppo.max_grad_norm) } else { 0.0 };
            let value_grad_norm = clip_gradients(&self.value_vs.trainable_variables(), ppo.max_grad_norm);
            if train_actor {
                self.actor_optimizer.step(actor_lr);
                self.noise_optimizer.step(actor_lr);
            }
            self.value_optimizer.step(value_lr);
            let noise_std = tch::no_grad(|| self.noise.std(&cond.detach(), 0.0).mean(Kind::Float).double_value(&[]));
            stats.push(ReinflowStats {
                policy_loss: surrogate.loss.double_value(&[]),
                value_loss: value_loss.double_value(&[]),
                entropy: entropy_mean.double_value(&[]),
                approx_kl: surrogate.approx_kl,
                clip_fraction: surrogate.clip_fraction,
                ratio: surrogate.ratio_mean,
                noise_std,
                actor_grad_norm,
                value_grad_norm,
                advantage_std: batch_advantages.std(true).double_value(&[]),
                value_mean: values.mean(Kind::Float).double_value(&[]),
                return_scale: prepared.reward_scale,
            });
            Ok(surrogate.approx_kl)
        })?;
        Ok(minibatch_metrics(&stats))
    }

    /// The actor's `policy.json` carries K', so `eval` runs the policy as ReinFlow evaluates it.
    fn save(&self, dir: &Path) -> Result<ReinflowCounters> {
        checkpoint::save_spec(self.actor.spec(), dir)?;
        checkpoint::save_weights(&self.actor_vs, &dir.join(checkpoint::ONLINE_WEIGHTS_FILE))?;
        checkpoint::save_weights(&self.noise_vs, &dir.join(NOISE_FILE))?;
        checkpoint::save_weights(&self.value_vs, &dir.join(VALUE_FILE))?;
        self.actor_optimizer.save(&dir.join(ACTOR_OPTIMIZER_FILE))?;
        self.noise_optimizer.save(&dir.join(NOISE_OPTIMIZER_FILE))?;
        self.value_optimizer.save(&dir.join(VALUE_OPTIMIZER_FILE))?;
        Ok(ReinflowCounters {
            actor_optimizer_steps: self.actor_optimizer.steps_taken(),
            noise_optimizer_steps: self.noise_optimizer.steps_taken(),
            value_optimizer_steps: self.value_optimizer.steps_taken(),
            return_scale: self.return_scale.clone(),
        })
    }

    fn load(&mut self, dir: &Path, counters: ReinflowCounters) -> Result<()> {
        checkpoint::load_weights(&mut self.actor_vs, &dir.join(checkpoint::ONLINE_WEIGHTS_FILE))?;
        checkpoint::load_weights(&mut self.noise_vs, &dir.join(NOISE_FILE))?;
        checkpoint::load_weights(&mut self.value_vs, &dir.join(VALUE_FILE))?;
        self.actor_optimizer.load(&dir.join(ACTOR_OPTIMIZER_FILE), counters.actor_optimizer_steps)?;
        self.noise_optimizer.load(&dir.join(NOISE_OPTIMIZER_FILE), counters.noise_optimizer_steps)?;
        self.value_optimizer.load(&dir.join(VALUE_OPTIMIZER_FILE), counters.value_optimizer_steps)?;
        self.return_scale = counters.return_scale;
        Ok(())
    }
}

/// A non-finite loss stops the update (the loop fills in the checkpoints directory).
pub fn finite(loss: &Tensor, iteration: usize, what: &str) -> Result<()> {
    let value = loss.double_value(&[]);
    if value.is_finite() {
        return Ok(());
    }
    Err(Error::NonFinite { step: iteration as i64, what: what.into(), value, checkpoints: Default::default() })
}
