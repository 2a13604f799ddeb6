//! The `rldt-vision` command line: argument parsing and reporting only; the work is in the
//! library (`rldt_vision::train`, `rldt_vision::bench`, `rldt_datasets`). `anyhow` lives
//! here and nowhere else. The grammar of the command line is in `cli.rs`.

mod cli;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use cli::{Bench, Cli, Command};
use rldt_vision::bench::finetune::{bench_finetune, FinetuneBenchOptions};
use rldt_vision::bench::pretrain::{bench_pretrain, BenchOptions};
use rldt_vision::bench::rollout::{bench_rollout, RolloutBenchOptions};
use rldt_vision::collect::{collect, CollectOptions};
use rldt_vision::config::finetune::FinetuneConfig;
use rldt_vision::config::PretrainConfig;
use rldt_vision::device::set_threads;
use rldt_vision::eval::{evaluate, EvalOptions};
use rldt_vision::policy::checkpoint::Weights;
use rldt_vision::rl::actor::{ActorObjective, FieldKind};
use rldt_vision::rl::toy::{run_toy, ToyOptions};
use rldt_vision::sim::SimConfig;
use rldt_vision::train::finetune::{finetune, FinetuneOptions};
use rldt_vision::train::pretrain::{default_run_dir, pretrain, PretrainOptions};
use rldt_vision::viz::{Recorder, Sink};

/// The device, threads and run directory a training run starts with (stderr).
fn announce(phase: &str, device: tch::Device, threads: i32, run_dir: &std::path::Path) {
    eprintln!(
        "[{phase}] device {}, {threads} threads, run directory {}",
        rldt_vision::device::describe(device),
        run_dir.display()
    );
}

/// Where a training run put its outputs.
fn print_run_outputs(run_dir: &std::path::Path, checkpoint: &std::path::Path) {
    println!("run directory: {}", run_dir.display());
    println!("checkpoint:    {}", checkpoint.display());
    println!("metrics:       {}", run_dir.join("metrics.jsonl").display());
}

/// The recording sink of `--viewer spawn | connect ADDR` / `--no-record`; `None` = the
/// run's default file.
fn recording_sink(viewer: &[String], no_record: bool) -> anyhow::Result<Option<Sink>> {
    Ok(match (no_record, viewer) {
        (true, _) => Some(Sink::Off),
        (false, []) => None,
        (false, [mode]) if mode == "spawn" => Some(Sink::Spawn),
        (false, [mode]) if mode == "connect" => Some(Sink::Connect("127.0.0.1:9876".into())),
        (false, [mode, address]) if mode == "connect" => Some(Sink::Connect(address.clone())),
        (false, other) => anyhow::bail!("--viewer: expected `spawn` or `connect [ADDR]`, got {:?}", other.join(" ")),
    })
}

fn main() -> anyhow::Result<()> {
    rldt_vision::host_memory::keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Pretrain { config, dataset, run_dir, device, resume, threads } => {
            let threads = set_threads(threads);
            let mut config = config.map(|path| PretrainConfig::load(&path)).transpose()?;
            if let (Some(config), Some(dataset)) = (config.as_mut(), dataset) {
                config.dataset.path = dataset;
            }
            let run_dir = match (run_dir, &config) {
                (Some(dir), _) => dir,
                (None, Some(config)) => default_run_dir(config),
                (None, None) => {
                    anyhow::bail!("give --config (a new run) or --run-dir (with --resume)")
                }
            };
            let device = device.resolve()?;
            announce("pretrain", device, threads, &run_dir);
            let summary = pretrain(PretrainOptions { config, run_dir, device, resume })?;
            print_run_outputs(&summary.run_dir, &summary.checkpoint);
            println!(
                "steps {}{}, last train flow loss {:.4}{}",
                summary.steps,
                summary.resumed_from.map_or(String::new(), |s| format!(" (resumed at {s})")),
                summary.last_train_loss,
                summary.last_valid_loss.map_or(String::new(), |v| format!(", valid flow loss {v:.4}"))
            );
        }
        Command::Finetune { task, config, pretrained, run_dir, resume, device, threads, viewer, no_record } => {
            let threads = set_threads(threads);
            let recording = recording_sink(&viewer, no_record)?;
            let config_path = config.unwrap_or_else(|| PathBuf::from(format!("configs/finetune/{}.json", task.name())));
            let mut config = if resume && run_dir.is_some() { None } else { Some(FinetuneConfig::load(&config_path)?) };
            if let Some(config) = config.as_mut() {
                if config.env.task != task {
                    anyhow::bail!(
                        "{}: field `env.task` is {:?}, but --task {}",
                        config_path.display(),
                        config.env.task,
                        task.name()
                    );
                }
                if let Some(pretrained) = pretrained {
                    config.pretrained = pretrained;
                }
            }
            let run_dir = run_dir
                .unwrap_or_else(|| PathBuf::from("runs").join(config.as_ref().map_or("finetune", |c| c.name.as_str())));
            let device = device.resolve()?;
            announce("finetune", device, threads, &run_dir);
            let summary = finetune(FinetuneOptions { config, run_dir, device, resume, recording: recording.clone() })?;
            print_run_outputs(&summary.run_dir, &summary.checkpoint);
            if recording.is_none() {
                println!(
                    "recording:     {} (rldt-vision inspect {})",
                    summary.recording.display(),
                    summary.run_dir.display()
                );
            }
            for (iteration, steps, rate) in &summary.evaluations {
                println!("eval at iteration {iteration} ({steps} env steps): success rate {:.1}%", 100.0 * rate);
            }
        }
        Command::SynthDataset { out, demos, image_size, seed } => {
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            rldt_datasets::synthetic::write_synthetic(
                &out,
                rldt_datasets::synthetic::SyntheticSpec { demos, image_size, seed },
            )?;
            println!("wrote {demos} synthetic demos ({image_size}×{image_size}) to {}", out.display());
        }
        Command::Collect {
            task,
            episodes,
            out,
            workers,
            cameras,
            image_size,
            seed,
            noise,
            keep_failures,
            next_obs,
            mujoco_gl,
        } => {
            let mut sim = SimConfig::for_task(task, cameras, image_size);
            sim.mujoco_gl = mujoco_gl;
            let started = std::time::Instant::now();
            let options = CollectOptions {
                sim,
                episodes,
                workers,
                out: out.clone(),
                seed,
                noise,
                keep_failures,
                next_obs,
                steps_per_request: 20,
                stop_on_signal: true,
            };
            let summary = collect(&options)?;
            if summary.interrupted {
                println!("interrupted by a signal");
            }
            println!(
                "{}: {}/{} episodes successful ({:.1}%), mean successful length {:.0} steps; {} demos written to {} in {:.0} s{}",
                task.name(),
                summary.successes,
                summary.episodes,
                100.0 * summary.successes as f64 / summary.episodes.max(1) as f64,
                summary.mean_success_length,
                summary.written,
                out.display(),
                started.elapsed().as_secs_f64(),
                if summary.worker_failures > 0 { format!(" ({} worker failures survived)", summary.worker_failures) } else { String::new() }
            );
        }
        Command::Eval {
            checkpoint,
            task,
            episodes,
            workers,
            seed,
            online_weights,
            video,
            video_episodes,
            horizon,
            out,
            device,
            threads,
            mujoco_gl,
        } => {
            set_threads(threads);
            let weights = if online_weights { Weights::Online } else { Weights::Ema };
            let options = EvalOptions {
                checkpoint,
                weights,
                task,
                episodes,
                workers,
                seed,
                device: device.resolve()?,
                mujoco_gl,
                video: video.clone(),
                video_episodes,
                horizon,
            };
            let report = evaluate(&options)?;
            let out = out.unwrap_or_else(|| report.checkpoint.join(format!("eval_{}.json", task.name())));
            std::fs::write(&out, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: success rate {:.1}% ({}/{}), 95% CI [{:.1}%, {:.1}%], mean episode length {:.0} steps, {:.0} s",
                task.name(),
                100.0 * report.success_rate,
                report.successes,
                report.episodes,
                100.0 * report.success_rate_ci95[0],
                100.0 * report.success_rate_ci95[1],
                report.mean_episode_length,
                report.seconds
            );
            println!("per-episode results: {}", out.display());
            if let Some(video) = video {
                println!("video: {}", video.display());
            }
        }
        Command::Toy {
            fields,
            seeds,
            pretrain_steps,
            actor_steps,
            actor_lr,
            temperature_scale,
            reference_every,
            consistency_weight,
            constraint_weight,
            fixed_bandwidth,
            query_steps,
            particles,
            record_dir,
            record_every,
            viewer,
            no_record,
        } => {
            set_threads(0);
            let check = ActorObjective { query_steps: query_steps.clone(), ..ActorObjective::paper() };
            let k_steps = rldt_vision::rl::toy::toy_spec().config.num_denoising_steps;
            check.check(k_steps).map_err(|e| anyhow::anyhow!("--query-steps: {e}"))?;
            anyhow::ensure!(particles >= 2, "--particles must be ≥ 2, got {particles}");
            let sink = recording_sink(&viewer, no_record)?;
            for field in &fields {
                let field = match field.as_str() {
                    "svgd" => FieldKind::Svgd,
                    "delta" => FieldKind::Delta,
                    other => anyhow::bail!("--fields: unknown field `{other}` (svgd or delta)"),
                };
                let mut reports = Vec::new();
                for &seed in &seeds {
                    let mut options = ToyOptions::new(field, seed);
                    options.pretrain_steps = pretrain_steps;
                    options.actor_steps = actor_steps;
                    options.actor_lr = actor_lr;
                    options.temperature_scale = temperature_scale;
                    options.reference_every = reference_every;
                    options.consistency_weight = consistency_weight;
                    options.constraint_weight = constraint_weight;
                    options.fixed_bandwidth = fixed_bandwidth;
                    options.query_steps = query_steps.clone();
                    options.particles = particles;
                    options.record_every = record_every;
                    let name = format!("{}_seed{seed}", if field == FieldKind::Svgd { "svgd" } else { "delta" });
                    let file = record_dir.join(&name).join("particles.rrd");
                    let recorder = Recorder::open(
                        &sink.clone().unwrap_or(Sink::File(file.clone())),
                        &format!("rldt-vision:toy/{name}"),
                    )?;
                    let report = run_toy(&options, &recorder);
                    recorder.flush()?;
                    if sink.is_none() {
                        eprintln!(
                            "[toy] recording: {} (rldt-vision inspect {})",
                            file.display(),
                            file.parent().expect("dir").display()
                        );
                    }
                    println!("{}", serde_json::to_string(&report)?);
                    reports.push(report);
                }
                let mean = |f: &dyn Fn(&rldt_vision::rl::toy::ToyReport) -> f64| {
                    reports.iter().map(f).sum::<f64>() / reports.len().max(1) as f64
                };
                eprintln!(
                    "[toy] {field:?}: both modes ≥ 25% in {}/{} seeds; minority share min {:.2}, mean {:.2}; \
                     near a peak mean {:.3}; spread at the peaks mean {:.3}; mean Q {:.3}",
                    reports.iter().filter(|r| r.minority_share() >= 0.25).count(),
                    reports.len(),
                    reports.iter().map(|r| r.minority_share()).fold(f64::INFINITY, f64::min),
                    mean(&|r| r.minority_share()),
                    mean(&|r| r.finetuned.near_peak),
                    mean(&|r| r.finetuned.peak_spread),
                    mean(&|r| r.finetuned.mean_q),
                );
            }
        }
        Command::Inspect { path, web, web_port, check } => {
            if check {
                rldt_vision::viz::viewer::check(&path)?;
            } else {
                rldt_vision::viz::viewer::inspect(&path, web, web_port)?;
            }
        }
        Command::Bench { which: Bench::Recording { seed, actor_steps, record_every, repeats } } => {
            set_threads(0);
            let report = rldt_vision::bench::recording::bench_recording(seed, actor_steps, record_every, repeats)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Bench {
            which:
                Bench::Finetune {
                    config,
                    image_size,
                    proprio_dim,
                    action_dim,
                    critic_trajectories,
                    actor_trajectories,
                    chunks,
                    particles,
                    steps,
                    device,
                    threads,
                    torch,
                    torch_keep_freed_memory,
                },
        } => {
            let threads = set_threads(threads);
            let options = FinetuneBenchOptions {
                torch_keep_freed_memory,
                config: PretrainConfig::load(&config)?,
                image_size,
                proprio_dim,
                action_dim,
                critic_trajectories,
                actor_trajectories,
                chunks,
                particles,
                steps,
                device: device.resolve()?,
                threads,
                torch_python: torch,
                scratch_dir: PathBuf::from("data/bench"),
            };
            println!("{}", serde_json::to_string_pretty(&bench_finetune(&options)?)?);
        }
        Command::Bench {
            which: Bench::Rollout { task, cameras, image_size, max_workers, exec_horizon, chunks, no_python, mujoco_gl },
        } => {
            let mut sim = SimConfig::for_task(task, cameras, image_size);
            sim.mujoco_gl = mujoco_gl;
            sim.stop_on_success = false;
            let options = RolloutBenchOptions {
                sim,
                max_workers,
                exec_horizon,
                chunks,
                warmup_chunks: 2,
                python_baseline: !no_python,
            };
            println!("{}", serde_json::to_string_pretty(&bench_rollout(&options)?)?);
        }
        Command::Bench {
            which:
                Bench::Pretrain {
                    config,
                    image_size,
                    batch_size,
                    warmup_steps,
                    steps,
                    device,
                    threads,
                    torch,
                    torch_keep_freed_memory,
                },
        } => {
            let threads = set_threads(threads);
            let config = PretrainConfig::load(&config)?;
            let batch_size = batch_size.unwrap_or(config.train.batch_size);
            let report = bench_pretrain(&BenchOptions {
                config,
                image_size,
                batch_size,
                warmup_steps,
                steps,
                device: device.resolve()?,
                threads,
                torch_python: torch,
                torch_keep_freed_memory,
                scratch_dir: PathBuf::from("data/bench"),
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}
