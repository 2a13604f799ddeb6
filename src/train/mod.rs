//! Training loops, each written out top to bottom in its own file, and the small pieces they
//! share: the batch loader thread, the metrics log (EMA weights: `optim::ema`).

pub mod evaluation;
pub mod finetune;
pub mod finetune_args;
pub mod loader;
pub mod metrics;
pub mod onpolicy;
pub mod pretrain;

use std::path::PathBuf;

use crate::device::DeviceChoice;

/// The flags every training command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct RunFlags {
    /// Run directory (default runs/<config name>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// libtorch threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}
