//! Spatial-softmax keypoints (Levine et al. 2016; robomimic's `SpatialSoftmax`):
//! a 1×1 conv maps the feature map to K keypoint maps; a softmax over the h·w positions of
//! each map gives a distribution whose expected (x, y) in [−1, 1]² is the keypoint:
//!   kp_k = Σ_ij softmax(f_k)_ij · (x_j, y_i),
//! then a linear layer maps the 2K coordinates to the feature vector.
//! Variable names: `conv` (1×1, with bias), `proj`.

use tch::{nn, Kind, Tensor};

#[derive(Debug)]
pub struct SpatialSoftmax {
    conv: nn::Conv2D,
    proj: nn::Linear,
    /// [h·w] x-coordinates and y-coordinates of the grid positions, row-major.
    grid_x: Tensor,
    grid_y: Tensor,
    num_keypoints: i64,
}

impl SpatialSoftmax {
    /// `channels`: C of the input map, `size`: its side h = w, `num_keypoints`: K,
    /// `feature_dim`: F of the output.
    pub fn new(vs: &nn::Path, channels: i64, size: i64, num_keypoints: i64, feature_dim: i64) -> Self {
        let lin = Tensor::linspace(-1.0, 1.0, size, (Kind::Float, vs.device()));
        let grid_x = lin.repeat([size]); // x varies fastest (columns)
        let grid_y = lin.repeat_interleave_self_int(size, 0, None);
        Self {
            conv: nn::conv2d(vs / "conv", channels, num_keypoints, 1, Default::default()),
            proj: nn::linear(vs / "proj", 2 * num_keypoints, feature_dim, Default::default()),
            grid_x,
            grid_y,
            num_keypoints,
        }
    }

    /// Keypoints only: x: [N, C, h, w] → [N, K, 2] expected (x, y) per keypoint.
    pub fn keypoints(&self, x: &Tensor) -> Tensor {
        let n = x.size()[0];
        let attention = x.apply(&self.conv).view([n, self.num_keypoints, -1]).softmax(-1, Kind::Float);
        let kx = (&attention * &self.grid_x).sum_dim_intlist(-1, false, Kind::Float);
        let ky = (&attention * &self.grid_y).sum_dim_intlist(-1, false, Kind::Float);
        Tensor::stack(&[kx, ky], -1)
    }

    /// x: [N, C, h, w] → [N, F].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.keypoints(x).flatten(1, 2).apply(&self.proj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peaked_map_gives_its_position() {
        // One channel, identity-like 1×1 conv: a single hot pixel at row 0, col 2 of a 3×3
        // map must give the keypoint (x, y) = (1, −1).
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut ss = SpatialSoftmax::new(&vs.root(), 1, 3, 1, 4);
        tch::no_grad(|| {
            let _ = ss.conv.ws.fill_(1.0);
            let _ = ss.conv.bs.as_mut().unwrap().fill_(0.0);
        });
        let map = Tensor::zeros([1, 1, 3, 3], (Kind::Float, tch::Device::Cpu));
        let _ = map.get(0).get(0).get(0).get(2).fill_(100.0);
        let kp: Vec<f32> = ss.keypoints(&map).flatten(0, -1).try_into().unwrap();
        assert!((kp[0] - 1.0).abs() < 1e-4 && (kp[1] + 1.0).abs() < 1e-4, "{kp:?}");
    }
}
