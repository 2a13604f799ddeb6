//! The flags of `rldt-vision finetune`, shared by every algorithm: which algorithm a run
//! uses (its config's `algorithm`, or the resumed run's own `config.json`), the config it
//! loads (refused when written for another task; `--pretrained` applied), the run directory
//! and the recording sink. `options` gives an RLDT run (`train::finetune`),
//! `on_policy_options` a ReinFlow or FPO++ run (`train::onpolicy`).

use std::path::PathBuf;

use crate::config::finetune::{Algorithm, FinetuneConfig, OnPolicyConfig};
use crate::error::{Error, Result};
use crate::sim::Task;
use crate::train::finetune::FinetuneOptions;
use crate::train::RunFlags;
use crate::viz::Sink;

/// The flags of `rldt-vision finetune`.
#[derive(Debug, Clone, clap::Args)]
pub struct FinetuneArgs {
    #[arg(long, value_enum)]
    pub task: Task,
    /// Fine-tuning config (default configs/finetune/<task>.json: the paper's settings); its
    /// `algorithm` field picks RLDT or ReinFlow.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Pretraining run or checkpoint directory, overriding the config's `pretrained`.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunFlags,
    /// Recording of particle fields, metrics and rollout frames: `spawn` a viewer, or
    /// `connect ADDR` (host:port or a rerun+http URL) to a running one. Default: a file in
    /// the run directory.
    #[arg(long, num_args = 1..=2, value_names = ["MODE", "ADDR"])]
    pub viewer: Vec<String>,
    /// No recording at all.
    #[arg(long, conflicts_with = "viewer")]
    pub no_record: bool,
    /// Run the start evaluation's episodes even when the pretrained checkpoint holds a stored
    /// one for the same task, horizon, seeds and episode count (copied by default; a run that
    /// records particle fields always runs them).
    #[arg(long)]
    pub fresh_start_evaluation: bool,
}

impl FinetuneArgs {
    fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| format!("configs/finetune/{}.json", self.task.name()).into())
    }

    fn resuming_a_run(&self) -> Option<&PathBuf> {
        self.run.run_dir.as_ref().filter(|_| self.run.resume)
    }

    /// The algorithm of the run: the resumed run's `config.json`, else the config file's.
    pub fn algorithm(&self) -> Result<Algorithm> {
        match self.resuming_a_run() {
            Some(dir) => Algorithm::of_file(&dir.join("config.json")),
            None => Algorithm::of_file(&self.config_path()),
        }
    }

    /// A config of type `C` from `--config` (refusing one for another task, applying
    /// `--pretrained`), or None when resuming a run (its own config.json is used).
    fn load_config<C>(
        &self,
        load: impl Fn(&std::path::Path) -> Result<C>,
        task_and_pretrained: impl Fn(&mut C) -> (Task, &mut PathBuf),
    ) -> Result<Option<C>> {
        if self.resuming_a_run().is_some() {
            return Ok(None);
        }
        let path = self.config_path();
        let mut config = load(&path)?;
        let (task, pretrained) = task_and_pretrained(&mut config);
        if task != self.task {
            let message = format!("field `env.task` is {:?}, but --task {}", task, self.task.name());
            return Err(Error::Config { file: path, message });
        }
        if let Some(p) = &self.pretrained {
            *pretrained = p.clone();
        }
        Ok(Some(config))
    }

    fn run_dir(&self, name: Option<&str>) -> PathBuf {
        self.run.run_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(name.unwrap_or("finetune")))
    }

    /// The RLDT run these flags ask for.
    pub fn options(&self) -> Result<FinetuneOptions> {
        let recording = Sink::from_flags(&self.viewer, self.no_record).map_err(Error::Usage)?;
        let config = self.load_config(FinetuneConfig::load, |c| (c.env.task, &mut c.pretrained))?;
        let run_dir = self.run_dir(config.as_ref().map(|c| c.name.as_str()));
        Ok(FinetuneOptions {
            config,
            run_dir,
            device: self.run.device.resolve()?,
            resume: self.run.resume,
            recording,
            reuse_start_evaluation: !self.fresh_start_evaluation,
        })
    }

    /// The on-policy baseline run (ReinFlow, FPO++) these flags ask for (it records metrics
    /// and evaluations, no rerun recording).
    pub fn on_policy_options(&self) -> Result<crate::train::onpolicy::OnPolicyOptions> {
        let config = self.load_config(OnPolicyConfig::load, |c| (c.env.task, &mut c.pretrained))?;
        let run_dir = self.run_dir(config.as_ref().map(|c| c.name.as_str()));
        Ok(crate::train::onpolicy::OnPolicyOptions {
            config,
            run_dir,
            device: self.run.device.resolve()?,
            resume: self.run.resume,
            reuse_start_evaluation: !self.fresh_start_evaluation,
        })
    }
}
