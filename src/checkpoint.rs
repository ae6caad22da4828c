//! Checkpoints as safetensors: f32 tensors in PyTorch layouts under `torch.nn.Sequential` keys.

use crate::error::{Error, Result};
use crate::files::atomic_write;
use crate::model::ParamSpec;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// A named f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Writes `tensors` (key, shape, values) atomically.
pub fn save(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
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
        safetensors::serialize(views, &None).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    atomic_write(path, &out)
}

/// Every f32 tensor of a safetensors file.
pub fn load(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
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
