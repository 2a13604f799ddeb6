//! Encoder contracts: output shapes at 84 and 96 pixels for both backbones, determinism under
//! a seed, no augmentation in evaluation, and variable names (checkpoints depend on them).

use rldt_encoders::{Augmentation, BackboneConfig, EncoderConfig, ImageEncoder};
use std::sync::{Mutex, MutexGuard};
use tch::{nn, Device, Kind, Tensor};

/// libtorch's generator is process-global and tests run on parallel threads: every test that
/// seeds it holds this lock.
static GLOBAL_RNG: Mutex<()> = Mutex::new(());
fn rng_lock() -> MutexGuard<'static, ()> {
    GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn resnet(width: i64, augmentation: Augmentation) -> EncoderConfig {
    EncoderConfig {
        backbone: BackboneConfig::Resnet18 { width, num_keypoints: 32, feature_dim: 64 },
        augmentation,
        share_across_cameras: true,
    }
}

fn vit(augmentation: Augmentation) -> EncoderConfig {
    EncoderConfig {
        backbone: BackboneConfig::Vit { embed_dim: 128, num_heads: 4, mlp_dim: 512, feature_dim: 128 },
        augmentation,
        share_across_cameras: true,
    }
}

fn images(n: i64, size: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(256, [n, size, size, 3], (Kind::Uint8, Device::Cpu))
}

fn build(config: &EncoderConfig, size: i64, seed: i64) -> (nn::VarStore, ImageEncoder) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let encoder = ImageEncoder::new(&(vs.root() / "encoder"), config, size, 9).unwrap();
    (vs, encoder)
}

#[test]
fn output_shapes_at_84_and_96_pixels() {
    let _rng = rng_lock();
    let proprio = Tensor::zeros([2, 9], (Kind::Float, Device::Cpu));
    for size in [84, 96] {
        for config in [
            resnet(16, Augmentation::RandomCrop { crop_size: size - 8 }),
            resnet(64, Augmentation::RandomShift { pad: 4 }),
            vit(Augmentation::RandomShift { pad: 4 }),
        ] {
            let (_vs, encoder) = build(&config, size, 0);
            for train in [true, false] {
                let y = encoder.forward_t(&images(2, size, 1), &proprio, train);
                assert_eq!(y.size(), [2, encoder.feature_dim()], "{config:?} at {size}");
                assert_eq!(y.kind(), Kind::Float);
                assert!(bool::try_from(y.isfinite().all()).unwrap());
            }
        }
    }
}

#[test]
fn vit_token_count_matches_the_paper() {
    let _rng = rng_lock();
    // 96×96 → conv 8/4 → 23 → conv 3/2 → 11: 121 tokens (docs/algorithm.md §2).
    let vs = nn::VarStore::new(Device::Cpu);
    let v = rldt_encoders::vit::Vit::new(&vs.root(), 96, 128, 4, 512);
    assert_eq!(v.num_tokens(), 121);
    let v84 = rldt_encoders::vit::Vit::new(&(vs.root() / "b"), 84, 128, 4, 512);
    assert_eq!(v84.num_tokens(), 81);
}

#[test]
fn same_seed_same_weights_and_same_augmented_output() {
    let _rng = rng_lock();
    let config = resnet(16, Augmentation::RandomCrop { crop_size: 76 });
    let proprio = Tensor::zeros([3, 9], (Kind::Float, Device::Cpu));
    let x = images(3, 84, 5);
    let run = || {
        let (_vs, encoder) = build(&config, 84, 42);
        tch::manual_seed(7);
        encoder.forward_t(&x, &proprio, true)
    };
    let (a, b) = (run(), run());
    assert!(a.equal(&b), "same seed must give identical features");
    // A different augmentation seed must change the training output.
    let (_vs, encoder) = build(&config, 84, 42);
    tch::manual_seed(8);
    assert!(!encoder.forward_t(&x, &proprio, true).equal(&a));
}

#[test]
fn evaluation_has_no_augmentation() {
    let _rng = rng_lock();
    for config in
        [resnet(16, Augmentation::RandomCrop { crop_size: 76 }), resnet(16, Augmentation::RandomShift { pad: 4 })]
    {
        let (_vs, encoder) = build(&config, 84, 0);
        let proprio = Tensor::zeros([2, 9], (Kind::Float, Device::Cpu));
        let x = images(2, 84, 2);
        tch::manual_seed(1);
        let a = encoder.forward_t(&x, &proprio, false);
        tch::manual_seed(2);
        let b = encoder.forward_t(&x, &proprio, false);
        assert!(a.equal(&b), "eval output must not depend on the RNG: {config:?}");
    }
}

/// Reference: the full sorted name list of a width-16 ResNet encoder, as a fingerprint
/// (count and a few names); changing any name breaks saved checkpoints.
#[test]
fn variable_names_are_stable() {
    let _rng = rng_lock();
    let (vs, _encoder) = build(&resnet(16, Augmentation::None), 84, 0);
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(names.len(), 64, "{names:#?}");
    for expected in [
        "encoder.trunk.stem.conv.weight",
        "encoder.trunk.stem.norm.weight",
        "encoder.trunk.stem.norm.bias",
        "encoder.trunk.layer1.0.conv1.weight",
        "encoder.trunk.layer1.1.norm2.bias",
        "encoder.trunk.layer2.0.downsample.conv.weight",
        "encoder.trunk.layer4.1.conv2.weight",
        "encoder.keypoints.conv.weight",
        "encoder.keypoints.conv.bias",
        "encoder.keypoints.proj.weight",
        "encoder.keypoints.proj.bias",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}: {names:#?}");
    }
    let (vs, _encoder) = build(&vit(Augmentation::None), 96, 0);
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "encoder.spatial_embedding.compress.bias",
            "encoder.spatial_embedding.compress.weight",
            "encoder.spatial_embedding.norm.bias",
            "encoder.spatial_embedding.norm.weight",
            "encoder.spatial_embedding.weight",
            "encoder.vit.attention_out.bias",
            "encoder.vit.attention_out.weight",
            "encoder.vit.mlp_in.bias",
            "encoder.vit.mlp_in.weight",
            "encoder.vit.mlp_out.bias",
            "encoder.vit.mlp_out.weight",
            "encoder.vit.norm_attention.bias",
            "encoder.vit.norm_attention.weight",
            "encoder.vit.norm_final.bias",
            "encoder.vit.norm_final.weight",
            "encoder.vit.norm_mlp.bias",
            "encoder.vit.norm_mlp.weight",
            "encoder.vit.patch_conv1.bias",
            "encoder.vit.patch_conv1.weight",
            "encoder.vit.patch_conv2.bias",
            "encoder.vit.patch_conv2.weight",
            "encoder.vit.position",
            "encoder.vit.qkv.bias",
            "encoder.vit.qkv.weight",
        ]
    );
}

#[test]
fn config_errors_name_the_field() {
    let _rng = rng_lock();
    let bad = resnet(16, Augmentation::RandomCrop { crop_size: 100 });
    let err = bad.validate(84).unwrap_err();
    assert_eq!(err.field, "augmentation.crop_size");
    let bad = resnet(24, Augmentation::None);
    assert_eq!(bad.validate(84).unwrap_err().field, "backbone.width");
    let bad = EncoderConfig {
        backbone: BackboneConfig::Vit { embed_dim: 128, num_heads: 3, mlp_dim: 512, feature_dim: 128 },
        augmentation: Augmentation::None,
        share_across_cameras: true,
    };
    assert_eq!(bad.validate(96).unwrap_err().field, "backbone.num_heads");
}
