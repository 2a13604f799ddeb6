//! DPPO on a flow policy (Ren et al., "Diffusion Policy Policy Optimization", arXiv 2409.00588;
//! docs/baselines.md): PPO in the two-layer MDP whose inner actions are the denoising steps.
//! DPPO was written for DDPM policies; here, as in the flow-policy adaptations of DPPO that
//! ReinFlow and FPO++ compare against, each Euler step of the flow policy becomes a Gaussian
//! with a fixed standard deviation σ (DPPO's minimum denoising std), so every step has an
//! exact likelihood and its own ratio:
//!
//!   x_0 ~ N(0, I),  μ_k = x_k + v_θ(x_k, t_k, s)/K',  t_k = k/K'
//!   x_{k+1} = μ_k + σ·clip(ε, ±n),  ε ~ N(0, I);  x_K' clipped to [−1, 1] and executed
//!   ℓ_k = mean over the executed Ta·A numbers of clip(log N(x_{k+1}; μ_k, σ²), [ℓ_min, ℓ_max])
//!   log ρ_k = ℓ_k(θ) − ℓ_k(θ_old)                          one ratio per chunk and step
//!   Â_k = Â · γ_d^(K'−1−k)                                 (denoising discount; Â normalised)
//!   ε_k = ε_0 + (ε − ε_0)·(e^{r·k/(K'−1)} − 1)/(e^r − 1)   (clip grows towards the last step)
//!   L = mean over chunks and steps of max(−Â_k ρ_k, −Â_k clip(ρ_k, 1 − ε_k, 1 + ε_k))
//!       + c_V·½·mean (V_ψ(s) − R)²
//! All K' steps are fine-tuned (DPPO's DDIM setting, where its ft_denoising_steps equals the
//! sampling steps). Evaluation runs the plain ODE with K' steps (σ off), as for the other
//! methods here. No entropy term (DPPO's σ is fixed, so is the entropy).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::actor_value::{ActorAndValue, ActorValueCounters};
use super::noisy_chain::transition_mean;
use super::onpolicy::{advantages, minibatch_metrics, ChunkSample, OnPolicyLearner, OnPolicyTrajectory};
use super::ppo::{normalize_advantages, PpoSettings};
use super::reinflow::finite;
use crate::error::Result;
use crate::policy::{FlowPolicy, ObsBatch};
use crate::train::metrics::Metrics;
use rldt_datasets::random::SplitMix64;

/// The `dppo` section of a fine-tuning config (DPPO's Robomimic values in brackets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DppoSettings {
    /// K': Euler steps of the chain, all fine-tuned, and of evaluation (the policy's own K
    /// keeps the starting policy unchanged).
    pub denoising_steps: i64,
    /// σ of every step, for sampling and likelihood [0.1: min_sampling_denoising_std and
    /// min_logprob_denoising_std].
    pub std: f64,
    /// ε is clipped to ±noise_clip before scaling [3].
    pub noise_clip: f64,
    /// [ℓ_min, ℓ_max] of each number's log-likelihood before the mean [−5, 2].
    pub log_prob_clip: [f64; 2],
    /// γ_d: the advantage of step k is scaled by γ_d^(K'−1−k) [0.99].
    pub denoising_discount: f64,
    /// ε_0, the first step's clip; the last step's is `ppo.clip_ratio` [0.001, and 0.01].
    pub first_step_clip_ratio: f64,
    /// r, the rate of the exponential between them [3].
    pub clip_ratio_rate: f64,
}

impl DppoSettings {
    /// DPPO's Robomimic Square values (`square_state_dppo.json`) with K' = `denoising_steps`.
    pub fn square(denoising_steps: i64) -> Self {
        Self {
            denoising_steps,
            std: 0.1,
            noise_clip: 3.0,
            log_prob_clip: [-5.0, 2.0],
            denoising_discount: 0.99,
            first_step_clip_ratio: 0.001,
            clip_ratio_rate: 3.0,
        }
    }

    /// ε_k for k = 0..K' (the last one is `last`).
    pub fn step_clip_ratios(&self, last: f64) -> Vec<f64> {
        let steps = self.denoising_steps;
        if steps == 1 {
            return vec![last];
        }
        let (first, rate) = (self.first_step_clip_ratio, self.clip_ratio_rate);
        (0..steps)
            .map(|k| {
                let t = k as f64 / (steps - 1) as f64;
                first + (last - first) * ((rate * t).exp() - 1.0) / (rate.exp() - 1.0)
            })
            .collect()
    }

    /// γ_d^(K'−1−k) for k = 0..K'.
    pub fn step_discounts(&self) -> Vec<f64> {
        (0..self.denoising_steps).map(|k| self.denoising_discount.powi((self.denoising_steps - 1 - k) as i32)).collect()
    }
}

/// ℓ_k per step and chunk: chain [K' + 1, B, D] (D = Tp·A, step-major), means [K', B, D], σ →
/// [K', B], each the mean over the first Ta steps' numbers of the clipped log N(x_{k+1}; μ_k, σ²).
pub fn step_log_probs(chain: &Tensor, means: &Tensor, std: f64, executed: (i64, i64), clip: [f64; 2]) -> Tensor {
    let (pred_horizon, exec_horizon) = executed;
    let (steps, b) = (means.size()[0], means.size()[1]);
    let next = chain.narrow(0, 1, steps);
    let z = (next - means) / std;
    let log_n = z.square() * -0.5 - std.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
    log_n.clamp(clip[0], clip[1]).view([steps, b, pred_horizon, -1]).narrow(2, 0, exec_horizon).mean_dim(
        [2i64, 3].as_slice(),
        false,
        Kind::Float,
    )
}

/// μ_k for every step of stored chains [K' + 1, B, D] under `policy` → [K', B, D].
pub fn step_means(policy: &FlowPolicy, cond: &Tensor, chain: &Tensor, steps: i64) -> Tensor {
    let means: Vec<Tensor> = (0..steps).map(|k| transition_mean(policy, cond, &chain.get(k), k, steps, None)).collect();
    Tensor::stack(&means, 0)
}

/// A chain per condition [B, C] → [K' + 1, B, D] (no gradient; libtorch's RNG).
pub fn sample_fixed_noise_chain(policy: &FlowPolicy, cond: &Tensor, settings: &DppoSettings) -> Tensor {
    let steps = settings.denoising_steps;
    tch::no_grad(|| {
        let mut chain = vec![policy.initial_noise(cond.size()[0], false)];
        for k in 0..steps {
            let mean = transition_mean(policy, cond, &chain[k as usize], k, steps, None);
            let epsilon = mean.randn_like().clamp(-settings.noise_clip, settings.noise_clip);
            let mut next = mean + epsilon * settings.std;
            if k == steps - 1 {
                next = next.clamp(-1.0, 1.0);
            }
            chain.push(next);
        }
        Tensor::stack(&chain, 0)
    })
}

/// DPPO's clipped surrogate as a loss, with its diagnostics: log ρ [K', B] (with gradient),
/// normalised Â [B], per-step clips ε_k and discounts [K'].
pub fn dppo_surrogate(log_ratio: &Tensor, advantages: &Tensor, clips: &[f64], discounts: &[f64]) -> DppoSurrogate {
    let device = log_ratio.device();
    let column = |values: &[f64]| {
        Tensor::from_slice(&values.iter().map(|&v| v as f32).collect::<Vec<_>>()).to_device(device).view([-1, 1])
    };
    let (clips, discounts) = (column(clips), column(discounts));
    let step_advantages = advantages.unsqueeze(0) * &discounts; // [K', B]
    let ratio = log_ratio.exp();
    let clipped = ratio.maximum(&(1.0 - &clips)).minimum(&(1.0 + &clips));
    let loss = (-&step_advantages * &ratio).maximum(&(-&step_advantages * clipped)).mean(Kind::Float);
    let (approx_kl, clip_fraction, ratio_mean) = tch::no_grad(|| {
        let kl = ((&ratio - 1.0) - log_ratio).mean(Kind::Float).double_value(&[]);
        let outside = (&ratio - 1.0).abs().gt_tensor(&clips).to_kind(Kind::Float).mean(Kind::Float);
        (kl, outside.double_value(&[]), ratio.mean(Kind::Float).double_value(&[]))
    });
    DppoSurrogate { loss, approx_kl, clip_fraction, ratio_mean }
}

pub struct DppoSurrogate {
    pub loss: Tensor,
    pub approx_kl: f64,
    /// Share of (chunk, step) ratios outside their own clip range.
    pub clip_fraction: f64,
    pub ratio_mean: f64,
}

/// One minibatch step's numbers (`ppo/*` metrics).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DppoStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    /// Mean ℓ_k(θ) over the minibatch's chunks and steps.
    pub step_log_prob: f64,
    pub approx_kl: f64,
    pub clip_fraction: f64,
    pub ratio: f64,
    pub actor_grad_norm: f64,
    pub value_grad_norm: f64,
    pub advantage_std: f64,
    pub value_mean: f64,
    pub return_scale: f64,
}

/// What DPPO trains: the actor (the flow policy, its K set to K') and V_ψ (`rl::actor_value`).
pub struct Dppo {
    pub nets: ActorAndValue,
    pub dppo: DppoSettings,
    pub ppo: PpoSettings,
}

impl Dppo {
    /// The actor from the pretrained checkpoint's EMA weights (its K set to K'); V's encoder
    /// from the actor's.
    pub fn new(pretrained: &Path, dppo: &DppoSettings, ppo: &PpoSettings, device: Device) -> Result<Self> {
        let nets = ActorAndValue::new(pretrained, ppo, Some(dppo.denoising_steps), device)?;
        Ok(Self { nets, dppo: dppo.clone(), ppo: ppo.clone() })
    }

    /// (Tp, Ta) of the policy's chunks.
    fn horizons(&self) -> (i64, i64) {
        let config = &self.nets.actor.spec().config;
        (config.pred_horizon, config.exec_horizon)
    }

    /// ℓ_k [K', B] of stored chains under the current θ.
    fn log_probs(&self, cond: &Tensor, chain: &Tensor) -> Tensor {
        let means = step_means(&self.nets.actor, cond, chain, self.dppo.denoising_steps);
        step_log_probs(chain, &means, self.dppo.std, self.horizons(), self.dppo.log_prob_clip)
    }
}

impl OnPolicyLearner for Dppo {
    type Counters = ActorValueCounters;

    fn actor(&self) -> &FlowPolicy {
        &self.nets.actor
    }

    /// One noisy chain per state: the executed chunks [B, D] and per state the chain
    /// [(K' + 1)·D] followed by its ℓ_old per step [K'], and V_old(s).
    fn act(&self, obs: &ObsBatch) -> (Tensor, Vec<ChunkSample>) {
        tch::no_grad(|| {
            let cond = self.nets.actor.condition(obs, false);
            let chain = sample_fixed_noise_chain(&self.nets.actor, &cond, &self.dppo);
            let log_probs = self.log_probs(&cond, &chain); // [K', B]
            let b = cond.size()[0];
            let replay = Tensor::cat(&[chain.permute([1, 0, 2]).reshape([b, -1]), log_probs.transpose(0, 1)], 1);
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
            (chain.get(self.dppo.denoising_steps), samples)
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
        let (steps, d) = (self.dppo.denoising_steps, self.nets.actor.action_numbers());
        let (clips, discounts) = (self.dppo.step_clip_ratios(ppo.clip_ratio), self.dppo.step_discounts());
        let mut stats = Vec::new();
        prepared.minibatch_passes(&ppo, train_actor, rng, |rows| {
            let (obs, replay, _, batch_advantages, batch_targets) = prepared.minibatch(trajectories, rows, device);
            let b = rows.len() as i64;
            let parts = replay.split_with_sizes([(steps + 1) * d, steps], 1);
            let chain = parts[0].view([b, steps + 1, d]).permute([1, 0, 2]);
            let old_log_probs = parts[1].transpose(0, 1); // [K', B]
            let cond = self.nets.actor.condition(&obs, ppo.augment);
            let new_log_probs = self.log_probs(&cond, &chain);
            let surrogate = dppo_surrogate(
                &(&new_log_probs - old_log_probs),
                &normalize_advantages(&batch_advantages),
                &clips,
                &discounts,
            );
            let values = self.nets.value.forward_t(&obs, ppo.augment);
            let value_loss = (&values - &batch_targets).square().mean(Kind::Float) * 0.5;
            let loss =
                if train_actor { &surrogate.loss + &value_loss * ppo.value_coef } else { &value_loss * ppo.value_coef };
            finite(&loss, iteration, "DPPO loss")?;
            self.nets.zero_grad();
            loss.backward();
            let (actor_grad_norm, value_grad_norm) =
                self.nets.clip_and_step(train_actor, ppo.max_grad_norm, actor_lr, value_lr);
            stats.push(DppoStats {
                policy_loss: surrogate.loss.double_value(&[]),
                value_loss: value_loss.double_value(&[]),
                step_log_prob: new_log_probs.mean(Kind::Float).double_value(&[]),
                approx_kl: surrogate.approx_kl,
                clip_fraction: surrogate.clip_fraction,
                ratio: surrogate.ratio_mean,
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

    fn save(&self, dir: &Path) -> Result<ActorValueCounters> {
        self.nets.save(dir)
    }

    fn load(&mut self, dir: &Path, counters: ActorValueCounters) -> Result<()> {
        self.nets.load(dir, counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(steps: i64) -> DppoSettings {
        DppoSettings::square(steps)
    }

    /// K' = 3, ε_0 = 0.001, ε = 0.01, r = 3: ε_k = 0.001 + 0.009·(e^{1.5k} − 1)/(e³ − 1):
    /// 0.001, 0.001 + 0.009·3.481689/19.085537 = 0.0026418, 0.01. Discounts 0.99², 0.99, 1.
    #[test]
    fn the_step_clips_and_discounts_by_hand() {
        let clips = settings(3).step_clip_ratios(0.01);
        assert!((clips[0] - 0.001).abs() < 1e-12 && (clips[2] - 0.01).abs() < 1e-12, "{clips:?}");
        assert!((clips[1] - 0.0026418).abs() < 1e-6, "{clips:?}");
        assert_eq!(settings(1).step_clip_ratios(0.01), [0.01]);
        let discounts = settings(3).step_discounts();
        assert!((discounts[0] - 0.9801).abs() < 1e-12 && discounts[1] == 0.99 && discounts[2] == 1.0, "{discounts:?}");
    }

    /// One step, one chunk of Tp = 2 steps × A = 1 number, Ta = 1 (only the first number is
    /// executed), σ = 0.1: x_1 = (0.8, 5.0), μ_0 = (0.7, 0.0). Number 1: z = 1,
    /// log N = −0.5 + 2.302585 − 0.918939 = 0.883646; number 2 (not executed) would be clipped
    /// to −5 and must not count: ℓ = 0.883646. With Ta = 2: (0.883646 − 5)/2 = −2.058177.
    #[test]
    fn step_log_probs_by_hand() {
        let chain = Tensor::from_slice(&[0.0f32, 0.0, 0.8, 5.0]).view([2, 1, 2]);
        let means = Tensor::from_slice(&[0.7f32, 0.0]).view([1, 1, 2]);
        let executed_only = step_log_probs(&chain, &means, 0.1, (2, 1), [-5.0, 2.0]);
        assert_eq!(executed_only.size(), [1, 1]);
        assert!((executed_only.double_value(&[0, 0]) - 0.883646).abs() < 1e-5);
        let both = step_log_probs(&chain, &means, 0.1, (2, 2), [-5.0, 2.0]).double_value(&[0, 0]);
        assert!((both + 2.058177).abs() < 1e-5, "{both}");
    }

    /// Two steps (ε_k = 0.1, 0.2; discounts 0.5, 1), one chunk with Â = 1, ρ = (1.5, 1.1):
    /// step 0: max(−0.5·1.5, −0.5·1.1) = −0.55 (clipped, no gradient); step 1: ρ = 1.1 is
    /// inside 1 ± 0.2: −1.1, gradient −1·1.1 per log ρ. Loss (−0.55 − 1.1)/2 = −0.825;
    /// d loss / d log ρ = (0, −0.55); one of two ratios outside its range.
    #[test]
    fn the_per_step_clipped_surrogate_by_hand() {
        let log_ratio = Tensor::from_slice(&[1.5f32.ln(), 1.1f32.ln()]).view([2, 1]).set_requires_grad(true);
        let advantages = Tensor::from_slice(&[1.0f32]);
        let surrogate = dppo_surrogate(&log_ratio, &advantages, &[0.1, 0.2], &[0.5, 1.0]);
        assert!((surrogate.loss.double_value(&[]) + 0.825).abs() < 1e-6, "{}", surrogate.loss.double_value(&[]));
        assert_eq!(surrogate.clip_fraction, 0.5);
        surrogate.loss.backward();
        let grad: Vec<f32> = log_ratio.grad().view([-1]).try_into().unwrap();
        assert!(grad[0].abs() < 1e-9 && (grad[1] + 0.55).abs() < 1e-6, "{grad:?}");
    }
}
