//! The pretraining config (`configs/pretrain/*.json`): serde structs with
//! `deny_unknown_fields` and no defaults, so a committed file states every setting;
//! [`PretrainConfig::validate`] checks values and relations and names the field.
//! The resolved config is written into every run directory. The fine-tuning config lives in
//! [`finetune`].

pub mod finetune;

use std::path::{Path, PathBuf};

use rldt_datasets::reader::{DemoSelection, ObsSpec};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::PolicyConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// Run name: the default run directory is `runs/<name>`.
    pub name: String,
    pub seed: u64,
    pub dataset: DatasetConfig,
    pub policy: PolicyConfig,
    pub train: PretrainSchedule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Robomimic HDF5 file (`--dataset` overrides it).
    pub path: PathBuf,
    pub obs: ObsSpec,
    /// Demos to train on, e.g. `{"mask": "train", "first_n": 100}`.
    pub train_demos: DemoSelection,
    /// Demos for the validation loss, or null for none.
    pub valid_demos: Option<DemoSelection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainSchedule {
    pub batch_size: usize,
    pub steps: i64,
    /// AdamW peak learning rate, reached after `warmup_steps`, then cosine to `min_lr`.
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: i64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// EMA of the weights after every step: ema ← d·ema + (1 − d)·θ.
    pub ema_decay: f64,
    pub log_every: i64,
    /// Validation loss (EMA weights, no augmentation) every this many steps.
    pub valid_every: i64,
    /// At most this many validation windows (evenly spaced) per evaluation.
    pub valid_max_windows: usize,
    pub checkpoint_every: i64,
    pub keep_checkpoints: usize,
    /// Batches prepared ahead by the loader thread.
    pub loader_prefetch: usize,
}

/// Reads a JSON config (unknown keys rejected by its serde attributes), then `validate`s it;
/// errors name the file and the field.
pub fn load_validated<C: serde::de::DeserializeOwned>(
    path: &Path,
    validate: impl Fn(&C) -> std::result::Result<(), String>,
) -> Result<C> {
    let text = std::fs::read_to_string(path).map_err(crate::error::io_at(path))?;
    let config: C =
        serde_json::from_str(&text).map_err(|e| Error::Config { file: path.into(), message: e.to_string() })?;
    validate(&config).map_err(|message| Error::Config { file: path.into(), message })?;
    Ok(config)
}

/// The first failed (ok, field, message) check as "field `f`: message".
pub fn first_failure<'a>(checks: impl IntoIterator<Item = (bool, &'a str, String)>) -> std::result::Result<(), String> {
    match checks.into_iter().find(|(ok, _, _)| !ok) {
        Some((_, field, message)) => Err(format!("field `{field}`: {message}")),
        None => Ok(()),
    }
}

impl PretrainConfig {
    /// Reads and validates a config file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        load_validated(path, Self::validate)
    }

    /// Checks values and relations; the message starts with the field path.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.train;
        let checks: [(bool, &str, String); 14] = [
            (!self.name.is_empty() && !self.name.contains('/'), "name", "must be non-empty without '/'".into()),
            (t.batch_size >= 1, "train.batch_size", "must be ≥ 1".into()),
            (t.steps >= 1, "train.steps", "must be ≥ 1".into()),
            (t.lr > 0.0, "train.lr", "must be > 0".into()),
            (t.min_lr >= 0.0 && t.min_lr <= t.lr, "train.min_lr", format!("must be in [0, lr = {}]", t.lr)),
            (
                t.warmup_steps >= 0 && t.warmup_steps <= t.steps,
                "train.warmup_steps",
                format!("must be in [0, steps = {}]", t.steps),
            ),
            (t.weight_decay >= 0.0, "train.weight_decay", "must be ≥ 0".into()),
            (t.betas.iter().all(|b| (0.0..1.0).contains(b)), "train.betas", "both must be in [0, 1)".into()),
            (t.eps > 0.0, "train.eps", "must be > 0".into()),
            ((0.0..1.0).contains(&t.ema_decay), "train.ema_decay", "must be in [0, 1)".into()),
            (
                t.log_every >= 1 && t.valid_every >= 1 && t.checkpoint_every >= 1,
                "train.log_every",
                "log_every, valid_every and checkpoint_every must be ≥ 1".into(),
            ),
            (t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be ≥ 1".into()),
            (t.loader_prefetch >= 1, "train.loader_prefetch", "must be ≥ 1".into()),
            (
                !self.dataset.obs.image_keys.is_empty() || !self.dataset.obs.lowdim_keys.is_empty(),
                "dataset.obs",
                "needs at least one image or low-dim key".into(),
            ),
        ];
        first_failure(checks)?;
        self.policy.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/pretrain").join(name)
    }

    #[test]
    fn committed_configs_are_complete_and_valid() {
        for name in [
            "square.json",
            "square_cpu.json",
            "square_vit.json",
            "synthetic_cpu.json",
            "lift_cpu.json",
            "lift_lowdim.json",
            "square_lowdim.json",
        ] {
            PretrainConfig::load(&committed(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn committed_finetune_configs_are_complete_and_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/finetune");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let loaded = match finetune::Algorithm::of_file(&path).unwrap_or_else(|e| panic!("{e}")) {
                finetune::Algorithm::Rldt | finetune::Algorithm::Qam => {
                    finetune::FinetuneConfig::load(&path).map(|_| ())
                }
                finetune::Algorithm::Reinflow | finetune::Algorithm::Fpo | finetune::Algorithm::Dppo => {
                    finetune::OnPolicyConfig::load(&path).map(|_| ())
                }
            };
            loaded.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
        assert!(seen >= 9, "{seen} configs");
        let mut config = finetune::FinetuneConfig::load(&dir.join("square.json")).unwrap();
        config.schedule.replay_trajectories = 10;
        assert!(config.validate().unwrap_err().contains("schedule.replay_trajectories"));
    }

    #[test]
    fn unknown_keys_and_bad_relations_name_the_field() {
        let text = std::fs::read_to_string(committed("square_cpu.json")).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value["train"]["learning_rate"] = 1.0.into();
        let err = serde_json::from_value::<PretrainConfig>(value.clone()).unwrap_err().to_string();
        assert!(err.contains("unknown field `learning_rate`"), "{err}");
        value["train"].as_object_mut().unwrap().remove("learning_rate");
        value["policy"]["exec_horizon"] = 9.into();
        let config: PretrainConfig = serde_json::from_value(value.clone()).unwrap();
        assert!(config.validate().unwrap_err().contains("exec_horizon"));
        value["policy"]["exec_horizon"] = 4.into();
        value["train"]["min_lr"] = 1.0.into();
        let config: PretrainConfig = serde_json::from_value(value.clone()).unwrap();
        assert!(config.validate().unwrap_err().contains("train.min_lr"));
        value["train"].as_object_mut().unwrap().remove("min_lr");
        let err = serde_json::from_value::<PretrainConfig>(value).unwrap_err().to_string();
        assert!(err.contains("missing field `min_lr`"), "{err}");
    }
}
