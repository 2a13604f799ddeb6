//! Simulator observations → policy inputs, through the same pixel path and normalisation as
//! training: images stay u8 HWC (the encoder converts them), low-dim keys are concatenated in
//! the policy's `ObsSpec` order and min-max normalised with the checkpoint's statistics.

use std::collections::VecDeque;

use tch::{Device, Tensor};

use super::{ObsBatch, PolicySpec};
use crate::sim::Observation;

/// histories: per env, its last To observations (oldest first) → ObsBatch with B = envs.
/// Errors name the missing or mis-sized key.
pub fn obs_batch(spec: &PolicySpec, histories: &[&VecDeque<Observation>], device: Device) -> Result<ObsBatch, String> {
    let b = histories.len() as i64;
    let to = spec.config.obs_horizon;
    let s = spec.image_size;
    let mut images = Vec::with_capacity(spec.obs.image_keys.len());
    for key in &spec.obs.image_keys {
        let mut bytes = Vec::with_capacity((b * to * s * s * 3) as usize);
        for history in histories {
            for obs in history.iter() {
                let image = obs
                    .images
                    .get(key)
                    .ok_or_else(|| format!("observation lacks camera `{key}` the policy was trained on"))?;
                if image.len() != (s * s * 3) as usize {
                    return Err(format!("camera `{key}` gives {} bytes, the policy expects {s}×{s}×3", image.len()));
                }
                bytes.extend_from_slice(image);
            }
        }
        images.push(Tensor::from_slice(&bytes).view([b, to, s, s, 3]).to_device(device));
    }
    let mut proprio = Vec::with_capacity((b * to * spec.proprio_dim) as usize);
    for history in histories {
        for obs in history.iter() {
            proprio.extend(normalized_proprio(spec, obs)?);
        }
    }
    let proprio = Tensor::from_slice(&proprio).view([b, to, spec.proprio_dim]).to_device(device);
    Ok(ObsBatch { images, proprio })
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

/// A history of To observations, padded at the episode start by repeating the first.
pub fn start_history(first: Observation, obs_horizon: usize) -> VecDeque<Observation> {
    std::iter::repeat_n(first, obs_horizon).collect()
}

/// Appends the newest observation, dropping the oldest.
pub fn push_history(history: &mut VecDeque<Observation>, obs: Observation) {
    history.pop_front();
    history.push_back(obs);
}
