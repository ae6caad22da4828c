//! `--dataset masks`: image/mask folders for segmentation, any size; the Warwick PNGs laid out
//! as such a set train bit for bit as the built-in loader does; every fault named with its file.

mod common;

use common::{assert_refused, text, tmp, TempPath};
use gpu_train::data::masks::load;
use gpu_train::report::History;
use std::path::Path;
use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpu-train")).args(args).output().unwrap()
}

/// A `w x h` picture with a bright disc, and its mask (`lo` outside, `hi` inside).
fn pair(w: u32, h: u32, seed: u32, (lo, hi): (u8, u8)) -> (image::RgbImage, image::GrayImage) {
    let (cx, cy, r) = ((seed * 7 % w) as f32, (seed * 13 % h) as f32, (w.min(h) / 3) as f32);
    let inside = |x: u32, y: u32| (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) < r * r;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let noise = ((x * 31 + y * 17 + seed * 7) % 40) as u8;
        if inside(x, y) {
            image::Rgb([180 + noise, 60, 90])
        } else {
            image::Rgb([noise, 40 + noise, 20])
        }
    });
    let mask = image::GrayImage::from_fn(w, h, |x, y| image::Luma([if inside(x, y) { hi } else { lo }]));
    (img, mask)
}

/// `n` pairs per split of mixed sizes, images as PNG and JPEG, masks of values 1 and 2.
fn mixed_set(root: &Path, n: u32) {
    for split in ["train", "test"] {
        for d in ["images", "masks"] {
            std::fs::create_dir_all(root.join(split).join(d)).unwrap();
        }
        for i in 0..n {
            let (w, h) = [(40, 32), (36, 36), (48, 40)][i as usize % 3];
            let (img, mask) = pair(w, h, i + if split == "test" { 100 } else { 0 }, (1, 2));
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(root.join(split).join("images").join(format!("s{i:03}.{ext}"))).unwrap();
            mask.save(root.join(split).join("masks").join(format!("s{i:03}.png"))).unwrap();
        }
    }
}

#[test]
fn warwick_as_a_masks_set_trains_bit_for_bit_as_the_built_in_set() {
    let Some(data) = common::data_dir() else { return };
    let root = tmp("warwick-as-masks");
    for (from, to) in [("Train", "train"), ("Test", "test")] {
        for d in ["images", "masks"] {
            std::fs::create_dir_all(root.join(to).join(d)).unwrap();
        }
        for e in std::fs::read_dir(data.join("warwick").join(from)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_prefix("image_") {
                std::fs::copy(e.path(), root.join(to).join("images").join(format!("g{n}"))).unwrap();
                std::fs::copy(
                    e.path().with_file_name(format!("label_{n}")),
                    root.join(to).join("masks").join(format!("g{n}")),
                )
                .unwrap();
            }
        }
    }
    let (a, b) = (tmp("masks-run"), tmp("warwick-run"));
    let common = ["--task", "warwick", "--epochs", "2", "--train-limit", "10", "--test-limit", "6", "--backend", "cpu"];
    let r =
        bin(&[&common[..], &["--dataset", "masks", "--data", root.to_str().unwrap(), "--out", a.to_str().unwrap()]]
            .concat());
    assert!(r.status.success(), "{}", text(&r));
    let r = bin(&[&common[..], &["--data", data.to_str().unwrap(), "--out", b.to_str().unwrap()]].concat());
    assert!(r.status.success(), "{}", text(&r));
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&a) == model(&b), "the trained weights differ");
}

#[test]
fn image_mask_pairs_of_mixed_sizes_train() {
    let root = tmp("mixed-masks");
    mixed_set(&root, 12);
    let (train, test, sample, _) = load(&root, Some(32)).unwrap();
    assert_eq!((train.n, test.n, sample.c, sample.h, sample.w), (12, 12, 3, 32, 32));
    assert!(train.y.iter().all(|&v| v <= 1) && train.y.contains(&1) && train.y.contains(&0));
    let out = tmp("mixed-masks-run");
    let r = bin(&[
        "--task",
        "warwick",
        "--dataset",
        "masks",
        "--data",
        root.to_str().unwrap(),
        "--image-size",
        "32",
        "--epochs",
        "12",
        "--batch-size",
        "4",
        "--backend",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    let h = History::read(&out).unwrap();
    let (first, last) = (&h.epochs[0], h.epochs.last().unwrap());
    assert!(last.loss < first.loss && last.test_metric > first.test_metric, "{h:?}");
    assert!(out.join("worst_1.png").is_file());
}

/// Each fault: an error naming the file or folder and what is wrong.
#[test]
fn bad_mask_sets_are_named() {
    let case = |name: &str| {
        let root = TempPath::new(&format!("bad-masks-{name}"));
        mixed_set(&root, 3);
        root
    };
    let err = |root: &Path, size| load(root, size).unwrap_err().to_string();
    let root = case("sizes");
    assert!(err(&root, None).contains("where the first image is") && err(&root, None).contains("--image-size"));

    let root = case("orphan-mask");
    std::fs::copy(root.join("train/masks/s000.png"), root.join("train/masks/extra.png")).unwrap();
    assert!(err(&root, Some(16)).contains("extra.png: is a mask without an image"), "{}", err(&root, Some(16)));

    let root = case("orphan-image");
    std::fs::remove_file(root.join("test/masks/s001.png")).unwrap();
    assert!(err(&root, Some(16)).contains("s001.jpg: has no mask s001.png"), "{}", err(&root, Some(16)));

    let root = case("three-values");
    let (_, mask) = pair(40, 32, 0, (1, 3));
    mask.save(root.join("train/masks/s000.png")).unwrap();
    assert!(err(&root, Some(16)).contains("a binary mask holds two values"), "{}", err(&root, Some(16)));

    let root = case("mask-size");
    let (_, mask) = pair(20, 16, 0, (1, 2));
    mask.save(root.join("train/masks/s000.png")).unwrap();
    assert!(err(&root, None).contains("is 20x16, its image 40x32"), "{}", err(&root, None));

    let root = TempPath::new("bad-masks-side");
    mixed_set(&root, 1);
    for split in ["train", "test"] {
        let (img, mask) = pair(42, 30, 1, (0, 255));
        img.save(root.join(split).join("images/s000.png")).unwrap();
        mask.save(root.join(split).join("masks/s000.png")).unwrap();
    }
    assert!(err(&root, None).contains("is 42x30: the FCN needs sides that are multiples of 4"), "{}", err(&root, None));

    let root = case("layout");
    std::fs::remove_dir_all(root.join("test/images")).unwrap();
    assert!(err(&root, Some(16)).contains("test/images: is missing"), "{}", err(&root, Some(16)));

    let d = root.to_str().unwrap();
    assert_refused(&[
        (&["--task", "mnist-cnn", "--dataset", "masks", "--data", d], "use --task warwick"),
        (&["--task", "warwick", "--dataset", "masks", "--image-size", "30"], "multiple of 4"),
    ]);
}
