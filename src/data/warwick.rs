//! The Warwick gland images: `Train/` and `Test/` folders of `image_NN.png` (RGB) with
//! `label_NN.png` (grey, two levels: gland where > 0). Samples are stored `[3, h, w]`, masks as
//! 0/1 bytes. Images of another size are refused unless a size is asked for: then images are
//! resized bilinearly and labels by nearest neighbour (so they stay two-level).

use super::locate::{find, DataSet};
use super::{Dataset, Split};
use crate::error::{Error, Result};
use crate::graph::Target;
use crate::model::Shape;
use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView};
use std::path::Path;

/// The side of every image and label, unless resizing is asked for.
pub const SIZE: u32 = 128;

const LAYOUT: &str = "expected layout: Train/ and Test/ folders holding image_01.png, image_02.png, … (128x128 RGB) \
                      and label_01.png, … (128x128 grey, 0 = background, 255 = gland)";

fn open(path: &Path) -> Result<DynamicImage> {
    image::open(path).map_err(|e| Error::bad_file(path, format!("cannot read the PNG: {e}")))
}

/// `img` at `size × size` (resized with `filter`), or as it is when it is 128x128 and no size
/// is asked for.
fn fit(path: &Path, img: DynamicImage, size: Option<u32>, filter: FilterType) -> Result<DynamicImage> {
    let (w, h) = img.dimensions();
    match size {
        Some(s) if (w, h) != (s, s) => Ok(img.resize_exact(s, s, filter)),
        None if (w, h) != (SIZE, SIZE) => Err(Error::bad_file(
            path,
            format!("is {w}x{h}, expected {SIZE}x{SIZE} (--image-size N resizes every image to NxN)"),
        )),
        _ => Ok(img),
    }
}

/// RGB bytes as `[3, h, w]` at `size` (see [`fit`]); grey and RGBA are converted with a note,
/// other formats refused.
pub fn read_image(path: &Path, size: Option<u32>, notes: &mut Vec<String>) -> Result<Vec<u8>> {
    let img = open(path)?;
    let rgb = match img {
        DynamicImage::ImageRgb8(_) => img,
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageLumaA8(_) | DynamicImage::ImageRgba8(_) => {
            notes.push(format!("{}: {:?} converted to RGB", path.display(), img.color()));
            DynamicImage::ImageRgb8(img.to_rgb8())
        }
        other => return Err(Error::bad_file(path, format!("is {:?}; expected 8-bit RGB", other.color()))),
    };
    let rgb = fit(path, rgb, size, FilterType::Triangle)?.to_rgb8();
    let hw = (rgb.width() * rgb.height()) as usize;
    let mut chw = vec![0u8; 3 * hw];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * hw + i] = px[c];
        }
    }
    Ok(chw)
}

/// A binary mask (1 = gland) from a grey label with at most two levels, one of them 0.
fn read_label(path: &Path, size: Option<u32>) -> Result<Vec<u8>> {
    let img = open(path)?;
    let DynamicImage::ImageLuma8(grey) = img else {
        return Err(Error::bad_file(path, format!("is {:?}; a label must be 8-bit grey", img.color())));
    };
    let mut levels: Vec<u8> = Vec::new();
    for &v in grey.as_raw() {
        if !levels.contains(&v) {
            levels.push(v);
            if levels.len() > 2 {
                break;
            }
        }
    }
    levels.sort_unstable();
    if levels.len() > 2 || (levels.len() == 2 && levels[0] != 0) {
        return Err(Error::bad_file(
            path,
            format!("a label must hold two levels (0 and one other), found values {levels:?}…"),
        ));
    }
    let grey = fit(path, DynamicImage::ImageLuma8(grey), size, FilterType::Nearest)?.to_luma8();
    Ok(grey.as_raw().iter().map(|&v| u8::from(v > 0)).collect())
}

/// Every `image_NN.png` of `dir` with its `label_NN.png`, in name order.
fn split(dir: &Path, size: Option<u32>, notes: &mut Vec<String>) -> Result<Split> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("image_") && n.ends_with(".png"))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(Error::bad_file(dir, format!("holds no image_NN.png files; {LAYOUT}")));
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for name in &names {
        let label = dir.join(name.replacen("image_", "label_", 1));
        if !label.is_file() {
            return Err(Error::bad_file(&label, format!("is missing: every image needs its label; {LAYOUT}")));
        }
        x.extend(read_image(&dir.join(name), size, notes)?);
        y.extend(read_label(&label, size)?);
    }
    Ok(Split { x, y, n: names.len() })
}

/// The Warwick set from the data folder (see [`find`]), at `size × size` if given (see
/// [`fit`]); notes on converted files are printed.
pub fn load(data: Option<&Path>, size: Option<u32>) -> Result<Dataset> {
    let dir = find(DataSet::Warwick, data)?;
    let mut notes = Vec::new();
    let (train, test) = (split(&dir.join("Train"), size, &mut notes)?, split(&dir.join("Test"), size, &mut notes)?);
    for note in notes {
        eprintln!("note: {note}");
    }
    let s = size.unwrap_or(SIZE) as usize;
    Ok(Dataset { train, test, sample: Shape::new(3, s, s), target: Target::Mask })
}
