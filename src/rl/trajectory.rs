//! [`Trajectory`]: one fine-tuning episode of T chunks, as the critic and the actor read it.
//!
//! Frames (u8 images + normalised proprio, [`Frames`]) at every chunk start plus the final
//! observation (T + 1 frames); the executed chunks (normalised, [T, Ta·A]); the raw chunk
//! rewards and episode ends; and, once the collection round is over, the shaped rewards,
//! success mask and dones of docs/algorithm.md §3 (`rollout::shape_round`).
//! Memory ≈ (T + 1)·(n_cameras·H·W·3 + 4·P) + 4·T·(Ta·A + 5) bytes (≈ 2.8 MB for a 100-chunk
//! Square trajectory with one 96×96 camera).

use tch::Device;

use crate::policy::frames::Frames;
use crate::policy::ObsBatch;

#[derive(Debug, Clone, Default)]
pub struct Trajectory {
    /// T + 1 frames: the observation before each chunk and the one after the last.
    pub frames: Frames,
    /// [T, Ta·A] executed chunks, normalised.
    pub actions: Vec<f32>,
    /// [T] raw chunk rewards (sum of the chunk's per-step rewards).
    pub raw_rewards: Vec<f32>,
    /// [T] episode ends (1 at the last chunk).
    pub raw_dones: Vec<f32>,
    /// [T] after §3 shaping: change of reward / round scale, success mask, dones.
    pub rewards: Vec<f32>,
    pub mask: Vec<f32>,
    pub dones: Vec<f32>,
    pub success: bool,
    pub chunks: usize,
}

impl Trajectory {
    /// An episode that starts with `first` (frame 0).
    pub fn start(first: Frames) -> Self {
        Self { frames: first, ..Self::default() }
    }

    /// Records one executed chunk: its normalised numbers [Ta·A], the sum of its rewards,
    /// whether any of its steps succeeded and whether the episode ended with it. The frame
    /// after it is pushed separately (`frames.push`).
    pub fn push_chunk(&mut self, executed: &[f32], reward: f32, success: bool, ended: bool) {
        self.actions.extend_from_slice(executed);
        self.raw_rewards.push(reward);
        self.raw_dones.push(ended as i32 as f32);
        self.success |= success;
        self.chunks += 1;
    }

    /// Executed numbers of chunk t: [Ta·A].
    pub fn action(&self, t: usize) -> &[f32] {
        let d = self.actions.len() / self.chunks.max(1);
        &self.actions[t * d..(t + 1) * d]
    }

    /// The observations at (trajectory, frame) pairs as one batch (B = pairs, To = 1).
    pub fn states(pairs: &[(&Trajectory, usize)], device: Device) -> ObsBatch {
        let frames: Vec<(&Frames, usize)> = pairs.iter().map(|(trajectory, t)| (&trajectory.frames, *t)).collect();
        Frames::batch(&frames, device)
    }

    pub fn memory_bytes(&self) -> usize {
        self.frames.memory_bytes() + 4 * (self.actions.len() + 5 * self.chunks)
    }
}
