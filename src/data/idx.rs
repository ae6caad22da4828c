//! IDX classification sets (MNIST's format: Fashion-MNIST, KMNIST, EMNIST digits, ...): four
//! files, gzipped or not, with validated magic numbers, dimensions, counts and lengths. A header
//! that promises more bytes than the file holds is caught without allocating what it promises.
//! Image size and the number of classes come from the files.

use super::Split;
use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const IMAGES_MAGIC: u32 = 2051;
pub const LABELS_MAGIC: u32 = 2049;
/// Larger counts than any set of this kind: a header claiming more is corrupt.
const MAX_ITEMS: u32 = 10_000_000;
/// The largest image side accepted.
const MAX_SIDE: u32 = 4096;

/// The set's four files, by stem: training images and labels, test images and labels. Each is
/// `stem` or `stem.gz`.
pub const STEMS: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// A set read from its files: `h x w` grey images, labels `0..classes`.
#[derive(Debug)]
pub struct IdxSet {
    pub train: Split,
    pub test: Split,
    pub h: usize,
    pub w: usize,
    pub classes: usize,
}

/// Reads an IDX file, gzipped or not: its dimensions and payload.
pub fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_idx(&bytes, magic, path)
}

/// [`read_idx`] on the file's bytes (gzip is recognised by its first two bytes); `path` names
/// the source in errors.
pub fn parse_idx(bytes: &[u8], magic: u32, path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return parse_raw(GzDecoder::new(bytes), magic, path);
    }
    if path.extension().is_some_and(|e| e == "gz") {
        return Err(Error::bad_file(path, "not a gzip file (it does not start with gzip's bytes 1f 8b)"));
    }
    parse_raw(bytes, magic, path)
}

fn parse_raw(mut r: impl Read, magic: u32, path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let read_err = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::bad_file(path, "truncated: the file ends inside the IDX header"),
        _ => Error::bad_file(path, format!("not a readable gzip file: {e}")),
    };
    let mut word = [0u8; 4];
    r.read_exact(&mut word).map_err(read_err)?;
    let found = u32::from_be_bytes(word);
    if found != magic {
        let what = if magic == IMAGES_MAGIC { "images" } else { "labels" };
        return Err(Error::bad_file(path, format!("wrong IDX magic number {found}, expected {magic} ({what})")));
    }
    let ndims = if magic == IMAGES_MAGIC { 3 } else { 1 };
    let mut dims = Vec::new();
    for _ in 0..ndims {
        r.read_exact(&mut word).map_err(read_err)?;
        dims.push(u32::from_be_bytes(word));
    }
    if dims[0] > MAX_ITEMS {
        return Err(Error::bad_file(
            path,
            format!("header claims {} items, more than the {MAX_ITEMS} a file of this kind can hold", dims[0]),
        ));
    }
    let side = |d: u32| (1..=MAX_SIDE).contains(&d);
    if magic == IMAGES_MAGIC && !(side(dims[1]) && side(dims[2])) {
        return Err(Error::bad_file(
            path,
            format!("images are {}x{}: each side must be 1 to {MAX_SIDE}", dims[1], dims[2]),
        ));
    }
    let dims: Vec<usize> = dims.into_iter().map(|d| d as usize).collect();
    let expected: usize = dims.iter().product();
    let mut data = Vec::new();
    r.take(expected as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::bad_file(path, format!("corrupt gzip data: {e}")))?;
    if data.len() < expected {
        return Err(Error::bad_file(
            path,
            format!("truncated: the header promises {expected} bytes of data, the file holds {}", data.len()),
        ));
    }
    if data.len() > expected {
        return Err(Error::bad_file(
            path,
            format!("{} items declared but the file holds more data than that", dims[0]),
        ));
    }
    Ok((dims, data))
}

/// One split from its images and labels files; `(h, w)` of its images.
fn split(images: &Path, labels: &Path) -> Result<(Split, usize, usize)> {
    let (idims, x) = read_idx(images, IMAGES_MAGIC)?;
    let (ldims, y) = read_idx(labels, LABELS_MAGIC)?;
    if idims[0] != ldims[0] {
        return Err(Error::bad_file(
            labels,
            format!("holds {} labels but {} holds {} images", ldims[0], images.display(), idims[0]),
        ));
    }
    Ok((Split { x, y, n: idims[0] }, idims[1], idims[2]))
}

/// The set in these four files ([`STEMS`]' order).
pub fn read_set(files: &[PathBuf; 4]) -> Result<IdxSet> {
    let (train, h, w) = split(&files[0], &files[1])?;
    let (test, th, tw) = split(&files[2], &files[3])?;
    if (th, tw) != (h, w) {
        let first = files[0].display();
        return Err(Error::bad_file(&files[2], format!("images are {th}x{tw} but those of {first} are {h}x{w}")));
    }
    let classes = train.y.iter().chain(&test.y).max().map_or(0, |&m| usize::from(m) + 1);
    if classes < 2 {
        return Err(Error::bad_file(&files[1], "every label is 0: a classifier needs at least two classes"));
    }
    Ok(IdxSet { train, test, h, w, classes })
}

/// The set in `dir`: each of the [`STEMS`] as `stem` or `stem.gz`, not both.
pub fn load_dir(dir: &Path) -> Result<IdxSet> {
    if !dir.is_dir() {
        return Err(Error::bad_file(dir, "is not a folder: --dataset idx needs the folder of the four IDX files"));
    }
    let mut files = Vec::new();
    for stem in STEMS {
        let (plain, gz) = (dir.join(stem), dir.join(format!("{stem}.gz")));
        files.push(match (plain.is_file(), gz.is_file()) {
            (true, false) => plain,
            (false, true) => gz,
            (true, true) => {
                return Err(Error::bad_file(
                    dir,
                    format!("holds both {stem} and {stem}.gz, names differing only by extension; keep one"),
                ))
            }
            (false, false) => {
                return Err(Error::MissingData(format!(
                    "{}: {stem} (or {stem}.gz) is missing; an IDX set needs {}",
                    dir.display(),
                    STEMS.join(", ")
                )))
            }
        });
    }
    read_set(&files.try_into().expect("four files"))
}
