//! `gpu-train predict`: a Warwick checkpoint segments a folder of PNG images.

use crate::checkpoint;
use crate::data::{warwick, Dataset, Split};
use crate::error::{Error, Result};
use crate::files::write_png;
use crate::graph::Target;
use crate::model::Shape;
use crate::run::{backend_factory, check_image_size, BackendChoice};
use crate::tasks::{self, Task};
use crate::train::{Session, SessionOptions};
use std::path::{Path, PathBuf};

/// Segments every PNG in `input` with a Warwick checkpoint, writing `output/<name>.png` maps
/// (255 = gland) at each image's own size; returns how many.
pub fn predict(
    task: Task,
    model_path: &Path,
    input: &Path,
    output: &Path,
    side: u32,
    backend: BackendChoice,
) -> Result<usize> {
    if task != Task::Warwick {
        return Err(Error::Config("predict segments images: it needs --task warwick".into()));
    }
    check_image_size(task, side)?;
    let entries = std::fs::read_dir(input).map_err(|e| Error::io(input, e))?;
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(Error::bad_file(input, "holds no .png images"));
    }
    let (mut x, mut sizes, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for path in &names {
        let dims =
            image::image_dimensions(path).map_err(|e| Error::bad_file(path, format!("cannot read the PNG: {e}")))?;
        x.extend(warwick::read_image(path, Some(side), &mut notes)?);
        sizes.push(dims);
    }
    for note in notes {
        eprintln!("note: {note}");
    }
    let (s, n) = (side as usize, names.len());
    let sample = Shape::new(3, s, s);
    let split = Split { x, y: vec![0; n * s * s], n };
    let data = Dataset { train: split.clone(), test: split, sample, target: Target::Mask };
    let model = tasks::model(task, tasks::defaults(task).variant, sample);
    let init = checkpoint::match_params(model_path, &checkpoint::load(model_path)?, &model.params()?)?;
    let opts = SessionOptions {
        batch: 5,
        optimizer: tasks::defaults(task).optimizer,
        seed: 0,
        shuffle: false,
        mirrored: false,
        init: Some(init),
    };
    let (_, probs) = Session::new(&model, &data, opts, backend_factory(backend))?.predict_test()?;
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
    for (i, (path, &(w, h))) in names.iter().zip(&sizes).enumerate() {
        let map: Vec<u8> = probs[i * s * s..][..s * s].iter().map(|&p| if p > 0.5 { 255 } else { 0 }).collect();
        let map = image::GrayImage::from_raw(side, side, map).expect("side² bytes");
        let map = image::imageops::resize(&map, w, h, image::imageops::FilterType::Nearest);
        write_png(&output.join(path.file_name().expect("a file")), map)?;
    }
    Ok(n)
}
