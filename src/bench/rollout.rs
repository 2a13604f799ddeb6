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
use crate::sim::{Render, SimConfig, StepResult, VecEnv};

pub struct RolloutBenchOptions {
    pub sim: SimConfig,
    pub max_workers: usize,
    pub exec_horizon: usize,
    pub chunks: usize,
    pub warmup_chunks: usize,
    pub python_baseline: bool,
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
    let mut envs = VecEnv::new(&options.sim, workers).map_err(sim_error)?;
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
        .args(["--env-name", options.sim.task.env_name(), "--cameras", &options.sim.cameras.join(",")])
        .args(["--image-size", &options.sim.image_size.to_string(), "--workers", &workers.to_string()])
        .args(["--exec-horizon", &options.exec_horizon.to_string(), "--chunks", &options.chunks.to_string()])
        .args(["--warmup-chunks", &options.warmup_chunks.to_string(), "--horizon", &options.sim.horizon.to_string()])
        .env("MUJOCO_GL", &options.sim.mujoco_gl)
        .output()
        .map_err(|source| Error::Io { path: paths.python.clone(), source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Device(format!(
            "{} failed: {}",
            script.display(),
            stderr.lines().rev().take(10).collect::<Vec<_>>().join("\n")
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    serde_json::from_str(line).map_err(|e| Error::Device(format!("{}: no JSON result ({e})", script.display())))
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
        if options.python_baseline {
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
        "task": options.sim.task.name(),
        "cameras": options.sim.cameras,
        "image_size": options.sim.image_size,
        "exec_horizon": options.exec_horizon,
        "chunks_timed": options.chunks,
        "mujoco_gl": options.sim.mujoco_gl,
        "results": rows,
    }))
}
