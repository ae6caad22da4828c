//! The built-in data sets, fetched on first use: every file is streamed to a temporary name
//! beside its place, its size and SHA-256 checked against the sums pinned in this file's
//! folder, and only then renamed, so an interrupted fetch never leaves half a file under a real
//! name and the next fetch takes only what is missing.

#[cfg(feature = "download")]
mod http;
#[cfg(not(feature = "download"))]
mod http {
    /// Without the `download` feature (a build with no TLS library): always the reason.
    pub fn fetch_files(
        _: &[super::Pinned],
        _: &std::path::Path,
        _: &[String],
        _: &indicatif::ProgressBar,
    ) -> Option<String> {
        Some("this gpu-train was built without downloads (cargo feature `download`)".into())
    }
}

use super::locate::DataSet;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One file of a set: its path in the set's folder, its size and SHA-256 (lower-case hex).
#[derive(Clone, Copy, Debug)]
pub struct Pinned {
    pub path: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// Every file of `set`, as pinned in `pinned/<set>.sha256` (`sha256 size path` per line).
pub fn pinned(set: DataSet) -> Vec<Pinned> {
    let table = match set {
        DataSet::Mnist => include_str!("pinned/mnist.sha256"),
        DataSet::Warwick => include_str!("pinned/warwick.sha256"),
    };
    table
        .lines()
        .map(|line| {
            let mut f = line.split_whitespace();
            let (sha256, size, path) = (f.next(), f.next(), f.next());
            let size = size.and_then(|s| s.parse().ok());
            match (sha256, size, path) {
                (Some(sha256), Some(size), Some(path)) => Pinned { path, size, sha256 },
                _ => panic!("a malformed line in the pinned sums: {line:?}"),
            }
        })
        .collect()
}

/// Where `set` is fetched from, in order: base URLs that the pinned paths are appended to.
/// `GPU_TRAIN_MIRROR=URL` replaces them all with `URL/mnist/` and `URL/warwick/`.
pub fn sources(set: DataSet) -> Vec<String> {
    if let Some(mirror) = std::env::var("GPU_TRAIN_MIRROR").ok().filter(|m| !m.is_empty()) {
        return vec![format!("{}/{}/", mirror.trim_end_matches('/'), set.folder())];
    }
    match set {
        DataSet::Mnist => vec![
            "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
            "https://storage.googleapis.com/cvdf-datasets/mnist/".into(),
        ],
        DataSet::Warwick => vec!["https://raw.githubusercontent.com/Falk0/deep_learning_for_image_analysis/\
                                  0f8233feeeaf6c7687cb63d0ad4a483a722bff58/Assignment_3/WARWICK/"
            .into()],
    }
}

/// The terms a user accepts by fetching `set`.
pub fn terms(set: DataSet) -> &'static str {
    match set {
        DataSet::Mnist => "MNIST (Y. LeCun, C. Cortes, C. J. C. Burges) is available under CC BY-SA 3.0.",
        DataSet::Warwick => {
            "WARWICK is a 128x128 subset of the GlaS / Warwick-QU data, provided for research purposes only; \
             commercial uses are not allowed. Publications using it must cite K. Sirinukunwattana et al., \"Gland \
             Segmentation in Colon Histology Images: The GlaS Challenge Contest\", Medical Image Analysis 35:489-502, \
             2017, and K. Sirinukunwattana, D. R. J. Snead, N. M. Rajpoot, \"A Stochastic Polygons Model for \
             Glandular Structures in Colon Histology Images\", IEEE TMI, 2015."
        }
    }
}

/// The per-user data cache: `$XDG_CACHE_HOME/gpu-train/data`, else `~/.cache/gpu-train/data`
/// (`~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows).
pub fn cache_root() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = if cfg!(windows) {
        var("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library/Caches"))
    } else {
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("gpu-train").join("data"))
}

/// Whether fetching is refused: `GPU_TRAIN_OFFLINE` set to anything but `0` (`--no-download`
/// sets it).
pub fn offline() -> bool {
    std::env::var("GPU_TRAIN_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether every pinned file of `set` is in `dir` (by name; [`verify`] checks the bytes).
pub fn complete(set: DataSet, dir: &Path) -> bool {
    pinned(set).iter().all(|f| dir.join(f.path).is_file())
}

/// A file whose bytes are not the pinned ones.
#[derive(Debug)]
pub struct Corrupt {
    pub path: &'static str,
    pub got: String,
    pub expected: &'static str,
}

/// What [`verify`] found in a set's folder.
#[derive(Debug, Default)]
pub struct Check {
    pub ok: usize,
    pub bytes: u64,
    pub missing: Vec<&'static str>,
    pub corrupt: Vec<Corrupt>,
}

/// Hashes every pinned file of `set` in `dir`.
pub fn verify(set: DataSet, dir: &Path) -> Result<Check> {
    let mut check = Check::default();
    for f in pinned(set) {
        let path = dir.join(f.path);
        if !path.is_file() {
            check.missing.push(f.path);
            continue;
        }
        let got = sha256_of(&path)?;
        if got == f.sha256 {
            check.ok += 1;
            check.bytes += f.size;
        } else {
            check.corrupt.push(Corrupt { path: f.path, got, expected: f.sha256 });
        }
    }
    Ok(check)
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a fetch did.
#[derive(Debug)]
pub struct Fetched {
    pub files: usize,
    pub bytes: u64,
    /// Files that were already there with the right bytes.
    pub kept: usize,
}

/// Fetches into `dir` (the set's own folder) every file of `set` that is missing there or has
/// other bytes, each from the first of `sources` that serves it whole and right.
pub fn fetch(set: DataSet, dir: &Path, sources: &[String]) -> Result<Fetched> {
    let check = verify(set, dir)?;
    let wanted: Vec<Pinned> = pinned(set)
        .into_iter()
        .filter(|f| check.missing.contains(&f.path) || check.corrupt.iter().any(|c| c.path == f.path))
        .collect();
    let total: u64 = wanted.iter().map(|f| f.size).sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("fetching {}", set.folder()));
    let failed = http::fetch_files(&wanted, dir, sources, &bar);
    bar.finish_and_clear();
    if let Some(why) = failed {
        let names: Vec<&str> = pinned(set).iter().take(4).map(|f| f.path).collect();
        return Err(Error::MissingData(format!(
            "{why}\nTo place the files by hand: put the {} files ({}{}) in {} or in a folder named by --data; \
             `gpu-train data verify DIR` checks them against their SHA-256. GPU_TRAIN_MIRROR=URL fetches from a \
             mirror laid out like the data root (URL/{}/...). Files fetched so far stay; the next fetch takes only \
             what is missing.",
            pinned(set).len(),
            names.join(", "),
            if pinned(set).len() > 4 { ", ..." } else { "" },
            dir.display(),
            set.folder(),
        )));
    }
    Ok(Fetched { files: wanted.len(), bytes: total, kept: check.ok })
}

/// Fetches `set` into `dir` and says what happened: the terms, then a line with the counts.
pub fn fetch_and_say(set: DataSet, dir: &Path) -> Result<Fetched> {
    crate::run::say(format!("{}: fetching into {}\n  terms: {}", set.folder(), dir.display(), terms(set)));
    let start = Instant::now();
    let done = fetch(set, dir, &sources(set))?;
    crate::run::say(format!(
        "{}: {} files ({:.1} MB) fetched and checked in {:.1} s{}",
        set.folder(),
        done.files,
        done.bytes as f64 / 1e6,
        start.elapsed().as_secs_f64(),
        match done.kept {
            0 => String::new(),
            k => format!("; {k} were already there"),
        }
    ));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_sums_list_every_file_once() {
        let (m, w) = (pinned(DataSet::Mnist), pinned(DataSet::Warwick));
        assert_eq!((m.len(), w.len()), (4, 290));
        for f in m.iter().chain(&w) {
            assert!(f.sha256.len() == 64 && f.sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{f:?}");
        }
        let total: u64 = m.iter().chain(&w).map(|f| f.size).sum();
        assert!((16_000_000..17_000_000).contains(&total), "about 16.5 MB: {total}");
        let mut paths: Vec<_> = w.iter().map(|f| f.path).collect();
        paths.dedup();
        assert_eq!(paths.len(), 290);
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_a_byte() {
        assert_eq!(hex(&[0, 10, 255]), "000aff");
    }
}
