//! Encoder configuration (serde, every field explicit) and its validation.
//! The JSON shape is `{"backbone": {"kind": "resnet18", …} | {"kind": "vit", …},
//! "augmentation": {"kind": "random_crop" | "random_shift" | "none", …},
//! "share_across_cameras": bool}`.

use serde::{Deserialize, Serialize};

use crate::Augmentation;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub backbone: BackboneConfig,
    pub augmentation: Augmentation,
    /// One backbone for all cameras (true) or one per camera (false).
    pub share_across_cameras: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackboneConfig {
    /// ResNet-18 with GroupNorm; `width` = channels of the first stage (64 is the standard
    /// ResNet-18; 16 gives a CPU-sized model with 1/16 of the FLOPs).
    Resnet18 { width: i64, num_keypoints: i64, feature_dim: i64 },
    /// The RLDT paper's one-layer ViT (embed 128, 4 heads, MLP 512) + spatial embedding.
    Vit { embed_dim: i64, num_heads: i64, mlp_dim: i64, feature_dim: i64 },
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("encoder config field `{field}`: {message}")]
pub struct EncoderConfigError {
    pub field: &'static str,
    pub message: String,
}

fn check(ok: bool, field: &'static str, message: impl Into<String>) -> Result<(), EncoderConfigError> {
    if ok {
        Ok(())
    } else {
        Err(EncoderConfigError { field, message: message.into() })
    }
}

impl EncoderConfig {
    /// Checks sizes and relations against camera images of side `image_size`.
    pub fn validate(&self, image_size: i64) -> Result<(), EncoderConfigError> {
        match &self.augmentation {
            Augmentation::RandomCrop { crop_size } => check(
                *crop_size > 0 && *crop_size <= image_size,
                "augmentation.crop_size",
                format!("must be in 1..={image_size} (the image size), got {crop_size}"),
            )?,
            Augmentation::RandomShift { pad } => check(
                *pad >= 0 && *pad < image_size,
                "augmentation.pad",
                format!("must be in 0..{image_size}, got {pad}"),
            )?,
            Augmentation::None => {}
        }
        let input = self.augmentation.network_input_size(image_size);
        match &self.backbone {
            BackboneConfig::Resnet18 { width, num_keypoints, feature_dim } => {
                check(
                    *width >= 16 && width % 16 == 0,
                    "backbone.width",
                    format!("must be a positive multiple of 16 (GroupNorm groups = C/16), got {width}"),
                )?;
                check(*num_keypoints > 0, "backbone.num_keypoints", "must be positive")?;
                check(*feature_dim > 0, "backbone.feature_dim", "must be positive")?;
                check(
                    input >= 32,
                    "augmentation",
                    format!("the ResNet needs network inputs of at least 32 pixels, got {input}"),
                )?;
            }
            BackboneConfig::Vit { embed_dim, num_heads, mlp_dim, feature_dim } => {
                check(
                    *num_heads > 0 && embed_dim % num_heads == 0,
                    "backbone.num_heads",
                    format!("must divide embed_dim {embed_dim}, got {num_heads}"),
                )?;
                check(*mlp_dim > 0, "backbone.mlp_dim", "must be positive")?;
                check(*feature_dim > 0, "backbone.feature_dim", "must be positive")?;
                check(
                    input >= 16,
                    "augmentation",
                    format!("the ViT's patch convolutions need inputs of at least 16 pixels, got {input}"),
                )?;
            }
        }
        Ok(())
    }
}
