//! The PPO pieces shared by the on-policy baselines (ReinFlow, FPO++; docs/baselines.md):
//! generalised advantage estimation, the clipped surrogate, advantage normalisation and the
//! running return scale. Shapes: one trajectory of T chunks for GAE, a flat batch of B
//! samples for the losses.
//!
//! GAE (Schulman et al. 2016), backwards along a trajectory, with V(s_T) the value of the
//! observation after the last chunk:
//!   δ_t = r_t + γ·(1 − terminal_t)·V(s_{t+1}) − V(s_t)
//!   A_t = δ_t + γλ·(1 − terminal_t)·A_{t+1},   A_T = 0
//!   R_t = A_t + V(s_t)   (the value target)
//! A trajectory cut at its horizon is not terminal: its last step bootstraps from V(s_T).
//!
//! Clipped surrogate (Schulman et al. 2017), with ρ = exp(log π_new − log π_old):
//!   L_clip = mean over the batch of max(−Â·ρ, −Â·clip(ρ, 1 − ε, 1 + ε))
//! (a loss, minimised), plus the diagnostics approx KL = mean((ρ − 1) − log ρ) and the
//! fraction of samples with |ρ − 1| > ε.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The `ppo` section shared by the PPO baselines (the RLDT authors' ReinFlow Square config,
/// `ft_ppo_reflow_mlp_img.yaml`, in brackets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoSettings {
    /// Discount per chunk [0.999] and GAE λ [0.95].
    pub gamma: f64,
    pub gae_lambda: f64,
    /// Passes over the round's chunks per iteration [10].
    pub update_epochs: usize,
    /// Chunks per gradient step [640].
    pub minibatch_size: usize,
    /// ε of the clipped ratio [0.01].
    pub clip_ratio: f64,
    /// Stop the iteration's updates once a minibatch's approximate KL exceeds it [0.01];
    /// null: never.
    pub target_kl: Option<f64>,
    /// Weight of the entropy bonus [0.01] and of the value loss ½·(V − R)² [0.5].
    pub entropy_coef: f64,
    pub value_coef: f64,
    /// Gradient norm clip, actor and value network each [25].
    pub max_grad_norm: f64,
    pub actor_lr: LrSchedule,
    pub value_lr: LrSchedule,
    /// Iterations (after evaluation-only ones) that train the value network only [2].
    pub value_warmup_iterations: usize,
    /// Random-shift augmentation of images in the update passes [true].
    pub augment: bool,
    /// Hidden layers of V's MLP, Mish activations [256, 256, 256].
    pub value_hidden: Vec<i64>,
    /// Divide rewards by the running std of the discounted return [true].
    pub reward_scale_running: bool,
}

/// A learning rate per iteration: linear warm-up from `min_lr` to `lr` over
/// `warmup_iterations`, then cosine from `lr` to `min_lr` until `cycle_iterations`, restarting
/// every cycle (the cosine-with-warm-up-restarts schedule of DPPO and ReinFlow; actor
/// [3.5e-6 → 3.5e-6, 10, 100], value [4.5e-4 → 3e-4, 25, 100]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_iterations: usize,
    pub cycle_iterations: usize,
}

impl LrSchedule {
    pub fn at(&self, iteration: usize) -> f64 {
        let cycle = self.cycle_iterations.max(1);
        let i = iteration % cycle;
        if i < self.warmup_iterations {
            return self.min_lr + (self.lr - self.min_lr) * i as f64 / self.warmup_iterations as f64;
        }
        let span = (cycle - self.warmup_iterations).max(1) as f64;
        let progress = (i - self.warmup_iterations) as f64 / span;
        self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Scales the gradients of `params` so that their joint L2 norm is at most `max_norm`;
/// returns the norm before scaling (as `torch.nn.utils.clip_grad_norm_`).
pub fn clip_gradients(params: &[Tensor], max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        let total = grads.iter().map(|g| g.square().sum(Kind::Double).double_value(&[])).sum::<f64>().sqrt();
        let factor = max_norm / (total + 1e-6);
        if factor < 1.0 {
            for g in &grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(factor);
            }
        }
        total
    })
}

/// GAE advantages and value targets of one trajectory. `values` holds V(s_0 … s_T) (T + 1
/// numbers: the last is the bootstrap value after the final chunk); `terminal[t]` is true
/// where the episode truly ended after chunk t (no bootstrap).
pub fn gae(rewards: &[f32], values: &[f32], terminal: &[bool], gamma: f64, lambda: f64) -> (Vec<f32>, Vec<f32>) {
    let t_len = rewards.len();
    assert_eq!(values.len(), t_len + 1, "values: one per state plus the bootstrap value");
    assert_eq!(terminal.len(), t_len, "terminal: one per chunk");
    let mut advantages = vec![0.0f32; t_len];
    let mut next_advantage = 0.0f64;
    for t in (0..t_len).rev() {
        let continues = if terminal[t] { 0.0 } else { 1.0 };
        let delta = rewards[t] as f64 + gamma * continues * values[t + 1] as f64 - values[t] as f64;
        next_advantage = delta + gamma * lambda * continues * next_advantage;
        advantages[t] = next_advantage as f32;
    }
    let targets = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, targets)
}

/// Â = (A − mean A) / (std A + 1e-8) over the batch [B] (unbiased std, as torch's `std`).
pub fn normalize_advantages(advantages: &Tensor) -> Tensor {
    let mean = advantages.mean(Kind::Float);
    let std = advantages.std(true);
    (advantages - mean) / (std + 1e-8)
}

/// The clipped surrogate loss and its diagnostics.
pub struct Surrogate {
    /// Scalar loss to minimise.
    pub loss: Tensor,
    pub approx_kl: f64,
    pub clip_fraction: f64,
    pub ratio_mean: f64,
}

/// L_clip for log-ratios log ρ [B] (with gradient) and advantages Â [B] (constants).
pub fn clipped_surrogate(log_ratio: &Tensor, advantages: &Tensor, clip: f64) -> Surrogate {
    let ratio = log_ratio.exp();
    let unclipped = -advantages * &ratio;
    let clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip);
    let loss = unclipped.maximum(&clipped).mean(Kind::Float);
    let (approx_kl, clip_fraction, ratio_mean) = tch::no_grad(|| {
        let kl = ((&ratio - 1.0) - log_ratio).mean(Kind::Float).double_value(&[]);
        let outside = (&ratio - 1.0).abs().gt(clip).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        (kl, outside, ratio.mean(Kind::Float).double_value(&[]))
    });
    Surrogate { loss, approx_kl, clip_fraction, ratio_mean }
}

/// Rewards divided by the running standard deviation of the discounted return (the
/// `reward_scale_running` of DPPO and ReinFlow): along each trajectory G ← γ·G + r, every G
/// updates a running mean and variance (parallel Welford), and rewards are divided by
/// √(var + 1e-8). Saved with the checkpoint so a resumed run scales alike.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunningReturnScale {
    pub count: f64,
    pub mean: f64,
    pub var: f64,
}

impl Default for RunningReturnScale {
    fn default() -> Self {
        // As the reference implementations: one pseudo-observation of variance 1.
        Self { count: 1e-4, mean: 0.0, var: 1.0 }
    }
}

impl RunningReturnScale {
    /// Updates the statistics with the discounted returns of `trajectories` (raw chunk
    /// rewards each), then returns the scale √(var + 1e-8) to divide their rewards by.
    pub fn update(&mut self, trajectories: &[&[f32]], gamma: f64) -> f64 {
        let mut returns = Vec::new();
        for rewards in trajectories {
            let mut g = 0.0f64;
            for &r in rewards.iter() {
                g = gamma * g + r as f64;
                returns.push(g);
            }
        }
        if !returns.is_empty() {
            let n = returns.len() as f64;
            let batch_mean = returns.iter().sum::<f64>() / n;
            let batch_var = returns.iter().map(|g| (g - batch_mean).powi(2)).sum::<f64>() / n;
            let total = self.count + n;
            let delta = batch_mean - self.mean;
            let m2 = self.var * self.count + batch_var * n + delta * delta * self.count * n / total;
            self.mean += delta * n / total;
            self.var = m2 / total;
            self.count = total;
        }
        (self.var + 1e-8).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made 4-chunk trajectory, γ = 0.9, λ = 0.5, terminal after chunk 2, with a
    /// (ignored) bootstrap value after chunk 3 of 10:
    ///   δ_3 = 0 + 0.9·10 − 0.4 = 8.6            A_3 = 8.6
    ///   δ_2 = 1 + 0 − 0.3 = 0.7 (terminal)        A_2 = 0.7
    ///   δ_1 = 0 + 0.9·0.3 − 0.2 = 0.07            A_1 = 0.07 + 0.45·0.7 = 0.385
    ///   δ_0 = 0 + 0.9·0.2 − 0.1 = 0.08            A_0 = 0.08 + 0.45·0.385 = 0.25325
    #[test]
    fn gae_by_hand_with_a_terminal() {
        let (advantages, targets) =
            gae(&[0.0, 0.0, 1.0, 0.0], &[0.1, 0.2, 0.3, 0.4, 10.0], &[false, false, true, false], 0.9, 0.5);
        let expected = [0.25325, 0.385, 0.7, 8.6];
        for (a, e) in advantages.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{advantages:?}");
        }
        for ((r, a), v) in targets.iter().zip(expected).zip([0.1, 0.2, 0.3, 0.4]) {
            assert!((r - (a + v)).abs() < 1e-6, "{targets:?}");
        }
    }

    /// Three samples, ε = 0.2, log ρ = ln(1.1), ln(1.5), ln(0.5), Â = 1, 2, −1:
    ///   sample 0: inside the range, −Â·ρ = −1.1, gradient wrt log ρ: −Â·ρ = −1.1
    ///   sample 1: ρ = 1.5 > 1.2 with Â > 0: clipped, −2·1.2 = −2.4, no gradient
    ///   sample 2: ρ = 0.5 < 0.8 with Â < 0: max(0.5, 0.8) = 0.8 clipped, no gradient
    ///   loss = (−1.1 − 2.4 + 0.8) / 3 = −0.9; d loss / d log ρ = (−1.1, 0, 0) / 3
    #[test]
    fn clipped_surrogate_and_its_gradient_by_hand() {
        let log_ratio = Tensor::from_slice(&[1.1f32.ln(), 1.5f32.ln(), 0.5f32.ln()]).set_requires_grad(true);
        let advantages = Tensor::from_slice(&[1.0f32, 2.0, -1.0]);
        let surrogate = clipped_surrogate(&log_ratio, &advantages, 0.2);
        assert!((surrogate.loss.double_value(&[]) + 0.9).abs() < 1e-6);
        assert!((surrogate.clip_fraction - 2.0 / 3.0).abs() < 1e-6);
        surrogate.loss.backward();
        let grad: Vec<f32> = log_ratio.grad().try_into().unwrap();
        let expected = [-1.1 / 3.0, 0.0, 0.0];
        for (g, e) in grad.iter().zip(expected) {
            assert!((*g as f64 - e).abs() < 1e-6, "{grad:?}");
        }
        // A negative advantage inside the range has its gradient too: ρ = 0.9, Â = −1.
        let log_ratio = Tensor::from_slice(&[0.9f32.ln()]).set_requires_grad(true);
        let surrogate = clipped_surrogate(&log_ratio, &Tensor::from_slice(&[-1.0f32]), 0.2);
        surrogate.loss.backward();
        assert!((log_ratio.grad().double_value(&[0]) - 0.9).abs() < 1e-6);
    }

    #[test]
    fn the_schedule_warms_up_then_follows_a_cosine_and_restarts() {
        let s = LrSchedule { lr: 1.0, min_lr: 0.0, warmup_iterations: 2, cycle_iterations: 6 };
        let lrs: Vec<f64> = (0..8).map(|i| s.at(i)).collect();
        let expected = [0.0, 0.5, 1.0, 0.8535534, 0.5, 0.1464466, 0.0, 0.5];
        for (a, e) in lrs.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{lrs:?}");
        }
    }

    #[test]
    fn gradients_are_clipped_to_the_joint_norm() {
        let a = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let b = Tensor::from_slice(&[4.0f32]).set_requires_grad(true);
        (&a * &a * 0.5 + &b * &b * 0.5).sum(Kind::Float).backward();
        let norm = clip_gradients(&[a.shallow_clone(), b.shallow_clone()], 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-5 && (b.grad().double_value(&[0]) - 0.8).abs() < 1e-5);
    }

    #[test]
    fn advantages_are_normalised_to_zero_mean_unit_std() {
        let a = normalize_advantages(&Tensor::from_slice(&[1.0f32, 2.0, 3.0, 6.0]));
        assert!(a.mean(Kind::Float).double_value(&[]).abs() < 1e-6);
        assert!((a.std(true).double_value(&[]) - 1.0).abs() < 1e-5);
    }

    /// Returns of [1, 1] with γ = 0.5 are 1 and 1.5: mean 1.25, variance 0.0625 (with the
    /// 1e-4 pseudo-count of variance 1 folded in: ≈ 0.06255).
    #[test]
    fn the_running_scale_follows_the_return_variance() {
        let mut scale = RunningReturnScale::default();
        let s = scale.update(&[&[1.0, 1.0]], 0.5);
        assert!((scale.mean - 1.25).abs() < 1e-3 && (scale.var - 0.0625).abs() < 1e-3, "{scale:?}");
        assert!((s - scale.var.sqrt()).abs() < 1e-6);
    }
}
