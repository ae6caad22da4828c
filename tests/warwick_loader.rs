//! The Warwick loader on the real images and on crafted bad folders.

mod common;

use common::TempPath;
use gpu_train::data::warwick;
use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use std::path::Path;

/// A data folder with `n` valid pairs in Train/ and Test/.
fn folder(name: &str, n: usize) -> TempPath {
    let dir = TempPath::new(&format!("warwick-{name}"));
    for split in ["Train", "Test"] {
        std::fs::create_dir_all(dir.join(split)).unwrap();
        for i in 1..=n {
            RgbImage::from_fn(128, 128, |x, y| Rgb([x as u8, y as u8, 0]))
                .save(dir.join(split).join(format!("image_{i:02}.png")))
                .unwrap();
            label(&dir, split, i, |x, _| if x < 32 { 255 } else { 0 });
        }
    }
    dir
}

fn label(dir: &Path, split: &str, i: usize, f: impl Fn(u32, u32) -> u8) {
    GrayImage::from_fn(128, 128, |x, y| Luma([f(x, y)]))
        .save(dir.join(split).join(format!("label_{i:02}.png")))
        .unwrap();
}

fn load_err(dir: &Path) -> String {
    match warwick::load(Some(dir), None) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reads_valid_folders_as_chw_and_binary_masks() {
    let dir = folder("ok", 2);
    let d = warwick::load(Some(&dir), None).unwrap();
    assert_eq!((d.train.n, d.test.n), (2, 2));
    // Channel-first: the red plane holds x, the green plane y.
    assert_eq!(d.train.x[5], 5);
    assert_eq!(d.train.x[128 * 128 + 3 * 128], 3);
    assert_eq!(d.train.y[..33], [[1u8; 32].as_slice(), &[0]].concat());
}

#[test]
fn missing_label_is_named() {
    let dir = folder("nolabel", 2);
    std::fs::remove_file(dir.join("Test/label_02.png")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("Test/label_02.png") && e.contains("missing"), "{e}");
}

#[test]
fn wrong_size_is_named() {
    let dir = folder("size", 1);
    RgbImage::new(64, 96).save(dir.join("Train/image_01.png")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("Train/image_01.png") && e.contains("64x96, expected 128x128"), "{e}");
    assert!(e.contains("--image-size"), "the message says how to resize: {e}");
}

/// With a size asked for, images of any size are resized bilinearly and labels by nearest
/// neighbour: a 64x96 image becomes 32x32, and a label's two levels stay exactly 0 and 1.
#[test]
fn image_size_resizes_images_bilinearly_and_labels_by_nearest() {
    let dir = folder("resize", 1);
    RgbImage::from_fn(64, 96, |x, _| Rgb([if x < 32 { 0 } else { 200 }, 100, 0]))
        .save(dir.join("Train/image_01.png"))
        .unwrap();
    GrayImage::from_fn(64, 96, |x, _| Luma([if x % 3 == 0 { 255 } else { 0 }]))
        .save(dir.join("Train/label_01.png"))
        .unwrap();
    let d = warwick::load(Some(&dir), Some(32)).unwrap();
    assert_eq!((d.sample.c, d.sample.h, d.sample.w), (3, 32, 32));
    assert_eq!(d.train.x.len(), 3 * 32 * 32);
    let red_row = &d.train.x[..32];
    assert_eq!((red_row[0], red_row[31]), (0, 200), "the flat halves keep their values: {red_row:?}");
    assert!(red_row[15..17].iter().any(|&v| v > 0 && v < 200), "bilinear blends at the edge: {red_row:?}");
    assert!(d.train.x[32 * 32..2 * 32 * 32].iter().all(|&v| v == 100), "green is flat");
    assert!(d.train.y.iter().all(|&v| v <= 1) && d.train.y.contains(&1) && d.train.y.contains(&0));
    // The 128x128 test images are resized too.
    assert_eq!(d.test.x.len(), 3 * 32 * 32);
}

#[test]
fn rgba_is_converted() {
    let dir = folder("rgba", 1);
    RgbaImage::from_pixel(128, 128, Rgba([10, 20, 0, 255])).save(dir.join("Train/image_01.png")).unwrap();
    let d = warwick::load(Some(&dir), None).unwrap();
    assert_eq!((d.train.x[0], d.train.x[128 * 128]), (10, 20));
}

#[test]
fn three_level_label_is_refused_with_its_values() {
    let dir = folder("levels", 1);
    label(&dir, "Train", 1, |x, _| [0, 128, 255][(x % 3) as usize]);
    let e = load_err(&dir);
    assert!(e.contains("Train/label_01.png") && e.contains("[0, 128, 255]"), "{e}");
    // Two levels in one label, two others in the rest: four over the set.
    label(&dir, "Train", 1, |x, _| if x < 5 { 100 } else { 200 });
    assert!(load_err(&dir).contains("[0, 100, 200, 255]"), "{}", load_err(&dir));
}

#[test]
fn empty_or_wrong_layout_is_explained() {
    let dir = folder("empty", 0);
    let e = load_err(&dir);
    assert!(e.contains("Train") && e.contains("no image_NN.png") && e.contains("expected layout"), "{e}");
    let bare = TempPath::new("warwick-bare");
    std::fs::create_dir_all(&bare).unwrap();
    let e = load_err(&bare);
    assert!(e.contains(&bare.join("warwick").join("Train").display().to_string()) && e.contains("Source:"), "{e}");
}

#[test]
fn real_warwick_has_the_published_statistics() {
    let Some(root) = common::data_dir() else { return };
    let d = warwick::load(Some(&root), None).unwrap();
    assert_eq!((d.train.n, d.test.n), (85, 60));
    let frac = |y: &[u8]| y.iter().map(|&v| v as f64).sum::<f64>() / y.len() as f64;
    assert!((frac(&d.train.y) - 0.5023).abs() < 1e-4, "train gland fraction {}", frac(&d.train.y));
    assert!((frac(&d.test.y) - 0.4946).abs() < 1e-4, "test gland fraction {}", frac(&d.test.y));
    // Blue is 0 everywhere.
    let hw = 128 * 128;
    assert!(d.train.x.chunks(3 * hw).all(|s| s[2 * hw..].iter().all(|&v| v == 0)));
}

/// The gather op's mirrored indices: index j ≥ n takes sample j - n flipped left to right, for
/// images (scaled) and masks (binarised) alike.
#[test]
fn gather_mirrors_samples_on_the_backend() {
    use gpu_train::backend::Backend;
    use gpu_train::graph::Op;
    use gpu_train::model::Shape;
    let shape = Shape::new(2, 2, 3);
    let data: Vec<u8> = (0..2 * 12).map(|v| v as u8 * 10).collect();
    let mut r = common::Rig::default();
    let (d, index, out) = (r.u8(&data), r.u32(&[3, 0]), r.zeros(2 * 12));
    let mut be = r.cpu();
    let op = |binarize| Op::Gather { data: d, index, out, shape, scale: 0.1, binarize, mirrored: 2 };
    common::run(&mut be, &[op(false)], 2);
    let got = be.download_f32(out).unwrap();
    // Sample 1 (values 12..24), each row of 3 reversed; then sample 0 as is.
    let want: Vec<f32> = [14, 13, 12, 17, 16, 15, 20, 19, 18, 23, 22, 21]
        .iter()
        .chain(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
        .map(|&v| v as f32)
        .collect();
    common::assert_close("flip", &got, &want, 1e-6, 0.0);
    common::run(&mut be, &[op(true)], 2);
    assert_eq!(be.download_f32(out).unwrap()[12], 0.0, "0 stays background");
    assert_eq!(be.download_f32(out).unwrap()[13], 1.0);
}
