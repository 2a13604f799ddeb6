//! The FPO++ objective (Yi, Choi et al., "Flow Policy Gradients for Robot Control", arXiv
//! 2602.02481, on FPO: McAllister et al., arXiv 2507.21053; docs/baselines.md): PPO-style
//! updates of a flow policy without a likelihood. The ratio comes from conditional
//! flow-matching losses on (τ, ε) draws made at rollout time and reused at update time:
//!
//!   x_τ = (1 − τ)·ε + τ·a,   e = v_θ(x_τ, τ, s) − (a − ε)   (a chunk: Tp steps × A numbers)
//!   ℓ_θ(a, τ, ε; s) = mean over the chunk's Tp·A numbers of e²          (`mean`)
//!                   = Σ_{steps j} mean_{A} e_j²  (= Tp × the mean)      (`sum_over_steps`:
//!                     FPO++'s manipulation fine-tuning sums the losses over the chunk's steps)
//!   ℓ_old and ℓ_θ capped at `cfm_loss_clip` (20 in the configs) before the difference
//!   FPO:    log ρ = mean_i (ℓ_old,i − ℓ_θ,i)               one ratio per chunk
//!   FPO++:  log ρ_i = ℓ_old,i − ℓ_θ,i                        one ratio per draw (change 1)
//!   log ρ clipped to ±`log_ratio_clip` (5) before the exponential, the gradient passed
//!   straight through (`log_ratio_clip_straight_through`, FPO++'s code) or cut beyond it.
//!   Trust region per ratio, with Â the chunk's normalised advantage:
//!     Â ≥ 0 (or `ppo`):  max(−Â ρ, −Â clip(ρ, 1 − ε, 1 + ε))         (PPO)
//!     Â < 0 (`aspo`):    −(Â ρ − |Â|/(2ε)·(ρ − 1)²)                   (SPO; change 2)
//!   loss = mean over chunks and draws + c_V·½·mean (V(s) − R)²
//! SPO's penalty pulls ρ back to 1 − ε instead of cutting the gradient at the clip edge, so a
//! negative advantage cannot drive the flow-matching loss of an action up without bound.
//!
//! The learner that rolls these out and updates with them is `rl::fpo`.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::train::metrics::Metrics;

/// The trust region of each ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustRegion {
    /// PPO's clip for every advantage (FPO).
    Ppo,
    /// PPO's clip for Â ≥ 0, SPO's penalty for Â < 0 (FPO++).
    Aspo,
}

/// How the squared errors of one chunk make one CFM loss ℓ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CfmLossReduction {
    /// Mean over the chunk's Tp·A numbers.
    Mean,
    /// Per chunk step the mean over its A numbers, summed over the Tp steps (FPO++'s
    /// manipulation fine-tuning: "chunk-level ratios by summing CFM losses across all chunk
    /// timesteps"): Tp × `mean`, so a parameter change moves log ρ Tp times as far.
    SumOverSteps,
}

/// The `fpo` section of a fine-tuning config (FPO++'s choices by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpoSettings {
    /// N_mc (τ, ε) draws per chunk, made at rollout time (8).
    pub samples_per_chunk: usize,
    /// One ratio per draw (FPO++: true) or one per chunk from the averaged losses (FPO).
    pub per_sample_ratio: bool,
    pub trust_region: TrustRegion,
    /// |log ρ| is clipped to this before the exponential (5).
    pub log_ratio_clip: f64,
    /// The clip of log ρ passes the gradient through unchanged (FPO++'s public code: the
    /// forward value is clipped, d clip(x)/dx = 1), or gives none beyond the limit (false).
    pub log_ratio_clip_straight_through: bool,
    /// How one chunk's squared errors make ℓ (FPO++ on manipulation: `sum_over_steps`).
    pub cfm_loss_reduction: CfmLossReduction,
    /// ℓ_old and ℓ_θ capped at this before their difference (FPO++ clamps the CFM losses first,
    /// then the difference; its paper gives no value): null = no cap. A draw whose ℓ_θ is
    /// above the cap gets no gradient from it.
    pub cfm_loss_clip: Option<f64>,
}

/// ℓ from squared errors [R, Tp·A] → [R] (`reduction`, with Tp chunk steps).
pub fn reduce_cfm_loss(squared_error: &Tensor, pred_horizon: i64, reduction: CfmLossReduction) -> Tensor {
    match reduction {
        CfmLossReduction::Mean => squared_error.mean_dim([-1i64].as_slice(), false, Kind::Float),
        CfmLossReduction::SumOverSteps => squared_error
            .view([squared_error.size()[0], pred_horizon, -1])
            .mean_dim([-1i64].as_slice(), false, Kind::Float)
            .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float),
    }
}

/// log ρ from old and new losses [B, N] as the `fpo` settings say: both capped at
/// `cfm_loss_clip` when set, then per draw [B, N] (FPO++) or per chunk [B, 1] (FPO), clipped to
/// ±`log_ratio_clip` (straight-through: the clipped value, the unclipped gradient).
pub fn fpo_log_ratio(old_losses: &Tensor, new_losses: &Tensor, fpo: &FpoSettings) -> Tensor {
    let difference = match fpo.cfm_loss_clip {
        Some(cap) => old_losses.clamp_max(cap) - new_losses.clamp_max(cap),
        None => old_losses - new_losses,
    };
    let log_ratio =
        if fpo.per_sample_ratio { difference } else { difference.mean_dim([-1i64].as_slice(), true, Kind::Float) };
    let clipped = log_ratio.clamp(-fpo.log_ratio_clip, fpo.log_ratio_clip);
    if fpo.log_ratio_clip_straight_through {
        &log_ratio + (clipped - &log_ratio).detach()
    } else {
        clipped
    }
}

/// The trust-region objective as a loss, mean over its elements: log ρ [B, M] (with gradient)
/// and Â [B, 1] broadcast along the draws.
pub fn trust_region_loss(log_ratio: &Tensor, advantages: &Tensor, clip: f64, region: TrustRegion) -> Tensor {
    let ratio = log_ratio.exp();
    let ppo = (-advantages * &ratio).maximum(&(-advantages * ratio.clamp(1.0 - clip, 1.0 + clip)));
    match region {
        TrustRegion::Ppo => ppo.mean(Kind::Float),
        TrustRegion::Aspo => {
            let spo = -(advantages * &ratio - advantages.abs() / (2.0 * clip) * (&ratio - 1.0).square());
            ppo.where_self(&advantages.ge(0.0).expand_as(&ratio), &spo).mean(Kind::Float)
        }
    }
}

/// p50, p90, p99 and max of sorted losses (nearest rank); none for an empty round.
pub fn cfm_loss_quantiles(sorted: &[f64]) -> Metrics {
    let Some(&max) = sorted.last() else { return Vec::new() };
    let rank = |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    vec![
        ("fpo/cfm_loss_old_p50".into(), rank(0.5)),
        ("fpo/cfm_loss_old_p90".into(), rank(0.9)),
        ("fpo/cfm_loss_old_p99".into(), rank(0.99)),
        ("fpo/cfm_loss_old_max".into(), max),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FPO++ settings with the ratio's own options (per draw or per chunk, cap, clip, its gradient).
    fn ratio_settings(per_sample: bool, cap: Option<f64>, clip: f64, straight_through: bool) -> FpoSettings {
        FpoSettings {
            samples_per_chunk: 2,
            per_sample_ratio: per_sample,
            trust_region: TrustRegion::Ppo,
            log_ratio_clip: clip,
            log_ratio_clip_straight_through: straight_through,
            cfm_loss_reduction: CfmLossReduction::SumOverSteps,
            cfm_loss_clip: cap,
        }
    }

    /// Old losses (1.0, 2.0), new (0.5, 2.5): per draw log ρ = (0.5, −0.5); FPO's averaged
    /// ratio: log ρ = 0 (ρ = 1) for the chunk; a clip of 0.3 caps the per-draw values.
    #[test]
    fn the_fpo_ratio_from_known_losses() {
        let old = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]);
        let new = Tensor::from_slice(&[0.5f32, 2.5]).view([1, 2]);
        let ratio = |per_sample, clip| fpo_log_ratio(&old, &new, &ratio_settings(per_sample, None, clip, false));
        let per_draw: Vec<f32> = ratio(true, 5.0).view([-1]).try_into().unwrap();
        assert_eq!(per_draw, [0.5, -0.5]);
        assert_eq!(ratio(false, 5.0).size(), [1, 1]);
        assert!(ratio(false, 5.0).double_value(&[0, 0]).abs() < 1e-7);
        let clipped: Vec<f32> = ratio(true, 0.3).view([-1]).try_into().unwrap();
        assert_eq!(clipped, [0.3, -0.3]);
    }

    /// Old losses (1, 0), new (0, 0) with the clip at 0.5: log ρ = (0.5, 0) either way; the
    /// clipped draw's d log ρ / d ℓ_θ is −1 straight-through and 0 without.
    #[test]
    fn the_straight_through_clip_by_hand() {
        for (straight_through, expected) in [(true, [-1.0f32, -1.0]), (false, [0.0, -1.0])] {
            let old = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
            let new = Tensor::from_slice(&[0.0f32, 0.0]).view([1, 2]).set_requires_grad(true);
            let log_ratio = fpo_log_ratio(&old, &new, &ratio_settings(true, None, 0.5, straight_through));
            let values: Vec<f32> = log_ratio.view([-1]).try_into().unwrap();
            assert_eq!(values, [0.5, 0.0]);
            log_ratio.sum(Kind::Float).backward();
            let grad: Vec<f32> = new.grad().view([-1]).try_into().unwrap();
            assert_eq!(grad, expected, "straight-through {straight_through}");
        }
    }

    /// Old losses (1, 6), new (2, 7), losses capped at 5: log ρ = (1 − 2, 5 − 5) = (−1, 0), and
    /// the capped draw gives ℓ_θ no gradient (d log ρ / d ℓ_θ = (−1, 0)).
    #[test]
    fn capped_cfm_losses_by_hand() {
        let old = Tensor::from_slice(&[1.0f32, 6.0]).view([1, 2]);
        let new = Tensor::from_slice(&[2.0f32, 7.0]).view([1, 2]).set_requires_grad(true);
        let log_ratio = fpo_log_ratio(&old, &new, &ratio_settings(true, Some(5.0), 10.0, false));
        let values: Vec<f32> = log_ratio.view([-1]).try_into().unwrap();
        assert_eq!(values, [-1.0, 0.0]);
        log_ratio.sum(Kind::Float).backward();
        let grad: Vec<f32> = new.grad().view([-1]).try_into().unwrap();
        assert_eq!(grad, [-1.0, 0.0]);
    }

    #[test]
    fn cfm_loss_quantiles_by_nearest_rank() {
        // 1..=100: p50 = 50, p90 = 90, p99 = 99, max = 100; one loss: all four are it.
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        let values: Vec<f64> = cfm_loss_quantiles(&sorted).into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, vec![50.0, 90.0, 99.0, 100.0]);
        let one: Vec<f64> = cfm_loss_quantiles(&[3.5]).into_iter().map(|(_, v)| v).collect();
        assert_eq!(one, vec![3.5; 4]);
        assert!(cfm_loss_quantiles(&[]).is_empty());
    }

    /// Squared errors of one chunk of Tp = 2 steps × A = 3 numbers: step 1 (1, 2, 3), step 2
    /// (0, 0, 6). `mean`: 12 / 6 = 2; `sum_over_steps`: 6/3 + 6/3 = 4 (= Tp × mean).
    #[test]
    fn the_cfm_loss_reductions_by_hand() {
        let squared = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.0, 0.0, 6.0]).view([1, 6]);
        let mean = reduce_cfm_loss(&squared, 2, CfmLossReduction::Mean).double_value(&[0]);
        let sum = reduce_cfm_loss(&squared, 2, CfmLossReduction::SumOverSteps).double_value(&[0]);
        assert_eq!((mean, sum), (2.0, 4.0));
        // Rows stay rows: two chunks give two losses.
        let two = Tensor::cat(&[&squared, &(&squared * 2.0)], 0);
        let sums: Vec<f32> = reduce_cfm_loss(&two, 2, CfmLossReduction::SumOverSteps).try_into().unwrap();
        assert_eq!(sums, [4.0, 8.0]);
    }

    /// ε = 0.2. Â = −1, ρ = 0.9: SPO's objective −0.9 − (1/0.4)·0.01 = −0.925, loss 0.925, and
    /// d loss/dρ = −(Â − |Â|/ε·(ρ − 1)) = −(−1 + 0.5) = 0.5, so d loss/d log ρ = 0.45 (PPO's
    /// clip would give 0.9 here, and 0 beyond 0.8). Â = +1, ρ = 1.5: PPO's clip, loss −1.2,
    /// no gradient.
    #[test]
    fn the_asymmetric_trust_region_by_hand() {
        let log_ratio = Tensor::from_slice(&[0.9f32.ln(), 1.5f32.ln()]).view([2, 1]).set_requires_grad(true);
        let advantages = Tensor::from_slice(&[-1.0f32, 1.0]).view([2, 1]);
        let loss = trust_region_loss(&log_ratio, &advantages, 0.2, TrustRegion::Aspo);
        assert!((loss.double_value(&[]) - (0.925 - 1.2) / 2.0).abs() < 1e-6, "{}", loss.double_value(&[]));
        loss.backward();
        let grad: Vec<f32> = log_ratio.grad().view([-1]).try_into().unwrap();
        assert!((grad[0] - 0.45 / 2.0).abs() < 1e-6 && grad[1].abs() < 1e-9, "{grad:?}");
        // Beyond the clip edge SPO still pulls back: ρ = 0.6, Â = −1 → dL/dρ = −(−1 + 2) = −1.
        let log_ratio = Tensor::from_slice(&[0.6f32.ln()]).view([1, 1]).set_requires_grad(true);
        trust_region_loss(&log_ratio, &Tensor::from_slice(&[-1.0f32]).view([1, 1]), 0.2, TrustRegion::Aspo).backward();
        assert!((log_ratio.grad().double_value(&[0, 0]) + 0.6).abs() < 1e-5);
    }
}
