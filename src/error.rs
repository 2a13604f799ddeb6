//! The error type of the rldt-vision library: every variant names what the user must look
//! at (file, key, field, run directory). `main` alone turns it into `anyhow`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dataset(#[from] rldt_datasets::DatasetError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("config {file}: {message}")]
    Config { file: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Tch { path: PathBuf, source: tch::TchError },
    #[error("run directory {dir}: {message}")]
    RunDir { dir: PathBuf, message: String },
    #[error("training diverged at step {step}: {what} is {value}; the last good checkpoint is kept in {checkpoints}")]
    NonFinite { step: i64, what: String, value: f64, checkpoints: PathBuf },
    #[error(transparent)]
    Sim(Box<crate::sim::SimError>),
    #[error("device: {0}")]
    Device(String),
    /// Flags that do not go together (named in the message).
    #[error("command line: {0}")]
    Usage(String),
    /// A simulator observation does not fit the policy (a missing camera or low-dim key, a
    /// wrong image size).
    #[error("observation: {0}")]
    Observation(String),
    /// The episode engine was misused (an actor that answers the wrong number of actions).
    #[error("episode engine: {0}")]
    Episode(String),
    /// Trajectories that cannot form one critic batch.
    #[error("critic batch: {0}")]
    CriticBatch(String),
    /// A benchmark's baseline script failed or printed no result.
    #[error("baseline {script}: {message}")]
    Baseline { script: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// `std::io::Error` → `Error::Io` naming the path.
pub fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
