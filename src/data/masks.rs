//! Image/mask folders for segmentation: `DIR/train/images/NAME.{png,jpg,jpeg}` with
//! `DIR/train/masks/NAME.png`, and `test/` likewise. Images are read as RGB, masks as grey with
//! two values (any two: the lower is background, the higher foreground, over the whole set).
//! Any size: `--image-size` resizes images bilinearly and masks by nearest neighbour, else all
//! must be of one size. The FCN halves the size twice and doubles it twice, so sides must be
//! multiples of 4.

use super::folders::read_planes;
use super::Split;
use crate::error::{Error, Result};
use crate::model::Shape;
use image::imageops::FilterType;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The split's (image, mask) pairs by name, sorted; files that are neither go to `skipped`.
fn pairs(dir: &Path, skipped: &mut Vec<PathBuf>) -> Result<Vec<(PathBuf, PathBuf)>> {
    let (images, masks) = (dir.join("images"), dir.join("masks"));
    for d in [&images, &masks] {
        if !d.is_dir() {
            return Err(Error::bad_file(
                d,
                "is missing: a masks set holds train/images/, train/masks/, test/images/ and test/masks/",
            ));
        }
    }
    let list = |d: &Path, exts: &[&str], skipped: &mut Vec<PathBuf>| -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let read = std::fs::read_dir(d).map_err(|e| Error::io(d, e))?;
        for e in read {
            let p = e.map_err(|e| Error::io(d, e))?.path();
            let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            if p.is_file() && exts.contains(&ext.as_str()) {
                out.push(p);
            } else {
                skipped.push(p);
            }
        }
        out.sort();
        Ok(out)
    };
    let (imgs, msks) = (list(&images, &IMAGE_EXTENSIONS, skipped)?, list(&masks, &["png"], skipped)?);
    if let Some(pair) = imgs.windows(2).find(|p| p[0].file_stem() == p[1].file_stem()) {
        return Err(Error::bad_file(&pair[1], "and another image differ only by extension; keep one"));
    }
    let stem = |p: &Path| p.file_stem().unwrap_or_default().to_os_string();
    if let Some(m) = msks.iter().find(|m| !imgs.iter().any(|i| stem(i) == stem(m))) {
        return Err(Error::bad_file(m, format!("is a mask without an image in {}", images.display())));
    }
    let mut out = Vec::new();
    for i in imgs {
        let Some(m) = msks.iter().find(|m| stem(m) == stem(&i)) else {
            return Err(Error::bad_file(
                &i,
                format!("has no mask {}.png in {}", stem(&i).to_string_lossy(), masks.display()),
            ));
        };
        out.push((i, m.clone()));
    }
    if out.is_empty() {
        return Err(Error::bad_file(&images, "holds no PNG or JPEG images"));
    }
    Ok(out)
}

/// One mask as grey bytes, resized by nearest neighbour if asked; its `(h, w)`.
fn read_mask(path: &Path, size: Option<u32>) -> Result<(Vec<u8>, (usize, usize))> {
    let img = image::open(path).map_err(|e| Error::bad_file(path, format!("cannot read the mask: {e}")))?;
    let img = match size {
        Some(s) if (img.width(), img.height()) != (s, s) => img.resize_exact(s, s, FilterType::Nearest),
        _ => img,
    };
    Ok((img.to_luma8().into_raw(), (img.height() as usize, img.width() as usize)))
}

/// A split: images `[3, h, w]`, masks 0/1 after [`binarise`]; `(h, w)`.
type Decoded = (Vec<(Vec<u8>, (usize, usize))>, Vec<(Vec<u8>, (usize, usize))>);

fn decode(pairs: &[(PathBuf, PathBuf)], size: Option<u32>) -> Result<Decoded> {
    let images = pairs.par_iter().map(|(i, _)| read_planes(i, 3, size)).collect::<Result<Vec<_>>>()?;
    let masks = pairs.par_iter().map(|(_, m)| read_mask(m, size)).collect::<Result<Vec<_>>>()?;
    Ok((images, masks))
}

/// The set under `dir`: both splits and the sample shape; notes on skipped files.
pub fn load(dir: &Path, size: Option<u32>) -> Result<(Split, Split, Shape, Vec<PathBuf>)> {
    if !dir.is_dir() {
        return Err(Error::bad_file(dir, "is not a folder: --dataset masks needs train/ and test/ folders"));
    }
    let mut skipped = Vec::new();
    let (train, test) = (pairs(&dir.join("train"), &mut skipped)?, pairs(&dir.join("test"), &mut skipped)?);
    let (train_d, test_d) = (decode(&train, size)?, decode(&test, size)?);
    let (h, w) = train_d.0[0].1;
    let all = train.iter().zip(train_d.0.iter().zip(&train_d.1)).chain(test.iter().zip(test_d.0.iter().zip(&test_d.1)));
    let mut levels: Vec<u8> = Vec::new();
    for ((image, mask), ((_, ihw), (m, mhw))) in all {
        if *ihw != (h, w) {
            return Err(Error::bad_file(
                image,
                format!(
                    "is {}x{} where the first image is {w}x{h}: give --image-size N to resize every image to NxN",
                    ihw.1, ihw.0
                ),
            ));
        }
        if *mhw != *ihw {
            return Err(Error::bad_file(mask, format!("is {}x{}, its image {}x{}", mhw.1, mhw.0, ihw.1, ihw.0)));
        }
        for &v in m {
            if !levels.contains(&v) {
                levels.push(v);
                if levels.len() > 2 {
                    levels.sort_unstable();
                    return Err(Error::bad_file(
                        mask,
                        format!("brings the masks' values to {levels:?}…: a binary mask holds two values"),
                    ));
                }
            }
        }
    }
    if h % 4 != 0 || w % 4 != 0 {
        return Err(Error::bad_file(
            &train[0].0,
            format!("is {w}x{h}: the FCN needs sides that are multiples of 4; give --image-size N"),
        ));
    }
    let high = levels.iter().copied().max().unwrap_or(0);
    let binarise = |d: &Decoded, n: usize| Split {
        x: d.0.iter().flat_map(|(px, _)| px.iter().copied()).collect(),
        y: d.1.iter().flat_map(|(m, _)| m.iter().map(|&v| u8::from(levels.len() == 2 && v == high))).collect(),
        n,
    };
    Ok((binarise(&train_d, train.len()), binarise(&test_d, test.len()), Shape::new(3, h, w), skipped))
}
