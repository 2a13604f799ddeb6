//! Vision backbones of rldt-vision, as one libtorch graph with the policy that uses them.
//!
//! - [`resnet`]: ResNet-18 trunk with GroupNorm (groups = C/16), the default (robomimic /
//!   Diffusion Policy style), followed by [`spatial_softmax`] keypoints and a linear feature.
//! - [`vit`]: the RLDT paper's one-layer ViT with its "spatial embedding" (docs/algorithm.md §2),
//!   offered so results can be compared with the paper's setting.
//! - [`pixels`]: the one pixel path (u8 HWC → f32 CHW, x/255 − 0.5) used by training and
//!   rollouts alike; [`augment`]: random crop / random shift in training, centre crop or
//!   identity in evaluation.
//!
//! [`ImageEncoder`] owns pixels → augmentation → backbone for one camera (or several cameras
//! when shared). This crate depends on tch only; it knows nothing of datasets or policies.
//! Variable names under the encoder's `nn::Path` are part of the checkpoint format: tests pin
//! them.

pub mod augment;
pub mod config;
pub mod pixels;
pub mod resnet;
pub mod spatial_softmax;
pub mod vit;

pub use augment::Augmentation;
pub use config::{BackboneConfig, EncoderConfig, EncoderConfigError};

use tch::{nn, Tensor};

/// A backbone after pixels and augmentation: ResNet + spatial softmax, or the paper's ViT.
#[derive(Debug)]
enum Backbone {
    Resnet(resnet::ResNet18, spatial_softmax::SpatialSoftmax),
    Vit(vit::Vit, vit::SpatialEmbedding),
}

/// One image encoder: u8 HWC images (+ normalised proprio, used by the ViT's spatial
/// embedding) → feature vectors.
#[derive(Debug)]
pub struct ImageEncoder {
    backbone: Backbone,
    augmentation: Augmentation,
    image_size: i64,
    feature_dim: i64,
}

impl ImageEncoder {
    /// Builds the encoder's variables under `vs`.
    /// `image_size`: side of the square camera images (H = W); `proprio_dim`: length of the
    /// normalised proprio vector the ViT's spatial embedding appends to each token.
    pub fn new(
        vs: &nn::Path,
        config: &EncoderConfig,
        image_size: i64,
        proprio_dim: i64,
    ) -> Result<Self, EncoderConfigError> {
        config.validate(image_size)?;
        let input_size = config.augmentation.network_input_size(image_size);
        let (backbone, feature_dim) = match &config.backbone {
            BackboneConfig::Resnet18 { width, num_keypoints, feature_dim } => {
                let trunk = resnet::ResNet18::new(&(vs / "trunk"), *width);
                let trunk_hw = resnet::ResNet18::output_size(input_size);
                let keypoints = spatial_softmax::SpatialSoftmax::new(
                    &(vs / "keypoints"),
                    trunk.out_channels(),
                    trunk_hw,
                    *num_keypoints,
                    *feature_dim,
                );
                (Backbone::Resnet(trunk, keypoints), *feature_dim)
            }
            BackboneConfig::Vit { embed_dim, num_heads, mlp_dim, feature_dim } => {
                let vit = vit::Vit::new(&(vs / "vit"), input_size, *embed_dim, *num_heads, *mlp_dim);
                let embedding = vit::SpatialEmbedding::new(
                    &(vs / "spatial_embedding"),
                    vit.num_tokens(),
                    *embed_dim,
                    proprio_dim,
                    *feature_dim,
                );
                (Backbone::Vit(vit, embedding), *feature_dim)
            }
        };
        Ok(Self { backbone, augmentation: config.augmentation.clone(), image_size, feature_dim })
    }

    /// Length F of the feature vector this encoder returns.
    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    /// images: [N, H, W, 3] u8 (upright), proprio: [N, P] f32 normalised → [N, F] f32.
    /// `train` turns augmentation on (random crop / shift); evaluation uses the centre crop.
    pub fn forward_t(&self, images: &Tensor, proprio: &Tensor, train: bool) -> Tensor {
        let (_, h, w, _) = images.size4().expect("images must be [N, H, W, C]");
        assert!(
            h == self.image_size && w == self.image_size,
            "encoder built for {0}×{0} images, got {h}×{w}",
            self.image_size
        );
        let x = pixels::to_network_input(images);
        let x = pixels::channels_last(&self.augmentation.apply(&x, train));
        match &self.backbone {
            Backbone::Resnet(trunk, keypoints) => keypoints.forward(&trunk.forward(&x)),
            Backbone::Vit(vit, embedding) => embedding.forward(&vit.forward(&x), proprio),
        }
    }
}
