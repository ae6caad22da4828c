//! MNIST: the built-in IDX set ([`super::idx`]), its four gzipped files found by
//! [`find`], 28x28 digits 0-9.

use super::idx::read_set;
use super::locate::{find, DataSet};
use super::Dataset;
use crate::error::{Error, Result};
use crate::graph::Target;
use crate::model::Shape;
use std::path::Path;

pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// MNIST from the data folder (see [`find`]), with samples of `shape` (784 flat, or 1x28x28).
pub fn load(data: Option<&Path>, shape: Shape) -> Result<Dataset> {
    let dir = find(DataSet::Mnist, data)?;
    let files = FILES.map(|f| dir.join(f));
    let set = read_set(&files)?;
    if (set.h, set.w) != (28, 28) {
        return Err(Error::bad_file(&files[0], format!("images are {}x{}, expected 28x28", set.h, set.w)));
    }
    for (split, labels) in [(&set.train, &files[1]), (&set.test, &files[3])] {
        if let Some(i) = split.y.iter().position(|&l| l > 9) {
            return Err(Error::bad_file(labels, format!("label {} at item {i} is not a digit 0-9", split.y[i])));
        }
    }
    Ok(Dataset { train: set.train, test: set.test, sample: shape, target: Target::Classes(10) })
}
