//! ResNet-18 trunk with GroupNorm in place of BatchNorm (groups = C/16), as robomimic and
//! Diffusion Policy use for visuomotor policies. No classifier head, no global pooling:
//! the [N, 8w, h, w] feature map goes to spatial-softmax keypoints.
//!
//! Layout (w = `width`, 64 for the standard network):
//! stem conv 7×7/2 (3→w) · GN · ReLU · maxpool 3×3/2, then four stages of two BasicBlocks
//! with w, 2w, 4w, 8w channels and strides 1, 2, 2, 2.
//! Variable names: `stem.conv`, `stem.norm`, `layer{1..4}.{0,1}.{conv1,norm1,conv2,norm2}`,
//! `layer{2..4}.0.downsample.{conv,norm}`.

use tch::{nn, nn::Module, Tensor};

fn group_norm(vs: &nn::Path, channels: i64) -> nn::GroupNorm {
    nn::group_norm(vs, (channels / 16).max(1), channels, Default::default())
}

fn conv(vs: &nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64) -> nn::Conv2D {
    let config = nn::ConvConfig { stride, padding: kernel / 2, bias: false, ..Default::default() };
    nn::conv2d(vs, c_in, c_out, kernel, config)
}

#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    norm1: nn::GroupNorm,
    conv2: nn::Conv2D,
    norm2: nn::GroupNorm,
    downsample: Option<(nn::Conv2D, nn::GroupNorm)>,
}

impl BasicBlock {
    fn new(vs: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            (
                conv(&(vs / "downsample" / "conv"), c_in, c_out, 1, stride),
                group_norm(&(vs / "downsample" / "norm"), c_out),
            )
        });
        Self {
            conv1: conv(&(vs / "conv1"), c_in, c_out, 3, stride),
            norm1: group_norm(&(vs / "norm1"), c_out),
            conv2: conv(&(vs / "conv2"), c_out, c_out, 3, 1),
            norm2: group_norm(&(vs / "norm2"), c_out),
            downsample,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        // In place where autograd allows it (GroupNorm's backward needs its input, not its
        // output; ReLU's needs its output): saves an allocation and a pass over memory.
        let mut y = x.apply(&self.conv1).apply(&self.norm1).relu_().apply(&self.conv2).apply(&self.norm2);
        match &self.downsample {
            Some((conv, norm)) => y += x.apply(conv).apply(norm),
            None => y += x,
        };
        y.relu_()
    }
}

#[derive(Debug)]
pub struct ResNet18 {
    stem_conv: nn::Conv2D,
    stem_norm: nn::GroupNorm,
    blocks: Vec<BasicBlock>,
    out_channels: i64,
}

impl ResNet18 {
    pub fn new(vs: &nn::Path, width: i64) -> Self {
        let mut blocks = Vec::new();
        let mut c_in = width;
        for (stage, mult) in [1, 2, 4, 8].into_iter().enumerate() {
            let c_out = width * mult;
            let stride = if stage == 0 { 1 } else { 2 };
            let stage_vs = vs / format!("layer{}", stage + 1);
            blocks.push(BasicBlock::new(&(&stage_vs / "0"), c_in, c_out, stride));
            blocks.push(BasicBlock::new(&(&stage_vs / "1"), c_out, c_out, 1));
            c_in = c_out;
        }
        Self {
            stem_conv: conv(&(vs / "stem" / "conv"), 3, width, 7, 2),
            stem_norm: group_norm(&(vs / "stem" / "norm"), width),
            blocks,
            out_channels: 8 * width,
        }
    }

    pub fn out_channels(&self) -> i64 {
        self.out_channels
    }

    /// Side of the output feature map for a square input of side `input_size`
    /// (stride 32 overall: 84 → 3, 96 → 3, 76 → 3, 128 → 4).
    pub fn output_size(input_size: i64) -> i64 {
        let down = |s: i64, k: i64, stride: i64, pad: i64| (s + 2 * pad - k) / stride + 1;
        let mut s = down(input_size, 7, 2, 3); // stem conv
        s = down(s, 3, 2, 1); // max pool
        for _ in 0..3 {
            s = down(s, 3, 2, 1); // first conv of stages 2..4
        }
        s
    }

    /// x: [N, 3, S, S] f32 → [N, 8w, s, s] with s = `output_size(S)`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut y =
            x.apply(&self.stem_conv).apply(&self.stem_norm).relu_().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in &self.blocks {
            y = block.forward(&y);
        }
        y
    }
}

impl Module for ResNet18 {
    fn forward(&self, xs: &Tensor) -> Tensor {
        ResNet18::forward(self, xs)
    }
}
