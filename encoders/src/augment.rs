//! Image augmentation on network-input images ([N, C, H, W] f32), training only.
//!
//! - `random_crop` (robomimic, Diffusion Policy): a random `crop_size` window per image in
//!   training; the centre window in evaluation, so the network always sees crop_size².
//! - `random_shift` (DrQ; the RLDT paper's choice): replicate-pad by `pad`, then a random
//!   window of the original size per image; identity in evaluation.
//! - `none`.
//!
//! [`Augmentation::draw_on_stored`] applies the same random shift to stored u8 images
//! ([N, H, W, C]) before any conversion, so a batch can be augmented once and kept as bytes
//! (RLDT's critic batches, docs/algorithm.md §3). Shifting bytes and then converting equals
//! converting and then shifting (replicate padding copies pixels; the conversion is per pixel).
//! Offsets come from libtorch's global generator, so `tch::manual_seed` fixes them.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Augmentation {
    RandomCrop { crop_size: i64 },
    RandomShift { pad: i64 },
    None,
}

impl Augmentation {
    /// Side of the square image the backbone sees for camera images of side `image_size`.
    pub fn network_input_size(&self, image_size: i64) -> i64 {
        match self {
            Augmentation::RandomCrop { crop_size } => *crop_size,
            Augmentation::RandomShift { .. } | Augmentation::None => image_size,
        }
    }

    /// x: [N, C, H, W] → [N, C, S, S] with S = `network_input_size(H)`.
    pub fn apply(&self, x: &Tensor, train: bool) -> Tensor {
        let (n, _, h, w) = x.size4().expect("augmentation expects [N, C, H, W]");
        match (self, train) {
            (Augmentation::RandomCrop { crop_size }, true) => {
                crop_each(x, *crop_size, &random_offsets(n, h - crop_size + 1, w - crop_size + 1))
            }
            (Augmentation::RandomCrop { crop_size }, false) => {
                let (top, left) = ((h - crop_size) / 2, (w - crop_size) / 2);
                x.narrow(2, top, *crop_size).narrow(3, left, *crop_size)
            }
            (Augmentation::RandomShift { pad }, true) => {
                let padded = x.replication_pad2d([*pad, *pad, *pad, *pad]);
                crop_each(&padded, h, &random_offsets(n, 2 * pad + 1, 2 * pad + 1))
            }
            (Augmentation::RandomShift { .. }, false) | (Augmentation::None, _) => x.shallow_clone(),
        }
    }
}

impl Augmentation {
    /// One random draw of the training augmentation on stored images: [N, H, W, C] u8 →
    /// [N, H, W, C] u8. For `random_shift` the output pixel (y, x) of image i is the input
    /// pixel (clamp(y + top_i − pad), clamp(x + left_i − pad)), i.e. replicate-pad then crop
    /// at (top_i, left_i), offsets drawn as [`apply`](Self::apply) draws them. `none`: the
    /// input. `random_crop` changes the image size and has no stored-image form (None).
    pub fn draw_on_stored(&self, images: &Tensor) -> Option<Tensor> {
        match self {
            Augmentation::None => Some(images.shallow_clone()),
            Augmentation::RandomCrop { .. } => None,
            Augmentation::RandomShift { pad } => {
                let n = images.size()[0];
                Some(shift_stored(images, *pad, &random_offsets(n, 2 * pad + 1, 2 * pad + 1)))
            }
        }
    }
}

/// images [N, H, W, C] (any kind), one (top, left) in [0, 2·pad] per image → the replicate-padded
/// image's window at (top, left), same size, by gathering clamped rows and columns.
fn shift_stored(images: &Tensor, pad: i64, offsets: &[(i64, i64)]) -> Tensor {
    let (n, h, w, c) = images.size4().expect("stored images are [N, H, W, C]");
    let device = images.device();
    let index = |offset: &dyn Fn(&(i64, i64)) -> i64, len: i64| -> Tensor {
        let shifts: Vec<i64> = offsets.iter().map(|o| offset(o) - pad).collect();
        let shift = Tensor::from_slice(&shifts).to_device(device).view([n, 1]);
        (Tensor::arange(len, (Kind::Int64, device)).view([1, len]) + shift).clamp(0, len - 1)
    };
    let rows = index(&|o| o.0, h).view([n, h, 1, 1]).expand([n, h, w, c], false);
    let cols = index(&|o| o.1, w).view([n, 1, w, 1]).expand([n, h, w, c], false);
    images.gather(1, &rows, false).gather(2, &cols, false)
}

/// n pairs (top, left), top uniform in [0, max_top), left uniform in [0, max_left).
fn random_offsets(n: i64, max_top: i64, max_left: i64) -> Vec<(i64, i64)> {
    let tops: Vec<i64> = Tensor::randint(max_top, [n], (Kind::Int64, tch::Device::Cpu)).try_into().unwrap();
    let lefts: Vec<i64> = Tensor::randint(max_left, [n], (Kind::Int64, tch::Device::Cpu)).try_into().unwrap();
    tops.into_iter().zip(lefts).collect()
}

/// x: [N, C, H, W], one (top, left) per image → [N, C, size, size].
fn crop_each(x: &Tensor, size: i64, offsets: &[(i64, i64)]) -> Tensor {
    let crops: Vec<Tensor> = offsets
        .iter()
        .enumerate()
        .map(|(i, &(top, left))| x.get(i as i64).narrow(1, top, size).narrow(2, left, size))
        .collect();
    Tensor::stack(&crops, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: i64, h: i64) -> Tensor {
        Tensor::arange(n * 3 * h * h, (Kind::Float, tch::Device::Cpu)).view([n, 3, h, h])
    }

    #[test]
    fn centre_crop_in_eval_is_the_middle_window() {
        let x = ramp(2, 6);
        let y = Augmentation::RandomCrop { crop_size: 4 }.apply(&x, false);
        assert_eq!(y.size(), [2, 3, 4, 4]);
        assert!(y.equal(&x.narrow(2, 1, 4).narrow(3, 1, 4)));
    }

    #[test]
    fn shift_keeps_size_and_is_identity_in_eval() {
        let x = ramp(3, 8);
        let aug = Augmentation::RandomShift { pad: 2 };
        assert!(aug.apply(&x, false).equal(&x));
        tch::manual_seed(1);
        let y = aug.apply(&x, true);
        assert_eq!(y.size(), [3, 3, 8, 8]);
    }

    /// For the same offsets (corners and the centre, pad 3), shifting stored bytes and then
    /// converting equals converting and then replicate-pad + crop as `apply` does.
    #[test]
    fn shift_on_stored_bytes_equals_shift_on_network_input() {
        let images = Tensor::randint(256, [5, 12, 12, 3], (Kind::Uint8, tch::Device::Cpu));
        let offsets = [(0, 0), (6, 6), (3, 3), (0, 6), (5, 1)];
        let input = crate::pixels::to_network_input(&images);
        let on_input = crop_each(&input.replication_pad2d([3, 3, 3, 3]), 12, &offsets);
        let stored = shift_stored(&images, 3, &offsets);
        assert_eq!(stored.kind(), Kind::Uint8);
        assert!(crate::pixels::to_network_input(&stored).equal(&on_input));
        assert!(stored.get(2).equal(&images.get(2)), "(pad, pad) is the identity");
        assert!(!stored.get(0).equal(&images.get(0)));
        let drawn = Augmentation::RandomShift { pad: 3 }.draw_on_stored(&images).unwrap();
        assert_eq!(drawn.size(), images.size());
        assert!(Augmentation::RandomCrop { crop_size: 8 }.draw_on_stored(&images).is_none());
    }

    #[test]
    fn random_crop_windows_come_from_the_image() {
        tch::manual_seed(3);
        let x = ramp(4, 6);
        let y = Augmentation::RandomCrop { crop_size: 4 }.apply(&x, true);
        for i in 0..4 {
            // The window's top-left value identifies its offset in a ramp image.
            let v = y.get(i).get(0).get(0).get(0).double_value(&[]) as i64 - i * 3 * 36;
            let (top, left) = (v / 6, v % 6);
            assert!(top <= 2 && left <= 2);
            assert!(y.get(i).equal(&x.get(i).narrow(1, top, 4).narrow(2, left, 4)));
        }
    }
}
