//! Gathering windows into flat, device-ready buffers (no tch here): images stay u8, low-dim
//! and actions are min-max normalised to [−1, 1]. The policy crate turns the buffers into
//! tensors with one copy each.

use crate::reader::RobomimicDataset;
use crate::stats::MinMax;
use crate::windows::{Window, WindowSpec};

/// A batch of B windows.
#[derive(Debug, Clone, Default)]
pub struct BatchBuffers {
    pub batch_size: usize,
    /// Per image key: [B, To, H, W, C] u8.
    pub images: Vec<Vec<u8>>,
    /// [B, To, P] normalised.
    pub proprio: Vec<f32>,
    /// [B, Tp, A] normalised.
    pub actions: Vec<f32>,
}

/// Normalisation statistics of a dataset: proprio (P) and actions (A).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetStats {
    pub proprio: MinMax,
    pub actions: MinMax,
}

impl DatasetStats {
    /// Min-max statistics over every step of every loaded episode.
    pub fn of(dataset: &RobomimicDataset) -> Self {
        Self {
            proprio: MinMax::from_rows(dataset.proprio_dim(), dataset.episodes.iter().map(|e| e.lowdim.as_slice())),
            actions: MinMax::from_rows(dataset.action_dim, dataset.episodes.iter().map(|e| e.actions.as_slice())),
        }
    }
}

/// Copies the windows' frames and chunks out of `dataset` and normalises them.
pub fn gather(dataset: &RobomimicDataset, spec: &WindowSpec, stats: &DatasetStats, windows: &[Window]) -> BatchBuffers {
    let (p, a) = (dataset.proprio_dim(), dataset.action_dim);
    let (to, tp) = (spec.obs_horizon, spec.pred_horizon);
    let frame_bytes: Vec<usize> = dataset.image_shapes.iter().map(|[h, w, c]| h * w * c).collect();
    let mut images: Vec<Vec<u8>> = frame_bytes.iter().map(|n| Vec::with_capacity(windows.len() * to * n)).collect();
    let mut proprio = Vec::with_capacity(windows.len() * to * p);
    let mut actions = Vec::with_capacity(windows.len() * tp * a);
    for w in windows {
        let episode = &dataset.episodes[w.episode];
        for i in 0..to {
            let s = spec.obs_step(w.t, i);
            for (camera, &n) in frame_bytes.iter().enumerate() {
                images[camera].extend_from_slice(&episode.images[camera][s * n..(s + 1) * n]);
            }
            proprio.extend_from_slice(&episode.lowdim[s * p..(s + 1) * p]);
        }
        for j in 0..tp {
            let s = spec.action_step(w.t, j, episode.len);
            actions.extend_from_slice(&episode.actions[s * a..(s + 1) * a]);
        }
    }
    stats.proprio.normalize_in_place(&mut proprio);
    stats.actions.normalize_in_place(&mut actions);
    BatchBuffers { batch_size: windows.len(), images, proprio, actions }
}
