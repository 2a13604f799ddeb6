//! Does the critic's action gradient point toward success? (`rldt-vision eval --q-ascent η`):
//! at every chunk boundary the policy samples its plain chunk, and the executed part moves a
//! fixed distance η (normalised action units, over the whole executed part) along the
//! direction in which the fine-tune's critic says Q rises:
//!
//! ```text
//! a   ~ π(·|s)                                   (the plain evaluation's sample)
//! g   = ∇_e mean_h Q_h(s, e) at e = a[..Ta·A]
//! a'  = a[..Ta·A] + η · g / ‖g‖                  (the rest of the chunk unchanged)
//! ```
//!
//! No clamp to the normalised data range: the plain samples are not clamped either, so the
//! step is the only difference (the environment's own limits apply to both, `env_actions`).
//!
//! The control (`--ascent-direction random`): the same distance η in a random direction,
//! u = ε/‖ε‖ with ε ~ N(0, I) drawn per (episode seed, step) (reproducible, independent of
//! the batch), in place of g/‖g‖. A step along ∇Q that does worse than a random step of the
//! same length is a gradient that points away from success, not a task too tight to perturb.
//!
//! RLDT's transport field, the delta ablation and QAM's adjoint all move the policy along
//! this gradient of this critic; a step along it at evaluation, on the same fixed seeds as the
//! plain evaluation (η = 0), is the first-order test of that signal without any training in
//! between: success that rises with small η says the direction helps, success that falls says
//! following it hurts. Beside the episodes the report gives the mean ‖g‖, the mean Q before the
//! step and the critic's own mean gain Q(s, a') − Q(s, a) (`QAscent`).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::best_of_n::CriticRanker;
use crate::policy::{FlowPolicy, ObsBatch};

/// Noise-key offset of the random directions: far above any episode seed and apart from
/// best-of-n's candidate offsets (multiples of 2⁴⁰ below 2⁴⁸).
const RANDOM_DIRECTION_SEED_OFFSET: u64 = 1 << 56;

/// Which way `eval --q-ascent` moves the executed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AscentDirection {
    /// g/‖g‖, the critic's ∇_a Q.
    Gradient,
    /// A random unit direction per (episode seed, step): the control.
    Random,
}

/// Sums over every stepped decision (a state at a chunk boundary).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AscentSums {
    pub decisions: usize,
    /// Σ ‖g‖.
    pub gradient_norm: f64,
    /// Σ Q(s, a) and Σ (Q(s, a') − Q(s, a)).
    pub q_before: f64,
    pub q_gain: f64,
}

impl AscentSums {
    pub fn add(&mut self, other: AscentSums) {
        self.decisions += other.decisions;
        self.gradient_norm += other.gradient_norm;
        self.q_before += other.q_before;
        self.q_gain += other.q_gain;
    }

    /// The report of the sums for a step `step` in `direction`.
    pub fn report(&self, step: f64, direction: AscentDirection) -> QAscent {
        let n = self.decisions.max(1) as f64;
        QAscent {
            step,
            direction,
            decisions: self.decisions,
            mean_gradient_norm: self.gradient_norm / n,
            mean_q: self.q_before / n,
            mean_q_gain: self.q_gain / n,
        }
    }
}

/// What `eval --q-ascent` reports beside the episodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QAscent {
    /// η: the distance moved, normalised units over the executed part.
    pub step: f64,
    pub direction: AscentDirection,
    pub decisions: usize,
    /// Mean ‖∇_a Q‖ over the executed part at the policy's samples.
    pub mean_gradient_norm: f64,
    /// Mean Q (over heads) of the policy's samples.
    pub mean_q: f64,
    /// Mean Q(s, a') − Q(s, a) by the same critic: what the step gains by its own measure.
    pub mean_q_gain: f64,
}

/// Chunks [B, D] (normalised, the policy's samples at obs, B states; keys (episode seed,
/// step) per state) → the stepped chunks [B, D] and the decisions' sums. A zero gradient
/// leaves its chunk unchanged.
pub fn ascend(
    ranker: &CriticRanker,
    policy: &FlowPolicy,
    obs: &ObsBatch,
    keys: &[(u64, usize)],
    chunks: &Tensor,
    step: f64,
    direction: AscentDirection,
) -> (Tensor, AscentSums) {
    let exec = policy.spec().config.exec_horizon * policy.spec().action_dim;
    let features = ranker.features(obs); // once for both evaluations of Q
    let (q, gradient) = ranker.executed_q_and_gradient(policy, &features, chunks); // [B], [B, E]
    tch::no_grad(|| {
        let norm = gradient.norm_scalaropt_dim(2.0, [-1], true); // [B, 1]
        let direction = match direction {
            AscentDirection::Gradient => &gradient / norm.clamp_min(1e-12),
            AscentDirection::Random => {
                let shifted: Vec<(u64, usize)> =
                    keys.iter().map(|&(seed, at)| (seed.wrapping_add(RANDOM_DIRECTION_SEED_OFFSET), at)).collect();
                let noise = policy.episode_noise(&shifted).narrow(1, 0, exec); // [B, E]
                &noise / noise.norm_scalaropt_dim(2.0, [-1], true)
            }
        };
        let executed = chunks.narrow(1, 0, exec) + direction * step;
        let rest = chunks.size()[1] - exec;
        let stepped = if rest > 0 { Tensor::cat(&[executed, chunks.narrow(1, exec, rest)], 1) } else { executed };
        let q_after = ranker.executed_q_at(policy, &features, &stepped);
        let sums = AscentSums {
            decisions: chunks.size()[0] as usize,
            gradient_norm: norm.sum(Kind::Double).double_value(&[]),
            q_before: q.sum(Kind::Double).double_value(&[]),
            q_gain: (&q_after - &q).sum(Kind::Double).double_value(&[]),
        };
        (stepped, sums)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two decisions: ‖g‖ 3 and 5, Q 0.2 and 0.4, gains 0.1 and 0.3 → means 4, 0.3, 0.2; the
    /// sums of two batches add to the same means.
    #[test]
    fn the_report_averages_over_decisions() {
        let one = AscentSums { decisions: 2, gradient_norm: 8.0, q_before: 0.6, q_gain: 0.4 };
        let report = one.report(0.5, AscentDirection::Gradient);
        assert_eq!((report.step, report.decisions), (0.5, 2));
        assert!((report.mean_gradient_norm - 4.0).abs() < 1e-12);
        assert!((report.mean_q - 0.3).abs() < 1e-12 && (report.mean_q_gain - 0.2).abs() < 1e-12);
        let mut two = one;
        two.add(one);
        assert_eq!(two.report(0.5, AscentDirection::Gradient), QAscent { decisions: 4, ..report });
        assert_eq!(AscentSums::default().report(1.0, AscentDirection::Random).mean_gradient_norm, 0.0);
    }
}
