//! V_ψ(s): the state-value network of the PPO baselines (docs/baselines.md). Its own copy of
//! the policy's state encoder (initialised from the actor's, as the RLDT critic's is), then an
//! MLP with Mish activations → one number. Shapes: obs batch of B states → [B].

use tch::{nn, Tensor};

use crate::policy::{ObsBatch, PolicySpec, StateEncoder};

#[derive(Debug)]
pub struct ValueNet {
    state_encoder: StateEncoder,
    layers: Vec<nn::Linear>,
}

impl ValueNet {
    /// Under `vs`: `encoder.*` with the actor's names (see `rl::critic::init_encoder_from_actor`),
    /// `mlp.{i}`.
    pub fn new(vs: &nn::Path, spec: &PolicySpec, hidden: &[i64]) -> Result<Self, rldt_encoders::EncoderConfigError> {
        let state_encoder = StateEncoder::new(vs, spec)?;
        let mut sizes = vec![state_encoder.output_dim()];
        sizes.extend(hidden);
        sizes.push(1);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(vs / "mlp" / i, w[0], w[1], Default::default()))
            .collect();
        Ok(Self { state_encoder, layers })
    }

    /// V(s) [B]; `train` turns image augmentation on.
    pub fn forward_t(&self, obs: &ObsBatch, train: bool) -> Tensor {
        let mut x = self.state_encoder.forward_t(obs, train);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = x.apply(layer);
            if i < last {
                x = x.mish();
            }
        }
        x.squeeze_dim(-1)
    }
}
