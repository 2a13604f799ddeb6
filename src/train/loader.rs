//! The batch loader: a thread that gathers the windows of step s, s+1, … into flat buffers
//! ahead of the training loop (a bounded channel of `prefetch` batches), and the conversion
//! of those buffers into device tensors.
//!
//! Which windows step s uses depends only on (seed, s): epochs are seeded permutations of
//! all windows, and step s takes slice s mod (steps per epoch) of permutation ⌊s / steps per
//! epoch⌋. A resumed run therefore sees exactly the batches an uninterrupted one would.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rldt_datasets::batch::{gather, BatchBuffers, DatasetStats};
use rldt_datasets::random::SplitMix64;
use rldt_datasets::reader::RobomimicDataset;
use rldt_datasets::{Window, WindowSpec};
use tch::{Device, Kind, Tensor};

use crate::policy::ObsBatch;

/// The windows of step `step`: `batch_size` windows from the epoch's permutation.
pub struct EpochSampler {
    windows: Vec<Window>,
    batch_size: usize,
    seed: u64,
    epoch: Option<u64>,
    order: Vec<usize>,
}

impl EpochSampler {
    pub fn new(windows: Vec<Window>, batch_size: usize, seed: u64) -> Self {
        Self { windows, batch_size, seed, epoch: None, order: Vec::new() }
    }

    pub fn steps_per_epoch(&self) -> u64 {
        (self.windows.len() / self.batch_size).max(1) as u64
    }

    pub fn windows_for_step(&mut self, step: u64) -> Vec<Window> {
        let epoch = step / self.steps_per_epoch();
        if self.epoch != Some(epoch) {
            self.order = (0..self.windows.len()).collect();
            SplitMix64::stream(self.seed, epoch).shuffle(&mut self.order);
            self.epoch = Some(epoch);
        }
        let start = (step % self.steps_per_epoch()) as usize * self.batch_size;
        // When the dataset has fewer windows than a batch, wrap around the permutation.
        (0..self.batch_size).map(|i| self.windows[self.order[(start + i) % self.order.len()]]).collect()
    }
}

/// Batches for steps `start..end`, prepared on a background thread.
pub struct BatchStream {
    receiver: Receiver<BatchBuffers>,
    _thread: JoinHandle<()>,
}

impl BatchStream {
    pub fn spawn(
        dataset: Arc<RobomimicDataset>,
        stats: DatasetStats,
        spec: WindowSpec,
        mut sampler: EpochSampler,
        steps: std::ops::Range<u64>,
        prefetch: usize,
    ) -> Self {
        let (sender, receiver) = sync_channel(prefetch);
        let thread = std::thread::Builder::new()
            .name("batch-loader".into())
            .spawn(move || {
                for step in steps {
                    let windows = sampler.windows_for_step(step);
                    if sender.send(gather(&dataset, &spec, &stats, &windows)).is_err() {
                        return; // the training loop ended
                    }
                }
            })
            .expect("spawning the loader thread");
        Self { receiver, _thread: thread }
    }

    /// The next step's batch; `None` once the range is exhausted.
    pub fn next_batch(&self) -> Option<BatchBuffers> {
        self.receiver.recv().ok()
    }
}

/// Buffers → (observations, actions [B, Tp, A]) on `device`.
pub fn to_device(
    buffers: &BatchBuffers,
    dataset: &RobomimicDataset,
    spec: &WindowSpec,
    device: Device,
) -> (ObsBatch, Tensor) {
    let b = buffers.batch_size as i64;
    let to = spec.obs_horizon as i64;
    let images = buffers
        .images
        .iter()
        .zip(&dataset.image_shapes)
        .map(|(bytes, [h, w, c])| {
            Tensor::from_slice(bytes).view([b, to, *h as i64, *w as i64, *c as i64]).to_device(device)
        })
        .collect();
    let proprio = Tensor::from_slice(&buffers.proprio).view([b, to, dataset.proprio_dim() as i64]).to_device(device);
    let actions = Tensor::from_slice(&buffers.actions)
        .view([b, spec.pred_horizon as i64, dataset.action_dim as i64])
        .to_kind(Kind::Float)
        .to_device(device);
    (ObsBatch { images, proprio }, actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cover_every_window_once_and_depend_only_on_seed_and_step() {
        let windows: Vec<Window> = (0..10).map(|t| Window { episode: 0, t }).collect();
        let mut a = EpochSampler::new(windows.clone(), 5, 9);
        let mut seen: Vec<usize> = (0..2).flat_map(|s| a.windows_for_step(s)).map(|w| w.t).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let mut b = EpochSampler::new(windows, 5, 9);
        assert_eq!(b.windows_for_step(3), a.windows_for_step(3), "a fresh sampler at step 3 agrees");
    }
}
