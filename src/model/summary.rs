//! The Keras-style summary table.

use super::{Model, Node};
use crate::error::Result;

/// `Layer (type) | Output Shape | Param #` for every layer, then the totals. Shapes are NCHW.
pub fn summary(model: &Model) -> Result<String> {
    let shapes = model.shapes()?;
    let rule = "_".repeat(65);
    let mut out =
        format!("{rule}\n{:<32}{:<22}{:>11}\n{}\n", "Layer (type)", "Output Shape (NCHW)", "Param #", "=".repeat(65));
    let mut seen = std::collections::HashMap::new();
    let mut total = 0;
    for (i, Node { name, layer }) in model.layers.iter().enumerate() {
        let base = layer.kind().name().1.to_string();
        let count = seen.entry(base.clone()).or_insert(0usize);
        let auto = if *count == 0 { base.clone() } else { format!("{base}_{count}") };
        *count += 1;
        let name = name.clone().unwrap_or(auto);
        let params = layer.kind().weights(shapes[i]).map_or(0, |w| w.shape.iter().product::<usize>() + w.bias);
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
