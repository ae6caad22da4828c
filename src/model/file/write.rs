//! A model as a model file: what `models show` and the checkpoints of a run hold.

use crate::model::{BatchNorm2d, Init, Layer, Model};
use std::fmt::Write;

/// The model file of `model`: reading it back gives the same model. `title` is its first
/// comment lines.
pub fn to_toml(model: &Model, title: &str) -> String {
    let mut out = String::new();
    for line in title.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let i = model.input;
    let _ = match i.is_flat() {
        true => writeln!(out, "input = [{}]", i.c),
        false => writeln!(out, "input = [{}, {}, {}]", i.c, i.h, i.w),
    };
    for node in &model.layers {
        out += "\n[[layers]]\n";
        let mut field = |key: &str, value: String| {
            let _ = writeln!(out, "{key} = {value}");
        };
        let quoted = |s: &str| format!("{s:?}");
        let (kind, init, l2) = match &node.layer {
            Layer::Dense(d) => ("dense", Some(d.init), d.l2),
            Layer::Conv2d(c) => ("conv2d", Some(c.init), c.l2),
            Layer::Conv2dTranspose(t) => ("conv2d_transpose", Some(t.init), t.l2),
            Layer::MaxPool2d => ("max_pool2d", None, 0.0),
            Layer::AvgPool2d => ("avg_pool2d", None, 0.0),
            Layer::Activation(a) => (a.name(), None, 0.0),
            Layer::Flatten => ("flatten", None, 0.0),
            Layer::Dropout(_) => ("dropout", None, 0.0),
            Layer::Concat => ("concat", None, 0.0),
            Layer::BatchNorm2d(_) => ("batch_norm2d", None, 0.0),
            Layer::Add => ("add", None, 0.0),
            Layer::Upsample2d => ("upsample2d", None, 0.0),
        };
        field("kind", quoted(kind));
        if let Some(name) = &node.name {
            field("name", quoted(name));
        }
        if !node.inputs.is_empty() {
            let key = |j: usize| if j == 0 { quoted("input") } else { quoted(&model.key(j - 1)) };
            field("inputs", format!("[{}]", node.inputs.iter().map(|&j| key(j)).collect::<Vec<_>>().join(", ")));
        }
        match &node.layer {
            Layer::Dense(d) => field("out_features", d.units.to_string()),
            Layer::Conv2d(c) => {
                field("out_channels", c.filters.to_string());
                field("kernel_size", c.kernel.to_string());
                match (c.pad, c.stride) {
                    (p, 1) if c.kernel % 2 == 1 && p == c.kernel / 2 => field("padding", quoted("same")),
                    (0, _) => field("padding", quoted("valid")),
                    (p, _) => field("padding", p.to_string()),
                }
                if c.stride != 1 {
                    field("stride", c.stride.to_string());
                }
            }
            Layer::Conv2dTranspose(t) => {
                field("out_channels", t.filters.to_string());
                field("kernel_size", "2".into());
                field("stride", "2".into());
            }
            Layer::MaxPool2d | Layer::AvgPool2d => field("kernel_size", "2".into()),
            Layer::Dropout(d) => field("p", format!("{:?}", d.rate)),
            Layer::BatchNorm2d(b) => {
                let d = BatchNorm2d::default();
                if b.momentum != d.momentum {
                    field("momentum", format!("{:?}", b.momentum));
                }
                if b.eps != d.eps {
                    field("eps", format!("{:?}", b.eps));
                }
            }
            Layer::Upsample2d => field("scale_factor", "2".into()),
            Layer::Activation(_) | Layer::Flatten | Layer::Concat | Layer::Add => {}
        }
        match init {
            Some(Init::RandomNormal { stddev }) => {
                field("init", format!("{{ random_normal = {{ stddev = {stddev:?} }} }}"))
            }
            Some(Init::Zeros) => field("init", quoted("zeros")),
            Some(Init::Ones) => field("init", quoted("ones")),
            Some(Init::GlorotUniform) | None => {}
        }
        if l2 != 0.0 {
            field("l2", format!("{l2:?}"));
        }
    }
    out
}
