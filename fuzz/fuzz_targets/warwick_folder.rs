//! The Warwick folder loader on a folder made from arbitrary bytes: the input is cut into an
//! image and a label PNG (at the position its first two bytes give) and written as
//! Train/image_01.png and label_01.png, with a valid Test/ pair beside them; the third byte
//! chooses whether a resize to 8x8 is asked for. Errors are fine; panics are not.
#![no_main]

use gpu_train::data::warwick;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpu-train-fuzz-warwick-{}", std::process::id()));
    for split in ["Train", "Test"] {
        std::fs::create_dir_all(dir.join(split)).unwrap();
    }
    image::RgbImage::new(128, 128).save(dir.join("Test/image_01.png")).unwrap();
    image::GrayImage::new(128, 128).save(dir.join("Test/label_01.png")).unwrap();
    dir
}

fuzz_target!(|data: &[u8]| {
    thread_local!(static DIR: PathBuf = folder());
    if data.len() < 3 {
        return;
    }
    let cut = (usize::from(u16::from_le_bytes([data[0], data[1]])) % (data.len() - 2)) + 3;
    let (image, label) = data[3..].split_at((cut - 3).min(data.len() - 3));
    let size = (data[2] % 2 == 0).then_some(8);
    DIR.with(|dir| {
        std::fs::write(dir.join("Train/image_01.png"), image).unwrap();
        std::fs::write(dir.join("Train/label_01.png"), label).unwrap();
        if let Ok(d) = warwick::load(Some(dir), size) {
            let side = size.unwrap_or(128) as usize;
            assert_eq!(d.train.x.len(), 3 * side * side);
            assert!(d.train.y.iter().all(|&v| v <= 1));
        }
    });
});
