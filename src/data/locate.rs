//! Where the data sets are: `--data DIR`, else `GPU_TRAIN_DATA`, else `./data`, else the
//! per-user cache, where a set found nowhere is fetched (unless fetching is off). A folder named
//! by `--data` or `GPU_TRAIN_DATA` may be the data root (holding `mnist/` and `warwick/`) or the
//! set's own folder; a set missing from a folder the user named is an error, not a fetch.

use super::fetch;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSet {
    Mnist,
    Warwick,
}

impl DataSet {
    pub const ALL: [DataSet; 2] = [DataSet::Mnist, DataSet::Warwick];

    /// The set's folder under a data root, and its name on the command line.
    pub fn folder(self) -> &'static str {
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

/// The root named by the user (`--data`, then `GPU_TRAIN_DATA`) and where the name came from;
/// else `./data`.
pub fn root(data: Option<&Path>) -> (PathBuf, Option<&'static str>) {
    match (data, std::env::var_os("GPU_TRAIN_DATA").filter(|v| !v.is_empty())) {
        (Some(d), _) => (d.to_path_buf(), Some("--data")),
        (None, Some(env)) => (PathBuf::from(env), Some("GPU_TRAIN_DATA")),
        (None, None) => (PathBuf::from("data"), None),
    }
}

/// Where a set would be read from.
#[derive(Debug)]
pub enum Located {
    /// In this folder; the words say why it is this one.
    Found(PathBuf, String),
    /// Nowhere yet: it would be fetched into this folder of the cache.
    ToFetch(PathBuf),
    /// Nowhere, and it would not be fetched: the message says what is missing and what to do.
    Missing(String),
}

/// Where `set` is, or would be fetched to, without fetching.
pub fn resolve(set: DataSet, data: Option<&Path>) -> Located {
    let (root, named_by) = root(data);
    let candidates = [root.clone(), root.join(set.folder())];
    if let Some(dir) = candidates.iter().find(|dir| set.marks().iter().all(|m| dir.join(m).exists())) {
        let why = named_by.map_or("the default data folder ./data".to_string(), |n| format!("named by {n}"));
        return Located::Found(dir.clone(), why);
    }
    let mut missing = missing_files(set, &root);
    if let Some(n) = named_by {
        missing += &format!(
            "\n{n} names {}: gpu-train reads the set from there and does not fetch it. `gpu-train data fetch {} --dir \
             {}` fetches it there; without {n} it is fetched into the per-user cache.",
            root.display(),
            set.folder(),
            root.display()
        );
        return Located::Missing(missing);
    }
    let Some(cache) = fetch::cache_root() else {
        return Located::Missing(missing + "\nNo cache folder to fetch into: set XDG_CACHE_HOME or HOME.");
    };
    let dir = cache.join(set.folder());
    if fetch::complete(set, &dir) {
        return Located::Found(dir, "the per-user cache; nothing in ./data".into());
    }
    if fetch::offline() {
        missing += &format!(
            "\nNot fetched: --no-download or GPU_TRAIN_OFFLINE is set (`gpu-train data fetch {}` fetches it into {}).",
            set.folder(),
            dir.display()
        );
        return Located::Missing(missing);
    }
    Located::ToFetch(dir)
}

/// The folder holding `set`: found, or fetched into the cache; else an error naming every
/// expected file and where to get them.
pub fn find(set: DataSet, data: Option<&Path>) -> Result<PathBuf> {
    match resolve(set, data) {
        Located::Found(dir, _) => Ok(dir),
        Located::Missing(msg) => Err(Error::MissingData(msg)),
        Located::ToFetch(dir) => match fetch::fetch_and_say(set, &dir) {
            Ok(_) => Ok(dir),
            Err(e) => Err(Error::MissingData(format!(
                "{} data not found in ./data nor in the cache, and fetching it failed: {e}",
                set.folder()
            ))),
        },
    }
}

/// Today's message for a set missing under `root`: every expected path, and the source.
fn missing_files(set: DataSet, root: &Path) -> String {
    let candidates = [root.to_path_buf(), root.join(set.folder())];
    // Report against the set's own folder if it exists, else the root's subfolder.
    let dir = if set.marks().iter().any(|m| root.join(m).exists()) { &candidates[0] } else { &candidates[1] };
    let missing: Vec<String> =
        set.marks().iter().filter(|m| !dir.join(m).exists()).map(|m| format!("  {}", dir.join(m).display())).collect();
    format!(
        "{} data not found. Missing:\n{}\nPut the files there, or point --data (or GPU_TRAIN_DATA) at the folder that holds them or at a data root with a {}/ folder.\nSource: {}",
        set.folder(),
        missing.join("\n"),
        set.folder(),
        set.source()
    )
}
