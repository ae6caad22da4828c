//! The class-folder loader on a folder made from arbitrary bytes: the input after its first
//! byte is written as `a/x.png` or `a/x.jpg` (the first byte's low bit chooses), beside a valid
//! image in class `b`, split in half; the next bit asks for a resize to 8x8, the next for RGB.
//! Errors are fine; panics are not.
#![no_main]

use gpu_train::data::folders::{load, Options};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpu-train-fuzz-classes-{}", std::process::id()));
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
    }
    for i in 0..2 {
        image::GrayImage::new(8, 8).save(dir.join(format!("b/{i}.png"))).unwrap();
        image::GrayImage::new(8, 8).save(dir.join(format!("a/valid{i}.png"))).unwrap();
    }
    dir
}

fuzz_target!(|data: &[u8]| {
    thread_local!(static DIR: PathBuf = folder());
    let Some((&flags, bytes)) = data.split_first() else { return };
    let (name, other) = if flags & 1 == 0 { ("a/x.png", "a/x.jpg") } else { ("a/x.jpg", "a/x.png") };
    let o = Options {
        image_size: (flags & 2 != 0).then_some(8),
        channels: if flags & 4 != 0 { 3 } else { 1 },
        test_split: Some(0.5),
        seed: 1,
    };
    DIR.with(|dir| {
        let _ = std::fs::remove_file(dir.join(other));
        std::fs::write(dir.join(name), bytes).unwrap();
        if let Ok(set) = load(dir, o) {
            let per = set.sample.c * set.sample.h * set.sample.w;
            assert_eq!(set.train.x.len(), set.train.n * per);
            assert!(set.train.y.iter().chain(&set.test.y).all(|&l| l < 2));
        }
    });
});
