//! The replay of recent trajectories and its balanced sampling (docs/algorithm.md §7): the
//! last `capacity` trajectories, a batch drawn half from successful ones and half from the
//! others. The paper's 1,280 Square trajectories (T = 100, one 96×96 camera) take
//! ≈ 1,280 × 2.8 MB ≈ 3.6 GB (see [`Trajectory`]).

use rldt_datasets::random::SplitMix64;

use super::trajectory::Trajectory;

/// The last `capacity` trajectories, oldest dropped first.
#[derive(Debug, Default)]
pub struct Replay {
    trajectories: std::collections::VecDeque<Trajectory>,
    capacity: usize,
}

impl Replay {
    pub fn new(capacity: usize) -> Self {
        Self { trajectories: Default::default(), capacity }
    }

    pub fn len(&self) -> usize {
        self.trajectories.len()
    }

    pub fn is_empty(&self) -> bool {
        self.trajectories.is_empty()
    }

    pub fn push(&mut self, trajectory: Trajectory) {
        if self.trajectories.len() == self.capacity {
            self.trajectories.pop_front();
        }
        self.trajectories.push_back(trajectory);
    }

    /// The `n` newest trajectories (fewer if it holds fewer), oldest first.
    pub fn newest(&self, n: usize) -> Vec<&Trajectory> {
        self.trajectories.iter().skip(self.trajectories.len().saturating_sub(n)).collect()
    }

    pub fn memory_bytes(&self) -> usize {
        self.trajectories.iter().map(Trajectory::memory_bytes).sum()
    }

    /// `n` trajectories, half from successful ones and half from the others where both kinds
    /// exist (with replacement inside each kind when it is short).
    pub fn sample_balanced(&self, n: usize, rng: &mut SplitMix64) -> Vec<&Trajectory> {
        fn pick<'a>(pool: &[&'a Trajectory], k: usize, rng: &mut SplitMix64) -> Vec<&'a Trajectory> {
            (0..k).map(|_| pool[rng.below(pool.len())]).collect()
        }
        let (good, bad): (Vec<&Trajectory>, Vec<&Trajectory>) = self.trajectories.iter().partition(|t| t.success);
        match (good.is_empty(), bad.is_empty()) {
            (true, true) => Vec::new(),
            (false, true) => pick(&good, n, rng),
            (true, false) => pick(&bad, n, rng),
            (false, false) => {
                let mut out = pick(&good, n / 2, rng);
                out.extend(pick(&bad, n - n / 2, rng));
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trajectory(success: bool) -> Trajectory {
        Trajectory { success, ..Trajectory::default() }
    }

    #[test]
    fn keeps_the_newest_and_balances_success() {
        let mut replay = Replay::new(10);
        for i in 0..14 {
            replay.push(trajectory(i % 5 == 0)); // successes at 0, 5, 10
        }
        assert_eq!(replay.len(), 10);
        let mut rng = SplitMix64::new(1);
        let batch = replay.sample_balanced(8, &mut rng);
        assert_eq!(batch.iter().filter(|t| t.success).count(), 4, "half successful although only 2 of 10 are");
        assert_eq!(batch.len(), 8);
    }
}
