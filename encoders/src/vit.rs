//! The RLDT paper's vision encoder (docs/algorithm.md §2), kept for comparison with the
//! paper's setting.
//!
//! [`Vit`]: patch embedding by two convs (3→E, 8×8 stride 4, ReLU; E→E, 3×3 stride 2), so a
//! 96×96 image gives 11×11 = 121 tokens of E = 128 (84×84 gives 9×9 = 81); a learned
//! position embedding; one pre-LN transformer block
//!   x ← x + MHA(LN(x)),  x ← x + MLP(LN(x))  (MLP: E→mlp_dim, GELU, mlp_dim→E),
//! and a final LayerNorm. Output: [N, T, E].
//!
//! [`SpatialEmbedding`]: transpose to E channel-tokens of length T, append the proprio
//! vector to each, Linear(T + P → F), LayerNorm, ReLU, multiply elementwise by a learned
//! [E, F] weight and sum over the E channel-tokens → [N, F].

use tch::{nn, nn::Module, Kind, Tensor};

fn conv_out(size: i64, kernel: i64, stride: i64) -> i64 {
    (size - kernel) / stride + 1
}

#[derive(Debug)]
pub struct Vit {
    patch_conv1: nn::Conv2D,
    patch_conv2: nn::Conv2D,
    position: Tensor,
    norm_attention: nn::LayerNorm,
    qkv: nn::Linear,
    attention_out: nn::Linear,
    norm_mlp: nn::LayerNorm,
    mlp_in: nn::Linear,
    mlp_out: nn::Linear,
    norm_final: nn::LayerNorm,
    num_heads: i64,
    num_tokens: i64,
}

impl Vit {
    pub fn new(vs: &nn::Path, input_size: i64, embed_dim: i64, num_heads: i64, mlp_dim: i64) -> Self {
        let side = conv_out(conv_out(input_size, 8, 4), 3, 2);
        let num_tokens = side * side;
        let stride = |s| nn::ConvConfig { stride: s, ..Default::default() };
        let ln = |name: &str| nn::layer_norm(vs / name, vec![embed_dim], Default::default());
        Self {
            patch_conv1: nn::conv2d(vs / "patch_conv1", 3, embed_dim, 8, stride(4)),
            patch_conv2: nn::conv2d(vs / "patch_conv2", embed_dim, embed_dim, 3, stride(2)),
            position: vs.var("position", &[1, num_tokens, embed_dim], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
            norm_attention: ln("norm_attention"),
            qkv: nn::linear(vs / "qkv", embed_dim, 3 * embed_dim, Default::default()),
            attention_out: nn::linear(vs / "attention_out", embed_dim, embed_dim, Default::default()),
            norm_mlp: ln("norm_mlp"),
            mlp_in: nn::linear(vs / "mlp_in", embed_dim, mlp_dim, Default::default()),
            mlp_out: nn::linear(vs / "mlp_out", mlp_dim, embed_dim, Default::default()),
            norm_final: ln("norm_final"),
            num_heads,
            num_tokens,
        }
    }

    /// T, the number of patch tokens.
    pub fn num_tokens(&self) -> i64 {
        self.num_tokens
    }

    /// x: [N, 3, S, S] → tokens [N, T, E].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        // In-place ReLU: the convolution's backward needs its input, not its output, so the
        // output is overwritten rather than kept twice (the largest activation of the encoder).
        let patches = x.apply(&self.patch_conv1).relu_().apply(&self.patch_conv2); // [N, E, s, s]
        let tokens = patches.flatten(2, 3).transpose(1, 2) + &self.position; // [N, T, E]
        let tokens = &tokens + self.attention(&tokens.apply(&self.norm_attention));
        let mlp = tokens.apply(&self.norm_mlp).apply(&self.mlp_in).gelu("none").apply(&self.mlp_out);
        (tokens + mlp).apply(&self.norm_final)
    }

    /// Multi-head self-attention: x: [N, T, E] → [N, T, E], per head
    /// softmax(q·kᵀ/√d)·v through libtorch's fused kernel, which keeps no [N, heads, T, T]
    /// attention matrix for the backward pass (a 96² image: 4 × 121² floats per image).
    fn attention(&self, x: &Tensor) -> Tensor {
        let (n, t, e) = x.size3().unwrap();
        let head_dim = e / self.num_heads;
        let qkv = x.apply(&self.qkv).view([n, t, 3, self.num_heads, head_dim]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2)); // each [N, heads, T, head_dim]
        let out = Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false);
        out.transpose(1, 2).reshape([n, t, e]).apply(&self.attention_out)
    }
}

#[derive(Debug)]
pub struct SpatialEmbedding {
    compress: nn::Linear,
    norm: nn::LayerNorm,
    weight: Tensor,
}

impl SpatialEmbedding {
    /// `num_tokens`: T, `embed_dim`: E, `proprio_dim`: P, `feature_dim`: F.
    pub fn new(vs: &nn::Path, num_tokens: i64, embed_dim: i64, proprio_dim: i64, feature_dim: i64) -> Self {
        Self {
            compress: nn::linear(vs / "compress", num_tokens + proprio_dim, feature_dim, Default::default()),
            norm: nn::layer_norm(vs / "norm", vec![feature_dim], Default::default()),
            weight: vs.var(
                "weight",
                &[embed_dim, feature_dim],
                nn::Init::Randn { mean: 0.0, stdev: 1.0 / (embed_dim as f64).sqrt() },
            ),
        }
    }

    /// tokens: [N, T, E], proprio: [N, P] → [N, F].
    pub fn forward(&self, tokens: &Tensor, proprio: &Tensor) -> Tensor {
        let (n, _, e) = tokens.size3().unwrap();
        let channel_tokens = tokens.transpose(1, 2); // [N, E, T]
        let proprio = proprio.unsqueeze(1).expand([n, e, proprio.size()[1]], false); // [N, E, P]
        let x = Tensor::cat(&[channel_tokens, proprio], -1).apply(&self.compress).apply(&self.norm).relu(); // [N, E, F]
        (x * &self.weight).sum_dim_intlist(1, false, Kind::Float)
    }
}

impl Module for Vit {
    fn forward(&self, xs: &Tensor) -> Tensor {
        Vit::forward(self, xs)
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    /// The fused attention equals the explicit softmax(q·kᵀ/√d)·v, values and gradients.
    #[test]
    fn fused_attention_equals_the_explicit_formula() {
        let opts = (Kind::Float, Device::Cpu);
        let make = |seed: f64| ((Tensor::arange(2 * 4 * 9 * 8, opts) * seed).sin()).view([2, 4, 9, 8]);
        let (q0, k0, v0) = (make(0.37), make(0.53), make(0.71));
        let run = |fused: bool| -> (Tensor, Vec<Tensor>) {
            let (q, k, v) = (
                q0.copy().set_requires_grad(true),
                k0.copy().set_requires_grad(true),
                v0.copy().set_requires_grad(true),
            );
            let out = if fused {
                Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)
            } else {
                (q.matmul(&k.transpose(-2, -1)) / 8f64.sqrt()).softmax(-1, Kind::Float).matmul(&v)
            };
            (out.sin().sum(Kind::Float)).backward();
            (out.detach(), vec![q.grad(), k.grad(), v.grad()])
        };
        let (fused, fused_grads) = run(true);
        let (plain, plain_grads) = run(false);
        assert!(fused.allclose(&plain, 1e-5, 1e-6, false));
        for (a, b) in fused_grads.iter().zip(&plain_grads) {
            assert!(a.allclose(b, 1e-4, 1e-6, false));
        }
    }
}
