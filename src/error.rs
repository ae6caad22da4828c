//! The library's error type: every message names what is wrong and, where it helps, what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    /// A fault at a line of a text file (a model file).
    #[error("{path}:{line}: {msg}")]
    AtLine { path: PathBuf, line: usize, msg: String },
    #[error("{0}")]
    MissingData(String),
    #[error("invalid setting: {0}")]
    Config(String),
    #[error("model: {0}")]
    Model(String),
    #[error("{0}")]
    Checkpoint(String),
    #[error("{0}")]
    Diverged(String),
    #[error("gpu: {0}")]
    Gpu(String),
    /// A run or report folder that cannot be taken: it holds something, or another process does.
    #[error("{0}")]
    Folder(String),
    /// Some of several pieces of work failed; the others finished.
    #[error("{0}")]
    Incomplete(String),
    /// Stopped by Ctrl-C after a checkpoint was written.
    #[error("{0}")]
    Interrupted(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn bad_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadFile { path: path.into(), msg: msg.into() }
    }

    /// A fault at 1-based `line` of the text file `path`.
    pub fn at_line(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::AtLine { path: path.into(), line, msg: msg.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
