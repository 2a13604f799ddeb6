//! Chunk rewards → critic targets (docs/algorithm.md §3), on [N, T] tensors: N trajectories,
//! T chunks each, time along dimension 1.
//!
//! 1. Change of reward: r'_t = r_t − (1 − done_{t−1})·r_{t−1}   (r'_0 = r_0).
//! 2. Scale the whole collection round by max(1, the largest raw chunk reward in it).
//! 3. Success mask: cum_t = (1 − done_{t−1})·cum_{t−1} + r'_t; a step is masked out where
//!    cum_t ≥ 1 and r'_t = 0 (a step where success is lost, r' < 0, stays);
//!    done_t := done_t ∨ (cum_t ≥ 1).  (cum uses the scaled r' and the episode dones.)
//! 4. TD(λ) backwards along each trajectory with bootstrap values Q̄_{t+1}:
//!    G_{T−1} = r_{T−1} + γ(1 − d_{T−1})·Q̄_T,
//!    G_t     = r_t + γ(1 − d_t)·[(1 − λ)·Q̄_{t+1} + λ·G_{t+1}].
//! 5. Which Q̄_{t+1} a critic loss reads at all ([`needed_bootstraps`]): the loss reads G_t
//!    where mask_t > 0, and G_t reads Q̄_{t+1} and G_{t+1} only where d_t = 0.

use tch::{Kind, Tensor};

/// Rewards, masks and dones after steps 1–3. All [N, T] f32.
#[derive(Debug)]
pub struct ShapedRewards {
    pub rewards: Tensor,
    /// 1 where the step counts in critic and actor losses, 0 where masked out.
    pub mask: Tensor,
    pub dones: Tensor,
}

/// rewards: raw chunk rewards [N, T]; dones: episode ends [N, T] (0/1). The round scale is
/// the largest reward in `rewards` (all of the round's trajectories are in it).
pub fn shape_rewards(rewards: &Tensor, dones: &Tensor) -> ShapedRewards {
    let scale = rewards.max().double_value(&[]).max(1.0);
    shape_rewards_with_scale(rewards, dones, scale)
}

/// [`shape_rewards`] with the round's scale given (trajectories shaped one by one).
pub fn shape_rewards_with_scale(rewards: &Tensor, dones: &Tensor, scale: f64) -> ShapedRewards {
    let rewards = rewards.to_kind(Kind::Float);
    let dones = dones.to_kind(Kind::Float);
    let t_len = rewards.size()[1];
    let previous_reward = Tensor::cat(&[rewards.narrow(1, 0, 1).zeros_like(), rewards.narrow(1, 0, t_len - 1)], 1);
    let previous_done = Tensor::cat(&[dones.narrow(1, 0, 1).zeros_like(), dones.narrow(1, 0, t_len - 1)], 1);
    let changed: Tensor = (&rewards - (1.0 - &previous_done) * previous_reward) / scale;
    let mut cumulative = Vec::with_capacity(t_len as usize);
    let mut cum = changed.select(1, 0);
    cumulative.push(cum.shallow_clone());
    for t in 1..t_len {
        cum = (1.0 - previous_done.select(1, t)) * &cum + changed.select(1, t);
        cumulative.push(cum.shallow_clone());
    }
    let cumulative = Tensor::stack(&cumulative, 1);
    let reached = cumulative.ge(1.0 - 1e-6);
    let masked_out = reached.logical_and(&changed.eq(0.0));
    ShapedRewards {
        mask: masked_out.logical_not().to_kind(Kind::Float),
        dones: dones.ge(0.5).logical_or(&reached).to_kind(Kind::Float),
        rewards: changed,
    }
}

/// TD(λ) targets [N, T] from rewards, dones and next values Q̄_{t+1} (all [N, T]).
pub fn td_lambda(rewards: &Tensor, dones: &Tensor, next_values: &Tensor, gamma: f64, lambda: f64) -> Tensor {
    let t_len = rewards.size()[1];
    let mut targets = Vec::with_capacity(t_len as usize);
    let last = t_len - 1;
    let mut g: Tensor = rewards.select(1, last) + (1.0 - dones.select(1, last)) * next_values.select(1, last) * gamma;
    targets.push(g.shallow_clone());
    for t in (0..last).rev() {
        let blend: Tensor = next_values.select(1, t) * (1.0 - lambda) + &g * lambda;
        g = rewards.select(1, t) + (1.0 - dones.select(1, t)) * blend * gamma;
        targets.push(g.shallow_clone());
    }
    targets.reverse();
    Tensor::stack(&targets, 1)
}

/// Per trajectory (mask, dones: [T], after steps 1–3): where Q̄_{t+1} enters a target that
/// the critic loss reads. reached_t = mask_t > 0 ∨ (reached_{t−1} ∧ d_{t−1} = 0) (G_t is read
/// by the loss, or by a read G_{t−1} that does not stop at t − 1); Q̄_{t+1} is needed where
/// reached_t ∧ d_t = 0. Any other Q̄ is multiplied by zero or feeds only targets nobody reads,
/// so computing them as 0 leaves every read target, the loss and its gradient unchanged.
pub fn needed_bootstraps(mask: &[f32], dones: &[f32]) -> Vec<bool> {
    let mut reached_before = false;
    let mut stops_before = true;
    mask.iter()
        .zip(dones)
        .map(|(&m, &d)| {
            let reached = m > 0.0 || (reached_before && !stops_before);
            (reached_before, stops_before) = (reached, d > 0.5);
            reached && d <= 0.5
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).view([1, -1])
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten(0, -1).try_into().unwrap()
    }

    /// Hand-built full-length episode: success reached at chunk 2, held at 3, lost at 4.
    /// r = [0, 0, 1, 1, 0] → r' = [0, 0, 1, 0, −1]; cum = [0, 0, 1, 1, 0];
    /// mask = [1, 1, 1, 0, 1] (held success masked, lost success kept); done' = [0, 0, 1, 1, 0].
    #[test]
    fn change_of_reward_and_success_mask() {
        let shaped = shape_rewards(&row(&[0.0, 0.0, 1.0, 1.0, 0.0]), &row(&[0.0; 5]));
        assert_eq!(values(&shaped.rewards), [0.0, 0.0, 1.0, 0.0, -1.0]);
        assert_eq!(values(&shaped.mask), [1.0, 1.0, 1.0, 0.0, 1.0]);
        assert_eq!(values(&shaped.dones), [0.0, 0.0, 1.0, 1.0, 0.0]);
    }

    /// Chunk rewards up to 4 (4 successful steps in a chunk) are scaled by the round's max;
    /// an episode boundary (done) resets the difference and the cumulative sum.
    #[test]
    fn scaling_and_episode_boundaries() {
        let rewards = Tensor::from_slice(&[0.0f32, 4.0, 2.0, 0.0, 0.0, 2.0]).view([2, 3]);
        let dones = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 0.0, 0.0, 0.0]).view([2, 3]);
        let shaped = shape_rewards(&rewards, &dones);
        // Row 0: r' = [0, 4, 2 − 0·4 = 2]/4 (the done at t = 1 cuts the difference).
        // Row 1: r' = [0, 0, 2]/4.
        assert_eq!(values(&shaped.rewards), [0.0, 1.0, 0.5, 0.0, 0.0, 0.5]);
    }

    /// Reference (by hand, γ = 0.999, λ = 0.5) with r' = [0, 0, 1, 0, −1],
    /// d' = [0, 0, 1, 1, 0], Q̄_{t+1} = [0.5, 0.6, 0.7, 0.8, 0.9]:
    /// G_4 = −1 + 0.999·0.9 = −0.1009; G_3 = 0; G_2 = 1;
    /// G_1 = 0.999·(0.5·0.6 + 0.5·1) = 0.7992; G_0 = 0.999·(0.5·0.5 + 0.5·0.7992) = 0.6489504.
    #[test]
    fn td_lambda_by_hand() {
        let g = td_lambda(
            &row(&[0.0, 0.0, 1.0, 0.0, -1.0]),
            &row(&[0.0, 0.0, 1.0, 1.0, 0.0]),
            &row(&[0.5, 0.6, 0.7, 0.8, 0.9]),
            0.999,
            0.5,
        );
        let want = [0.648_950_4, 0.7992, 1.0, 0.0, -0.1009];
        for (got, want) in values(&g).iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{:?}", values(&g));
        }
    }

    /// The by-hand episode above: mask [1, 1, 1, 0, 1], d' [0, 0, 1, 1, 0] → Q̄ needed at
    /// t = 0, 1 (chain to the success), not at 2 (done), not at 3 (masked, after a done),
    /// at 4 (success lost, bootstraps). With Q̄ = 0 elsewhere the read targets are unchanged.
    #[test]
    fn only_needed_bootstraps_change_read_targets() {
        let (mask, dones) = ([1.0f32, 1.0, 1.0, 0.0, 1.0], [0.0f32, 0.0, 1.0, 1.0, 0.0]);
        let needed = needed_bootstraps(&mask, &dones);
        assert_eq!(needed, [true, true, false, false, true]);
        let rewards = row(&[0.0, 0.0, 1.0, 0.0, -1.0]);
        let full = row(&[0.5, 0.6, 0.7, 0.8, 0.9]);
        let keep = Tensor::from_slice(&needed.iter().map(|&n| n as i32 as f32).collect::<Vec<_>>()).view([1, 5]);
        let g_full = values(&td_lambda(&rewards, &row(&dones), &full, 0.999, 0.5));
        let g_fast = values(&td_lambda(&rewards, &row(&dones), &(&full * keep), 0.999, 0.5));
        for t in 0..5 {
            if mask[t] > 0.0 {
                assert_eq!(g_full[t], g_fast[t], "t = {t}");
            }
        }
        // A masked step that a read target chains through (no done before it) is reached.
        assert_eq!(needed_bootstraps(&[1.0, 0.0, 0.0], &[0.0, 0.0, 0.0]), [true, true, true]);
        assert_eq!(needed_bootstraps(&[0.0, 0.0, 1.0], &[0.0, 1.0, 1.0]), [false, false, false]);
    }
}
