//! The IDX reader on arbitrary bytes (gzipped or not), as images (first byte even) or labels: an
//! error is fine, a panic or an allocation beyond the data is not.
#![no_main]

use gpu_train::data::idx::parse_idx;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let magic = if kind % 2 == 0 { 2051 } else { 2049 };
    if let Ok((dims, payload)) = parse_idx(bytes, magic, Path::new("fuzz.idx.gz")) {
        assert_eq!(dims.iter().product::<usize>(), payload.len());
    }
});
