//! `--init` loading on arbitrary bytes: the safetensors parser, then the match against the
//! CNN's parameters. Errors are fine; panics are not.
#![no_main]

use gpu_train::checkpoint::{match_params, parse};
use gpu_train::tasks::{self, Task};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    let specs = tasks::model(Task::MnistCnn, tasks::defaults(Task::MnistCnn).variant, tasks::input_shape(Task::MnistCnn))
        .params()
        .expect("the CNN has parameters");
    if let Ok(values) = parse(data, path).and_then(|t| match_params(path, &t, &specs)) {
        assert!(values.iter().zip(&specs).all(|(v, s)| v.len() == s.len()));
    }
});
