//! Fetching files over HTTPS (the `download` feature: ureq with rustls): a few at once, each
//! from the first source that serves it whole and right, streamed to a temporary name and
//! hashed as it comes.

use super::{hex, Pinned};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Seconds to wait for a connection, and for each read once connected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries of one URL when the failure may pass (connection lost, timeout, HTTP 5xx), and the
/// pause between them.
const ATTEMPTS: usize = 2;
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Files fetched at once.
const WORKERS: usize = 4;

/// Fetches every file of `wanted` into `dir` (renamed into place once checked), counting bytes
/// on `bar`; the first failure, if any, with every URL tried and its fault.
pub fn fetch_files(wanted: &[Pinned], dir: &Path, sources: &[String], bar: &indicatif::ProgressBar) -> Option<String> {
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
                    if let Err(why) = fetch_file(&agent, f, dir, sources, bar) {
                        stop.store(true, Ordering::Relaxed);
                        failed.lock().expect("no panics while held").get_or_insert(why);
                    }
                }
            });
        }
    });
    failed.into_inner().expect("no panics while held")
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
