//! Messages of the simulator protocol (see `scripts/sim_server.py`) and their decoding.
//! Images arrive as base64 of raw u8 HWC bytes and are checked against the expected size.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

/// Which steps of a chunk render the cameras.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// Only the chunk's last step (what the policy sees): intermediate steps skip rendering.
    Last,
    /// Every step (demo recording, videos).
    Every,
}

impl Render {
    pub fn as_str(self) -> &'static str {
        match self {
            Render::Last => "last",
            Render::Every => "every",
        }
    }
}

/// One observation: camera images (`<camera>_image` → u8 HWC, upright) and low-dim keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub images: BTreeMap<String, Vec<u8>>,
    pub lowdim: BTreeMap<String, Vec<f64>>,
}

/// What a chunk of steps returned.
#[derive(Debug, Clone, Default)]
pub struct ChunkOutcome {
    /// Observation after the last executed step.
    pub obs: Observation,
    /// Observation after every executed step (only with `Render::Every`).
    pub frames: Vec<Observation>,
    /// Executed actions (clipped experts' actions, or ours as sent).
    pub actions: Vec<Vec<f64>>,
    /// robosuite's sparse reward of every executed step.
    pub rewards: Vec<f64>,
    pub successes: Vec<bool>,
    /// Flattened MuJoCo state before every executed step (when asked).
    pub states: Vec<Vec<f64>>,
    /// Success with stop-on-success: the episode ended.
    pub done: bool,
    /// The horizon was reached (or the worker failed and was restarted).
    pub truncated: bool,
    /// Steps taken in the episode so far.
    pub t: usize,
}

/// Decodes an observation object; `expected_image_bytes` = H·W·3.
pub fn decode_observation(value: &Value, expected_image_bytes: usize) -> Result<Observation, String> {
    let mut obs = Observation::default();
    let images = value.get("images").and_then(Value::as_object).ok_or("observation lacks `images`")?;
    for (key, text) in images {
        let text = text.as_str().ok_or_else(|| format!("image `{key}` is not a string"))?;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| format!("image `{key}`: {e}"))?;
        if bytes.len() != expected_image_bytes {
            return Err(format!("image `{key}` has {} bytes, expected {expected_image_bytes}", bytes.len()));
        }
        obs.images.insert(key.clone(), bytes);
    }
    let lowdim = value.get("lowdim").and_then(Value::as_object).ok_or("observation lacks `lowdim`")?;
    for (key, values) in lowdim {
        let values = values
            .as_array()
            .ok_or_else(|| format!("low-dim `{key}` is not an array"))?
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| format!("low-dim `{key}` holds a non-number")))
            .collect::<Result<Vec<_>, _>>()?;
        obs.lowdim.insert(key.clone(), values);
    }
    Ok(obs)
}

fn f64_rows(value: Option<&Value>, what: &str) -> Result<Vec<Vec<f64>>, String> {
    let Some(rows) = value else {
        return Ok(Vec::new());
    };
    rows.as_array()
        .ok_or_else(|| format!("`{what}` is not an array"))?
        .iter()
        .map(|row| {
            row.as_array()
                .ok_or_else(|| format!("`{what}` row is not an array"))?
                .iter()
                .map(|v| v.as_f64().ok_or_else(|| format!("`{what}` holds a non-number")))
                .collect()
        })
        .collect()
}

/// Decodes the reply to `step` / `expert`.
pub fn decode_chunk(reply: &Value, expected_image_bytes: usize) -> Result<ChunkOutcome, String> {
    let obs = decode_observation(reply.get("obs").ok_or("reply lacks `obs`")?, expected_image_bytes)?;
    let frames = match reply.get("frames").and_then(Value::as_array) {
        Some(frames) => frames.iter().map(|f| decode_observation(f, expected_image_bytes)).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let numbers = |key: &str| -> Result<Vec<f64>, String> {
        reply
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("reply lacks `{key}`"))?
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| format!("`{key}` holds a non-number")))
            .collect()
    };
    let successes = reply
        .get("successes")
        .and_then(Value::as_array)
        .ok_or("reply lacks `successes`")?
        .iter()
        .map(|v| v.as_bool().ok_or("`successes` holds a non-boolean"))
        .collect::<Result<_, _>>()?;
    Ok(ChunkOutcome {
        obs,
        frames,
        actions: f64_rows(reply.get("actions"), "actions")?,
        rewards: numbers("rewards")?,
        successes,
        states: f64_rows(reply.get("states"), "states")?,
        done: reply.get("done").and_then(Value::as_bool).ok_or("reply lacks `done`")?,
        truncated: reply.get("truncated").and_then(Value::as_bool).ok_or("reply lacks `truncated`")?,
        t: reply.get("t").and_then(Value::as_u64).ok_or("reply lacks `t`")? as usize,
    })
}
