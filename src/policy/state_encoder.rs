//! `StateEncoder`: observations → one state vector, shared by the policy (its condition) and
//! the critic (its state features). For each of the To history frames, each camera's encoder
//! feature (F each), then the normalised proprio (P):  S = To·(n_cameras·F + P).
//! Variables live under `encoder.<name>.*` with one shared encoder (`shared`), one per camera
//! (the image key), or none for a low-dim-only spec; the same names in actor and critic let
//! the critic's encoder start as a copy of the actor's.

use rldt_encoders::{EncoderConfigError, ImageEncoder};
use tch::{nn, Tensor};

use super::{ObsBatch, PolicySpec};

#[derive(Debug)]
pub struct StateEncoder {
    encoders: Vec<ImageEncoder>,
    obs_horizon: i64,
    image_size: i64,
    proprio_dim: i64,
    output_dim: i64,
}

/// VarStore names of a spec's image encoders (see the module header).
pub fn encoder_names(spec: &PolicySpec) -> Vec<String> {
    let cameras = &spec.obs.image_keys;
    match (cameras.is_empty(), spec.config.encoder.share_across_cameras) {
        (true, _) => Vec::new(),
        (false, true) => vec!["shared".into()],
        (false, false) => cameras.clone(),
    }
}

impl StateEncoder {
    /// Builds the encoders under `vs / "encoder"`.
    pub fn new(vs: &nn::Path, spec: &PolicySpec) -> Result<Self, EncoderConfigError> {
        let encoders = encoder_names(spec)
            .iter()
            .map(|name| {
                ImageEncoder::new(
                    &(vs / "encoder" / name.as_str()),
                    &spec.config.encoder,
                    spec.image_size,
                    spec.proprio_dim,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let feature_dim = encoders.first().map_or(0, |e| e.feature_dim());
        let to = spec.config.obs_horizon;
        Ok(Self {
            encoders,
            obs_horizon: to,
            image_size: spec.image_size,
            proprio_dim: spec.proprio_dim,
            output_dim: to * (spec.obs.image_keys.len() as i64 * feature_dim + spec.proprio_dim),
        })
    }

    /// S, the length of the state vector.
    pub fn output_dim(&self) -> i64 {
        self.output_dim
    }

    /// obs → [B, S]. `train` turns image augmentation on.
    pub fn forward_t(&self, obs: &ObsBatch, train: bool) -> Tensor {
        let b = obs.batch_size();
        let (to, s) = (self.obs_horizon, self.image_size);
        let proprio_frames = obs.proprio.reshape([b * to, self.proprio_dim]); // [B·To, P]
        let mut parts = Vec::with_capacity(obs.images.len() + 1);
        for (camera, images) in obs.images.iter().enumerate() {
            let encoder = &self.encoders[camera.min(self.encoders.len() - 1)];
            let frames = images.reshape([b * to, s, s, 3]); // [B·To, H, W, 3]
            parts.push(encoder.forward_t(&frames, &proprio_frames, train).reshape([b, -1]));
            // [B, To·F]
        }
        parts.push(obs.proprio.reshape([b, -1])); // [B, To·P]
        Tensor::cat(&parts, -1)
    }
}
