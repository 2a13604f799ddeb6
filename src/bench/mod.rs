//! Benchmarks (`rldt-vision bench …`): commands that print JSON figures with the machine
//! they ran on. Not tests: nothing here asserts speed.

pub mod finetune;
pub mod parity;
pub mod pretrain;
pub mod recording;
pub mod rollout;

/// A one-line description of this machine's CPU (model name and logical cores).
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cores} logical cores")
}

/// The policy of a pretraining config for synthetic data: `image_size`² images, P proprio and
/// A action numbers, identity statistics ([−1, 1]).
pub fn synthetic_spec(
    config: &crate::config::PretrainConfig,
    image_size: usize,
    proprio_dim: usize,
    action_dim: usize,
) -> crate::policy::PolicySpec {
    use rldt_datasets::{batch::DatasetStats, MinMax};
    crate::policy::PolicySpec {
        config: config.policy.clone(),
        obs: config.dataset.obs.clone(),
        image_size: image_size as i64,
        proprio_dim: proprio_dim as i64,
        action_dim: action_dim as i64,
        stats: DatasetStats {
            proprio: MinMax { min: vec![-1.0; proprio_dim], max: vec![1.0; proprio_dim] },
            actions: MinMax { min: vec![-1.0; action_dim], max: vec![1.0; action_dim] },
        },
    }
}

/// This process's peak resident memory so far (VmHWM of /proc/self/status), MB; NaN where
/// the kernel does not report it.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs a baseline script's finished `command` output: its JSON result (the whole stdout, or
/// else its last line that starts with `{`), or an error naming the script with the last
/// `tail` lines of its stderr.
pub fn baseline_result(
    script: &std::path::Path,
    output: std::process::Output,
    tail: usize,
) -> crate::Result<serde_json::Value> {
    let error = |message: String| crate::Error::Baseline { script: script.into(), message };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().rev().take(tail).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(error(format!("failed ({}):\n{}", output.status, lines.join("\n"))));
    }
    if let Ok(value) = serde_json::from_slice(&output.stdout) {
        return Ok(value);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    serde_json::from_str(line).map_err(|e| error(format!("printed no JSON result ({e})")))
}
