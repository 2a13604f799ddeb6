//! Does the critic know which states succeed? (`rldt-vision eval --critic-calibration`.)
//!
//! During a plain evaluation the fine-tune's critic scores every executed chunk,
//! q_i = mean_h Q_h(s_i, a_i[..Ta·A]), and each decision is labelled with its episode's
//! outcome y ∈ {0, 1}. The critic is trained towards the discounted eventual success
//! (docs/algorithm.md §3: sparse reward, success mask, γ = 0.999 per chunk, so the target of a
//! decision in a succeeding episode is ≥ 0.999¹⁰⁰ ≈ 0.90 over a 400-step Square episode), so a
//! critic that has learned the value of the policy separates the two groups:
//!
//! ```text
//! AUC   = P(q⁺ > q⁻) + ½·P(q⁺ = q⁻)          q⁺ from succeeding, q⁻ from failing episodes
//! Brier = mean_i (q_i − y_i)²
//! ```
//!
//! Both over every decision (decisions of one episode are correlated: the interval of such an
//! AUC is wider than the decision count suggests) and over the first decision of each episode
//! only (one number per episode, every one at an initial state). Beside best-of-n
//! (`rl::best_of_n`), which asks whether Q ranks actions at one state, this asks whether Q
//! ranks states: a critic can do the second and not the first.

use serde::{Deserialize, Serialize};

/// The critic's scores of one evaluation against its episodes' outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticCalibration {
    /// Decisions scored (chunks executed), over all episodes.
    pub decisions: usize,
    /// Decisions in succeeding episodes.
    pub decisions_in_successes: usize,
    /// AUC of q over every decision, labelled by its episode's success (None: one class empty).
    pub auc_all_decisions: Option<f64>,
    /// AUC of the first decision's q per episode.
    pub auc_first_decision: Option<f64>,
    /// Mean q over decisions of succeeding episodes, and of failing ones.
    pub mean_q_success: Option<f64>,
    pub mean_q_failure: Option<f64>,
    /// mean (q − y)² over every decision.
    pub brier: Option<f64>,
}

/// P(x > y) + ½·P(x = y) for x from `positives`, y from `negatives` (every pair compared);
/// None when either is empty.
pub fn auc(positives: &[f64], negatives: &[f64]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let wins: f64 = positives
        .iter()
        .map(|p| {
            negatives
                .iter()
                .map(|n| {
                    if p > n {
                        1.0
                    } else if p == n {
                        0.5
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
        })
        .sum();
    Some(wins / (positives.len() * negatives.len()) as f64)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The calibration of per-episode (success, q of each executed chunk in order).
pub fn calibration(episodes: &[(bool, Vec<f64>)]) -> CriticCalibration {
    let pooled = |success: bool| -> Vec<f64> {
        episodes.iter().filter(|(s, _)| *s == success).flat_map(|(_, q)| q.iter().copied()).collect()
    };
    let first = |success: bool| -> Vec<f64> {
        episodes.iter().filter(|(s, _)| *s == success).filter_map(|(_, q)| q.first().copied()).collect()
    };
    let (q_success, q_failure) = (pooled(true), pooled(false));
    let squared_errors: Vec<f64> =
        q_success.iter().map(|q| (q - 1.0).powi(2)).chain(q_failure.iter().map(|q| q.powi(2))).collect();
    CriticCalibration {
        decisions: q_success.len() + q_failure.len(),
        decisions_in_successes: q_success.len(),
        auc_all_decisions: auc(&q_success, &q_failure),
        auc_first_decision: auc(&first(true), &first(false)),
        mean_q_success: mean(&q_success),
        mean_q_failure: mean(&q_failure),
        brier: mean(&squared_errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positives (0.9, 0.5), negatives (0.5, 0.1): pairs 0.9>0.5, 0.9>0.1, 0.5=0.5 (½),
    /// 0.5>0.1 → 3.5/4.
    #[test]
    fn auc_by_hand() {
        assert_eq!(auc(&[0.9, 0.5], &[0.5, 0.1]), Some(0.875));
        assert_eq!(auc(&[0.1], &[0.9]), Some(0.0));
        assert_eq!(auc(&[], &[0.9]), None);
    }

    /// Success with q (0.8, 1.0), failures with (0.2) and (0.9, 0.0): pooled, 0.8 beats 0.2
    /// and 0.0, not 0.9; 1.0 beats all → 5/6; first decisions 0.8 against 0.2 and 0.9 → ½;
    /// means 0.9 and 1.1/3; Brier (0.04 + 0 + 0.04 + 0.81 + 0)/5 = 0.178.
    #[test]
    fn calibration_by_hand() {
        let c = calibration(&[(true, vec![0.8, 1.0]), (false, vec![0.2]), (false, vec![0.9, 0.0])]);
        assert_eq!((c.decisions, c.decisions_in_successes), (5, 2));
        assert!((c.auc_all_decisions.unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(c.auc_first_decision, Some(0.5));
        assert!((c.mean_q_success.unwrap() - 0.9).abs() < 1e-12);
        assert!((c.mean_q_failure.unwrap() - 1.1 / 3.0).abs() < 1e-12);
        assert!((c.brier.unwrap() - 0.178).abs() < 1e-12);
    }

    #[test]
    fn no_successes_leave_the_aucs_empty() {
        let c = calibration(&[(false, vec![0.2, 0.3])]);
        assert_eq!((c.auc_all_decisions, c.auc_first_decision, c.mean_q_success), (None, None, None));
        assert_eq!(c.decisions, 2);
    }
}
