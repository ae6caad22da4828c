//! MNIST's gzipped IDX files: validated magic numbers, dimensions, counts and lengths. A header
//! that promises more bytes than the file holds is caught without allocating what it promises.

use super::locate::{find, DataSet};
use super::{Dataset, Split};
use crate::error::{Error, Result};
use crate::graph::Target;
use crate::model::Shape;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;
/// Larger counts than any MNIST-like set: a header claiming more is corrupt.
const MAX_ITEMS: u32 = 10_000_000;

/// Reads a gzipped IDX file: its dimensions and its payload.
pub fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    parse_idx(std::io::BufReader::new(file), magic, path)
}

/// [`read_idx`] on gzipped bytes from `gz`; `path` names the source in errors.
pub fn parse_idx(gz: impl Read, magic: u32, path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut r = GzDecoder::new(gz);
    let read_err = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::bad_file(path, "truncated: the file ends inside the IDX header"),
        _ => Error::bad_file(path, format!("not a readable gzip file: {e}")),
    };
    let mut word = [0u8; 4];
    r.read_exact(&mut word).map_err(read_err)?;
    let found = u32::from_be_bytes(word);
    if found != magic {
        return Err(Error::bad_file(
            path,
            format!(
                "wrong IDX magic number {found}, expected {magic} ({})",
                if magic == IMAGES_MAGIC { "images" } else { "labels" }
            ),
        ));
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
            format!("header claims {} items, more than the {MAX_ITEMS} an MNIST file can hold", dims[0]),
        ));
    }
    if magic == IMAGES_MAGIC && (dims[1] != 28 || dims[2] != 28) {
        return Err(Error::bad_file(path, format!("images are {}x{}, expected 28x28", dims[1], dims[2])));
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

fn split(dir: &Path, images: &str, labels: &str) -> Result<Split> {
    let (ip, lp) = (dir.join(images), dir.join(labels));
    let (idims, x) = read_idx(&ip, IMAGES_MAGIC)?;
    let (ldims, y) = read_idx(&lp, LABELS_MAGIC)?;
    if idims[0] != ldims[0] {
        return Err(Error::bad_file(
            &lp,
            format!("holds {} labels but {} holds {} images", ldims[0], ip.display(), idims[0]),
        ));
    }
    if let Some(i) = y.iter().position(|&l| l > 9) {
        return Err(Error::bad_file(&lp, format!("label {} at item {i} is not a digit 0-9", y[i])));
    }
    Ok(Split { x, y, n: idims[0] })
}

/// MNIST from the data folder (see [`find`]), with samples of `shape` (784 flat, or 1x28x28).
pub fn load(data: Option<&Path>, shape: Shape) -> Result<Dataset> {
    let dir = find(DataSet::Mnist, data)?;
    Ok(Dataset {
        train: split(&dir, FILES[0], FILES[1])?,
        test: split(&dir, FILES[2], FILES[3])?,
        sample: shape,
        target: Target::Classes(10),
    })
}
