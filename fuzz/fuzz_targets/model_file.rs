//! The model-file reader on arbitrary text: an error is fine, a panic is not; a file it reads
//! must write back to a file that reads as the same model.
#![no_main]

use gpu_train::model::file::{parse, to_toml};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(model) = parse(text, Path::new("fuzz.toml")) {
        let written = to_toml(&model, "written back");
        assert_eq!(parse(&written, Path::new("written.toml")).expect("a written model reads"), model);
        let _ = model.params();
    }
});
