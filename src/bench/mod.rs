//! Benchmarks (`rldt-vision bench …`): commands that print JSON figures with the machine
//! they ran on. Not tests: nothing here asserts speed.

pub mod finetune;
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
