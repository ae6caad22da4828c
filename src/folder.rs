//! Run and report folders: every new run gets a folder of its own, no run writes into a folder
//! that holds something else unless asked to replace it, and one process writes a folder at a
//! time (an advisory lock on a file inside it, which the system releases when the process ends,
//! however it ends).

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a held folder: its lock marks the holder, its text names it.
pub const LOCK: &str = ".gpu-train.lock";

/// What a folder is for, and so which files mark it as one of its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Run,
    Report,
}

impl Kind {
    fn marks(self) -> &'static [&'static str] {
        match self {
            Kind::Run => &["config.json", crate::run::CHECKPOINT],
            Kind::Report => &["report.json", "report.html", "runs"],
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Report => "report",
        }
    }
}

/// How a new run or report may take its folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Claim {
    /// The folder must be missing or empty (`--out DIR`).
    #[default]
    New,
    /// The name is a stem: the first of `stem`, `stem-2`, `stem-3`, … that can be created.
    Unique,
    /// A folder of the same kind is replaced: its files are removed by [`Held::clear`], just
    /// before the new files are written (`--overwrite`).
    Overwrite,
}

/// A folder this process holds: no other gpu-train process writes into it while this lives.
/// A folder it created and never [committed](Held::commit) to is removed on drop, so a run that
/// fails before its first file leaves nothing behind.
#[derive(Debug)]
pub struct Held {
    path: PathBuf,
    _lock: File,
    /// What was there before, to remove before the first write ([`Claim::Overwrite`]).
    stale: Vec<PathBuf>,
    created: bool,
    committed: bool,
}

impl Held {
    /// Takes `dir` for a new run or report as `claim` says.
    pub fn claim(dir: &Path, kind: Kind, claim: Claim) -> Result<Held> {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        if claim == Claim::Unique {
            return Self::create_unique(dir);
        }
        let created = match std::fs::create_dir(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => false,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::bad_file(dir, "is a file, not a folder; choose another --out"));
            }
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut held = Self::lock(dir, created)?;
        let entries = held.entries()?;
        if entries.is_empty() {
            return Ok(held);
        }
        let names = listing(&entries);
        let ours: Vec<&str> = kind.marks().iter().copied().filter(|m| dir.join(m).exists()).collect();
        let what = kind.name();
        match (claim, ours.is_empty()) {
            (Claim::Overwrite, false) => {
                held.stale = entries;
                Ok(held)
            }
            (_, false) => Err(Error::Folder(format!(
                "--out {}: the folder holds a {what} ({names}); {}choose another folder, or add --overwrite to \
                 replace it",
                dir.display(),
                if kind == Kind::Run {
                    format!("continue it with --resume {}, ", dir.display())
                } else {
                    String::new()
                }
            ))),
            (_, true) => Err(Error::Folder(format!(
                "--out {}: the folder is not empty and holds no {what} ({names}); choose another folder \
                 (--overwrite replaces only a {what} folder)",
                dir.display()
            ))),
        }
    }

    /// Takes the folder of a stopped run, to continue it.
    pub fn reopen(dir: &Path) -> Result<Held> {
        if !dir.is_dir() {
            return Err(Error::bad_file(dir, "is not a folder: --resume needs a run folder"));
        }
        let mut held = Self::lock(dir, false)?;
        held.committed = true;
        Ok(held)
    }

    /// `stem`, else `stem-2`, `stem-3`, …: each made with one `create_dir`, which fails for every
    /// process but one, so runs started at the same moment never share a folder.
    fn create_unique(stem: &Path) -> Result<Held> {
        for i in 1u32.. {
            let path = match i {
                1 => stem.to_path_buf(),
                i => PathBuf::from(format!("{}-{i}", stem.display())),
            };
            match std::fs::create_dir(&path) {
                Ok(()) => return Self::lock(&path, true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        unreachable!("some suffix is free")
    }

    fn lock(dir: &Path, created: bool) -> Result<Held> {
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    h => format!("process {h}"),
                };
                return Err(Error::Folder(format!(
                    "{} is in use by {holder}; wait for it to end, or choose another folder",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let me = format!("{} ({})\n", std::process::id(), std::env::args().collect::<Vec<_>>().join(" "));
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(me.as_bytes())
        };
        write(&mut file).map_err(|e| Error::io(&path, e))?;
        Ok(Held { path: dir.to_path_buf(), _lock: file, stale: Vec::new(), created, committed: false })
    }

    /// Everything in the folder but the lock file, sorted.
    fn entries(&self) -> Result<Vec<PathBuf>> {
        let read = std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut out = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| Error::io(&self.path, e))?;
            if entry.file_name() != LOCK {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes what the folder held before this claim, if it was claimed to be overwritten.
    pub fn clear(&mut self) -> Result<()> {
        for p in std::mem::take(&mut self.stale) {
            let removed = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            removed.map_err(|e| Error::io(&p, e))?;
        }
        Ok(())
    }

    /// The folder now holds this run's files: keep it whatever happens next.
    pub fn commit(&mut self) {
        self.committed = true;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.created && !self.committed && only_empty_folders(&self.path) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Whether `dir` holds nothing but the lock file and folders that hold nothing either.
fn only_empty_folders(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().all(|e| {
            e.file_name() == LOCK || (e.file_type().is_ok_and(|t| t.is_dir()) && only_empty_folders(&e.path()))
        })
    })
}

/// Up to five names of `entries`, and how many more there are.
fn listing(entries: &[PathBuf]) -> String {
    let names: Vec<String> =
        entries.iter().take(5).map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    match entries.len() {
        n if n > 5 => format!("{} and {} more", names.join(", "), n - 5),
        _ => names.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gpu-train-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn unique_names_count_up_and_a_folder_never_committed_is_removed() {
        let root = scratch("unique");
        let stem = root.join("runs/x");
        let a = Held::claim(&stem, Kind::Run, Claim::Unique).unwrap();
        let mut b = Held::claim(&stem, Kind::Run, Claim::Unique).unwrap();
        assert_eq!((a.path(), b.path()), (stem.as_path(), root.join("runs/x-2").as_path()));
        b.commit();
        drop((a, b));
        assert!(!stem.exists() && root.join("runs/x-2").is_dir());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_held_folder_refuses_a_second_holder_and_names_the_first() {
        let dir = scratch("held");
        let held = Held::claim(&dir, Kind::Run, Claim::New).unwrap();
        let err = Held::reopen(&dir).unwrap_err().to_string();
        assert!(err.contains("is in use by process") && err.contains(&std::process::id().to_string()), "{err}");
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn overwrite_replaces_only_a_folder_of_its_kind() {
        let dir = scratch("kind");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = Held::claim(&dir, Kind::Run, Claim::Overwrite).unwrap_err().to_string();
        assert!(err.contains("holds no run (notes.txt)"), "{err}");
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let mut held = Held::claim(&dir, Kind::Run, Claim::Overwrite).unwrap();
        assert!(dir.join("notes.txt").exists(), "nothing is removed before the first write");
        held.clear().unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [LOCK]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
