//! Trajectories in RAM and the replay that mixes them (rldt-algorithm.md §3, §7).
//!
//! A trajectory is one episode of T chunks: u8 images and normalised proprio at every chunk
//! start plus the final observation (T + 1 frames), the executed chunks (normalised), and the
//! shaped rewards, success mask and dones of §3 (shaped once, per collection round).
//! Memory per trajectory ≈ (T + 1)·(n_cameras·H·W·3 + 4·P) + 4·T·(Ta·A + 3) bytes: the
//! paper's 1,280 Square trajectories (T = 100, one 96×96 camera) ≈ 1,280 × 2.8 MB ≈ 3.6 GB.

use rldt_datasets::random::SplitMix64;

#[derive(Debug, Clone)]
pub struct Trajectory {
    /// Per camera: [T + 1, H, W, 3] u8.
    pub images: Vec<Vec<u8>>,
    /// [T + 1, P] normalised proprio.
    pub proprio: Vec<f32>,
    /// [T, Ta·A] executed chunks, normalised.
    pub actions: Vec<f32>,
    /// [T] raw chunk rewards (sum of the chunk's per-step rewards).
    pub raw_rewards: Vec<f32>,
    /// [T] episode ends (1 at the last chunk, or where a worker failure truncated it).
    pub raw_dones: Vec<f32>,
    /// [T] after §3 shaping: change of reward / round scale, success mask, dones.
    pub rewards: Vec<f32>,
    pub mask: Vec<f32>,
    pub dones: Vec<f32>,
    pub success: bool,
    pub chunks: usize,
}

impl Trajectory {
    /// A trajectory with no frames yet, for `cameras` cameras.
    pub fn empty(cameras: usize) -> Self {
        Self {
            images: vec![Vec::new(); cameras],
            proprio: vec![],
            actions: vec![],
            raw_rewards: vec![],
            raw_dones: vec![],
            rewards: vec![],
            mask: vec![],
            dones: vec![],
            success: false,
            chunks: 0,
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.images.iter().map(Vec::len).sum::<usize>()
            + 4 * (self.proprio.len() + self.actions.len() + 5 * self.chunks)
    }
}

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
        Trajectory { success, ..Trajectory::empty(0) }
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
