//! Where the data sets are: `--data DIR`, else `GPU_TRAIN_DATA`, else `./data`. The folder may be
//! the data root (holding `mnist/` and `warwick/`) or the set's own folder.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSet {
    Mnist,
    Warwick,
}

impl DataSet {
    fn folder(self) -> &'static str {
        match self {
            DataSet::Mnist => "mnist",
            DataSet::Warwick => "warwick",
        }
    }
    /// Files (or folders) whose presence marks the set's own folder.
    fn marks(self) -> &'static [&'static str] {
        match self {
            DataSet::Mnist => &super::mnist::FILES,
            DataSet::Warwick => &["Train", "Test"],
        }
    }
    fn source(self) -> &'static str {
        match self {
            DataSet::Mnist => "MNIST (Y. LeCun, C. Cortes, C. Burges): the four original gzipped IDX files, published at http://yann.lecun.com/exdb/mnist/ and mirrored at https://ossci-datasets.s3.amazonaws.com/mnist/",
            DataSet::Warwick => "WARWICK: the 128x128 course subset of the GlaS / Warwick-QU gland images (Train/image_01..85.png + label_NN.png, Test/image_01..60.png + label_NN.png); the original GlaS data is published at https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/",
        }
    }
}

/// The root named by the user (`--data`, then `GPU_TRAIN_DATA`), or `./data`.
pub fn root(data: Option<&Path>) -> PathBuf {
    data.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("GPU_TRAIN_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// The folder holding `set`, or an error naming every expected file and where to get them.
pub fn find(set: DataSet, data: Option<&Path>) -> Result<PathBuf> {
    let root = root(data);
    let candidates = [root.clone(), root.join(set.folder())];
    for dir in &candidates {
        if set.marks().iter().all(|m| dir.join(m).exists()) {
            return Ok(dir.clone());
        }
    }
    // Report against the set's own folder if it exists, else the root's subfolder.
    let dir = if set.marks().iter().any(|m| root.join(m).exists()) { &candidates[0] } else { &candidates[1] };
    let missing: Vec<String> =
        set.marks().iter().filter(|m| !dir.join(m).exists()).map(|m| format!("  {}", dir.join(m).display())).collect();
    Err(Error::MissingData(format!(
        "{} data not found. Missing:\n{}\nPut the files there, or point --data (or GPU_TRAIN_DATA) at the folder that holds them or at a data root with a {}/ folder.\nSource: {}",
        set.folder(),
        missing.join("\n"),
        set.folder(),
        set.source()
    )))
}
