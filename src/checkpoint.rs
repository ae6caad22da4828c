//! Checkpoints as safetensors: f32 tensors in PyTorch layouts under `torch.nn.Sequential` keys.

use crate::error::{Error, Result};
use crate::files::atomic_write;
use crate::model::ParamSpec;
use crate::report::History;
use crate::train::Progress;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A named f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Writes `tensors` (key, shape, values) atomically.
pub fn save(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    save_with(path, tensors, None)
}

/// [`save`] with text metadata in the safetensors header.
pub fn save_with(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).map(|v| (k.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    let out =
        safetensors::serialize(views, &metadata).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    atomic_write(path, &out)
}

/// The text metadata of a safetensors file (empty when it has none).
pub fn load_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Every f32 tensor of a safetensors file.
pub fn load(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    parse(&std::fs::read(path).map_err(|e| Error::io(path, e))?, path)
}

/// [`load`] on the file's bytes; `path` names the source in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (key, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::bad_file(path, format!("tensor {key:?} is {:?}, expected F32", view.dtype())));
        }
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(key, Tensor { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// The values of `params` from `tensors`, or one error listing every missing, extra or
/// wrongly shaped key.
pub fn match_params(path: &Path, tensors: &BTreeMap<String, Tensor>, params: &[ParamSpec]) -> Result<Vec<Vec<f32>>> {
    let mut problems = Vec::new();
    for p in params {
        match tensors.get(&p.key) {
            None => problems.push(format!("missing {:?} (shape {:?})", p.key, p.shape)),
            Some(t) if t.shape != p.shape => {
                problems.push(format!("{:?} has shape {:?}, the model needs {:?}", p.key, t.shape, p.shape))
            }
            Some(_) => {}
        }
    }
    for key in tensors.keys().filter(|k| !params.iter().any(|p| &p.key == *k)) {
        problems.push(format!("unexpected {key:?} (not a parameter of this model)"));
    }
    if !problems.is_empty() {
        return Err(Error::Checkpoint(format!(
            "{} does not fit the model:\n  {}",
            path.display(),
            problems.join("\n  ")
        )));
    }
    Ok(params.iter().map(|p| tensors[&p.key].data.clone()).collect())
}

/// What a run's checkpoint holds besides its tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState {
    /// Epochs finished (the epoch after them may be partly done: see `progress.batch`).
    pub epochs_done: usize,
    pub progress: Progress,
    pub history: History,
}

const FORMAT: &str = "gpu-train run checkpoint 1";

/// Writes a run's checkpoint: every tensor of the session and its [`RunState`], in one file
/// written to a temporary name and renamed, so that it is whole or absent.
pub fn save_run(path: &Path, tensors: &BTreeMap<String, Tensor>, state: &RunState) -> Result<()> {
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("epochs_done".to_string(), state.epochs_done.to_string()),
        ("progress".to_string(), serde_json::to_string(&state.progress).expect("progress serialises")),
        ("history".to_string(), serde_json::to_string(&state.history).expect("history serialises")),
    ]);
    save_with(path, tensors, Some(meta))
}

/// Reads a run's checkpoint written by [`save_run`].
pub fn load_run(path: &Path) -> Result<(RunState, BTreeMap<String, Tensor>)> {
    let meta = load_metadata(path)?;
    let bad = |what: &str| Error::bad_file(path, format!("not a gpu-train run checkpoint: {what}"));
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad("no format mark"));
    }
    let field = |k: &str| meta.get(k).ok_or_else(|| bad(&format!("no {k}")));
    let state = RunState {
        epochs_done: field("epochs_done")?.parse().map_err(|_| bad("epochs_done"))?,
        progress: serde_json::from_str(field("progress")?).map_err(|e| bad(&format!("progress: {e}")))?,
        history: serde_json::from_str(field("history")?).map_err(|e| bad(&format!("history: {e}")))?,
    };
    Ok((state, load(path)?))
}
