//! The `rldt-vision` command-line grammar (clap): the subcommands. A command's flags are the
//! fields of its options type in the library (`EvalOptions`, `ToyOptions`, `PretrainArgs`,
//! …, each field with its `#[arg]` and doc line), so clap fills those types directly and
//! `main.rs` only dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rldt_vision::bench::finetune::FinetuneBenchOptions;
use rldt_vision::bench::parity::ParityOptions;
use rldt_vision::bench::pretrain::BenchOptions;
use rldt_vision::bench::rollout::RolloutBenchOptions;
use rldt_vision::collect::CollectOptions;
use rldt_vision::eval::EvalOptions;
use rldt_vision::toy::ToyOptions;
use rldt_vision::toy_baselines::ToyReinflowOptions;
use rldt_vision::train::finetune::FinetuneArgs;
use rldt_vision::train::pretrain::PretrainArgs;

#[derive(Parser)]
#[command(
    name = "rldt-vision",
    version,
    about = "Flow-matching visuomotor policies: pretrain on Robomimic demos, fine-tune with RLDT"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Pretrain a flow policy on Robomimic HDF5 demonstrations.
    Pretrain(PretrainArgs),
    /// Fine-tune a pretrained policy with RLDT against simulation rollouts.
    Finetune(FinetuneArgs),
    /// Open a run's recording (particles.rrd and any resume files) in the rerun viewer.
    Inspect {
        /// A run directory, or an .rrd file.
        path: PathBuf,
        /// Serve the web viewer on 127.0.0.1 instead of opening the native viewer.
        #[arg(long)]
        web: bool,
        #[arg(long, default_value_t = 9090)]
        web_port: u16,
        /// No viewer: verify the recording files (`rerun rrd verify`) and list their entities.
        #[arg(long, conflicts_with = "web")]
        check: bool,
    },
    /// Write procedurally drawn demos in the Robomimic Square schema (test fixtures and
    /// `bench pretrain`; not simulator data).
    SynthDataset {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 40)]
        demos: usize,
        #[arg(long, default_value_t = 96)]
        image_size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Collect scripted-expert demonstrations into a Robomimic HDF5 file.
    Collect(CollectOptions),
    /// Evaluate a policy checkpoint in simulation: success rate (95% interval), episode
    /// lengths, per-episode JSON, optional GIF.
    Eval {
        #[command(flatten)]
        options: EvalOptions,
        /// Per-episode JSON report (default: <checkpoint>/eval_<task>.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// libtorch threads (0 = all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// The paper's 2-D figure as an experiment: a bimodal flow policy, a two-peak Q, RLDT actor
    /// steps with the SVGD field and with the delta ablation, or the ReinFlow baseline. Prints
    /// one JSON report per run.
    Toy {
        /// Methods: `svgd`, `delta` (RLDT's fields), `reinflow`, `fpo`, `dppo`, `qam` (the baselines;
        /// `--methods` also accepted).
        #[arg(long, alias = "methods", value_delimiter = ',', default_value = "svgd,delta")]
        fields: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
        seeds: Vec<i64>,
        #[command(flatten)]
        options: ToyOptions,
        #[command(flatten)]
        reinflow: ToyReinflowOptions,
        /// Each (field, seed) run records to <DIR>/<field>_seed<seed>/particles.rrd.
        #[arg(long, default_value = "runs/toy")]
        record_dir: PathBuf,
        /// Recording of the particle fields: `spawn` a viewer, or `connect ADDR` (host:port or a
        /// rerun+http URL) to a running one. Default: a file per run under --record-dir.
        #[arg(long, num_args = 1..=2, value_names = ["MODE", "ADDR"])]
        viewer: Vec<String>,
        /// No recording at all.
        #[arg(long, conflicts_with = "viewer")]
        no_record: bool,
    },
    /// Benchmarks; print JSON.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
pub enum Bench {
    /// Wall time of the 2-D toy fine-tune with recording off and on (same run, same seed).
    Recording {
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[arg(long, default_value_t = 300)]
        actor_steps: i64,
        #[arg(long, default_value_t = 10)]
        record_every: i64,
        /// Repetitions of each (off, on) pair; the medians are reported.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Seconds per critic step and per actor step of RLDT at chosen shapes (optionally vs
    /// PyTorch eager doing the same computation).
    Finetune(FinetuneBenchOptions),
    /// Env steps/s for 1..N workers: chunk-end vs per-step rendering, vs a DPPO-style Python
    /// loop (every step rendered), and worker memory.
    Rollout(RolloutBenchOptions),
    /// Pretraining step and data-loading throughput (optionally vs PyTorch eager).
    Pretrain(BenchOptions),
    /// The same networks, weights and inputs on the CPU and on `--device` (default cuda):
    /// largest relative differences of features, velocity, chain, Q, TD loss and gradient.
    Parity(ParityOptions),
}
