//! Policy files inside a checkpoint directory:
//! - `policy.json`: the [`PolicySpec`] (architecture, observation keys, shapes, statistics),
//! - `policy.safetensors`: the online weights, `ema.safetensors`: the EMA weights (what
//!   later stages load). Both are plain safetensors (`safetensors.torch.load_file` reads
//!   them); names are the VarStore paths (`encoder.shared.trunk.stem.conv.weight`, …).

use std::path::{Path, PathBuf};

use tch::{nn, Device};

use super::{FlowPolicy, PolicyError, PolicySpec};

pub const SPEC_FILE: &str = "policy.json";
pub const ONLINE_WEIGHTS_FILE: &str = "policy.safetensors";
pub const EMA_WEIGHTS_FILE: &str = "ema.safetensors";

/// Which weights of a checkpoint to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    Online,
    Ema,
}

impl Weights {
    pub fn file(self) -> &'static str {
        match self {
            Weights::Online => ONLINE_WEIGHTS_FILE,
            Weights::Ema => EMA_WEIGHTS_FILE,
        }
    }
}

fn checkpoint_error(path: &Path, message: impl Into<String>) -> PolicyError {
    PolicyError::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

pub fn read_spec(dir: &Path) -> Result<PolicySpec, PolicyError> {
    let path = dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| checkpoint_error(&path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| checkpoint_error(&path, format!("invalid policy spec: {e}")))
}

/// Loads `weights` of the checkpoint in `dir` into a new VarStore on `device`.
pub fn load(dir: &Path, weights: Weights, device: Device) -> Result<(nn::VarStore, FlowPolicy), PolicyError> {
    let spec = read_spec(dir)?;
    let mut vs = nn::VarStore::new(device);
    // A spec that parses but describes no valid policy is the spec file's error.
    let policy = FlowPolicy::new(&vs.root(), spec).map_err(|e| match e {
        PolicyError::Checkpoint { .. } => e,
        other => checkpoint_error(&dir.join(SPEC_FILE), other.to_string()),
    })?;
    let path = dir.join(weights.file());
    load_weights(&mut vs, &path)?;
    Ok((vs, policy))
}

/// Fills an existing VarStore from a safetensors file; every variable must be present with
/// its shape.
pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<(), PolicyError> {
    if !path.exists() {
        return Err(checkpoint_error(path, "no such file"));
    }
    vs.load(path).map_err(|e| checkpoint_error(path, e.to_string()))?;
    refuse_non_finite(vs, path)
}

/// Like [`load_weights`], from the tensors of `path` already read (`Tensor::read_safetensors`):
/// every variable of `vs` must be there, with its shape; extra tensors are ignored.
pub fn load_weights_from(
    vs: &mut nn::VarStore,
    stored: Vec<(String, tch::Tensor)>,
    path: &Path,
) -> Result<(), PolicyError> {
    let stored: std::collections::HashMap<String, tch::Tensor> = stored.into_iter().collect();
    let mut variables: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut variable) in variables {
        let source = stored.get(&name).ok_or_else(|| checkpoint_error(path, format!("no tensor `{name}`")))?;
        if source.size() != variable.size() {
            return Err(checkpoint_error(
                path,
                format!("tensor `{name}` has shape {:?}, the model expects {:?}", source.size(), variable.size()),
            ));
        }
        tch::no_grad(|| variable.copy_(source));
    }
    refuse_non_finite(vs, path)
}

/// A weight file holding NaN or ±inf is refused at load, naming the tensor: run, it would
/// only show as every episode failing ("MuJoCo unstable simulation").
pub fn refuse_non_finite(vs: &nn::VarStore, path: &Path) -> Result<(), PolicyError> {
    let mut variables: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tensor) in variables {
        let finite = tch::no_grad(|| tensor.isfinite().all());
        if !bool::try_from(&finite).unwrap_or(false) {
            let bad = tch::no_grad(|| tensor.isfinite().logical_not().sum(tch::Kind::Int64));
            return Err(checkpoint_error(
                path,
                format!(
                    "tensor `{name}` holds {} non-finite values (NaN or ±inf) of {}; refusing to load it",
                    i64::try_from(&bad).unwrap_or(-1),
                    tensor.numel()
                ),
            ));
        }
    }
    Ok(())
}

/// Writes `policy.json` (the spec) into checkpoint directory `dir`, atomically.
pub fn save_spec(spec: &PolicySpec, dir: &Path) -> crate::Result<()> {
    let text = serde_json::to_string_pretty(spec).expect("spec serialises");
    crate::run_dir::write_atomic(&dir.join(SPEC_FILE), text.as_bytes())
}

pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<(), PolicyError> {
    vs.save(path).map_err(|e| checkpoint_error(path, e.to_string()))
}

/// The checkpoint directory a user named: `path` itself (it holds `policy.json`), or the
/// latest checkpoint of a run directory.
pub fn resolve(path: &Path) -> crate::Result<PathBuf> {
    if path.join(SPEC_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    crate::run_dir::latest_checkpoint(path)?.ok_or_else(|| {
        checkpoint_error(path, "neither a checkpoint (policy.json) nor a run directory with checkpoints/latest").into()
    })
}

/// Refuses a policy that conditions on more than one observation frame (`obs_horizon` > 1):
/// rollouts render cameras at chunk ends only, so they cannot give the consecutive-step
/// history such a policy was trained on (docs/algorithm.md §1). Used by `eval` and
/// `finetune` before any worker starts.
pub fn require_single_frame(dir: &Path) -> Result<(), PolicyError> {
    let spec = read_spec(dir)?;
    if spec.config.obs_horizon != 1 {
        return Err(checkpoint_error(
            &dir.join(SPEC_FILE),
            format!(
                "field `config.obs_horizon` is {}: evaluation and fine-tuning support policies with one \
                 observation frame (obs_horizon 1) only",
                spec.config.obs_horizon
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::Module, Device, Kind, Tensor};

    fn weight_file(name: &str, out: i64) -> (std::path::PathBuf, Tensor) {
        let dir = std::env::temp_dir().join(format!("rldt-checkpoint-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weights.safetensors");
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "layer", 3, out, Default::default());
        save_weights(&vs, &path).unwrap();
        (path, layer.forward(&Tensor::ones([1, 3], (Kind::Float, Device::Cpu))))
    }

    /// Weights read once and copied in reproduce the saved layer's output exactly.
    #[test]
    fn load_weights_from_copies_every_variable() {
        let (path, expected) = weight_file("copy", 2);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "layer", 3, 2, Default::default());
        load_weights_from(&mut vs, Tensor::read_safetensors(&path).unwrap(), &path).unwrap();
        let got = layer.forward(&Tensor::ones([1, 3], (Kind::Float, Device::Cpu)));
        assert!(bool::try_from(got.eq_tensor(&expected).all()).unwrap());
    }

    /// A missing tensor and a wrong shape are refused, naming the tensor (variables checked in
    /// name order, so `*.bias` first).
    #[test]
    fn load_weights_from_names_missing_and_misshapen_tensors() {
        let (path, _) = weight_file("refuse", 2);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _other = nn::linear(vs.root() / "other", 3, 2, Default::default());
        let error = load_weights_from(&mut vs, Tensor::read_safetensors(&path).unwrap(), &path).unwrap_err();
        assert!(error.to_string().contains("no tensor `other.bias`"), "{error}");
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _wider = nn::linear(vs.root() / "layer", 3, 4, Default::default());
        let error = load_weights_from(&mut vs, Tensor::read_safetensors(&path).unwrap(), &path).unwrap_err();
        assert!(error.to_string().contains("`layer.bias` has shape [2], the model expects [4]"), "{error}");
    }
}
