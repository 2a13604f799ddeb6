//! The velocity network v_θ(x_t, t, cond) of the flow policy (docs/algorithm.md §1).
//!
//! - Time: sinusoidal embedding of the raw t ∈ [0, 1] (not t·1000),
//!   e_i = sin(t·ω_i), e_{i+d/2} = cos(t·ω_i), ω_i = exp(−ln(10⁴)·i/(d/2 − 1)),
//!   then Linear(d → 2d), Mish, Linear(2d → d).
//! - Head: input [x_t, time embedding, cond] → Linear(in → H), then `num_residual_blocks`
//!   pre-activation blocks y ← y + Linear(Mish(Linear(Mish(y)))), then a plain
//!   Linear(H → D) (no activation after it). The paper: H = 768, one block.
//! Variable names: `time_mlp.{0,1}`, `input`, `blocks.{i}.{0,1}`, `output`.

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityHeadConfig {
    /// d, the time-embedding width (even).
    pub time_embed_dim: i64,
    /// H, the residual MLP width (paper: 768).
    pub hidden_dim: i64,
    /// Residual blocks (paper: 1).
    pub num_residual_blocks: i64,
}

/// t: [B, 1] in [0, 1] → [B, d].
pub fn sinusoidal_embedding(t: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let scale = (10_000f64).ln() / (half - 1).max(1) as f64;
    let freqs = (Tensor::arange(half, (Kind::Float, t.device())) * -scale).exp(); // [d/2]
    let angles = t.to_kind(Kind::Float) * freqs.unsqueeze(0); // [B, d/2]
    Tensor::cat(&[angles.sin(), angles.cos()], -1)
}

#[derive(Debug)]
pub struct VelocityHead {
    time_in: nn::Linear,
    time_out: nn::Linear,
    input: nn::Linear,
    blocks: Vec<(nn::Linear, nn::Linear)>,
    output: nn::Linear,
    time_embed_dim: i64,
}

impl VelocityHead {
    /// `action_numbers`: D = Tp·A, `cond_dim`: width of the conditioning vector.
    pub fn new(vs: &nn::Path, config: &VelocityHeadConfig, action_numbers: i64, cond_dim: i64) -> Self {
        let (d, h) = (config.time_embed_dim, config.hidden_dim);
        let linear = |path: nn::Path, i, o| nn::linear(path, i, o, Default::default());
        let blocks = (0..config.num_residual_blocks)
            .map(|i| {
                let block = vs / "blocks" / i;
                (linear(&block / "0", h, h), linear(&block / "1", h, h))
            })
            .collect();
        Self {
            time_in: linear(vs / "time_mlp" / "0", d, 2 * d),
            time_out: linear(vs / "time_mlp" / "1", 2 * d, d),
            input: linear(vs / "input", action_numbers + d + cond_dim, h),
            blocks,
            output: linear(vs / "output", h, action_numbers),
            time_embed_dim: d,
        }
    }

    /// x_t: [B, D], t: [B, 1], cond: [B, C] → v: [B, D].
    pub fn forward(&self, x_t: &Tensor, t: &Tensor, cond: &Tensor) -> Tensor {
        let time = sinusoidal_embedding(t, self.time_embed_dim).apply(&self.time_in).mish().apply(&self.time_out);
        let mut y = Tensor::cat(&[x_t.shallow_clone(), time, cond.shallow_clone()], -1).apply(&self.input);
        for (first, second) in &self.blocks {
            y = &y + y.mish().apply(first).mish().apply(second);
        }
        y.apply(&self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_of_raw_time() {
        // Reference: t = 0 → sin part 0, cos part 1; t = 1, first frequency ω_0 = 1 → sin(1).
        let t = Tensor::from_slice(&[0.0f32, 1.0]).view([2, 1]);
        let e = sinusoidal_embedding(&t, 8);
        assert_eq!(e.size(), [2, 8]);
        let row0: Vec<f32> = e.get(0).try_into().unwrap();
        assert_eq!(row0, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert!((e.get(1).get(0).double_value(&[]) - 1f64.sin()).abs() < 1e-6);
    }
}
