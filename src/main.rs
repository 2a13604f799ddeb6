//! The `rldt-vision` command line: dispatch and reporting only. clap fills the library's
//! options types (`cli.rs`); the work is in the library (`rldt_vision::train`, `eval`,
//! `collect`, `bench`, `toy`). `anyhow` lives here and nowhere else.

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{Bench, Cli, Command};
use rldt_vision::collect::{CollectOptions, CollectSummary};
use rldt_vision::config::finetune::Algorithm;
use rldt_vision::device::set_threads;
use rldt_vision::eval::{EvalOptions, EvalReport};
use rldt_vision::rl::actor::{ActorObjective, FieldKind};
use rldt_vision::rl::q_ascent::AscentDirection;
use rldt_vision::toy::{run_toy, ToyOptions, ToyReport};
use rldt_vision::toy_baselines::{run_toy_dppo, run_toy_fpo, run_toy_qam, run_toy_reinflow};
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

/// Errors are printed here, once: the message, then each cause not already in it (our
/// errors embed their source, "path: cause"), and no backtrace (a stripped release binary's
/// frames would all read `<unknown>`).
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_report(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// "error: <message>" and a "  caused by: …" line per cause whose text the lines above lack.
fn error_report(error: &anyhow::Error) -> String {
    let mut lines = vec![format!("error: {error}")];
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !lines.iter().any(|line| line.contains(&text)) {
            lines.push(format!("  caused by: {text}"));
        }
    }
    lines.join("\n")
}

fn run() -> anyhow::Result<()> {
    rldt_vision::host_memory::keep_freed_memory();
    match Cli::parse().command {
        Command::Pretrain(args) => {
            let threads = set_threads(args.run.threads);
            let options = args.options()?;
            announce("pretrain", options.device, threads, &options.run_dir);
            let summary = rldt_vision::train::pretrain::pretrain(options)?;
            print_run_outputs(&summary.run_dir, &summary.checkpoint);
            println!(
                "steps {}{}, last train flow loss {}{}",
                summary.steps,
                summary.resumed_from.map_or(String::new(), |s| format!(" (resumed at {s})")),
                summary.last_train_loss.map_or("(none logged)".into(), |l| format!("{l:.4}")),
                summary.last_valid_loss.map_or(String::new(), |v| format!(", valid flow loss {v:.4}"))
            );
        }
        Command::Finetune(args) => {
            let threads = set_threads(args.run.threads);
            let (summary, to_file) = match args.algorithm()? {
                Algorithm::Rldt | Algorithm::Qam => {
                    let options = args.options()?;
                    announce("finetune", options.device, threads, &options.run_dir);
                    let to_file = options.recording.is_none();
                    (rldt_vision::train::finetune::finetune(options)?, to_file)
                }
                Algorithm::Reinflow | Algorithm::Fpo | Algorithm::Dppo => {
                    let options = args.on_policy_options()?;
                    announce("finetune (on-policy baseline)", options.device, threads, &options.run_dir);
                    (rldt_vision::train::onpolicy::finetune_on_policy(options)?, false)
                }
            };
            print_run_outputs(&summary.run_dir, &summary.checkpoint);
            if to_file {
                let (file, dir) = (summary.recording.display(), summary.run_dir.display());
                println!("recording:     {file} (rldt-vision inspect {dir})");
            }
            for e in &summary.evaluations {
                println!(
                    "eval at iteration {} ({} training env steps): success rate {:.1}% ({}/{}), 95% CI [{:.1}%, {:.1}%]",
                    e.iteration,
                    e.env_steps,
                    100.0 * e.success_rate,
                    e.successes,
                    e.episodes,
                    100.0 * e.success_rate_low,
                    100.0 * e.success_rate_high
                );
            }
            if !summary.evaluations.is_empty() {
                println!("evaluations:   {}/evaluations/ (every episode)", summary.run_dir.display());
            }
        }
        Command::SynthDataset { out, demos, image_size, seed } => {
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            let spec = rldt_datasets::synthetic::SyntheticSpec { demos, image_size, seed };
            rldt_datasets::synthetic::write_synthetic(&out, spec)?;
            println!("wrote {demos} synthetic demos ({image_size}×{image_size}) to {}", out.display());
        }
        Command::Collect(options) => {
            let started = std::time::Instant::now();
            let summary = rldt_vision::collect::collect(&options)?;
            print_collect(&options, &summary, started.elapsed().as_secs_f64());
            if summary.interrupted {
                // The demos written so far are kept (a valid file); the exit status says the
                // collection is not complete, as a shell's Ctrl-C convention (128 + SIGINT).
                std::process::exit(130);
            }
        }
        Command::Eval { options, out, threads } => {
            set_threads(threads);
            let report = rldt_vision::eval::evaluate(&options)?;
            let name = match (options.best_of_n, options.q_ascent) {
                (1, step) if step > 0.0 => {
                    let direction = match options.ascent_direction {
                        AscentDirection::Gradient => "",
                        AscentDirection::Random => "_random",
                    };
                    format!("eval_{}_q_ascent_{step}{direction}.json", options.task.name())
                }
                (1, _) => format!("eval_{}.json", options.task.name()),
                (n, _) => format!("eval_{}_best_of_{n}.json", options.task.name()),
            };
            let out = out.unwrap_or_else(|| report.checkpoint.join(name));
            std::fs::write(&out, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {}", out.display()))?;
            print_eval(&options, &report, &out);
        }
        Command::Toy { fields, seeds, options, reinflow, record_dir, viewer, no_record } => {
            set_threads(0);
            let check = ActorObjective { query_steps: options.query_steps.clone(), ..ActorObjective::paper() };
            let k_steps = rldt_vision::toy::toy_spec().config.num_denoising_steps;
            check.check(k_steps).map_err(|e| anyhow::anyhow!("--query-steps: {e}"))?;
            anyhow::ensure!(options.particles >= 2, "--particles must be ≥ 2, got {}", options.particles);
            let sink = Sink::from_flags(&viewer, no_record).map_err(anyhow::Error::msg)?;
            for method in &fields {
                let field = match method.as_str() {
                    "svgd" => FieldKind::Svgd,
                    "delta" => FieldKind::Delta,
                    "reinflow" | "fpo" | "dppo" => {
                        let run = match method.as_str() {
                            "fpo" => run_toy_fpo,
                            "dppo" => run_toy_dppo,
                            _ => run_toy_reinflow,
                        };
                        let reports: Vec<ToyReport> = (seeds.iter())
                            .map(|&seed| {
                                let (steps, lr, n) = (options.pretrain_steps, options.actor_lr, options.samples);
                                let report = run(seed, steps, lr, n, &reinflow);
                                println!("{}", serde_json::to_string(&report).expect("report serialises"));
                                report
                            })
                            .collect();
                        print_toy_summary(method, &reports);
                        continue;
                    }
                    "qam" => {
                        let reports: Vec<ToyReport> = (seeds.iter())
                            .map(|&seed| {
                                let (steps, lr, n) = (options.pretrain_steps, options.actor_lr, options.samples);
                                let report = run_toy_qam(seed, steps, lr, options.actor_steps, n, &reinflow);
                                println!("{}", serde_json::to_string(&report).expect("report serialises"));
                                report
                            })
                            .collect();
                        print_toy_summary(method, &reports);
                        continue;
                    }
                    other => {
                        anyhow::bail!("--fields: unknown method `{other}` (svgd, delta, reinflow, fpo, dppo or qam)")
                    }
                };
                let reports = (seeds.iter())
                    .map(|&seed| run_toy_recorded(&ToyOptions { field, seed, ..options.clone() }, &record_dir, &sink))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                print_toy_summary(method, &reports);
            }
        }
        Command::Inspect { path, web, web_port, check } => {
            if check {
                rldt_vision::viz::viewer::check(&path)?;
            } else {
                rldt_vision::viz::viewer::inspect(&path, web, web_port)?;
            }
        }
        Command::Bench { which } => {
            let report = match which {
                Bench::Recording { seed, actor_steps, record_every, repeats } => {
                    set_threads(0);
                    let bench = rldt_vision::bench::recording::bench_recording;
                    serde_json::to_value(bench(seed, actor_steps, record_every, repeats)?)?
                }
                Bench::Finetune(options) => rldt_vision::bench::finetune::bench_finetune(&options)?,
                Bench::Rollout(options) => rldt_vision::bench::rollout::bench_rollout(&options)?,
                Bench::Pretrain(options) => rldt_vision::bench::pretrain::bench_pretrain(&options)?,
                Bench::Parity(options) => {
                    let report = rldt_vision::bench::parity::bench_parity(&options)?;
                    anyhow::ensure!(
                        report["pass"] == true,
                        "parity: a difference above the tolerance: {}",
                        serde_json::to_string_pretty(&report)?
                    );
                    report
                }
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

fn print_collect(options: &CollectOptions, summary: &CollectSummary, seconds: f64) {
    if summary.interrupted {
        println!("interrupted by a signal");
    }
    println!(
        "{}: {}/{} episodes successful ({:.1}%), mean successful length {:.0} steps; {} demos written to {} in {seconds:.0} s{}",
        options.task.name(),
        summary.successes,
        summary.episodes,
        100.0 * summary.successes as f64 / summary.episodes.max(1) as f64,
        summary.mean_success_length,
        summary.written,
        options.out.display(),
        if summary.worker_failures > 0 { format!(" ({} worker failures survived)", summary.worker_failures) } else { String::new() }
    );
}

fn print_eval(options: &EvalOptions, report: &EvalReport, out: &std::path::Path) {
    println!(
        "{}{}: success rate {:.1}% ({}/{}), 95% CI [{:.1}%, {:.1}%], mean episode length {:.0} steps, {:.0} s ({} weights)",
        options.task.name(),
        match (report.best_of_n, &report.q_ascent) {
            (1, Some(a)) => match a.direction {
                AscentDirection::Gradient => format!(" (chunks moved {} along the critic's ∇Q)", a.step),
                AscentDirection::Random => format!(" (chunks moved {} in random directions)", a.step),
            },
            (1, None) => String::new(),
            (n, _) => format!(" (best of {n} by the critic)"),
        },
        100.0 * report.success_rate,
        report.successes,
        report.episodes,
        100.0 * report.success_rate_ci95[0],
        100.0 * report.success_rate_ci95[1],
        report.mean_episode_length,
        report.seconds,
        report.weights
    );
    if let Some(r) = &report.best_of_n_ranking {
        println!(
            "ranking ({:?} over heads): spread ratio {:.2}; Q std {:.4} within a state's proposals, {:.4} across states",
            r.rank_by, r.spread_ratio, r.q_std_within_state, r.q_std_across_states
        );
    }
    if let Some(a) = &report.q_ascent {
        println!(
            "q-ascent: step {} ({:?}) over {} decisions; mean ‖∇Q‖ {:.4}, mean Q {:.4}, the critic's own mean gain {:.4}",
            a.step, a.direction, a.decisions, a.mean_gradient_norm, a.mean_q, a.mean_q_gain
        );
    }
    if let Some(c) = &report.critic_calibration {
        let show = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
        let interval = |x: Option<[f64; 2]>| x.map_or(String::new(), |[low, high]| format!("(95% {low:.3}–{high:.3})"));
        println!(
            "critic: AUC {} {} over {} decisions ({} in successes), {} {} over first decisions; mean Q {} in successes, {} in failures; Brier {}",
            show(c.auc_all_decisions),
            interval(c.auc_all_decisions_ci95),
            c.decisions,
            c.decisions_in_successes,
            show(c.auc_first_decision),
            interval(c.auc_first_decision_ci95),
            show(c.mean_q_success),
            show(c.mean_q_failure),
            show(c.brier)
        );
    }
    println!("per-episode results: {}", out.display());
    if let Some(video) = &options.video {
        println!("video: {}", video.display());
    }
}

/// One toy run, recorded to `<record_dir>/<field>_seed<seed>/particles.rrd` (or `sink`); its
/// report is printed as one JSON line.
fn run_toy_recorded(
    options: &ToyOptions,
    record_dir: &std::path::Path,
    sink: &Option<Sink>,
) -> anyhow::Result<ToyReport> {
    let name = format!("{}_seed{}", if options.field == FieldKind::Svgd { "svgd" } else { "delta" }, options.seed);
    let file = record_dir.join(&name).join("particles.rrd");
    let recorder =
        Recorder::open(&sink.clone().unwrap_or(Sink::File(file.clone())), &format!("rldt-vision:toy/{name}"))?;
    let report = run_toy(options, &recorder);
    recorder.flush()?;
    if sink.is_none() {
        let dir = file.parent().expect("dir");
        eprintln!("[toy] recording: {} (rldt-vision inspect {})", file.display(), dir.display());
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(report)
}

/// The per-field summary line over seeds (stderr).
fn print_toy_summary(method: &str, reports: &[ToyReport]) {
    let mean = |f: &dyn Fn(&ToyReport) -> f64| reports.iter().map(f).sum::<f64>() / reports.len().max(1) as f64;
    eprintln!(
        "[toy] {method}: both modes ≥ 25% in {}/{} seeds; minority share min {:.2}, mean {:.2}; \
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
