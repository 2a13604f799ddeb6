//! `rldt-vision bench rollout`: environment steps per second through our VecEnv for 1..N
//! workers, with chunk-end rendering (what rollouts use) and per-step rendering, and in the
//! same invocation a Python baseline that steps the same envs the way DPPO's wrappers do
//! (`scripts/bench_rollout_dppo_style.py`: a subprocess per env, a multi-step wrapper, every
//! step rendered). Also the resident memory of each worker process.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rldt_datasets::random::SplitMix64;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::sim::task::PythonPaths;
use crate::sim::{Render, SimConfig, StepResult, Task, VecEnv};

/// The flags of `rldt-vision bench rollout`.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutBenchOptions {
    #[arg(long, value_enum, default_value = "square")]
    pub task: Task,
    #[arg(long, value_delimiter = ',', default_value = "agentview")]
    pub cameras: Vec<String>,
    #[arg(long, default_value_t = 84)]
    pub image_size: usize,
    #[arg(long, default_value_t = 2)]
    pub max_workers: usize,
    /// Ta: actions per chunk.
    #[arg(long, default_value_t = 4)]
    pub exec_horizon: usize,
    #[arg(long, default_value_t = 25)]
    pub chunks: usize,
    #[arg(skip = 2usize)]
    pub warmup_chunks: usize,
    /// Skip the Python baseline.
    #[arg(long)]
    pub no_python: bool,
    #[arg(long, default_value = "egl")]
    pub mujoco_gl: String,
}

impl RolloutBenchOptions {
    /// Full-length episodes (no stop at success) of the task with these cameras.
    fn sim(&self) -> SimConfig {
        let mut sim = SimConfig::for_task(self.task, self.cameras.clone(), self.image_size);
        sim.mujoco_gl = self.mujoco_gl.clone();
        sim.stop_on_success = false;
        sim
    }
}

/// Resident set size of a process in MB (Linux /proc).
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Env steps/s of `workers` workers stepping random chunks of Ta actions.
fn measure(options: &RolloutBenchOptions, workers: usize, render: Render) -> Result<(f64, Vec<f64>)> {
    let sim_error = |e: crate::sim::SimError| Error::Sim(Box::new(e));
    let mut envs = VecEnv::new(&options.sim(), workers).map_err(sim_error)?;
    let seeds: Vec<Option<u64>> = (0..workers as u64).map(Some).collect();
    envs.reset(&seeds).map_err(sim_error)?;
    let mut rng = SplitMix64::new(7);
    let mut run_chunks = |n: usize, envs: &mut VecEnv| -> Result<usize> {
        let mut steps = 0;
        for _ in 0..n {
            let chunks: Vec<Option<Vec<Vec<f64>>>> = (0..workers)
                .map(|_| {
                    Some(
                        (0..options.exec_horizon)
                            .map(|_| (0..7).map(|_| rng.uniform() * 2.0 - 1.0).collect())
                            .collect(),
                    )
                })
                .collect();
            let mut ended = vec![None; workers];
            for (i, result) in envs.step(&chunks, render).map_err(sim_error)?.into_iter().enumerate() {
                match result {
                    Some(StepResult::Ok(out)) => {
                        steps += out.actions.len();
                        if out.done || out.truncated {
                            ended[i] = Some(i as u64 + 1000);
                        }
                    }
                    _ => ended[i] = Some(i as u64 + 2000),
                }
            }
            if ended.iter().any(Option::is_some) {
                envs.reset(&ended).map_err(sim_error)?;
            }
        }
        Ok(steps)
    };
    run_chunks(options.warmup_chunks, &mut envs)?;
    let started = Instant::now();
    let steps = run_chunks(options.chunks, &mut envs)?;
    let steps_per_s = steps as f64 / started.elapsed().as_secs_f64();
    let rss = (0..workers).filter_map(|i| rss_mb(envs.env_mut(i).pid())).collect();
    Ok((steps_per_s, rss))
}

fn python_baseline(options: &RolloutBenchOptions, workers: usize) -> Result<Value> {
    let paths = PythonPaths::discover();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_rollout_dppo_style.py");
    let output = Command::new(&paths.python)
        .arg(&script)
        .args(["--env-name", options.task.env_name(), "--cameras", &options.cameras.join(",")])
        .args(["--image-size", &options.image_size.to_string(), "--workers", &workers.to_string()])
        .args(["--exec-horizon", &options.exec_horizon.to_string(), "--chunks", &options.chunks.to_string()])
        .args(["--warmup-chunks", &options.warmup_chunks.to_string(), "--horizon", &options.sim().horizon.to_string()])
        .env("MUJOCO_GL", &options.mujoco_gl)
        .output()
        .map_err(|source| Error::Io { path: paths.python.clone(), source })?;
    super::baseline_result(&script, output, 10)
}

pub fn bench_rollout(options: &RolloutBenchOptions) -> Result<Value> {
    let mut rows = Vec::new();
    for workers in 1..=options.max_workers {
        let (chunk_end, rss) = measure(options, workers, Render::Last)?;
        let (every_step, _) = measure(options, workers, Render::Every)?;
        let mut row = json!({
            "workers": workers,
            "rldt_chunk_end_render_steps_per_s": chunk_end,
            "rldt_every_step_render_steps_per_s": every_step,
            "worker_rss_mb": rss,
        });
        if !options.no_python {
            let baseline = python_baseline(options, workers)?;
            let base = baseline["env_steps_per_s"].as_f64().unwrap_or(f64::NAN);
            row["python_dppo_style_steps_per_s"] = json!(base);
            row["speedup_vs_python"] = json!(chunk_end / base);
        }
        eprintln!("[bench rollout] {row}");
        rows.push(row);
    }
    Ok(json!({
        "bench": "rollout",
        "machine": super::cpu_description(),
        "task": options.task.name(),
        "cameras": options.cameras,
        "image_size": options.image_size,
        "exec_horizon": options.exec_horizon,
        "chunks_timed": options.chunks,
        "mujoco_gl": options.mujoco_gl,
        "results": rows,
    }))
}
