//! `--dataset masks`: image/mask folders for segmentation, any size; the Warwick PNGs laid out
//! as such a set train bit for bit as the built-in loader does; every fault named with its file.

mod common;

use common::{assert_refused, text, tmp, TempPath};
use gpu_train::data::masks::{load, FOLDERS};
use gpu_train::graph::Target;
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
    let (set, _) = load(&root, &FOLDERS, Some(32), None).unwrap();
    let (train, test, sample) = (&set.train, &set.test, set.sample);
    assert_eq!((train.n, test.n, sample.c, sample.h, sample.w), (12, 12, 3, 32, 32));
    assert_eq!(set.target, Target::Mask);
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

/// Masks of three classes (0 background, 1 a red disc, 2 a blue square): the FCN gets three
/// output channels and a softmax, learns, and reports each class; `predict` writes class maps.
#[test]
fn masks_of_three_classes_train_and_predict() {
    let root = tmp("three-classes");
    for split in ["train", "test"] {
        for d in ["images", "masks"] {
            std::fs::create_dir_all(root.join(split).join(d)).unwrap();
        }
        for i in 0..10u32 {
            let seed = i + if split == "test" { 50 } else { 0 };
            let (cx, cy) = (4 + seed * 7 % 14, 4 + seed * 5 % 14);
            let (sx, sy) = (18 + seed * 3 % 10, 16 + seed * 11 % 12);
            let class = |x: u32, y: u32| {
                if (x as i32 - cx as i32).pow(2) + (y as i32 - cy as i32).pow(2) < 20 {
                    1
                } else if x >= sx && x < sx + 6 && y >= sy && y < sy + 6 {
                    2
                } else {
                    0
                }
            };
            let noise = |x: u32, y: u32| ((x * 31 + y * 17 + seed * 7) % 50) as u8;
            let colour = [[0u8, 0, 0], [200, 30, 30], [30, 30, 200]];
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                image::Rgb(colour[class(x, y) as usize].map(|c| c.saturating_add(noise(x, y))))
            });
            let mask = image::GrayImage::from_fn(32, 32, |x, y| image::Luma([class(x, y)]));
            img.save(root.join(split).join("images").join(format!("p{i}.png"))).unwrap();
            mask.save(root.join(split).join("masks").join(format!("p{i}.png"))).unwrap();
        }
    }
    let (set, _) = load(&root, &FOLDERS, None, None).unwrap();
    assert_eq!(set.target, Target::Segments(3));
    let out = tmp("three-classes-run");
    let args = ["--task", "warwick", "--dataset", "masks", "--data", root.to_str().unwrap(), "--epochs", "80"];
    let r = bin(&[&args[..], &["--batch-size", "2", "--backend", "cpu", "--out", out.to_str().unwrap()]].concat());
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("test_mean_iou"), "{}", text(&r));
    let h = History::read(&out).unwrap();
    let (first, last) = (&h.epochs[0], h.epochs.last().unwrap());
    assert!(last.loss < 0.5 * first.loss, "{h:?}");
    assert!(last.test_mean_iou.unwrap() > 0.6 && first.test_mean_iou.unwrap() < 0.5, "{h:?}");
    let scores = std::fs::read_to_string(out.join("class_scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 4, "a header and three classes: {scores}");
    assert!(out.join("worst_1.png").is_file());

    let model = out.join("model.safetensors");
    let args = ["evaluate", "--task", "warwick", "--model", model.to_str().unwrap(), "--dataset", "masks"];
    let r = bin(&[&args[..], &["--data", root.to_str().unwrap(), "--batch-size", "2", "--backend", "cpu"]].concat());
    let want = format!("test_dice {:.4} - test_mean_iou {:.4}", last.test_metric, last.test_mean_iou.unwrap());
    assert!(text(&r).contains(&want), "evaluate gives the run's last figures, {want}: {}", text(&r));

    let maps = tmp("three-classes-maps");
    let r = bin(&[
        "predict",
        "--task",
        "warwick",
        "--model",
        model.to_str().unwrap(),
        "--input",
        root.join("test/images").to_str().unwrap(),
        "--output",
        maps.to_str().unwrap(),
        "--image-size",
        "32",
        "--backend",
        "cpu",
    ]);
    assert!(r.status.success(), "{}", text(&r));
    let map = image::open(maps.join("p0.png")).unwrap().to_luma8();
    assert!(map.pixels().all(|p| p[0] < 3), "maps hold class indices");
}

/// The data stay on the GPU while each buffer fits the budget: the run says it, and past it
/// stops before training with the size needed and the budget.
#[test]
fn the_gpu_data_budget_is_stated_and_kept() {
    let root = tmp("budget");
    mixed_set(&root, 6);
    let out = tmp("budget-run");
    let run = |budget: &str, side: &str| {
        Command::new(env!("CARGO_BIN_EXE_gpu-train"))
            .env("GPU_TRAIN_GPU_BUFFER_MIB", budget)
            .args(["--task", "warwick", "--dataset", "masks", "--data", root.to_str().unwrap(), "--epochs", "1"])
            .args(["--image-size", side, "--backend", "gpu", "--overwrite", "--out", out.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let r = run("1", "32");
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("largest buffer 0.0 MiB, within the budget of 1.0 MiB per buffer"), "{}", text(&r));
    // 6 images of 3x256x256: 1.1 MiB.
    let r = run("1", "256");
    assert!(!r.status.success());
    assert!(text(&r).contains("buffer 'train.x' needs 1.1 MiB but the budget is 1.0 MiB per buffer"), "{}", text(&r));
    let r = run("lots", "32");
    assert!(
        text(&r).contains("GPU_TRAIN_GPU_BUFFER_MIB must be a whole number of MiB ≥ 1, got \"lots\""),
        "{}",
        text(&r)
    );
}

/// Each fault: an error naming the file or folder and what is wrong.
#[test]
fn bad_mask_sets_are_named() {
    let case = |name: &str| {
        let root = TempPath::new(&format!("bad-masks-{name}"));
        mixed_set(&root, 3);
        root
    };
    let err_with = |root: &Path, size, classes| load(root, &FOLDERS, size, classes).unwrap_err().to_string();
    let err = |root: &Path, size| err_with(root, size, None);
    let root = case("sizes");
    assert!(err(&root, None).contains("where the first image is") && err(&root, None).contains("--image-size"));

    let root = case("orphan-mask");
    std::fs::copy(root.join("train/masks/s000.png"), root.join("train/masks/extra.png")).unwrap();
    assert!(err(&root, Some(16)).contains("extra.png: is a mask without an image"), "{}", err(&root, Some(16)));

    let root = case("orphan-image");
    std::fs::remove_file(root.join("test/masks/s001.png")).unwrap();
    let e = err(&root, Some(16));
    assert!(e.contains("s001.png: is missing: the mask of") && e.contains("s001.jpg"), "{e}");

    // Grey levels, not class indices: more values than a binary mask, and too many classes.
    let root = case("grey-levels");
    let (_, mask) = pair(40, 32, 0, (128, 255));
    mask.save(root.join("train/masks/s000.png")).unwrap();
    let e = err(&root, Some(16));
    assert!(e.contains("train/masks/s000.png: brings the masks' values to [1, 2, 128, 255]"), "{e}");
    assert!(e.contains("at most 64 classes"), "{e}");

    // Class indices beyond --classes, and more than two values for --classes 2.
    let root = case("classes");
    let (_, mask) = pair(40, 32, 0, (0, 3));
    mask.save(root.join("test/masks/s002.png")).unwrap();
    let e = err_with(&root, Some(16), Some(3));
    assert!(e.contains("test/masks/s002.png: holds the value 3, out of range for --classes 3 (0 to 2)"), "{e}");
    assert!(err_with(&root, Some(16), Some(2)).contains("more than a binary mask's two"));
    assert!(err_with(&root, Some(16), Some(1)).contains("--classes 1: masks hold 2 to 64 classes"));

    let root = case("unreadable");
    std::fs::write(root.join("train/images/s001.jpg"), b"not a jpeg at all").unwrap();
    let e = err(&root, Some(16));
    assert!(e.contains("train/images/s001.jpg") && e.contains("cannot read the image"), "{e}");

    let root = case("two-extensions");
    std::fs::copy(root.join("train/images/s000.png"), root.join("train/images/s000.jpeg")).unwrap();
    let e = err(&root, Some(16));
    assert!(e.contains("s000.png: and another image differ only by extension"), "{e}");

    let root = case("colour-mask");
    let (img, _) = pair(40, 32, 0, (0, 1));
    img.save(root.join("train/masks/s000.png")).unwrap();
    assert!(err(&root, Some(16)).contains("s000.png: is Rgb8; a mask must be grey"), "{}", err(&root, Some(16)));

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
        (&["--task", "warwick", "--classes", "3"], "--classes applies to --dataset masks only"),
    ]);
}
