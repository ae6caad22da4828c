//! The Warwick gland images: `Train/` and `Test/` folders of `image_NN.png` (RGB) with
//! `label_NN.png` (grey, two levels: gland where higher), read as a masks set of its own
//! layout ([`super::masks`]). Images of another size than 128x128 are refused unless a size is
//! asked for.

use super::locate::{find, DataSet};
use super::masks::{self, Layout, Pairing};
use super::Dataset;
use crate::error::Result;
use std::path::Path;

/// The side of every image and label, unless resizing is asked for.
pub const SIZE: u32 = 128;

/// Where the built-in set's files are.
pub const LAYOUT: Layout = Layout {
    splits: ["Train", "Test"],
    pairing: Pairing::Prefixed { image: "image_", mask: "label_" },
    side: Some(SIZE),
    hint: "expected layout: Train/ and Test/ folders holding image_01.png, image_02.png, … (128x128 RGB) \
           and label_01.png, … (128x128 grey, 0 = background, 255 = gland)",
};

/// The Warwick set from the data folder (see [`find`]), at `size × size` if given; binary
/// masks. Files passed over are listed.
pub fn load(data: Option<&Path>, size: Option<u32>) -> Result<Dataset> {
    let dir = find(DataSet::Warwick, data)?;
    let (set, skipped) = masks::load(&dir, &LAYOUT, size, Some(2))?;
    if let Some(line) = super::skipped_line(&skipped) {
        eprintln!("note: {line}");
    }
    Ok(set)
}
