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
//! Both over every decision and over the first decision of each episode only (one number per
//! episode, every one at an initial state). Decisions of one episode are correlated, so the
//! 95% intervals resample whole episodes (percentile bootstrap, 1,000 resamples, fixed seed):
//! the interval of the pooled AUC is as wide as its ~100 episodes make it, not its ~9,000
//! decisions. Beside best-of-n
//! (`rl::best_of_n`), which asks whether Q ranks actions at one state, this asks whether Q
//! ranks states: a critic can do the second and not the first.

use rldt_datasets::random::SplitMix64;
use serde::{Deserialize, Serialize};

/// Episode resamples of the bootstrap intervals, and their generator's seed.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;
const BOOTSTRAP_SEED: u64 = 0x5eed_ca1b;

/// The critic's scores of one evaluation against its episodes' outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticCalibration {
    /// Decisions scored (chunks executed), over all episodes.
    pub decisions: usize,
    /// Decisions in succeeding episodes.
    pub decisions_in_successes: usize,
    /// AUC of q over every decision, labelled by its episode's success (None: one class empty).
    pub auc_all_decisions: Option<f64>,
    /// Its 95% interval, episodes resampled (None: too few episodes of either outcome).
    pub auc_all_decisions_ci95: Option<[f64; 2]>,
    /// AUC of the first decision's q per episode.
    pub auc_first_decision: Option<f64>,
    pub auc_first_decision_ci95: Option<[f64; 2]>,
    /// Mean q over decisions of succeeding episodes, and of failing ones.
    pub mean_q_success: Option<f64>,
    pub mean_q_failure: Option<f64>,
    /// mean (q − y)² over every decision.
    pub brier: Option<f64>,
}

/// P(x > y) + ½·P(x = y) for x from `positives`, y from `negatives`; None when either is
/// empty. By ranks (Mann–Whitney): all values sorted, tied values share their mean rank r,
/// AUC = (Σ r⁺ − n⁺(n⁺ + 1)/2) / (n⁺·n⁻); O(n log n), so the bootstrap can afford it.
pub fn auc(positives: &[f64], negatives: &[f64]) -> Option<f64> {
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> =
        positives.iter().map(|&q| (q, true)).chain(negatives.iter().map(|&q| (q, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < all.len() {
        let end = start + all[start..].iter().take_while(|(q, _)| *q == all[start].0).count();
        let mean_rank = (start + 1 + end) as f64 / 2.0; // ranks start + 1 ..= end
        positive_rank_sum += mean_rank * all[start..end].iter().filter(|(_, p)| *p).count() as f64;
        start = end;
    }
    let (n_pos, n_neg) = (positives.len() as f64, negatives.len() as f64);
    Some((positive_rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// The 2.5% and 97.5% percentiles of `statistic` over `BOOTSTRAP_RESAMPLES` resamples of
/// `episodes` with replacement (a resample where it is undefined is skipped); None when fewer
/// than 2 episodes of either outcome (no interval to speak of).
fn episode_bootstrap(
    episodes: &[(bool, Vec<f64>)],
    statistic: impl Fn(&[&(bool, Vec<f64>)]) -> Option<f64>,
) -> Option<[f64; 2]> {
    let successes = episodes.iter().filter(|(s, _)| *s).count();
    if successes < 2 || episodes.len() - successes < 2 {
        return None;
    }
    let mut random = SplitMix64::new(BOOTSTRAP_SEED);
    let mut values: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .filter_map(|_| {
            let resample: Vec<&(bool, Vec<f64>)> =
                (0..episodes.len()).map(|_| &episodes[random.below(episodes.len())]).collect();
            statistic(&resample)
        })
        .collect();
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    (!values.is_empty()).then(|| [at(0.025), at(0.975)])
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Every decision's q of the episodes with outcome `success`.
fn pooled(episodes: &[&(bool, Vec<f64>)], success: bool) -> Vec<f64> {
    episodes.iter().filter(|(s, _)| *s == success).flat_map(|(_, q)| q.iter().copied()).collect()
}

/// The first decision's q of the episodes with outcome `success`.
fn first(episodes: &[&(bool, Vec<f64>)], success: bool) -> Vec<f64> {
    episodes.iter().filter(|(s, _)| *s == success).filter_map(|(_, q)| q.first().copied()).collect()
}

/// The calibration of per-episode (success, q of each executed chunk in order).
pub fn calibration(episodes: &[(bool, Vec<f64>)]) -> CriticCalibration {
    let all: Vec<&(bool, Vec<f64>)> = episodes.iter().collect();
    let (q_success, q_failure) = (pooled(&all, true), pooled(&all, false));
    let squared_errors: Vec<f64> =
        q_success.iter().map(|q| (q - 1.0).powi(2)).chain(q_failure.iter().map(|q| q.powi(2))).collect();
    CriticCalibration {
        decisions: q_success.len() + q_failure.len(),
        decisions_in_successes: q_success.len(),
        auc_all_decisions: auc(&q_success, &q_failure),
        auc_all_decisions_ci95: episode_bootstrap(episodes, |e| auc(&pooled(e, true), &pooled(e, false))),
        auc_first_decision: auc(&first(&all, true), &first(&all, false)),
        auc_first_decision_ci95: episode_bootstrap(episodes, |e| auc(&first(e, true), &first(e, false))),
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

    /// The rank formula against every pair compared, on values with ties.
    #[test]
    fn auc_by_ranks_equals_auc_by_pairs() {
        let positives = [0.3, 0.7, 0.7, 0.1, 0.9];
        let negatives = [0.7, 0.2, 0.1, 0.1, 0.5, 0.3];
        let pairs: f64 = positives
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
        let by_pairs = pairs / (positives.len() * negatives.len()) as f64;
        assert!((auc(&positives, &negatives).unwrap() - by_pairs).abs() < 1e-12);
    }

    /// A critic that separates perfectly keeps AUC 1 in every resample: interval [1, 1]; one
    /// that scores every decision alike gives ½ in every resample; one success is too few.
    #[test]
    fn bootstrap_intervals_of_known_cases() {
        let separated: Vec<(bool, Vec<f64>)> = (0..20).map(|i| (i % 4 == 0, vec![(i % 4 == 0) as u8 as f64])).collect();
        assert_eq!(calibration(&separated).auc_all_decisions_ci95, Some([1.0, 1.0]));
        let alike: Vec<(bool, Vec<f64>)> = (0..20).map(|i| (i % 4 == 0, vec![0.3, 0.3])).collect();
        assert_eq!(calibration(&alike).auc_first_decision_ci95, Some([0.5, 0.5]));
        let one_success = [(true, vec![0.9]), (false, vec![0.1]), (false, vec![0.2])];
        assert_eq!(calibration(&one_success).auc_all_decisions_ci95, None);
    }

    /// Noisy scores: the interval holds the point estimate and lies within [0, 1].
    #[test]
    fn the_interval_brackets_the_estimate() {
        let mut random = SplitMix64::new(7);
        let episodes: Vec<(bool, Vec<f64>)> = (0..60)
            .map(|i| {
                let success = i % 3 == 0;
                (success, (0..5).map(|_| random.uniform() + if success { 0.3 } else { 0.0 }).collect())
            })
            .collect();
        let c = calibration(&episodes);
        let ([low, high], estimate) = (c.auc_all_decisions_ci95.unwrap(), c.auc_all_decisions.unwrap());
        assert!(0.0 <= low && low < estimate && estimate < high && high <= 1.0, "{low} {estimate} {high}");
    }

    #[test]
    fn no_successes_leave_the_aucs_empty() {
        let c = calibration(&[(false, vec![0.2, 0.3])]);
        assert_eq!((c.auc_all_decisions, c.auc_first_decision, c.mean_q_success), (None, None, None));
        assert_eq!(c.decisions, 2);
    }
}
