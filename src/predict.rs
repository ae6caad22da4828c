//! `gpu-train predict`: a Warwick checkpoint segments a folder of PNG images; a classifier's
//! checkpoint labels a folder of PNG or JPEG images, one CSV row each.

use crate::checkpoint;
use crate::checkpoint::Tensor;
use crate::data::folders::read_planes;
use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::files::{atomic_write, write_png};
use crate::graph::Target;
use crate::model::{Act, Layer, Model, Shape};
use crate::report::pictures::predicted;
use crate::run::{backend_factory, check_image_size, model_beside, BackendChoice, TrainConfig};
use crate::tasks::{self, Task};
use crate::train::{Session, SessionOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Segments every PNG in `input` with a Warwick checkpoint, writing `output/<name>.png` maps at
/// each image's own size (a binary model's: 255 = gland; a model of classes: the class index of
/// each pixel); returns how many. The network sees `side`-pixel squares [default: the side of
/// the run's model, else 128].
pub fn segment(
    task: Task,
    model_path: &Path,
    input: &Path,
    output: &Path,
    side: Option<u32>,
    backend: BackendChoice,
) -> Result<usize> {
    let run_model = model_beside(model_path)?;
    let side = side.or(run_model.as_ref().map(|m| m.input.h as u32)).unwrap_or(128);
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
    let (mut x, mut sizes) = (Vec::new(), Vec::new());
    for path in &names {
        let (planes, _) = read_planes(path, 3, Some(side))?;
        x.extend(planes);
        sizes.push(image::image_dimensions(path).map_err(|e| Error::bad_file(path, e.to_string()))?);
    }
    let (s, n) = (side as usize, names.len());
    let sample = Shape::new(3, s, s);
    let split = Split { x, y: vec![0; n * s * s], n };
    let saved = checkpoint::load(model_path)?;
    // The run's model says what it puts out: a sigmoid's mask, or a softmax over classes.
    let (model, target) = match run_model {
        Some(m) => {
            let classes = m.shapes()?.last().map_or(1, |s| s.c);
            let softmax = m.layers.last().is_some_and(|n| n.layer == Layer::Activation(Act::Softmax));
            (m, if softmax { Target::Segments(classes) } else { Target::Mask })
        }
        None => {
            let target = match output_units(&saved) {
                1 => Target::Mask,
                k => Target::Segments(k),
            };
            (tasks::model_for(task, tasks::defaults(task).variant, sample, target), target)
        }
    };
    let probs = outputs(task, (&model, model_path, &saved), (split, sample), target, backend)?;
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
    let k = target.pixel_classes();
    for (i, (path, &(w, h))) in names.iter().zip(&sizes).enumerate() {
        let hw = s * s;
        let map = predicted(&probs[i * k.max(1) * hw..][..k.max(1) * hw], k, hw);
        // A binary map as 0 and 255; a map of classes as their indices.
        let map: Vec<u8> = if k == 0 { map.iter().map(|&v| 255 * v).collect() } else { map };
        let map = image::GrayImage::from_raw(side, side, map).expect("side² bytes");
        let map = image::imageops::resize(&map, w, h, image::imageops::FilterType::Nearest);
        write_png(&output.join(path.file_name().expect("a file")), map)?;
    }
    Ok(n)
}

/// Labels every PNG or JPEG image in `input` with a classifier's checkpoint and writes
/// `output`, a CSV of file, class and probability; returns how many. The run folder beside the
/// checkpoint gives the network's variant, the image size and channels of its data, and its
/// class names (`classes.json`); without one, the task's defaults and MNIST's 28x28 grey digits.
/// `side` overrides the image size.
pub fn classify(
    task: Task,
    model_path: &Path,
    input: &Path,
    output: &Path,
    side: Option<u32>,
    backend: BackendChoice,
) -> Result<usize> {
    let run = model_path.parent().unwrap_or(Path::new("."));
    let cfg: Option<TrainConfig> =
        std::fs::read(run.join("config.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let names: Option<Vec<String>> =
        std::fs::read(run.join("classes.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let (variant, channels) = match &cfg {
        Some(c) => (c.variant, c.channels.unwrap_or(1)),
        None => (tasks::defaults(task).variant, 1),
    };
    let side = side.or(cfg.as_ref().and_then(|c| c.image_size)).unwrap_or(28);
    let entries = std::fs::read_dir(input).map_err(|e| Error::io(input, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| ["png", "jpg", "jpeg"].iter().any(|e| x.eq_ignore_ascii_case(e))))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::bad_file(input, "holds no PNG or JPEG images"));
    }
    let saved = checkpoint::load(model_path)?;
    let run_model = model_beside(model_path)?;
    let classes = match &run_model {
        Some(m) => m.shapes()?.last().map_or(1, |s| s.len()),
        None => output_units(&saved),
    };
    let mut x = Vec::new();
    for f in &files {
        x.extend(read_planes(f, channels, Some(side))?.0);
    }
    let (s, n) = (side as usize, files.len());
    let sample = if task == Task::MnistMlp { Shape::flat(channels * s * s) } else { Shape::new(channels, s, s) };
    let split = Split { x, y: vec![0; n], n };
    let model = match run_model {
        Some(m) => m,
        None => tasks::model_for(task, variant, sample, Target::Classes(classes)),
    };
    let probs = outputs(task, (&model, model_path, &saved), (split, sample), Target::Classes(classes), backend)?;
    let mut csv = String::from("file,class,probability\n");
    for (f, p) in files.iter().zip(probs.chunks(classes)) {
        let best = (0..classes).fold(0, |b, i| if p[i] > p[b] { i } else { b });
        let name = names.as_ref().and_then(|n| n.get(best).cloned()).unwrap_or_else(|| best.to_string());
        csv += &format!("{},{},{:.6}\n", f.file_name().unwrap_or_default().to_string_lossy(), name, p[best]);
    }
    atomic_write(output, csv.as_bytes())?;
    Ok(n)
}

/// The network's outputs (probabilities) on `samples`, with the checkpoint `saved` (read from
/// `path`) loaded into `model`.
fn outputs(
    task: Task,
    (model, path, saved): (&Model, &Path, &BTreeMap<String, Tensor>),
    (samples, sample): (Split, Shape),
    target: Target,
    backend: BackendChoice,
) -> Result<Vec<f32>> {
    let init = checkpoint::match_params(path, saved, &model.saved()?)?;
    if model.input != sample {
        let run = path.with_file_name("model.toml");
        return Err(Error::Config(format!(
            "{}: the model takes {} but the images are read as {sample}: give the --image-size it was trained at",
            run.display(),
            model.input
        )));
    }
    let data = Dataset { train: samples.clone(), test: samples, sample, target };
    let opts = SessionOptions {
        batch: tasks::defaults(task).batch,
        optimizer: tasks::defaults(task).optimizer,
        seed: 0,
        shuffle: false,
        mirrored: false,
        init: Some(init),
    };
    Ok(Session::new(model, &data, opts, backend_factory(backend))?.predict_test()?.1)
}

/// The output layer's units (its bias's length): one per class, or 1 for a binary mask.
fn output_units(saved: &BTreeMap<String, Tensor>) -> usize {
    saved
        .iter()
        .filter(|(k, _)| k.ends_with(".bias"))
        .max_by_key(|(k, _)| layer_index(k))
        .map_or(1, |(_, t)| t.data.len())
}

/// The layer index of a checkpoint key (`"9.bias"` → 9).
fn layer_index(key: &str) -> usize {
    key.split('.').next().and_then(|i| i.parse().ok()).unwrap_or(0)
}
