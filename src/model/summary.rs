//! The Keras-style summary table.

use super::{Layer, Model};
use crate::error::Result;

/// `Layer (type) | Output Shape | Param #` for every layer, then the totals. Shapes are NCHW.
pub fn summary(model: &Model) -> Result<String> {
    let shapes = model.shapes()?;
    let rule = "_".repeat(65);
    let mut out =
        format!("{rule}\n{:<32}{:<22}{:>11}\n{}\n", "Layer (type)", "Output Shape (NCHW)", "Param #", "=".repeat(65));
    let mut seen = std::collections::HashMap::new();
    let mut total = 0;
    for (i, layer) in model.layers.iter().enumerate() {
        let base = snake(layer);
        let count = seen.entry(base.clone()).or_insert(0usize);
        let name = if *count == 0 { base.clone() } else { format!("{base}_{count}") };
        *count += 1;
        let params = layer.param_shapes(shapes[i]).map_or(0, |(w, b)| w.iter().product::<usize>() + b);
        total += params;
        let label = format!("{name} ({})", layer.type_name());
        out += &format!("{label:<32}{:<22}{:>11}\n", shapes[i + 1].to_string(), thousands(params));
    }
    out += &format!(
        "{}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: 0\n{rule}\n",
        "=".repeat(65),
        thousands(total),
        thousands(total)
    );
    Ok(out)
}

fn snake(layer: &Layer) -> String {
    match layer {
        Layer::Dense { .. } => "dense",
        Layer::Conv2d { .. } => "conv2d",
        Layer::Conv2dTranspose { .. } => "conv2d_transpose",
        Layer::MaxPool2d => "max_pooling2d",
        Layer::AvgPool2d => "average_pooling2d",
        Layer::Activation(_) => "activation",
        Layer::Flatten => "flatten",
        Layer::Dropout(_) => "dropout",
    }
    .to_string()
}

/// `21578` -> `21,578`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
