//! The IDX reader on the real files and on crafted bad ones.

mod common;

use common::TempPath;
use flate2::write::GzEncoder;
use gpu_train::data::mnist::{self, FILES};
use gpu_train::model::Shape;
use std::io::Write;
use std::path::Path;

fn gz(path: &Path, bytes: &[u8]) {
    let mut e = GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap();
}

fn idx(magic: u32, dims: &[u32], payload: usize) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
    v.extend((0..payload).map(|i| (i % 10) as u8));
    v
}

/// A data folder with small valid files: 6 training and 4 test images.
fn folder(name: &str) -> TempPath {
    let dir = TempPath::new(&format!("mnist-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, n) in [(FILES[0], 6), (FILES[2], 4)] {
        gz(&dir.join(file), &idx(2051, &[n, 28, 28], n as usize * 784));
    }
    for (file, n) in [(FILES[1], 6), (FILES[3], 4)] {
        gz(&dir.join(file), &idx(2049, &[n], n as usize));
    }
    dir
}

fn load_err(dir: &Path) -> String {
    match mnist::load(Some(dir), Shape::flat(784)) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn reads_valid_files() {
    let dir = folder("ok");
    let d = mnist::load(Some(&dir), Shape::flat(784)).unwrap();
    assert_eq!((d.train.n, d.test.n), (6, 4));
    assert_eq!(d.train.x.len(), 6 * 784);
    assert_eq!(d.test.y, vec![0, 1, 2, 3]);
}

#[test]
fn truncated_file_is_named() {
    let dir = folder("trunc");
    let mut bytes = idx(2051, &[6, 28, 28], 6 * 784);
    bytes.truncate(bytes.len() - 100);
    gz(&dir.join(FILES[0]), &bytes);
    let e = load_err(&dir);
    assert!(e.contains(FILES[0]) && e.contains("truncated") && e.contains("4704"), "{e}");
    // Cut inside the header.
    gz(&dir.join(FILES[0]), &[0, 0, 8, 3, 0]);
    let e = load_err(&dir);
    assert!(e.contains(FILES[0]) && e.contains("truncated"), "{e}");
}

#[test]
fn wrong_magic_is_named() {
    let dir = folder("magic");
    gz(&dir.join(FILES[1]), &idx(2051, &[6], 6));
    let e = load_err(&dir);
    assert!(e.contains(FILES[1]) && e.contains("magic number 2051, expected 2049"), "{e}");
}

#[test]
fn count_mismatch_is_named() {
    let dir = folder("count");
    gz(&dir.join(FILES[1]), &idx(2049, &[5], 5));
    let e = load_err(&dir);
    assert!(e.contains(FILES[1]) && e.contains("5 labels") && e.contains("6 images"), "{e}");
}

#[test]
fn huge_header_counts_allocate_nothing() {
    let dir = folder("huge");
    gz(&dir.join(FILES[0]), &idx(2051, &[4_000_000_000, 28, 28], 10));
    let e = load_err(&dir);
    assert!(e.contains(FILES[0]) && e.contains("4000000000 items"), "{e}");
    // Within the item limit but far beyond the file: caught after reading what is there.
    gz(&dir.join(FILES[0]), &idx(2051, &[9_000_000, 28, 28], 10));
    let e = load_err(&dir);
    assert!(e.contains("truncated") && e.contains("7056000000"), "{e}");
}

#[test]
fn bad_labels_and_sizes_are_named() {
    let dir = folder("labels");
    let mut bytes = idx(2049, &[6], 6);
    bytes[8 + 3] = 12;
    gz(&dir.join(FILES[1]), &bytes);
    assert!(load_err(&dir).contains("label 12 at item 3"));
    let dir = folder("size");
    gz(&dir.join(FILES[2]), &idx(2051, &[4, 32, 32], 4 * 1024));
    assert!(load_err(&dir).contains("images are 32x32 but those of"), "{}", load_err(&dir));
    gz(&dir.join(FILES[0]), &idx(2051, &[6, 32, 32], 6 * 1024));
    assert!(load_err(&dir).contains("32x32, expected 28x28"), "{}", load_err(&dir));
}

#[test]
fn not_gzip_and_trailing_data_are_named() {
    let dir = folder("gzip");
    std::fs::write(dir.join(FILES[3]), b"plain text, not gzip").unwrap();
    let e = load_err(&dir);
    assert!(e.contains(FILES[3]) && e.contains("gzip"), "{e}");
    let dir = folder("trailing");
    gz(&dir.join(FILES[3]), &idx(2049, &[4], 9));
    assert!(load_err(&dir).contains("more data"));
}

#[test]
fn missing_files_are_listed_with_their_source() {
    let dir = folder("missing");
    std::fs::remove_file(dir.join(FILES[2])).unwrap();
    let e = load_err(&dir);
    assert!(e.contains(&dir.join(FILES[2]).display().to_string()), "{e}");
    assert!(!e.contains(&dir.join(FILES[0]).display().to_string()), "only missing files are listed: {e}");
    assert!(e.contains("yann.lecun.com"), "{e}");
    // An empty root: the files are expected in its mnist/ folder.
    let empty = TempPath::new("mnist-empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let e = load_err(&empty);
    assert!(e.contains(&empty.join("mnist").join(FILES[0]).display().to_string()), "{e}");
}

#[test]
fn real_mnist_has_the_published_counts() {
    let Some(root) = common::data_dir() else {
        return;
    };
    let d = mnist::load(Some(&root), Shape::new(1, 28, 28)).unwrap();
    assert_eq!((d.train.n, d.test.n), (60000, 10000));
    let mut counts = [0usize; 10];
    d.test.y.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    let mean = d.train.x.iter().map(|&v| v as f64).sum::<f64>() / d.train.x.len() as f64;
    assert!((mean - 33.318).abs() < 1e-3, "mean pixel {mean}");
}
