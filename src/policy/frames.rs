//! [`Frames`]: observation frames kept in RAM the way the policy reads them — u8 HWC camera
//! images and normalised proprio — for trajectories in the replay and the recording's probe
//! states. The one place that knows where frame t of a camera lies; batches of (frames, t)
//! pairs become an [`ObsBatch`] with To = 1 (see `checkpoint::require_single_frame`).
//!
//! Memory per frame: n_cameras·H·W·3 bytes + 4·P bytes.

use tch::{Device, Tensor};

use super::env_obs::{camera_image, normalized_proprio};
use super::{ObsBatch, PolicySpec};
use crate::sim::Observation;

#[derive(Debug, Clone, Default)]
pub struct Frames {
    /// Side of the square images (H = W).
    pub image_size: usize,
    /// Normalised proprio numbers per frame (P).
    pub proprio_dim: usize,
    /// Per camera: [F, H, W, 3] u8.
    pub images: Vec<Vec<u8>>,
    /// [F, P] normalised proprio.
    pub proprio: Vec<f32>,
}

impl Frames {
    /// No frames yet, shaped for `spec`'s cameras and proprio.
    pub fn new(spec: &PolicySpec) -> Self {
        Self {
            image_size: spec.image_size.max(0) as usize,
            proprio_dim: spec.proprio_dim as usize,
            images: vec![Vec::new(); spec.obs.image_keys.len()],
            proprio: Vec::new(),
        }
    }

    /// Appends one observation through the policy's pixel and normalisation path; errors
    /// name the missing or mis-sized key.
    pub fn push(&mut self, spec: &PolicySpec, obs: &Observation) -> Result<(), String> {
        for (camera, key) in spec.obs.image_keys.iter().enumerate() {
            self.images[camera].extend_from_slice(camera_image(spec, obs, key)?);
        }
        self.proprio.extend(normalized_proprio(spec, obs)?);
        Ok(())
    }

    /// Appends frame `t` of `other` (same shape).
    pub fn push_from(&mut self, other: &Frames, t: usize) {
        for (camera, images) in self.images.iter_mut().enumerate() {
            images.extend_from_slice(other.image(camera, t));
        }
        self.proprio.extend_from_slice(other.proprio(t));
    }

    fn image_bytes(&self) -> usize {
        self.image_size * self.image_size * 3
    }

    /// Camera `camera`'s image of frame `t`: [H, W, 3] u8.
    pub fn image(&self, camera: usize, t: usize) -> &[u8] {
        let bytes = self.image_bytes();
        &self.images[camera][t * bytes..(t + 1) * bytes]
    }

    /// The normalised proprio of frame `t`: [P].
    pub fn proprio(&self, t: usize) -> &[f32] {
        &self.proprio[t * self.proprio_dim..(t + 1) * self.proprio_dim]
    }

    pub fn memory_bytes(&self) -> usize {
        self.images.iter().map(Vec::len).sum::<usize>() + 4 * self.proprio.len()
    }

    /// Frames at (frames, t) pairs as one batch on `device`: images [B, 1, H, W, 3] u8 per
    /// camera, proprio [B, 1, P]. All pairs share one shape; `pairs` is not empty.
    pub fn batch(pairs: &[(&Frames, usize)], device: Device) -> ObsBatch {
        let first = pairs[0].0;
        let (b, s) = (pairs.len() as i64, first.image_size as i64);
        let images = (0..first.images.len())
            .map(|camera| {
                let mut bytes = Vec::with_capacity(pairs.len() * first.image_bytes());
                for (frames, t) in pairs {
                    bytes.extend_from_slice(frames.image(camera, *t));
                }
                Tensor::from_slice(&bytes).view([b, 1, s, s, 3]).to_device(device)
            })
            .collect();
        let mut proprio = Vec::with_capacity(pairs.len() * first.proprio_dim);
        for (frames, t) in pairs {
            proprio.extend_from_slice(frames.proprio(*t));
        }
        ObsBatch {
            images,
            proprio: Tensor::from_slice(&proprio).view([b, 1, first.proprio_dim as i64]).to_device(device),
        }
    }
}
