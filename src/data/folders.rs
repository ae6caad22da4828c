//! Image folders by class, as torchvision's `ImageFolder` reads them: `DIR/train/<class>/*` and
//! `DIR/test/<class>/*`, or `DIR/<class>/*` split by the run's seed. Class names are the folder
//! names, sorted. PNG and JPEG images are decoded on every core, converted to grey or RGB, and
//! resized to a square side if asked (bilinear); otherwise all must be of one size. A file that
//! is not an image is listed, never silently passed over.

use super::Split;
use crate::error::{Error, Result};
use crate::model::Shape;
use crate::rng::Rng;
use image::imageops::FilterType;
use image::GenericImageView;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// How to read the folders.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Resize every image to this side.
    pub image_size: Option<u32>,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// With no `train/` and `test/` folders: the fraction of each class kept for testing.
    pub test_split: Option<f32>,
    pub seed: u64,
}

/// The folders read: both splits, `[channels, h, w]` samples, and the class names by index.
#[derive(Debug)]
pub struct ClassFolders {
    pub train: Split,
    pub test: Split,
    pub sample: Shape,
    pub classes: Vec<String>,
    /// Files that are not PNG or JPEG images, passed over.
    pub skipped: Vec<PathBuf>,
}

const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The class folders of `dir`, sorted, each with its image files, sorted; files that are not
/// images go to `skipped`.
fn class_files(dir: &Path, skipped: &mut Vec<PathBuf>) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut classes = Vec::new();
    for entry in sorted_entries(dir)? {
        if !entry.is_dir() {
            skipped.push(entry);
            continue;
        }
        let name = entry.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let mut files = Vec::new();
        for f in sorted_entries(&entry)? {
            let ext = f.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            if f.is_file() && IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                files.push(f);
            } else {
                skipped.push(f);
            }
        }
        if files.is_empty() {
            return Err(Error::bad_file(&entry, "holds no PNG or JPEG images: a class folder needs at least one"));
        }
        if let Some(pair) = files.windows(2).find(|p| p[0].file_stem() == p[1].file_stem()) {
            return Err(Error::bad_file(
                &pair[1],
                format!(
                    "and {} differ only by extension; keep one",
                    pair[0].file_name().unwrap_or_default().to_string_lossy()
                ),
            ));
        }
        classes.push((name, files));
    }
    if classes.len() < 2 {
        return Err(Error::bad_file(
            dir,
            format!("holds {} class folders; a classifier needs at least two (DIR/<class>/*.png)", classes.len()),
        ));
    }
    Ok(classes)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out =
        read.map(|e| e.map(|e| e.path())).collect::<std::io::Result<Vec<_>>>().map_err(|e| Error::io(dir, e))?;
    out.sort();
    Ok(out)
}

/// Reads the folders under `dir` as `o` says.
pub fn load(dir: &Path, o: Options) -> Result<ClassFolders> {
    if !dir.is_dir() {
        return Err(Error::bad_file(dir, "is not a folder: --dataset classes needs a folder of class folders"));
    }
    let mut skipped = Vec::new();
    let (train, test) = match (dir.join("train").is_dir(), dir.join("test").is_dir(), o.test_split) {
        (true, true, None) => {
            (class_files(&dir.join("train"), &mut skipped)?, class_files(&dir.join("test"), &mut skipped)?)
        }
        (true, true, Some(_)) => {
            return Err(Error::Config(format!(
                "--test-split: {} has train/ and test/ folders already; leave it out",
                dir.display()
            )))
        }
        (_, _, Some(f)) => split(class_files(dir, &mut skipped)?, f, o.seed)?,
        (_, _, None) => {
            return Err(Error::bad_file(
                dir,
                "holds no train/ and test/ folders: lay it out as train/<class>/ and test/<class>/, or give \
                 --test-split 0.2 to test on a fifth of each DIR/<class>/ folder",
            ))
        }
    };
    let classes: Vec<String> = train.iter().map(|(name, _)| name.clone()).collect();
    if classes.len() > 256 {
        return Err(Error::bad_file(dir, format!("holds {} classes; at most 256 are supported", classes.len())));
    }
    let labelled = |set: Vec<(String, Vec<PathBuf>)>, which: &str| -> Result<Vec<(PathBuf, u8)>> {
        let mut out = Vec::new();
        for (name, files) in set {
            let Some(label) = classes.iter().position(|c| *c == name) else {
                return Err(Error::bad_file(
                    dir.join(which).join(&name),
                    format!("is a class that the training folders do not have ({})", classes.join(", ")),
                ));
            };
            out.extend(files.into_iter().map(|f| (f, label as u8)));
        }
        Ok(out)
    };
    let (train, test) = (labelled(train, "train")?, labelled(test, "test")?);
    let bar = decoding_bar(train.len() + test.len());
    let (train, test) = (decode(&train, o, &bar)?, decode(&test, o, &bar)?);
    bar.finish_and_clear();
    let sizes = [&train, &test].map(|s| s.1);
    let (h, w) = sizes[0];
    if let Some((file, (fh, fw))) = [&train, &test].iter().flat_map(|s| s.2.iter()).find(|(_, hw)| *hw != (h, w)) {
        return Err(Error::bad_file(
            file,
            format!("is {fw}x{fh} where the first image is {w}x{h}: give --image-size N to resize every image to NxN"),
        ));
    }
    Ok(ClassFolders { train: train.0, test: test.0, sample: Shape::new(o.channels, h, w), classes, skipped })
}

/// Each class's files cut into training and test parts: `fraction` of each (at least one image)
/// tested, chosen with `seed`.
type Parts = (Vec<(String, Vec<PathBuf>)>, Vec<(String, Vec<PathBuf>)>);

fn split(classes: Vec<(String, Vec<PathBuf>)>, fraction: f32, seed: u64) -> Result<Parts> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::Config(format!("--test-split must be between 0 and 1, got {fraction}")));
    }
    let mut rng = Rng::new(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (name, mut files) in classes {
        if files.len() < 2 {
            return Err(Error::Config(format!("--test-split: class {name:?} has one image; it needs two to split")));
        }
        rng.shuffle(&mut files);
        let n_test = ((files.len() as f32 * fraction).round() as usize).clamp(1, files.len() - 1);
        let rest = files.split_off(n_test);
        test.push((name.clone(), files));
        train.push((name, rest));
    }
    Ok((train, test))
}

/// The images decoded in parallel: the split, the size of the first, and each one's size.
#[allow(clippy::type_complexity)]
fn decode(
    files: &[(PathBuf, u8)],
    o: Options,
    bar: &indicatif::ProgressBar,
) -> Result<(Split, (usize, usize), Vec<(PathBuf, (usize, usize))>)> {
    let images: Vec<(Vec<u8>, (usize, usize))> = files
        .par_iter()
        .map(|(path, _)| {
            let got = read_planes(path, o.channels, o.image_size);
            bar.inc(1);
            got
        })
        .collect::<Result<_>>()?;
    let first = images.first().map_or((0, 0), |i| i.1);
    let sizes = files.iter().zip(&images).map(|((p, _), (_, hw))| (p.clone(), *hw)).collect();
    let x = images.iter().flat_map(|(px, _)| px.iter().copied()).collect();
    let y = files.iter().map(|(_, l)| *l).collect();
    Ok((Split { x, y, n: files.len() }, first, sizes))
}

/// A progress bar for decoding `files` files (drawn only on a terminal).
pub(crate) fn decoding_bar(files: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(files as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("decoding images [{bar:30}] {pos}/{len} {elapsed_precise}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// One image as `[channels, h, w]` bytes (1: grey, 3: RGB), resized bilinearly to `size x size`
/// if asked; its `(h, w)`.
pub(crate) fn read_planes(path: &Path, channels: usize, size: Option<u32>) -> Result<(Vec<u8>, (usize, usize))> {
    let img = image::open(path).map_err(|e| Error::bad_file(path, format!("cannot read the image: {e}")))?;
    let img = match size {
        Some(s) if img.dimensions() != (s, s) => img.resize_exact(s, s, FilterType::Triangle),
        _ => img,
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let planes = if channels == 1 {
        img.to_luma8().into_raw()
    } else {
        let rgb = img.to_rgb8().into_raw();
        (0..3).flat_map(|c| rgb.iter().skip(c).step_by(3).copied().collect::<Vec<_>>()).collect()
    };
    Ok((planes, (h, w)))
}
