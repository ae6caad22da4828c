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
    // A chain passes one `x` along; a graph names each value it keeps (`h{node}`).
    let graph = model.layers.iter().any(|n| !n.inputs.is_empty());
    let var = |j: usize| if graph && j > 0 { format!("h{j}") } else { "x".to_string() };
    for (i, node) in body.iter().enumerate() {
        let key = model.key(i);
        let sources = model.sources(i);
        let (x, s) = (var(sources[0]), shapes[sources[0]]);
        let module = match &node.layer {
            Layer::Dense(d) => Some(format!("nn.Linear({}, {})", s.len(), d.units)),
            Layer::Conv2d(c) => {
                let stride = if c.stride == 1 { String::new() } else { format!(", stride={}", c.stride) };
                Some(format!("nn.Conv2d({}, {}, {}{stride}, padding={})", s.c, c.filters, c.kernel, c.pad))
            }
            Layer::Conv2dTranspose(t) => Some(format!("nn.ConvTranspose2d({}, {}, 2, stride=2)", s.c, t.filters)),
            Layer::BatchNorm2d(b) => {
                let dims = if s.is_flat() { 1 } else { 2 };
                Some(format!("nn.BatchNorm{dims}d({}, eps={:?}, momentum={:?})", s.c, b.eps, b.momentum))
            }
            _ => None,
        };
        let call = match (&node.layer, module) {
            (_, Some(module)) => {
                let _ = writeln!(init, "        self.add_module({key:?}, {module})");
                format!("self._modules[{key:?}]({x})")
            }
            (Layer::MaxPool2d, _) => format!("F.max_pool2d({x}, 2)"),
            (Layer::AvgPool2d, _) => format!("F.avg_pool2d({x}, 2)"),
            (Layer::Flatten, _) => format!("{x}.flatten(1)"),
            (Layer::Dropout(d), _) => format!("F.dropout({x}, {:?}, self.training)", d.rate),
            (Layer::Activation(Act::Relu), _) => format!("F.relu({x})"),
            (Layer::Activation(Act::Sigmoid), _) => format!("torch.sigmoid({x})"),
            (Layer::Activation(Act::Tanh), _) => format!("torch.tanh({x})"),
            (Layer::Activation(Act::LeakyRelu), _) => format!("F.leaky_relu({x})"),
            (Layer::Activation(Act::Softmax), _) => format!("F.softmax({x}, dim=1)"),
            (Layer::Concat, _) => {
                let all: Vec<String> = sources.iter().map(|&j| var(j)).collect();
                format!("torch.cat([{}], dim=1)", all.join(", "))
            }
            (Layer::Add, _) => format!("{x} + {}", var(sources[1])),
            (Layer::Upsample2d, _) => format!("F.interpolate({x}, scale_factor=2, mode=\"nearest\")"),
            (Layer::Dense(_) | Layer::Conv2d(_) | Layer::Conv2dTranspose(_) | Layer::BatchNorm2d(_), None) => {
                unreachable!("has a module")
            }
        };
        let _ = writeln!(forward, "        {} = {call}  # {}", var(i + 1), shapes[i + 1]);
    }
    let result = var(body.len());
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
{forward}        return {result}
"#
    );
    Ok(out)
}
