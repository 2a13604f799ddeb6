//! Training windows: for each step t of an episode of length T, an observation history of
//! `obs_horizon` (To) frames ending at t and an action chunk of `pred_horizon` (Tp) actions
//! starting at t. Padding at episode ends repeats the edge frame / action:
//!   obs slot i ∈ 0..To (oldest first) → step max(t + 1 + i − To, 0),
//!   action slot j ∈ 0..Tp            → step min(t + j, T − 1).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub obs_horizon: usize,
    pub pred_horizon: usize,
}

/// A window: step `t` of episode `episode` (index into the loaded episodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub episode: usize,
    pub t: usize,
}

impl WindowSpec {
    /// One window per step of every episode, episodes in order.
    pub fn all_windows(&self, episode_lengths: impl IntoIterator<Item = usize>) -> Vec<Window> {
        episode_lengths
            .into_iter()
            .enumerate()
            .flat_map(|(episode, len)| (0..len).map(move |t| Window { episode, t }))
            .collect()
    }

    /// Episode step of observation slot `i` (0 = oldest) of the window at `t`.
    pub fn obs_step(&self, t: usize, i: usize) -> usize {
        (t + 1 + i).saturating_sub(self.obs_horizon)
    }

    /// Episode step of action slot `j` of the window at `t` in an episode of length `len`.
    pub fn action_step(&self, t: usize, j: usize, len: usize) -> usize {
        (t + j).min(len - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_with_edge_steps() {
        let spec = WindowSpec { obs_horizon: 2, pred_horizon: 4 };
        // Episode of length 5, window at t = 0: obs [0, 0], actions [0, 1, 2, 3].
        assert_eq!((0..2).map(|i| spec.obs_step(0, i)).collect::<Vec<_>>(), [0, 0]);
        assert_eq!((0..4).map(|j| spec.action_step(0, j, 5)).collect::<Vec<_>>(), [0, 1, 2, 3]);
        // Window at t = 3: obs [2, 3], actions [3, 4, 4, 4].
        assert_eq!((0..2).map(|i| spec.obs_step(3, i)).collect::<Vec<_>>(), [2, 3]);
        assert_eq!((0..4).map(|j| spec.action_step(3, j, 5)).collect::<Vec<_>>(), [3, 4, 4, 4]);
        assert_eq!(
            spec.all_windows([2, 1]),
            [Window { episode: 0, t: 0 }, Window { episode: 0, t: 1 }, Window { episode: 1, t: 0 }]
        );
    }
}
