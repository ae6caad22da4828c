//! The Keras-style summary table.

use super::{Model, Node};
use crate::error::Result;

/// `Layer (type) | Output Shape | Param #` for every layer, then the totals. Shapes are NCHW.
/// A graph's table also says what each layer takes (Keras' `Connected to`).
pub fn summary(model: &Model) -> Result<String> {
    let shapes = model.shapes()?;
    let graph = model.layers.iter().any(|n| !n.inputs.is_empty());
    let width = if graph { 85 } else { 65 };
    let rule = "_".repeat(width);
    let mut out = format!("{rule}\n{:<32}{:<22}{:>11}", "Layer (type)", "Output Shape (NCHW)", "Param #");
    out += if graph { "  Connected to\n" } else { "\n" };
    out += &format!("{}\n", "=".repeat(width));
    let mut names: Vec<String> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let (mut total, mut fixed) = (0, 0);
    for (i, Node { name, layer, .. }) in model.layers.iter().enumerate() {
        let base = layer.kind().name().1.to_string();
        let count = seen.entry(base.clone()).or_insert(0usize);
        let auto = if *count == 0 { base.clone() } else { format!("{base}_{count}") };
        *count += 1;
        let name = name.clone().unwrap_or(auto);
        let input = shapes[model.sources(i)[0]];
        let trained = layer.kind().weights(input).map_or(0, |w| w.shape.iter().product::<usize>() + w.bias);
        // Keras counts a batch normalisation's moving mean and variance, not trained.
        let kept = layer.kind().running(input).map_or(0, |c| 2 * c);
        (total, fixed) = (total + trained + kept, fixed + kept);
        let params = trained + kept;
        let label = format!("{name} ({})", layer.type_name());
        out += &format!("{label:<32}{:<22}{:>11}", shapes[i + 1].to_string(), thousands(params));
        if graph {
            let from: Vec<String> =
                model.sources(i).iter().map(|&j| if j == 0 { "input".into() } else { names[j - 1].clone() }).collect();
            out += &format!("  {}", from.join(", "));
        }
        out += "\n";
        names.push(name);
    }
    out += &format!(
        "{}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: {}\n{rule}\n",
        "=".repeat(width),
        thousands(total),
        thousands(total - fixed),
        thousands(fixed)
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
