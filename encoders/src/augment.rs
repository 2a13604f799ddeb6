//! Image augmentation on network-input images ([N, C, H, W] f32), training only.
//!
//! - `random_crop` (robomimic, Diffusion Policy): a random `crop_size` window per image in
//!   training; the centre window in evaluation, so the network always sees crop_size².
//! - `random_shift` (DrQ; the RLDT paper's choice): replicate-pad by `pad`, then a random
//!   window of the original size per image; identity in evaluation.
//! - `none`.
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
