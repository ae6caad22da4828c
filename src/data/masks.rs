//! Image/mask sets for segmentation. A user's set holds `train/images/NAME.{png,jpg,jpeg}` with
//! `train/masks/NAME.png`, and `test/` likewise ([`FOLDERS`]); the built-in Warwick set pairs
//! `image_NN.png` with `label_NN.png` in `Train/` and `Test/` (its own [`Layout`]). Images are
//! read as RGB, masks as grey. Masks of two values (any two: the lower is background) are
//! binary; masks of more hold class indices `0..K` (K from `--classes`, else the largest value
//! plus one). Any size: `--image-size` resizes images bilinearly and masks by nearest
//! neighbour, else all must be of one size. The FCN halves the size twice and doubles it twice,
//! so sides must be multiples of 4.

use super::folders::{decoding_bar, read_planes};
use super::{Dataset, Split};
use crate::error::{Error, Result};
use crate::graph::{Target, MAX_PIXEL_CLASSES};
use crate::model::Shape;
use image::imageops::FilterType;
use indicatif::ProgressBar;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// How a set names its splits and pairs its files.
pub struct Layout {
    /// The training and test folders.
    pub splits: [&'static str; 2],
    pub pairing: Pairing,
    /// The side every image must have unless `--image-size` is given (else any one size).
    pub side: Option<u32>,
    /// Said after an error about the layout.
    pub hint: &'static str,
}

pub enum Pairing {
    /// `images/NAME.{png,jpg,jpeg}` with `masks/NAME.png`.
    Folders,
    /// `{image}NAME.png` with `{mask}NAME.png`, side by side.
    Prefixed { image: &'static str, mask: &'static str },
}

impl Layout {
    /// What pairs an image with its mask: the file's stem, or its name after the prefix.
    fn key(&self, p: &Path) -> String {
        match self.pairing {
            Pairing::Folders => p.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
            Pairing::Prefixed { image, mask } => {
                let n = name(p);
                n.strip_prefix(image).or_else(|| n.strip_prefix(mask)).unwrap_or(&n).to_owned()
            }
        }
    }
}

fn name(p: &Path) -> String {
    p.file_name().unwrap_or_default().to_string_lossy().into_owned()
}

/// A user's set (`--dataset masks`).
pub const FOLDERS: Layout = Layout {
    splits: ["train", "test"],
    pairing: Pairing::Folders,
    side: None,
    hint: "a masks set holds train/images/, train/masks/, test/images/ and test/masks/",
};

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn extension(p: &Path) -> String {
    p.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default()
}

/// The files of `dir` with one of `exts`, sorted; other entries go to `skipped`.
fn list(dir: &Path, exts: &[&str], skipped: &mut Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_file() && exts.contains(&extension(&p).as_str()) {
            out.push(p);
        } else {
            skipped.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The split's (image, mask) pairs in name order; files that are neither go to `skipped`.
fn pairs(dir: &Path, layout: &Layout, skipped: &mut Vec<PathBuf>) -> Result<Vec<(PathBuf, PathBuf)>> {
    let missing = |d: &Path| Error::bad_file(d, format!("is missing: {}", layout.hint));
    let key = |p: &Path| layout.key(p);
    let (imgs, msks) = match layout.pairing {
        Pairing::Folders => {
            let (images, masks) = (dir.join("images"), dir.join("masks"));
            for d in [&images, &masks] {
                if !d.is_dir() {
                    return Err(missing(d));
                }
            }
            let imgs = list(&images, &IMAGE_EXTENSIONS, skipped)?;
            if let Some(pair) = imgs.windows(2).find(|p| p[0].file_stem() == p[1].file_stem()) {
                return Err(Error::bad_file(&pair[1], "and another image differ only by extension; keep one"));
            }
            (imgs, list(&masks, &["png"], skipped)?)
        }
        Pairing::Prefixed { image, mask } => {
            if !dir.is_dir() {
                return Err(missing(dir));
            }
            let (mut imgs, mut msks) = (Vec::new(), Vec::new());
            for p in list(dir, &["png"], skipped)? {
                match name(&p) {
                    n if n.starts_with(image) => imgs.push(p),
                    n if n.starts_with(mask) => msks.push(p),
                    _ => skipped.push(p),
                }
            }
            (imgs, msks)
        }
    };
    let mask_of = |i: &Path| match layout.pairing {
        Pairing::Folders => dir.join("masks").join(format!("{}.png", key(i))),
        Pairing::Prefixed { mask, .. } => dir.join(format!("{mask}{}", key(i))),
    };
    if let Some(m) = msks.iter().find(|m| !imgs.iter().any(|i| key(i) == key(m))) {
        return Err(Error::bad_file(m, "is a mask without an image"));
    }
    let mut out = Vec::new();
    for i in imgs {
        let m = mask_of(&i);
        if !msks.contains(&m) {
            return Err(Error::bad_file(&m, format!("is missing: the mask of {}; {}", i.display(), layout.hint)));
        }
        out.push((i, m));
    }
    if out.is_empty() {
        let what = match layout.pairing {
            Pairing::Folders => "PNG or JPEG images".to_string(),
            Pairing::Prefixed { image, .. } => format!("{image}NN.png files"),
        };
        return Err(Error::bad_file(dir, format!("holds no {what}; {}", layout.hint)));
    }
    Ok(out)
}

/// One mask as grey bytes, resized by nearest neighbour if asked; its `(h, w)`.
fn read_mask(path: &Path, size: Option<u32>) -> Result<(Vec<u8>, (usize, usize))> {
    let img = image::open(path).map_err(|e| Error::bad_file(path, format!("cannot read the mask: {e}")))?;
    if img.color().has_color() {
        return Err(Error::bad_file(path, format!("is {:?}; a mask must be grey", img.color())));
    }
    let img = match size {
        Some(s) if (img.width(), img.height()) != (s, s) => img.resize_exact(s, s, FilterType::Nearest),
        _ => img,
    };
    Ok((img.to_luma8().into_raw(), (img.height() as usize, img.width() as usize)))
}

/// A split's decoded images `[3, h, w]` and masks, each with its `(h, w)`.
type Decoded = (Vec<(Vec<u8>, (usize, usize))>, Vec<(Vec<u8>, (usize, usize))>);

/// Decodes on every core, counting each pair on `bar`.
fn decode(pairs: &[(PathBuf, PathBuf)], size: Option<u32>, bar: &ProgressBar) -> Result<Decoded> {
    let both = pairs
        .par_iter()
        .map(|(i, m)| {
            let pair = (read_planes(i, 3, size)?, read_mask(m, size)?);
            bar.inc(1);
            Ok(pair)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(both.into_iter().unzip())
}

/// What the masks' values mean, from the values of the whole set and `--classes`.
fn target(levels: &mut [(u8, PathBuf)], classes: Option<usize>) -> Result<Target> {
    levels.sort_unstable();
    let values: Vec<u8> = levels.iter().map(|l| l.0).collect();
    let (top, top_file) = levels.last().cloned().expect("a set has masks");
    let too_many = |k: usize, why: &str| {
        Error::bad_file(&top_file, format!("brings the masks' values to {values:?}, {why}: at most {k} classes"))
    };
    match classes {
        None if levels.len() <= 2 => Ok(Target::Mask),
        Some(2) if levels.len() <= 2 => Ok(Target::Mask),
        Some(2) => Err(too_many(2, "more than a binary mask's two")),
        None if usize::from(top) >= MAX_PIXEL_CLASSES => Err(too_many(
            MAX_PIXEL_CLASSES,
            "which is not a binary mask and too many class indices (masks of classes hold 0, 1, …, K-1)",
        )),
        None => Ok(Target::Segments(usize::from(top) + 1)),
        Some(k) if usize::from(top) >= k => Err(Error::bad_file(
            &top_file,
            format!("holds the value {top}, out of range for --classes {k} (0 to {})", k - 1),
        )),
        Some(k) => Ok(Target::Segments(k)),
    }
}

/// The set under `dir` laid out as `layout`, at `size × size` if given; with `classes`, masks
/// hold that many classes (2: binary). Also the files passed over.
pub fn load(dir: &Path, layout: &Layout, size: Option<u32>, classes: Option<usize>) -> Result<(Dataset, Vec<PathBuf>)> {
    if !dir.is_dir() {
        return Err(Error::bad_file(dir, format!("is not a folder: {}", layout.hint)));
    }
    if let Some(k) = classes.filter(|k| !(2..=MAX_PIXEL_CLASSES).contains(k)) {
        return Err(Error::Config(format!("--classes {k}: masks hold 2 to {MAX_PIXEL_CLASSES} classes")));
    }
    let mut skipped = Vec::new();
    let [train, test] = layout.splits.map(|s| pairs(&dir.join(s), layout, &mut skipped));
    let (train, test) = (train?, test?);
    let bar = decoding_bar(train.len() + test.len());
    let (train_d, test_d) = (decode(&train, size, &bar)?, decode(&test, size, &bar)?);
    bar.finish_and_clear();
    let (h, w) = train_d.0[0].1;
    let all = train.iter().zip(train_d.0.iter().zip(&train_d.1)).chain(test.iter().zip(test_d.0.iter().zip(&test_d.1)));
    let mut levels: Vec<(u8, PathBuf)> = Vec::new();
    for ((image, mask), ((_, ihw), (m, mhw))) in all {
        if let (Some(side), None) = (layout.side, size) {
            if *ihw != (side as usize, side as usize) {
                return Err(Error::bad_file(
                    image,
                    format!(
                        "is {}x{}, expected {side}x{side} (--image-size N resizes every image to NxN)",
                        ihw.1, ihw.0
                    ),
                ));
            }
        }
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
        let mut seen = [false; 256];
        for &v in m {
            seen[usize::from(v)] = true;
        }
        for v in (0..=255u8).filter(|&v| seen[usize::from(v)]) {
            if !levels.iter().any(|l| l.0 == v) {
                levels.push((v, mask.clone()));
            }
        }
    }
    if h % 4 != 0 || w % 4 != 0 {
        return Err(Error::bad_file(
            &train[0].0,
            format!("is {w}x{h}: the FCN needs sides that are multiples of 4; give --image-size N"),
        ));
    }
    let target = target(&mut levels, classes)?;
    // Binary: the higher of two values is foreground; a single value is foreground if not 0.
    let background = if levels.len() == 2 { levels[0].0 } else { 0 };
    let value = |v: u8| if target == Target::Mask { u8::from(v > background) } else { v };
    let split = |d: &Decoded, n: usize| Split {
        x: d.0.iter().flat_map(|(px, _)| px.iter().copied()).collect(),
        y: d.1.iter().flat_map(|(m, _)| m.iter().map(|&v| value(v))).collect(),
        n,
    };
    let (train, test) = (split(&train_d, train.len()), split(&test_d, test.len()));
    Ok((Dataset { train, test, sample: Shape::new(3, h, w), target }, skipped))
}
