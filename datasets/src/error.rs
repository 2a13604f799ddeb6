//! Errors of the datasets crate. Every variant names the file and, where there is one, the
//! key path inside it (`data/demo_3/obs/agentview_image`), so a user can find the problem
//! with `h5ls` at once.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{file}: no such file")]
    MissingFile { file: PathBuf },
    #[error("{file}: not an HDF5 file ({detail})")]
    NotHdf5 { file: PathBuf, detail: String },
    #[error("{file}: missing `{key}`{context}")]
    MissingKey { file: PathBuf, key: String, context: String },
    #[error("{file}: `{key}` has {found}, expected {expected}")]
    WrongType { file: PathBuf, key: String, expected: String, found: String },
    #[error("{file}: `{key}` has {found} steps, but `{reference}` has {expected}")]
    LengthMismatch { file: PathBuf, key: String, found: usize, reference: String, expected: usize },
    #[error("{file}: demo `{demo}` is empty (0 steps)")]
    EmptyDemo { file: PathBuf, demo: String },
    #[error("{file}: `{key}` selects no demos")]
    EmptySelection { file: PathBuf, key: String },
    #[error("{file}: `{key}` names demo `{demo}`, which is not in `data`")]
    UnknownDemo { file: PathBuf, key: String, demo: String },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("{file}: HDF5 error at `{key}`: {source}")]
    Hdf5 { file: PathBuf, key: String, source: hdf5::Error },
}

pub type Result<T> = std::result::Result<T, DatasetError>;
