//! Simulator observations → policy inputs, through the same pixel path and normalisation as
//! training: images stay u8 HWC (the encoder converts them), low-dim keys are concatenated in
//! the policy's `ObsSpec` order and min-max normalised with the checkpoint's statistics.

use tch::{Device, Tensor};

use super::{ObsBatch, PolicySpec};
use crate::sim::{Action, Observation};

/// The latest observation of each of B envs → ObsBatch (To = 1: fine-tuning and evaluation
/// refuse policies with a longer history, see `checkpoint::require_single_frame`).
/// Errors name the missing or mis-sized key.
pub fn obs_batch(spec: &PolicySpec, observations: &[&Observation], device: Device) -> Result<ObsBatch, String> {
    let b = observations.len() as i64;
    let s = spec.image_size;
    let mut images = Vec::with_capacity(spec.obs.image_keys.len());
    for key in &spec.obs.image_keys {
        let mut bytes = Vec::with_capacity((b * s * s * 3) as usize);
        for obs in observations {
            bytes.extend_from_slice(camera_image(spec, obs, key)?);
        }
        images.push(Tensor::from_slice(&bytes).view([b, 1, s, s, 3]).to_device(device));
    }
    let mut proprio = Vec::with_capacity((b * spec.proprio_dim) as usize);
    for obs in observations {
        proprio.extend(normalized_proprio(spec, obs)?);
    }
    let proprio = Tensor::from_slice(&proprio).view([b, 1, spec.proprio_dim]).to_device(device);
    Ok(ObsBatch { images, proprio })
}

/// Camera `key`'s u8 HWC image of one observation, checked against the policy's size.
pub fn camera_image<'a>(spec: &PolicySpec, obs: &'a Observation, key: &str) -> Result<&'a [u8], String> {
    let s = spec.image_size;
    let image =
        obs.images.get(key).ok_or_else(|| format!("observation lacks camera `{key}` the policy was trained on"))?;
    if image.len() != (s * s * 3) as usize {
        return Err(format!("camera `{key}` gives {} bytes, the policy expects {s}×{s}×3", image.len()));
    }
    Ok(image)
}

/// Env actions [B, Ta, A] (from `FlowPolicy::env_actions`) → one chunk of Ta steps per env.
pub fn env_chunks(spec: &PolicySpec, env_actions: &Tensor) -> Vec<Action> {
    let (ta, a) = (spec.config.exec_horizon as usize, spec.action_dim as usize);
    let values: Vec<f32> =
        env_actions.to_device(Device::Cpu).contiguous().view([-1]).try_into().expect("f32 env actions");
    values
        .chunks_exact(ta * a)
        .map(|chunk| {
            Action::Chunk(chunk.chunks_exact(a).map(|step| step.iter().map(|&v| v as f64).collect()).collect())
        })
        .collect()
}

/// The policy's low-dim keys of one observation, concatenated in `ObsSpec` order and min-max
/// normalised with the checkpoint's statistics: [P].
pub fn normalized_proprio(spec: &PolicySpec, obs: &Observation) -> Result<Vec<f32>, String> {
    let mut proprio = Vec::with_capacity(spec.proprio_dim as usize);
    for key in &spec.obs.lowdim_keys {
        let values = obs
            .lowdim
            .get(key)
            .ok_or_else(|| format!("observation lacks low-dim key `{key}` the policy was trained on"))?;
        proprio.extend(values.iter().map(|&v| v as f32));
    }
    if proprio.len() != spec.proprio_dim as usize {
        return Err(format!(
            "low-dim keys {:?} give {} numbers, the policy expects {}",
            spec.obs.lowdim_keys,
            proprio.len(),
            spec.proprio_dim
        ));
    }
    spec.stats.proprio.normalize_in_place(&mut proprio);
    Ok(proprio)
}
