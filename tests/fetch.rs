//! Fetching the data sets, against a loopback HTTP server that this test starts (127.0.0.1, a
//! port of the system's choosing, a bounded number of requests) and stops: byte-identical files,
//! a corrupt file refused by its checksum, a connection broken mid-file, a source answering 404,
//! nothing listening, `--no-download`, and a report run with no data anywhere. No test reaches
//! beyond this machine.

#![cfg(feature = "download")]

mod common;

use common::{text, tmp};
use gpu_train::data::fetch::{self, pinned};
use gpu_train::data::locate::DataSet;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server does with one path instead of serving it.
#[derive(Clone, Copy)]
enum Fault {
    NotFound,
    /// One byte changed, the length kept.
    FlipByte,
    /// The headers promise the whole file; half of it comes, then the connection closes.
    CloseHalfway,
}

/// A server of `root` laid out like the data root: `GET /mnist/<file>`, `GET /warwick/Train/...`.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// At most this many requests, and this long, per server.
const MAX_REQUESTS: usize = 2000;
const LIFETIME: Duration = Duration::from_secs(120);

impl Server {
    fn start(root: &Path, faults: &[(&str, Fault)]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, served) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let faults: HashMap<String, Fault> = faults.iter().map(|(p, f)| (format!("/{p}"), *f)).collect();
        let (root, s, log) = (root.to_path_buf(), stop.clone(), served.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut requests = 0;
            while !s.load(Ordering::Relaxed) && requests < MAX_REQUESTS && start.elapsed() < LIFETIME {
                match listener.accept() {
                    Ok((stream, _)) => {
                        requests += 1;
                        if let Some(path) = answer(stream, &root, &faults) {
                            log.lock().unwrap().push(path);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Server { addr, stop, served, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The set's base URL on this server, as a fetch source.
    fn source(&self, set: DataSet) -> String {
        format!("{}/{}/", self.url(), set.folder())
    }

    /// Paths answered so far (with the file, a fault or a 404).
    fn served(&self) -> Vec<String> {
        self.served.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Answers one request on `stream` (one request per connection); returns its path.
fn answer(mut stream: TcpStream, root: &Path, faults: &HashMap<String, Fault>) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1)?.to_string();
    let file = root.join(path.trim_start_matches('/'));
    let body = match (faults.get(&path), std::fs::read(&file)) {
        (Some(Fault::NotFound), _) | (_, Err(_)) => {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return Some(path);
        }
        (_, Ok(body)) => body,
    };
    let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = stream.write_all(header.as_bytes());
    let _ = match faults.get(&path) {
        Some(Fault::FlipByte) => {
            let mut b = body;
            let i = b.len() / 2;
            b[i] ^= 0x40;
            stream.write_all(&b)
        }
        Some(Fault::CloseHalfway) => stream.write_all(&body[..body.len() / 2]),
        _ => stream.write_all(&body),
    };
    Some(path)
}

/// `gpu-train` with no data anywhere it looks: run in `cwd` (no ./data), its cache in
/// `cwd/cache`, no `GPU_TRAIN_DATA`, and fetching from `mirror`.
fn bin_without_data(cwd: &Path, mirror: &str) -> Command {
    std::fs::create_dir_all(cwd).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpu-train"));
    c.current_dir(cwd)
        .env("XDG_CACHE_HOME", cwd.join("cache"))
        .env("GPU_TRAIN_MIRROR", mirror)
        .env_remove("GPU_TRAIN_DATA")
        .env_remove("GPU_TRAIN_OFFLINE");
    c
}

/// Files in `dir` (recursively) whose names mark a fetch in progress.
fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(part_files(&e.path()));
        } else if e.file_name().to_string_lossy().contains(".part") {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_fetch_gives_the_same_bytes_and_verify_says_ok() {
    let Some(data) = common::data_dir() else { return };
    let server = Server::start(&data, &[]);
    let cwd = tmp("fetch-all");
    let root = cwd.join("fetched");
    let r = bin_without_data(&cwd, &server.url()).args(["data", "fetch", "all", "--dir"]).arg(&root).output().unwrap();
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("terms: WARWICK") && text(&r).contains("research purposes only"), "{}", text(&r));
    for set in DataSet::ALL {
        for f in pinned(set) {
            let (got, want) = (root.join(set.folder()).join(f.path), data.join(set.folder()).join(f.path));
            assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&want).unwrap(), "{}", got.display());
        }
    }
    let r = bin_without_data(&cwd, &server.url()).args(["data", "verify"]).arg(&root).output().unwrap();
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("mnist: ok (4 files") && text(&r).contains("warwick: ok (290 files"), "{}", text(&r));

    // A second fetch finds everything in place and asks for nothing.
    let before = server.served().len();
    let r = bin_without_data(&cwd, &server.url()).args(["data", "fetch", "--dir"]).arg(&root).output().unwrap();
    assert!(r.status.success() && text(&r).contains("0 files (0.0 MB)"), "{}", text(&r));
    assert_eq!(server.served().len(), before);

    // Verify names a corrupt file with both hashes, and fails.
    let labels = root.join("mnist/t10k-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&labels, bytes).unwrap();
    let r = bin_without_data(&cwd, &server.url()).args(["data", "verify"]).arg(&root).output().unwrap();
    let want = "t10k-labels-idx1-ubyte.gz is corrupt: sha256 expected f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6, got ";
    assert!(!r.status.success() && text(&r).contains(want) && text(&r).contains("warwick: ok"), "{}", text(&r));
}

#[test]
fn a_corrupt_file_is_refused_and_the_next_source_serves_it() {
    let Some(data) = common::data_dir() else { return };
    let bad = Server::start(&data, &[("mnist/t10k-labels-idx1-ubyte.gz", Fault::FlipByte)]);
    let dir = tmp("fetch-corrupt");
    let err = fetch::fetch(DataSet::Mnist, &dir, &[bad.source(DataSet::Mnist)]).unwrap_err().to_string();
    let sha = "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6";
    assert!(err.contains("t10k-labels-idx1-ubyte.gz"), "{err}");
    assert!(err.contains(&format!("sha256 mismatch: expected {sha}, got ")), "{err}");
    assert!(!dir.join("t10k-labels-idx1-ubyte.gz").exists(), "nothing under the file's name");
    assert_eq!(part_files(&dir), Vec::<PathBuf>::new(), "no temporary file left");

    let good = Server::start(&data, &[]);
    let sources = [bad.source(DataSet::Mnist), good.source(DataSet::Mnist)];
    fetch::fetch(DataSet::Mnist, &dir, &sources).unwrap();
    let check = fetch::verify(DataSet::Mnist, &dir).unwrap();
    assert_eq!((check.ok, check.missing.len(), check.corrupt.len()), (4, 0, 0));
    assert_eq!(good.served(), ["/mnist/t10k-labels-idx1-ubyte.gz"], "only the file the first source got wrong");
}

#[test]
fn a_broken_connection_is_named_and_the_next_fetch_takes_only_what_is_missing() {
    let Some(data) = common::data_dir() else { return };
    let broken = Server::start(&data, &[("mnist/train-labels-idx1-ubyte.gz", Fault::CloseHalfway)]);
    let dir = tmp("fetch-halfway");
    let err = fetch::fetch(DataSet::Mnist, &dir, &[broken.source(DataSet::Mnist)]).unwrap_err().to_string();
    assert!(err.contains("train-labels-idx1-ubyte.gz") && err.contains("of 28881 bytes"), "{err}");
    assert!(!dir.join("train-labels-idx1-ubyte.gz").exists());
    assert_eq!(part_files(&dir), Vec::<PathBuf>::new());
    let have: Vec<&str> =
        pinned(DataSet::Mnist).iter().filter(|f| dir.join(f.path).is_file()).map(|f| f.path).collect();

    let good = Server::start(&data, &[]);
    let done = fetch::fetch(DataSet::Mnist, &dir, &[good.source(DataSet::Mnist)]).unwrap();
    assert_eq!(done.kept, have.len());
    for path in good.served() {
        assert!(!have.iter().any(|h| path.ends_with(h)), "{path} was fetched again");
    }
    assert_eq!(good.served().len(), 4 - have.len());
    assert_eq!(fetch::verify(DataSet::Mnist, &dir).unwrap().ok, 4);
}

#[test]
fn a_source_that_answers_404_is_passed_over() {
    let Some(data) = common::data_dir() else { return };
    let files: Vec<String> = pinned(DataSet::Mnist).iter().map(|f| format!("mnist/{}", f.path)).collect();
    let faults: Vec<(&str, Fault)> = files.iter().map(|f| (f.as_str(), Fault::NotFound)).collect();
    let (missing, good) = (Server::start(&data, &faults), Server::start(&data, &[]));
    let dir = tmp("fetch-404");
    let err = fetch::fetch(DataSet::Mnist, &dir, &[missing.source(DataSet::Mnist)]).unwrap_err().to_string();
    assert!(err.contains("HTTP 404"), "{err}");
    fetch::fetch(DataSet::Mnist, &dir, &[missing.source(DataSet::Mnist), good.source(DataSet::Mnist)]).unwrap();
    assert_eq!(fetch::verify(DataSet::Mnist, &dir).unwrap().ok, 4);
}

#[test]
fn nothing_listening_says_so_within_seconds() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cwd = tmp("fetch-refused");
    let start = Instant::now();
    let r = bin_without_data(&cwd, &format!("http://127.0.0.1:{port}"))
        .args(["--task", "mnist-mlp", "--backend", "cpu"])
        .output()
        .unwrap();
    let t = text(&r);
    assert!(!r.status.success(), "{t}");
    assert!(t.contains("fetching it failed") && t.contains("connection refused") && t.contains("by hand"), "{t}");
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    assert!(!cwd.join("runs").exists() || std::fs::read_dir(cwd.join("runs")).unwrap().count() == 0);
}

#[test]
fn no_download_gives_the_missing_files_and_fetches_nothing() {
    let Some(data) = common::data_dir() else { return };
    let server = Server::start(&data, &[]);
    let cwd = tmp("fetch-refused-by-flag");
    for (flag, env) in [(Some("--no-download"), None), (None, Some("1"))] {
        let mut c = bin_without_data(&cwd, &server.url());
        c.args(["--task", "mnist-mlp", "--backend", "cpu"]).args(flag);
        if let Some(v) = env {
            c.env("GPU_TRAIN_OFFLINE", v);
        }
        let r = c.output().unwrap();
        let t = text(&r);
        assert!(!r.status.success() && t.contains("mnist data not found. Missing:"), "{t}");
        assert!(t.contains("train-images-idx3-ubyte.gz") && t.contains("Not fetched"), "{t}");
    }
    assert_eq!(server.served(), Vec::<String>::new());
    assert!(!cwd.join("cache").exists());
}

#[test]
fn a_report_with_no_data_anywhere_fetches_it_and_runs() {
    let Some(data) = common::data_dir() else { return };
    let server = Server::start(&data, &[]);
    let cwd = tmp("fetch-reproduce");
    let r = bin_without_data(&cwd, &server.url())
        .args(["reproduce", "--quick", "--backend", "cpu", "--only", "1.1,2.1", "--out", "report"])
        .output()
        .unwrap();
    let t = text(&r);
    assert!(r.status.success(), "{t}");
    let cache = cwd.join("cache/gpu-train/data");
    assert!(t.contains(&format!("mnist: fetching into {}", cache.join("mnist").display())), "{t}");
    assert!(t.contains("warwick: 290 files (4.9 MB) fetched and checked"), "{t}");
    assert!(cwd.join("report/report.html").is_file());
    assert_eq!(fetch::verify(DataSet::Warwick, &cache.join("warwick")).unwrap().ok, 290);

    // The next run reads the cache and fetches nothing.
    let before = server.served().len();
    let r = bin_without_data(&cwd, &server.url())
        .args(["--task", "mnist-mlp", "--epochs", "1", "--train-limit", "200", "--test-limit", "100"])
        .args(["--backend", "cpu"])
        .output()
        .unwrap();
    assert!(r.status.success() && !text(&r).contains("fetching"), "{}", text(&r));
    assert_eq!(server.served().len(), before);
    let r = bin_without_data(&cwd, &server.url()).args(["data", "where"]).output().unwrap();
    assert!(
        text(&r).contains(&format!("mnist: {} (the per-user cache", cache.join("mnist").display())),
        "{}",
        text(&r)
    );
}
