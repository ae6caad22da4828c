//! `--dataset idx`: any IDX classification set laid out like MNIST, gzipped or not, its image
//! size and classes taken from the files; MNIST's own bytes as such a set train bit for bit as
//! the built-in loader does; and every fault in a set named with its file.

mod common;

use common::{assert_refused, text, tmp, TempPath};
use flate2::write::GzEncoder;
use gpu_train::data::idx::{load_dir, read_idx, STEMS};
use gpu_train::report::History;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpu-train")).args(args).output().unwrap()
}

/// An IDX file's bytes: magic, dimensions, payload.
fn idx(magic: u32, dims: &[usize], payload: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|&d| v.extend((d as u32).to_be_bytes()));
    v.extend(payload);
    v
}

fn write(path: &Path, bytes: &[u8], gzip: bool) {
    if gzip {
        let mut e =
            GzEncoder::new(std::fs::File::create(path.with_extension("gz")).unwrap(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

/// A set of `classes` classes of `h x w` images in `dir`: class `c` lights up the `c`-th band
/// of columns, over noise. Training files gzipped, test files plain.
fn synthetic_set(dir: &Path, (train, test): (usize, usize), (h, w): (usize, usize), classes: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = 7u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        seed >> 24
    };
    for (i, n) in [(0, train), (2, test)] {
        let labels: Vec<u8> = (0..n).map(|_| (next() as usize % classes) as u8).collect();
        let mut images = Vec::new();
        for &l in &labels {
            for p in 0..h * w {
                let band = (p % w) * classes / w == l as usize;
                images.push(if band { 200 + (next() % 56) as u8 } else { (next() % 60) as u8 });
            }
        }
        write(&dir.join(STEMS[i]), &idx(2051, &[n, h, w], &images), i == 0);
        write(&dir.join(STEMS[i + 1]), &idx(2049, &[n], &labels), i == 0);
    }
}

#[test]
fn mnist_as_an_idx_set_trains_bit_for_bit_as_the_built_in_set() {
    let Some(data) = common::data_dir() else { return };
    let set = tmp("idx-mnist");
    std::fs::create_dir_all(&set).unwrap();
    for (i, n) in [(0, 500), (2, 200)] {
        let (dims, x) = read_idx(&data.join("mnist").join(format!("{}.gz", STEMS[i])), 2051).unwrap();
        let (_, y) = read_idx(&data.join("mnist").join(format!("{}.gz", STEMS[i + 1])), 2049).unwrap();
        write(&set.join(STEMS[i]), &idx(2051, &[n, dims[1], dims[2]], &x[..n * 784]), false);
        write(&set.join(STEMS[i + 1]), &idx(2049, &[n], &y[..n]), false);
    }
    let (a, b) = (tmp("idx-run"), tmp("built-in-run"));
    let common = ["--task", "mnist-cnn", "--epochs", "2", "--backend", "cpu", "--seed", "3", "--dropout", "0.3"];
    let r =
        bin(&[&common[..], &["--dataset", "idx", "--data", set.to_str().unwrap(), "--out", a.to_str().unwrap()]]
            .concat());
    assert!(r.status.success(), "{}", text(&r));
    let limits = ["--train-limit", "500", "--test-limit", "200"];
    let r = bin(&[&common[..], &limits, &["--data", data.to_str().unwrap(), "--out", b.to_str().unwrap()]].concat());
    assert!(r.status.success(), "{}", text(&r));
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&a) == model(&b), "the trained weights differ");
    let figures = |d: &Path| {
        History::read(d)
            .unwrap()
            .epochs
            .iter()
            .map(|e| (e.loss, e.metric, e.test_loss, e.test_metric))
            .collect::<Vec<_>>()
    };
    assert_eq!(figures(&a), figures(&b));
}

#[test]
fn a_set_of_another_size_and_class_count_trains() {
    let set = tmp("idx-three-classes");
    synthetic_set(&set, (300, 90), (16, 12), 3);
    let loaded = load_dir(&set).unwrap();
    assert_eq!((loaded.h, loaded.w, loaded.classes, loaded.train.n, loaded.test.n), (16, 12, 3, 300, 90));
    for task in ["mnist-cnn", "mnist-mlp"] {
        let out = tmp(&format!("idx-three-{task}"));
        let args = ["--task", task, "--dataset", "idx", "--data", set.to_str().unwrap(), "--epochs", "3"];
        let r = bin(&[&args[..], &["--batch-size", "30", "--backend", "cpu", "--out", out.to_str().unwrap()]].concat());
        assert!(r.status.success(), "{}", text(&r));
        let h = History::read(&out).unwrap();
        let (first, last) = (&h.epochs[0], h.epochs.last().unwrap());
        assert!(last.loss < first.loss && last.test_metric > 0.9, "{task}: {h:?}");
        let confusion = std::fs::read_to_string(out.join("confusion.csv")).unwrap();
        assert_eq!(confusion.lines().count(), 4, "3 classes and a header: {confusion}");
    }
}

/// Each fault: an error naming the file (or folder) and what is wrong, no panic.
#[test]
fn bad_sets_are_named() {
    let base = |name: &str| {
        let dir = TempPath::new(&format!("idx-bad-{name}"));
        synthetic_set(&dir, (20, 10), (8, 8), 2);
        dir
    };
    let err = |dir: &Path| load_dir(dir).unwrap_err().to_string();

    let dir = base("missing");
    std::fs::remove_file(dir.join(format!("{}.gz", STEMS[1]))).unwrap();
    assert!(err(&dir).contains("train-labels-idx1-ubyte (or train-labels-idx1-ubyte.gz) is missing"), "{}", err(&dir));

    let dir = base("both");
    std::fs::copy(dir.join(STEMS[2]), dir.join(format!("{}.gz", STEMS[2]))).unwrap();
    assert!(err(&dir).contains("differing only by extension"), "{}", err(&dir));

    let dir = base("count");
    write(&dir.join(STEMS[3]), &idx(2049, &[9], &[0; 9]), false);
    assert!(err(&dir).contains("holds 9 labels") && err(&dir).contains("10 images"), "{}", err(&dir));

    let dir = base("size");
    write(&dir.join(STEMS[2]), &idx(2051, &[10, 8, 9], &[0; 720]), false);
    assert!(err(&dir).contains("images are 8x9 but those of") && err(&dir).contains("are 8x8"), "{}", err(&dir));

    let dir = base("one-class");
    write(&dir.join(STEMS[1]), &idx(2049, &[20], &[0; 20]), true);
    write(&dir.join(STEMS[3]), &idx(2049, &[10], &[0; 10]), false);
    assert!(err(&dir).contains("at least two classes"), "{}", err(&dir));

    let dir = base("not-gzip");
    std::fs::write(dir.join(format!("{}.gz", STEMS[0])), b"plain text").unwrap();
    assert!(err(&dir).contains("not a gzip file") && err(&dir).contains(STEMS[0]), "{}", err(&dir));

    let dir = base("zero-side");
    write(&dir.join(STEMS[2]), &idx(2051, &[10, 0, 8], &[]), false);
    assert!(err(&dir).contains("images are 0x8"), "{}", err(&dir));

    let dir = base("flags");
    let d = dir.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--task", "warwick", "--dataset", "idx", "--data", d], "--task warwick segments images"),
        (&["--task", "mnist-mlp", "--dataset", "idx"], "--dataset idx needs --data DIR"),
        (&["--task", "mnist-mlp", "--dataset", "idx", "--data", "/nonexistent"], "is not a folder"),
        (&["--task", "mnist-mlp", "--dataset", "csv", "--data", d], "invalid value 'csv' for '--dataset"),
    ];
    assert_refused(cases);
}
