//! `gpu-train data fetch|verify|where`: the data sets on this machine, by hand.

use super::fetch::{self, Check};
use super::locate::{self, DataSet, Located};
use crate::error::{Error, Result};
use std::path::Path;

/// The sets a command names: one, or both for `all`.
pub fn sets(name: &str) -> Result<Vec<DataSet>> {
    match name {
        "all" => Ok(DataSet::ALL.to_vec()),
        n => DataSet::ALL
            .into_iter()
            .find(|s| s.folder() == n)
            .map(|s| vec![s])
            .ok_or_else(|| Error::Config(format!("no data set {n:?}: there are mnist, warwick and all"))),
    }
}

/// Fetches `sets` into the data root `dir` (each into `dir/<set>/`), else into the cache.
pub fn fetch_into(sets: &[DataSet], dir: Option<&Path>) -> Result<()> {
    let root = match dir {
        Some(d) => d.to_path_buf(),
        None => fetch::cache_root()
            .ok_or_else(|| Error::Config("no cache folder: set XDG_CACHE_HOME or HOME, or give --dir".into()))?,
    };
    for &set in sets {
        fetch::fetch_and_say(set, &root.join(set.folder()))?;
    }
    Ok(())
}

/// One line per set: `ok`, what is missing, or which files are corrupt, for the sets under
/// `dir` (a data root or a set's own folder), else where each would be read from. An error when
/// any set is not whole.
pub fn verify(dir: Option<&Path>) -> Result<()> {
    let mut whole = true;
    for set in DataSet::ALL {
        let folder = match dir {
            Some(d) => [d.join(set.folder()), d.to_path_buf()].into_iter().find(|f| looks_like(set, f)),
            None => match locate::resolve(set, None) {
                Located::Found(f, _) => Some(f),
                _ => None,
            },
        };
        let Some(folder) = folder else {
            whole = false;
            let place = dir.map_or("the folders it would be read from".to_string(), |d| d.display().to_string());
            println!("{}: missing: not in {place}", set.folder());
            continue;
        };
        let check = fetch::verify(set, &folder)?;
        whole &= check.missing.is_empty() && check.corrupt.is_empty();
        println!("{}: {}", set.folder(), describe(&check, &folder));
    }
    if whole {
        Ok(())
    } else {
        Err(Error::MissingData("some data is missing or corrupt; `gpu-train data fetch` fetches what is".into()))
    }
}

/// Whether `folder` is (a start of) `set`'s own folder: it holds one of its pinned files.
fn looks_like(set: DataSet, folder: &Path) -> bool {
    fetch::pinned(set).iter().any(|f| folder.join(f.path).exists())
        || (set == DataSet::Warwick && folder.join("Train").is_dir())
}

fn describe(check: &Check, folder: &Path) -> String {
    let mut parts = Vec::new();
    if check.missing.is_empty() && check.corrupt.is_empty() {
        return format!("ok ({} files, {:.1} MB) in {}", check.ok, check.bytes as f64 / 1e6, folder.display());
    }
    if !check.missing.is_empty() {
        let shown: Vec<&str> = check.missing.iter().take(5).copied().collect();
        let more = check.missing.len().saturating_sub(5);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        parts.push(format!("{} missing ({}{more})", check.missing.len(), shown.join(", ")));
    }
    for c in &check.corrupt {
        parts.push(format!("{} is corrupt: sha256 expected {}, got {}", c.path, c.expected, c.got));
    }
    format!("{} in {}", parts.join("; "), folder.display())
}

/// One line per set: the folder it would be read from, and why.
pub fn where_is(data: Option<&Path>) -> Vec<String> {
    DataSet::ALL
        .into_iter()
        .map(|set| {
            let s = set.folder();
            match locate::resolve(set, data) {
                Located::Found(dir, why) => format!("{s}: {} ({why})", dir.display()),
                Located::ToFetch(dir) => {
                    format!("{s}: not found; it will be fetched into {} on first use", dir.display())
                }
                Located::Missing(msg) => format!("{s}: not found and not fetched:\n  {}", msg.replace('\n', "\n  ")),
            }
        })
        .collect()
}
