//! A model as PyTorch source: `class Model(torch.nn.Module)`, whose `state_dict` keys are this
//! model's checkpoint keys, so a checkpoint loads with `load_state_dict(strict=True)`.

use super::{Act, Layer, Model};
use crate::error::Result;
use std::fmt::Write;

/// The Python source of `model`'s PyTorch twin. Its `forward` returns the logits: what the last
/// layer (the loss's softmax or sigmoid) takes.
pub fn export(model: &Model, title: &str) -> Result<String> {
    let shapes = model.shapes()?;
    let mut init = String::new();
    let mut forward = String::new();
    let body = &model.layers[..model.layers.len() - 1];
    for (i, node) in body.iter().enumerate() {
        let key = model.key(i);
        let s = shapes[i];
        let module = match &node.layer {
            Layer::Dense(d) => Some(format!("nn.Linear({}, {})", s.len(), d.units)),
            Layer::Conv2d(c) => {
                Some(format!("nn.Conv2d({}, {}, {}, padding={})", s.c, c.filters, c.kernel, c.kernel / 2))
            }
            Layer::Conv2dTranspose(t) => Some(format!("nn.ConvTranspose2d({}, {}, 2, stride=2)", s.c, t.filters)),
            _ => None,
        };
        let call = match (&node.layer, module) {
            (_, Some(module)) => {
                let _ = writeln!(init, "        self.add_module({key:?}, {module})");
                format!("self._modules[{key:?}](x)")
            }
            (Layer::MaxPool2d, _) => "F.max_pool2d(x, 2)".into(),
            (Layer::AvgPool2d, _) => "F.avg_pool2d(x, 2)".into(),
            (Layer::Flatten, _) => "x.flatten(1)".into(),
            (Layer::Dropout(d), _) => format!("F.dropout(x, {:?}, self.training)", d.rate),
            (Layer::Activation(Act::Relu), _) => "F.relu(x)".into(),
            (Layer::Activation(Act::Sigmoid), _) => "torch.sigmoid(x)".into(),
            (Layer::Activation(Act::Tanh), _) => "torch.tanh(x)".into(),
            (Layer::Activation(Act::LeakyRelu), _) => "F.leaky_relu(x)".into(),
            (Layer::Activation(Act::Softmax), _) => "F.softmax(x, dim=1)".into(),
            (Layer::Dense(_) | Layer::Conv2d(_) | Layer::Conv2dTranspose(_), None) => unreachable!("has a module"),
        };
        let _ = writeln!(forward, "        x = {call}  # {}", shapes[i + 1]);
    }
    let input = match model.input.is_flat() {
        true => format!("[batch, {}]", model.input.c),
        false => format!("[batch, {}, {}, {}]", model.input.c, model.input.h, model.input.w),
    };
    let last = match model.layers.last().map(|n| &n.layer) {
        Some(Layer::Activation(Act::Sigmoid)) => "torch.sigmoid",
        _ => "a softmax over dim 1",
    };
    let mut out = String::new();
    for line in title.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let _ = write!(
        out,
        r#"#
# Loads a gpu-train checkpoint as it is:
#   from safetensors.torch import load_file
#   model = Model()
#   model.load_state_dict(load_file("model.safetensors"), strict=True)
import torch
import torch.nn.functional as F
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
{init}
    def forward(self, x):
        """x: {input}, scaled to [0, 1]. Returns the logits; the probabilities are
        {last} of them."""
{forward}        return x
"#
    );
    Ok(out)
}
