//! Critic-ranked action selection, best-of-n (QAM's `best_of_n`; `rldt-vision eval
//! --best-of-n N`): at every chunk boundary the policy proposes n plain ODE chunks per state,
//! the fine-tune's critic scores each by the mean over its heads of Q(s, a_exec), and the
//! highest-scoring chunk runs:
//!
//! ```text
//! a_j ~ π(·|s)  (j = 0..n, x_0 of candidate j from key (seed + j·2⁴⁰, step))
//! a*  = a_argmax_j mean_h Q_h(s, a_j[..Ta·A])      (--rank-by min: min_h Q_h)
//! ```
//!
//! Beside the choice, how atypical the chosen proposals are: the spread ratio
//! Σ ‖a* − ā‖ / Σ mean_j ‖a_j − ā‖ over every ranked state (executed part, normalised units,
//! ā the mean of the state's n proposals): 1 when the critic picks like chance, > 1 when it
//! prefers the policy's outlying proposals.
//!
//! And how much the critic tells the proposals apart: the mean over ranked states of the
//! standard deviation of Q over that state's n proposals, beside the standard deviation over
//! states of their proposals' mean Q (`QSpread`). A within-state spread far below the
//! across-state one is a critic that scores states, not actions.
//!
//! Candidate 0 uses the plain evaluation's noise, so n = 1 is the plain evaluation exactly.
//! Comparing n = 1 with n > 1 on the same fixed seeds asks whether the critic ranks the
//! policy's own proposals better than chance: the question every critic-guided method (RLDT's
//! transport, QAM, the delta field) depends on.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::critic::Critic;
use crate::error::{Error, Result};
use crate::policy::checkpoint;
use crate::policy::{FlowPolicy, ObsBatch};

use super::rldt::CRITIC_FILE; // the online critic of a fine-tuning checkpoint (`Rldt::save`)

/// Noise-key offset between candidates: far above any episode seed.
const CANDIDATE_SEED_STRIDE: u64 = 1 << 40;

/// How the critic's heads score a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    /// mean_h Q_h (QAM's best-of-n).
    Mean,
    /// min_h Q_h (pessimistic, as RLDT's bootstrap target).
    Min,
}

/// A ranked batch: the chosen chunks [B, D], the two sums of the spread ratio and those of Q.
pub struct Selection {
    pub chunks: Tensor,
    /// Σ over states of ‖a* − ā‖ (executed part).
    pub chosen_distance: f64,
    /// Σ over states of mean_j ‖a_j − ā‖ (executed part).
    pub candidate_distance: f64,
    pub q_spread: QSpread,
}

/// Running sums of the ranking scores q [n, B] over every ranked state b.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QSpread {
    pub states: usize,
    /// Σ_b std_j q_jb (population std over the state's proposals).
    pub within_std: f64,
    /// Σ_b mean_j q_jb and Σ_b (mean_j q_jb)².
    pub state_mean: f64,
    pub state_mean_squared: f64,
}

impl QSpread {
    /// The sums of one batch of scores q [n, B].
    pub fn of(q: &Tensor) -> Self {
        let per_state = q.mean_dim(0, false, Kind::Double); // [B]
        QSpread {
            states: q.size()[1] as usize,
            within_std: q.to_kind(Kind::Double).std_dim(0, false, false).sum(Kind::Double).double_value(&[]),
            state_mean: per_state.sum(Kind::Double).double_value(&[]),
            state_mean_squared: per_state.square().sum(Kind::Double).double_value(&[]),
        }
    }

    pub fn add(&mut self, other: QSpread) {
        self.states += other.states;
        self.within_std += other.within_std;
        self.state_mean += other.state_mean;
        self.state_mean_squared += other.state_mean_squared;
    }

    /// (mean over states of the within-state std, population std over states of the state means).
    pub fn stds(&self) -> (f64, f64) {
        let n = self.states.max(1) as f64;
        let mean = self.state_mean / n;
        (self.within_std / n, (self.state_mean_squared / n - mean * mean).max(0.0).sqrt())
    }
}

/// The online critic of a fine-tuning checkpoint, ready to rank chunks.
pub struct CriticRanker {
    _vs: nn::VarStore,
    critic: Critic,
}

impl CriticRanker {
    /// Loads `critic.safetensors` of checkpoint `dir` for a policy of `policy`'s spec; the
    /// number of heads is read from the file (`heads.{h}.*`). A checkpoint without a critic
    /// (pretraining, the on-policy baselines) is refused by name.
    pub fn load(dir: &Path, policy: &FlowPolicy, device: Device) -> Result<Self> {
        let path = dir.join(CRITIC_FILE);
        if !path.is_file() {
            return Err(Error::Usage(format!(
                "best-of-n needs a critic: {} has no {CRITIC_FILE} (only RLDT and QAM fine-tuning checkpoints carry one)",
                dir.display()
            )));
        }
        let tensors = Tensor::read_safetensors(&path).map_err(|source| Error::Tch { path: path.clone(), source })?;
        let heads = heads_in(tensors.iter().map(|(name, _)| name.as_str()));
        if heads == 0 {
            return Err(Error::Usage(format!("{}: no `heads.*` tensors, not a critic", path.display())));
        }
        let mut vs = nn::VarStore::new(device);
        let critic = Critic::new(&vs.root(), policy.spec(), heads).map_err(crate::policy::PolicyError::from)?;
        checkpoint::load_weights_from(&mut vs, tensors, &path)?; // the file is read once
        Ok(Self { _vs: vs, critic })
    }

    /// mean_h Q_h(s, a[..Ta·A]) of normalised chunks [B, D] at obs (B states) → B scores (no
    /// gradient; `rl::critic_calibration`).
    pub fn executed_q(&self, policy: &FlowPolicy, obs: &ObsBatch, chunks: &Tensor) -> Vec<f64> {
        let q = self.executed_q_at(policy, &self.features(obs), chunks);
        Vec::<f64>::try_from(q.to_kind(Kind::Double)).expect("a [B] tensor")
    }

    /// The critic's state features [B, F] of obs (no gradient).
    pub fn features(&self, obs: &ObsBatch) -> Tensor {
        tch::no_grad(|| self.critic.features(obs, false))
    }

    /// mean_h Q_h(s, a[..Ta·A]) at the critic's features [B, F] → [B] (no gradient).
    pub fn executed_q_at(&self, policy: &FlowPolicy, features: &Tensor, chunks: &Tensor) -> Tensor {
        let exec = policy.spec().config.exec_horizon * policy.spec().action_dim;
        tch::no_grad(|| {
            self.critic.q_from_features(features, &chunks.narrow(1, 0, exec)).mean_dim(-1, false, Kind::Float)
        })
    }

    /// `executed_q_at` [B] and its gradient with respect to the executed part,
    /// ∇_e mean_h Q_h(s, e) at e = a[..Ta·A] → [B, Ta·A] (`rl::q_ascent`). Only the action is
    /// differentiated.
    pub fn executed_q_and_gradient(&self, policy: &FlowPolicy, features: &Tensor, chunks: &Tensor) -> (Tensor, Tensor) {
        let exec = policy.spec().config.exec_horizon * policy.spec().action_dim;
        let executed = chunks.narrow(1, 0, exec).detach().set_requires_grad(true);
        let q = self.critic.q_from_features(features, &executed).mean_dim(-1, false, Kind::Float); // [B]
        let gradient = Tensor::run_backward(&[q.sum(Kind::Float)], &[&executed], false, false).remove(0);
        (q.detach(), gradient)
    }

    /// The best of n candidate chunks per state by `rank_by`: obs (B states), keys (seed,
    /// step) per state → [B, D] normalised chunks and the spread sums (no gradient).
    pub fn select(
        &self,
        policy: &FlowPolicy,
        obs: &ObsBatch,
        keys: &[(u64, usize)],
        n: usize,
        rank_by: RankBy,
    ) -> Selection {
        tch::no_grad(|| {
            let cond = policy.condition(obs, false);
            let k = policy.spec().config.num_denoising_steps;
            let candidates: Vec<Tensor> = (0..n as u64)
                .map(|j| {
                    let shifted: Vec<(u64, usize)> =
                        keys.iter().map(|&(seed, step)| (seed.wrapping_add(j * CANDIDATE_SEED_STRIDE), step)).collect();
                    policy.sample_chain(&cond, &policy.episode_noise(&shifted)).get(k)
                })
                .collect();
            let candidates = Tensor::stack(&candidates, 0); // [n, B, D]
            if n == 1 {
                return Selection {
                    chunks: candidates.get(0),
                    chosen_distance: 0.0,
                    candidate_distance: 0.0,
                    q_spread: QSpread::default(),
                };
            }
            let (b, d) = (candidates.size()[1], candidates.size()[2]);
            let exec = policy.spec().config.exec_horizon * policy.spec().action_dim;
            let features = self.features(obs).repeat([n as i64, 1]); // candidate-major
            let executed = candidates.view([n as i64 * b, d]).narrow(1, 0, exec);
            let per_head = self.critic.q_from_features(&features, &executed); // [n·B, H]
            let q = match rank_by {
                RankBy::Mean => per_head.mean_dim(-1, false, Kind::Float),
                RankBy::Min => per_head.min_dim(-1, false).0,
            };
            let chunks = best_of(&candidates, &q.view([n as i64, b]));
            let (chosen_distance, candidate_distance) =
                spread_sums(&candidates.narrow(2, 0, exec), &chunks.narrow(1, 0, exec));
            let q = q.view([n as i64, b]);
            Selection { chunks, chosen_distance, candidate_distance, q_spread: QSpread::of(&q) }
        })
    }
}

/// H from tensor names: one more than the largest h of `heads.{h}.…`.
fn heads_in<'a>(names: impl Iterator<Item = &'a str>) -> i64 {
    names
        .filter_map(|name| name.strip_prefix("heads.")?.split('.').next()?.parse::<i64>().ok())
        .max()
        .map_or(0, |h| h + 1)
}

/// candidates [n, B, E], chosen [B, E] → (Σ_b ‖a*_b − ā_b‖, Σ_b mean_j ‖a_j,b − ā_b‖), ā_b the
/// mean of state b's candidates.
pub fn spread_sums(candidates: &Tensor, chosen: &Tensor) -> (f64, f64) {
    let n = candidates.size()[0] as f64;
    let centre = candidates.mean_dim(0, false, Kind::Float); // [B, E]
    let distance = |x: &Tensor| x.norm_scalaropt_dim(2.0, [-1], false).sum(Kind::Float).double_value(&[]);
    (distance(&(chosen - &centre)), distance(&(candidates - &centre)) / n)
}

/// candidates [n, B, D], scores [n, B] → [B, D]: per state the candidate with the highest score.
pub fn best_of(candidates: &Tensor, scores: &Tensor) -> Tensor {
    let d = candidates.size()[2];
    let winner = scores.argmax(0, false); // [B]
    let b = winner.size()[0];
    candidates.gather(0, &winner.view([1, b, 1]).expand([1, b, d], false), false).squeeze_dim(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three candidates for two states, D = 2: state 0's best is candidate 2, state 1's is 0.
    #[test]
    fn best_of_picks_the_highest_score_per_state() {
        let candidates = Tensor::from_slice(&[
            0.0f32, 0.1, 1.0, 1.1, // candidate 0: state 0, state 1
            2.0, 2.1, 3.0, 3.1, // candidate 1
            4.0, 4.1, 5.0, 5.1, // candidate 2
        ])
        .view([3, 2, 2]);
        let scores = Tensor::from_slice(&[0.1f32, 0.9, 0.2, 0.5, 0.3, 0.7]).view([3, 2]);
        let picked: Vec<f32> = best_of(&candidates, &scores).view([-1]).try_into().unwrap();
        assert_eq!(picked, vec![4.0, 4.1, 1.0, 1.1]);
    }

    /// One state, E = 1, candidates 0, 0, 0, 3: ā = 0.75, mean distance (3·0.75 + 2.25)/4 =
    /// 1.125; choosing 3 gives 2.25 (ratio 2), choosing a 0 gives 0.75 (ratio 2/3).
    #[test]
    fn spread_sums_by_hand() {
        let candidates = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 3.0]).view([4, 1, 1]);
        let (outlier, mean) = spread_sums(&candidates, &Tensor::from_slice(&[3.0f32]).view([1, 1]));
        assert!((outlier - 2.25).abs() < 1e-6 && (mean - 1.125).abs() < 1e-6, "{outlier} {mean}");
        let (typical, _) = spread_sums(&candidates, &Tensor::from_slice(&[0.0f32]).view([1, 1]));
        assert!((typical - 0.75).abs() < 1e-6, "{typical}");
    }

    /// Two states, three proposals: state 0 scores (0, 0, 3) (mean 1, std √2), state 1 (4, 4, 4)
    /// (mean 4, std 0): within-state std (√2 + 0)/2, across states std of (1, 4) = 1.5; the sums
    /// of two batches add.
    #[test]
    fn q_spread_by_hand() {
        let q = Tensor::from_slice(&[0.0f32, 4.0, 0.0, 4.0, 3.0, 4.0]).view([3, 2]);
        let mut spread = QSpread::of(&q);
        let (within, across) = spread.stds();
        assert!((within - 2f64.sqrt() / 2.0).abs() < 1e-9 && (across - 1.5).abs() < 1e-9, "{within} {across}");
        spread.add(QSpread::of(&q));
        assert_eq!(spread.states, 4);
        let (within_twice, across_twice) = spread.stds();
        assert!((within_twice - within).abs() < 1e-9 && (across_twice - across).abs() < 1e-9);
    }

    #[test]
    fn heads_counted_from_tensor_names() {
        let names = ["encoder.x", "heads.0.0.weight", "heads.9.3.bias", "heads.2.1.weight"];
        assert_eq!(heads_in(names.into_iter()), 10);
        assert_eq!(heads_in(["encoder.x"].into_iter()), 0);
    }
}
