//! `FlowPolicy`: camera encoders + proprio → condition, and the flow-matching velocity head
//! over flattened action chunks (docs/algorithm.md §1–2). The policy acts and owns its loss;
//! the algorithms that train it (pretraining, RLDT) live elsewhere.
//!
//! Condition: for each of the To history frames, each camera's feature (F each) and the
//! normalised proprio (P), concatenated: C = To·(n_cameras·F + P).
//! Shapes: B batch, To obs history, Tp predicted steps, Ta executed steps, A action dim,
//! D = Tp·A, K Euler steps.

pub mod checkpoint;
pub mod env_obs;
pub mod flow;
pub mod frames;
pub mod state_encoder;
pub mod velocity_head;

use rldt_datasets::batch::DatasetStats;
use rldt_datasets::ObsSpec;
use rldt_encoders::EncoderConfig;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

pub use state_encoder::{encoder_names, StateEncoder};
pub use velocity_head::VelocityHeadConfig;

/// Architecture of a flow policy (the `policy` section of a pretraining config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// To: observation frames the policy sees (paper: 1).
    pub obs_horizon: i64,
    /// Tp: actions predicted per chunk.
    pub pred_horizon: i64,
    /// Ta ≤ Tp: actions executed per chunk (paper Square: Tp = Ta = 4).
    pub exec_horizon: i64,
    /// K: Euler steps of the sampler (paper: 8).
    pub num_denoising_steps: i64,
    pub encoder: EncoderConfig,
    pub velocity_head: VelocityHeadConfig,
}

/// Everything that rebuilds a policy: its config, the data shapes it was built for and the
/// normalisation statistics. Saved as `policy.json` beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub config: PolicyConfig,
    pub obs: ObsSpec,
    /// Side of the square camera images (H = W).
    pub image_size: i64,
    pub proprio_dim: i64,
    pub action_dim: i64,
    pub stats: DatasetStats,
}

/// A batch of observations on the policy's device.
#[derive(Debug)]
pub struct ObsBatch {
    /// One per camera: [B, To, H, W, 3] u8.
    pub images: Vec<Tensor>,
    /// [B, To, P] f32, normalised to [−1, 1].
    pub proprio: Tensor,
}

impl ObsBatch {
    pub fn batch_size(&self) -> i64 {
        self.proprio.size()[0]
    }

    /// States start..start + len (views, no copy).
    pub fn narrow(&self, start: i64, len: i64) -> ObsBatch {
        ObsBatch {
            images: self.images.iter().map(|images| images.narrow(0, start, len)).collect(),
            proprio: self.proprio.narrow(0, start, len),
        }
    }

    /// The states at `rows` ([R] i64) as a batch of R (a copy; images stay u8).
    pub fn select(&self, rows: &Tensor) -> ObsBatch {
        ObsBatch {
            images: self.images.iter().map(|images| images.index_select(0, rows)).collect(),
            proprio: self.proprio.index_select(0, rows),
        }
    }

    /// One draw of `augmentation` on every image of the batch, kept as u8
    /// (`Augmentation::draw_on_stored`); None for an augmentation that changes the image size.
    pub fn augmented_once(&self, augmentation: &rldt_encoders::Augmentation) -> Option<ObsBatch> {
        let images = self
            .images
            .iter()
            .map(|images| {
                let size = images.size(); // [B, To, H, W, 3]
                let flat = images.reshape([-1, size[2], size[3], size[4]]);
                augmentation.draw_on_stored(&flat).map(|shifted| shifted.view(size.as_slice()))
            })
            .collect::<Option<Vec<Tensor>>>()?;
        Some(ObsBatch { images, proprio: self.proprio.shallow_clone() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Encoder(#[from] rldt_encoders::EncoderConfigError),
    #[error("policy config field `{field}`: {message}")]
    Config { field: &'static str, message: String },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: std::path::PathBuf, message: String },
}

impl PolicySpec {
    /// The spec of a policy trained on `data`: shapes and min-max statistics from it.
    pub fn new(
        config: PolicyConfig,
        obs: ObsSpec,
        image_size: i64,
        data: &rldt_datasets::reader::RobomimicDataset,
    ) -> Self {
        Self {
            config,
            obs,
            image_size,
            proprio_dim: data.proprio_dim() as i64,
            action_dim: data.action_dim as i64,
            stats: DatasetStats::of(data),
        }
    }
}

impl PolicyConfig {
    /// Relations between fields (exec ≤ pred horizon, …).
    pub fn validate(&self) -> Result<(), PolicyError> {
        let fail = |field, message: String| Err(PolicyError::Config { field, message });
        if self.obs_horizon < 1 {
            return fail("obs_horizon", format!("must be ≥ 1, got {}", self.obs_horizon));
        }
        if self.pred_horizon < 1 {
            return fail("pred_horizon", format!("must be ≥ 1, got {}", self.pred_horizon));
        }
        if self.exec_horizon < 1 || self.exec_horizon > self.pred_horizon {
            return fail(
                "exec_horizon",
                format!("must be in 1..=pred_horizon ({}), got {}", self.pred_horizon, self.exec_horizon),
            );
        }
        if self.num_denoising_steps < 1 {
            return fail("num_denoising_steps", format!("must be ≥ 1, got {}", self.num_denoising_steps));
        }
        let head = &self.velocity_head;
        if head.time_embed_dim < 2 || head.time_embed_dim % 2 != 0 {
            return fail("velocity_head.time_embed_dim", format!("must be even and ≥ 2, got {}", head.time_embed_dim));
        }
        if head.hidden_dim < 1 || head.num_residual_blocks < 0 {
            return fail("velocity_head.hidden_dim", "hidden_dim ≥ 1 and num_residual_blocks ≥ 0 required".into());
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct FlowPolicy {
    spec: PolicySpec,
    /// Observations → condition (`encoder.*`).
    state_encoder: StateEncoder,
    head: velocity_head::VelocityHead,
    /// Action statistics as [A] tensors on the device, for denormalising.
    action_min: Tensor,
    action_max: Tensor,
    device: Device,
}

impl FlowPolicy {
    /// Builds the variables under `vs` (`encoder.*`, `velocity.*`).
    pub fn new(vs: &nn::Path, spec: PolicySpec) -> Result<Self, PolicyError> {
        spec.config.validate()?;
        let state_encoder = StateEncoder::new(vs, &spec)?;
        let cond_dim = state_encoder.output_dim();
        let action_numbers = spec.config.pred_horizon * spec.action_dim;
        let head =
            velocity_head::VelocityHead::new(&(vs / "velocity"), &spec.config.velocity_head, action_numbers, cond_dim);
        let device = vs.device();
        let action_min = Tensor::from_slice(&spec.stats.actions.min).to_device(device);
        let action_max = Tensor::from_slice(&spec.stats.actions.max).to_device(device);
        Ok(Self { spec, state_encoder, head, action_min, action_max, device })
    }

    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// C, the length of the condition.
    pub fn condition_dim(&self) -> i64 {
        self.state_encoder.output_dim()
    }

    /// Sets K, the Euler steps of `sample_chain` (a fine-tuning algorithm that samples with
    /// fewer steps than pretraining; the velocity field itself does not depend on K).
    pub fn set_denoising_steps(&mut self, k: i64) {
        self.spec.config.num_denoising_steps = k;
    }

    /// D = Tp·A, the length of a flattened chunk.
    pub fn action_numbers(&self) -> i64 {
        self.spec.config.pred_horizon * self.spec.action_dim
    }

    /// Encoder features and proprio of every history frame → cond: [B, C].
    /// `train` turns image augmentation on.
    pub fn condition(&self, obs: &ObsBatch, train: bool) -> Tensor {
        self.state_encoder.forward_t(obs, train)
    }

    /// v_θ(x_t, t, cond): x_t [N, D], t [N, 1], cond [N, C] → [N, D].
    pub fn velocity(&self, x_t: &Tensor, t: &Tensor, cond: &Tensor) -> Tensor {
        self.head.forward(x_t, t, cond)
    }

    /// Pretraining loss, mean over B·D of (v_θ(x_t, t, s) − (x_data − x_noise))², with
    /// t ~ U[0, 1] and x_noise ~ N(0, I) per sample. actions: [B, Tp, A] normalised.
    pub fn flow_loss(&self, obs: &ObsBatch, actions: &Tensor, train: bool) -> Tensor {
        let cond = self.condition(obs, train);
        let b = obs.batch_size();
        let x_data = actions.reshape([b, -1]);
        let x_noise = x_data.randn_like();
        let t = Tensor::rand([b, 1], (Kind::Float, self.device));
        let x_t = flow::interpolate(&x_noise, &x_data, &t);
        let v_pred = self.velocity(&x_t, &t, &cond);
        (v_pred - flow::target_velocity(&x_noise, &x_data)).square().mean(Kind::Float)
    }

    /// x_0 for B chains: N(0, I), or zeros for a deterministic sample → [B, D].
    pub fn initial_noise(&self, batch: i64, deterministic: bool) -> Tensor {
        let shape = [batch, self.action_numbers()];
        if deterministic {
            Tensor::zeros(shape, (Kind::Float, self.device))
        } else {
            Tensor::randn(shape, (Kind::Float, self.device))
        }
    }

    /// x_0 for B chains of evaluation episodes, one N(0, I) draw per (episode seed, env step
    /// at which the chunk starts) from `SplitMix64::stream(seed, step)` → [B, D]. A row
    /// depends on its key alone, not on which other episodes share the batch, so `eval` and a
    /// fine-tune's in-run evaluation sample the same chunks for the same seeds.
    pub fn episode_noise(&self, keys: &[(u64, usize)]) -> Tensor {
        let d = self.action_numbers();
        Tensor::from_slice(&episode_noise(keys, d as usize)).view([keys.len() as i64, d]).to_device(self.device)
    }

    /// The whole Euler chain from x_0 [B, D] under cond [B, C] → [K + 1, B, D]
    /// (normalised action space, no clipping inside the ODE).
    pub fn sample_chain(&self, cond: &Tensor, x_0: &Tensor) -> Tensor {
        let b = x_0.size()[0];
        flow::euler_chain(x_0, self.spec.config.num_denoising_steps, |x_k, t_k| {
            let t = Tensor::full([b, 1], t_k, (Kind::Float, self.device));
            self.velocity(x_k, &t, cond)
        })
    }

    /// a† = x_t + (1 − t)·v_θ(x_t, t, s): x_t [N, D], t [N, 1], cond [N, C] → [N, D].
    pub fn expected_posterior(&self, x_t: &Tensor, t: &Tensor, cond: &Tensor) -> Tensor {
        flow::expected_posterior(x_t, t, &self.velocity(x_t, t, cond))
    }

    /// Executed actions for the environment: the first Ta steps of a normalised chunk
    /// [B, D], denormalised and clipped to [−1, 1] → [B, Ta, A].
    pub fn env_actions(&self, chunk: &Tensor) -> Tensor {
        let (b, a) = (chunk.size()[0], self.spec.action_dim);
        let steps = chunk.reshape([b, self.spec.config.pred_horizon, a]).narrow(1, 0, self.spec.config.exec_horizon);
        // Inverse of rldt_datasets::MinMax: constant dimensions (range < 1e-6) were shifted only.
        let range = &self.action_max - &self.action_min;
        let constant = range.lt(1e-6);
        let scaled = (&steps + 1.0) / 2.0 * range.clamp_min(1e-6) + &self.action_min;
        let shifted = &steps + &self.action_min;
        shifted.where_self(&constant, &scaled).clamp(-1.0, 1.0)
    }
}

/// The numbers of [`FlowPolicy::episode_noise`]: `d` standard normals per key, row-major.
pub fn episode_noise(keys: &[(u64, usize)], d: usize) -> Vec<f32> {
    let mut values = Vec::with_capacity(keys.len() * d);
    for &(seed, step) in keys {
        let mut stream = rldt_datasets::random::SplitMix64::stream(seed, step as u64);
        values.extend((0..d).map(|_| stream.normal() as f32));
    }
    values
}

#[cfg(test)]
mod tests {
    use super::episode_noise;

    #[test]
    fn an_episodes_noise_depends_on_its_key_alone() {
        let alone = episode_noise(&[(7, 12)], 5);
        let shared = episode_noise(&[(3, 0), (7, 12), (9, 4)], 5);
        assert_eq!(alone, shared[5..10], "the same row whatever else is in the batch");
        assert_ne!(alone, episode_noise(&[(7, 16)], 5), "the next chunk draws new noise");
        assert_ne!(alone, episode_noise(&[(8, 12)], 5), "another episode draws other noise");
        let many = episode_noise(&(0..2000).map(|s| (s, 0)).collect::<Vec<_>>(), 8);
        let mean = many.iter().map(|&x| x as f64).sum::<f64>() / many.len() as f64;
        let var = many.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / many.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "N(0, 1): mean {mean}, variance {var}");
    }
}
