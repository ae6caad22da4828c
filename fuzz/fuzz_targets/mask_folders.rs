//! The image/mask loader on a set made from arbitrary bytes: the input after its first byte is
//! cut in two (at the position the first byte gives) and written as `train/images/x.png` and
//! `train/masks/x.png`, beside a valid 8x8 pair in `test/`; the first byte's high bits ask for
//! a resize to 8x8 and for `--classes 3`. Errors are fine; panics are not, and a set that loads
//! holds masks of the values its target allows.
#![no_main]

use gpu_train::data::masks::{load, FOLDERS};
use gpu_train::graph::Target;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpu-train-fuzz-masks-{}", std::process::id()));
    for split in ["train", "test"] {
        for d in ["images", "masks"] {
            std::fs::create_dir_all(dir.join(split).join(d)).unwrap();
        }
    }
    image::RgbImage::new(8, 8).save(dir.join("test/images/y.png")).unwrap();
    image::GrayImage::from_fn(8, 8, |x, _| image::Luma([(x % 2) as u8])).save(dir.join("test/masks/y.png")).unwrap();
    dir
}

fuzz_target!(|data: &[u8]| {
    thread_local!(static DIR: PathBuf = folder());
    let Some((&flags, bytes)) = data.split_first() else { return };
    let cut = usize::from(flags & 0x3F) * bytes.len() / 64;
    let (image, mask) = bytes.split_at(cut);
    let size = (flags & 0x40 != 0).then_some(8);
    let classes = (flags & 0x80 != 0).then_some(3);
    DIR.with(|dir| {
        std::fs::write(dir.join("train/images/x.png"), image).unwrap();
        std::fs::write(dir.join("train/masks/x.png"), mask).unwrap();
        if let Ok((set, _)) = load(dir, &FOLDERS, size, classes) {
            let (side, y) = (set.sample.h * set.sample.w, &set.train.y);
            assert_eq!((set.train.x.len(), y.len()), (3 * side, side));
            match set.target {
                Target::Mask => assert!(y.iter().all(|&v| v <= 1)),
                Target::Segments(k) => assert!(y.iter().all(|&v| usize::from(v) < k)),
                Target::Classes(_) => panic!("a masks set has masks"),
            }
        }
    });
});
