//! The one pixel path of rldt-vision: camera images as stored (u8, HWC, upright) → network
//! input (f32, CHW, x/255 − 0.5, the RLDT paper's mapping, docs/algorithm.md §2).
//! Training batches and simulator rollouts both call [`to_network_input`]; nothing else
//! converts pixels.

use tch::{Kind, Tensor};

/// images: [N, H, W, C] u8 → [N, C, H, W] f32 in [−0.5, 0.5].
pub fn to_network_input(images: &Tensor) -> Tensor {
    assert_eq!(images.kind(), Kind::Uint8, "camera images must be u8, got {:?}", images.kind());
    images.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0 - 0.5
}

/// [N, C, H, W] → the same values laid out channels-last in memory (NHWC strides, the shape
/// stays [N, C, H, W]). Convolutions on the CPU run their oneDNN NHWC kernels for such inputs
/// and keep the layout through the trunk: about 20–30% less time per ResNet forward and
/// backward on this project's CPU machine (`rldt-vision bench finetune`). A no-op copy-free
/// view when `x` already has that layout (the unaugmented path: `to_network_input` of an HWC
/// batch is channels-last already). tch 0.24 has no memory-format argument, so the layout is
/// made by permuting to NHWC, making that contiguous, and permuting back.
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_extremes_and_layout() {
        // One 1×2 image, RGB: pixel (0,0) = (0, 255, 51), pixel (0,1) = (255, 0, 102).
        let img = Tensor::from_slice(&[0u8, 255, 51, 255, 0, 102]).view([1, 1, 2, 3]);
        let x = to_network_input(&img);
        assert_eq!(x.size(), [1, 3, 1, 2]);
        let v: Vec<f32> = x.flatten(0, -1).try_into().unwrap();
        // channel-major: R(0,0), R(0,1), G(0,0), G(0,1), B(0,0), B(0,1)
        let want = [-0.5, 0.5, 0.5, -0.5, -0.3, -0.1];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }

    /// Same values and shape, NHWC strides: for [2, 3, 4, 5] the strides are
    /// (H·W·C, 1, W·C, C) = (60, 1, 15, 3).
    #[test]
    fn channels_last_keeps_values_changes_strides() {
        let x = Tensor::arange(120, (Kind::Float, tch::Device::Cpu)).view([2, 3, 4, 5]);
        let y = channels_last(&x);
        assert_eq!(y.size(), [2, 3, 4, 5]);
        assert_eq!(y.stride(), [60, 1, 15, 3]);
        assert!(y.equal(&x));
        let img = Tensor::zeros([2, 4, 5, 3], (Kind::Uint8, tch::Device::Cpu));
        assert_eq!(to_network_input(&img).stride(), [60, 1, 15, 3], "HWC input is channels-last already");
    }
}
