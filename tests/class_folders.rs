//! `--dataset classes`: folders of PNG and JPEG images by class, as torchvision's ImageFolder
//! reads them; MNIST digits written as PNG folders train as a user would try it; every fault in
//! a folder named with its file.

mod common;

use common::{assert_refused, text, tmp, TempPath};
use gpu_train::data::folders::{load, Options};
use gpu_train::report::History;
use std::path::Path;
use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpu-train")).args(args).output().unwrap()
}

/// A `w x h` RGB image of class `c` of 3: its `c`-th third of columns bright, over noise.
fn picture(c: usize, (w, h): (u32, u32), seed: &mut u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, _| {
        *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (*seed >> 27) as u8;
        let v = if (x as usize * 3 / w as usize) == c { 200 + noise } else { noise };
        image::Rgb([v, v / 2, 255 - v])
    })
}

/// Three classes of `per_class` images each in `dir/<class>/`, sizes and formats mixed.
fn three_classes(dir: &Path, per_class: usize) {
    let mut seed = 5;
    for (c, name) in ["circle", "square", "star"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for i in 0..per_class {
            let size = [(20, 20), (24, 18), (16, 16)][i % 3];
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            picture(c, size, &mut seed).save(dir.join(name).join(format!("{i:03}.{ext}"))).unwrap();
        }
    }
}

#[test]
fn mnist_digits_as_png_folders_train_as_a_user_would_try_it() {
    let Some(data) = common::data_dir() else { return };
    let d = gpu_train::data::mnist::load(Some(&data), gpu_train::model::Shape::new(1, 28, 28)).unwrap();
    let root = tmp("digit-folders");
    for (split, set, n) in [("train", &d.train, 3000), ("test", &d.test, 1000)] {
        for i in 0..n {
            let dir = root.join(split).join(format!("digit{}", set.y[i]));
            std::fs::create_dir_all(&dir).unwrap();
            let img = image::GrayImage::from_raw(28, 28, set.x[i * 784..(i + 1) * 784].to_vec()).unwrap();
            img.save(dir.join(format!("{i:05}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("train/digit3/.DS_Store"), b"finder").unwrap();
    std::fs::write(root.join("test/Thumbs.db"), b"explorer").unwrap();
    let out = tmp("digit-folders-run");
    let r = bin(&[
        "--task",
        "mnist-cnn",
        "--dataset",
        "classes",
        "--data",
        root.to_str().unwrap(),
        "--epochs",
        "3",
        "--backend",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        text(&r).contains("skipped 2 files that are not images of the set") && text(&r).contains(".DS_Store"),
        "{}",
        text(&r)
    );
    let h = History::read(&out).unwrap();
    assert!(h.epochs[2].test_metric >= 0.85, "{h:?}");
    let names: Vec<String> = serde_json::from_slice(&std::fs::read(out.join("classes.json")).unwrap()).unwrap();
    assert_eq!(names, (0..10).map(|i| format!("digit{i}")).collect::<Vec<_>>());
}

#[test]
fn one_folder_is_split_by_the_seed_and_mixed_images_are_resized() {
    let root = tmp("three-classes");
    three_classes(&root, 24);
    let o = |seed| Options { image_size: Some(12), channels: 3, test_split: Some(0.25), seed };
    let (a, b, c) = (load(&root, o(1)).unwrap(), load(&root, o(1)).unwrap(), load(&root, o(2)).unwrap());
    assert_eq!(a.classes, ["circle", "square", "star"]);
    assert_eq!((a.train.n, a.test.n, a.sample.c, a.sample.h, a.sample.w), (54, 18, 3, 12, 12));
    assert!(a.test.x == b.test.x && a.test.x != c.test.x, "the split follows the seed");
    for task in ["mnist-mlp", "mnist-cnn"] {
        let out = tmp(&format!("three-classes-{task}"));
        let r = bin(&[
            "--task",
            task,
            "--dataset",
            "classes",
            "--data",
            root.to_str().unwrap(),
            "--test-split",
            "0.25",
            "--channels",
            "3",
            "--image-size",
            "12",
            "--epochs",
            "8",
            "--batch-size",
            "9",
            "--backend",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", text(&r));
        let h = History::read(&out).unwrap();
        let last = h.epochs.last().unwrap();
        assert!(last.test_metric > 0.6, "{task}: far above the 1/3 of chance: {h:?}");
        // `evaluate` reads the same test images back and gives the last epoch's figures.
        let model = out.join("model.safetensors");
        let r = bin(&[
            "evaluate",
            "--task",
            task,
            "--model",
            model.to_str().unwrap(),
            "--dataset",
            "classes",
            "--data",
            root.to_str().unwrap(),
            "--test-split",
            "0.25",
            "--seed",
            "7",
            "--channels",
            "3",
            "--image-size",
            "12",
            "--batch-size",
            "9",
            "--backend",
            "cpu",
        ]);
        let want = format!("test_loss {:.4} - test_acc {:.4}", last.test_loss, last.test_metric);
        assert!(r.status.success() && text(&r).contains(&want), "{task}: {} should contain {want}", text(&r));
        // `predict` labels a folder by the run's class names: every star, or nearly.
        let csv = out.join("stars.csv");
        let (input, output) = (root.join("star"), csv.to_str().unwrap());
        let r = bin(&[
            "predict",
            "--task",
            task,
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output,
            "--backend",
            "cpu",
        ]);
        assert!(r.status.success(), "{}", text(&r));
        let rows: Vec<String> = std::fs::read_to_string(&csv).unwrap().lines().skip(1).map(String::from).collect();
        assert_eq!(rows.len(), 24);
        let stars = rows.iter().filter(|r| r.split(',').nth(1) == Some("star")).count();
        assert!(stars >= 18 && rows[0].starts_with("000.png,"), "{task}: {rows:?}");
    }
}

/// Each fault: an error naming the folder or file and what is wrong, no panic, no run folder.
#[test]
fn bad_folders_and_flags_are_named() {
    let case = |name: &str| {
        let root = TempPath::new(&format!("bad-classes-{name}"));
        three_classes(&root, 6);
        root
    };
    let o = Options { image_size: None, channels: 1, test_split: Some(0.5), seed: 1 };
    let err = |root: &Path, o: Options| load(root, o).unwrap_err().to_string();

    let root = case("sizes");
    assert!(
        err(&root, o).contains("where the first image is") && err(&root, o).contains("--image-size"),
        "{}",
        err(&root, o)
    );
    let o = Options { image_size: Some(8), ..o };

    let root = case("empty");
    std::fs::create_dir_all(root.join("triangle")).unwrap();
    assert!(err(&root, o).contains("triangle: holds no PNG or JPEG images"), "{}", err(&root, o));

    let root = case("unreadable");
    std::fs::write(root.join("star/broken.png"), b"not a png").unwrap();
    assert!(err(&root, o).contains("broken.png: cannot read the image"), "{}", err(&root, o));

    let root = case("extension");
    std::fs::copy(root.join("star/000.png"), root.join("star/000.jpg")).unwrap();
    assert!(err(&root, o).contains("differ only by extension"), "{}", err(&root, o));

    let root = case("one-class");
    std::fs::remove_dir_all(root.join("square")).unwrap();
    std::fs::remove_dir_all(root.join("star")).unwrap();
    assert!(err(&root, o).contains("holds 1 class folders"), "{}", err(&root, o));

    let root = case("no-split");
    assert!(err(&root, Options { test_split: None, ..o }).contains("--test-split 0.2"));
    assert!(err(&root, Options { test_split: Some(1.5), ..o }).contains("--test-split must be between 0 and 1"));

    let root = TempPath::new("bad-classes-test-class");
    three_classes(&root.join("train"), 4);
    three_classes(&root.join("test"), 2);
    std::fs::rename(root.join("test/star"), root.join("test/moon")).unwrap();
    let e = err(&root, Options { test_split: None, ..o });
    assert!(e.contains("moon: is a class that the training folders do not have"), "{e}");

    let d = root.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--task", "mnist-cnn", "--dataset", "classes"], "--dataset classes needs --data DIR"),
        (&["--task", "mnist-cnn", "--dataset", "classes", "--data", d, "--channels", "2"], "--channels must be 1"),
        (&["--task", "mnist-cnn", "--test-split", "0.2"], "apply to --dataset classes only"),
        (&["--task", "warwick", "--dataset", "classes", "--data", d], "--task warwick segments images"),
        (&["--task", "mnist-cnn", "--dataset", "classes", "--data", d, "--image-size", "0"], "--image-size must be 1"),
    ];
    assert_refused(cases);
}
