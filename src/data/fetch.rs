//! The built-in data sets, fetched on first use: every file is streamed to a temporary name
//! beside its place, its size and SHA-256 checked against the sums pinned in this file's
//! folder, and only then renamed, so an interrupted fetch never leaves half a file under a real
//! name and the next fetch takes only what is missing.

use super::locate::DataSet;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds to wait for a connection, and for each read once connected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries of one URL when the failure may pass (connection lost, timeout, HTTP 5xx), and the
/// pause between them.
const ATTEMPTS: usize = 2;
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Files fetched at once.
const WORKERS: usize = 4;

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

fn hex(bytes: &[u8]) -> String {
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
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .user_agent(concat!("gpu-train/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let next = Mutex::new(wanted.iter());
    let (failed, stop) = (Mutex::new(None), AtomicBool::new(false));
    std::thread::scope(|scope| {
        for _ in 0..WORKERS.min(wanted.len()) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(f) = next.lock().expect("no panics while held").next() else { break };
                    if let Err(why) = fetch_file(&agent, f, dir, sources, &bar) {
                        stop.store(true, Ordering::Relaxed);
                        failed.lock().expect("no panics while held").get_or_insert(why);
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(why) = failed.into_inner().expect("no panics while held") {
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

/// One file from the first source that serves it right; else every URL tried and its fault.
fn fetch_file(
    agent: &ureq::Agent,
    f: &Pinned,
    dir: &Path,
    sources: &[String],
    bar: &indicatif::ProgressBar,
) -> std::result::Result<(), String> {
    let dest = dir.join(f.path);
    let parent = dest.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let tmp = dest.with_file_name(format!(".{name}.part{}", std::process::id()));
    let mut faults = Vec::new();
    for base in sources {
        let url = format!("{base}{}", f.path);
        for attempt in 1..=ATTEMPTS {
            let start = bar.position();
            let got = download(agent, &url, f, &tmp, bar);
            if got.is_err() {
                let _ = std::fs::remove_file(&tmp);
                bar.set_position(start);
            }
            match got {
                Ok(()) => {
                    return std::fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()));
                }
                Err(fault) if fault.passing && attempt < ATTEMPTS => std::thread::sleep(RETRY_PAUSE),
                Err(Fault { msg, .. }) => {
                    faults.push(format!("  {url}: {msg}"));
                    break;
                }
            }
        }
    }
    Err(format!("could not fetch {} ({} bytes):\n{}", dest.display(), f.size, faults.join("\n")))
}

/// Why a download failed, and whether trying again may help.
struct Fault {
    msg: String,
    passing: bool,
}

impl Fault {
    fn new(msg: impl Into<String>, passing: bool) -> Fault {
        Fault { msg: msg.into(), passing }
    }
}

/// Streams `url` into `tmp`, hashing as it goes; checks the size and the SHA-256.
fn download(
    agent: &ureq::Agent,
    url: &str,
    f: &Pinned,
    tmp: &Path,
    bar: &indicatif::ProgressBar,
) -> std::result::Result<(), Fault> {
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => Fault::new(format!("HTTP {code}"), code >= 500 || code == 429),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            Fault::new("connection refused", false)
        }
        ureq::Error::HostNotFound => Fault::new("host not found (no network?)", false),
        ureq::Error::Timeout(t) => Fault::new(format!("no answer in time ({t})"), true),
        other => Fault::new(other.to_string(), true),
    })?;
    let mut body = response.into_body().into_reader();
    let mut out = std::fs::File::create(tmp).map_err(|e| Fault::new(format!("{}: {e}", tmp.display()), false))?;
    let (mut hasher, mut got, mut buf) = (Sha256::new(), 0u64, vec![0u8; 64 * 1024]);
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Err(Fault::new(format!("the connection broke after {got} of {} bytes: {e}", f.size), true))
            }
        };
        got += n as u64;
        if got > f.size {
            return Err(Fault::new(format!("more than the expected {} bytes", f.size), false));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Fault::new(format!("{}: {e}", tmp.display()), false))?;
        bar.inc(n as u64);
    }
    if got < f.size {
        return Err(Fault::new(format!("the connection closed after {got} of {} bytes", f.size), true));
    }
    let sha = hex(&hasher.finalize());
    if sha != f.sha256 {
        return Err(Fault::new(format!("sha256 mismatch: expected {}, got {sha}", f.sha256), false));
    }
    out.sync_all().map_err(|e| Fault::new(format!("{}: {e}", tmp.display()), false))
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
