//! Model files: a network written in TOML, read with serde.
//!
//! TOML rather than JSON because people write these by hand: it takes comments, needs no
//! quotes around keys or commas between layers, and its parser gives the line of every error.
//!
//! ```toml
//! input = [1, 28, 28]                       # [channels, height, width], or [features]
//! init = { random_normal = { stddev = 0.05 } }   # every weight's initialiser [glorot_uniform]
//!
//! [[layers]]
//! kind = "conv2d"                           # PyTorch's constructor fields
//! name = "conv1"                            # optional: the checkpoint keys' prefix [its index]
//! out_channels = 8
//! kernel_size = 3
//! padding = "same"
//!
//! [[layers]]
//! kind = "relu"
//! ```

mod kinds;
mod write;

pub use write::to_toml;

use super::{Init, Model, Node, Shape};
use crate::error::{Error, Result};
use kinds::RawKind;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    input: Spanned<Vec<usize>>,
    #[serde(default)]
    init: Option<Init>,
    layers: Spanned<Vec<Spanned<toml::Table>>>,
}

/// Reads a model file.
pub fn load(path: &Path) -> Result<Model> {
    ModelText::read(path)?.model()
}

/// A model file's text and where it was read from: what a run keeps of it, so that a run
/// resumes with the model it started with whatever happens to the file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelText {
    pub path: PathBuf,
    pub text: String,
}

impl ModelText {
    /// Reads and checks the file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::bad_file(
                path,
                format!("not UTF-8 text (byte {}): a model file is TOML", e.utf8_error().valid_up_to()),
            )
        })?;
        let m = ModelText { path: path.to_path_buf(), text };
        m.model()?;
        Ok(m)
    }
    pub fn model(&self) -> Result<Model> {
        parse(&self.text, &self.path)
    }
}

/// Parses a model file's text; `path` names it in errors, which give the line and the layer.
pub fn parse(text: &str, path: &Path) -> Result<Model> {
    let at = |span: std::ops::Range<usize>, msg: String| Error::at_line(path, line_of(text, span.start), msg);
    if text.trim().is_empty() {
        return Err(Error::bad_file(path, "the model file is empty: it needs `input = [...]` and `[[layers]]`"));
    }
    let doc: Doc = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => at(span, e.message().trim().to_string()),
        None => Error::bad_file(path, e.message().trim().to_string()),
    })?;
    let input = match doc.input.get_ref()[..] {
        [n] if n > 0 => Shape::flat(n),
        [c, h, w] if c > 0 && h > 0 && w > 0 => Shape::new(c, h, w),
        _ => {
            let msg = format!(
                "input must be [features] or [channels, height, width], all above 0, got {:?}",
                doc.input.get_ref()
            );
            return Err(at(doc.input.span(), msg));
        }
    };
    if doc.layers.get_ref().is_empty() {
        return Err(at(doc.layers.span(), "the model has no layers".into()));
    }
    let init = doc.init.unwrap_or(Init::GlorotUniform);
    let mut model = Model { input, layers: Vec::new() };
    let (mut shapes, mut starts) = (vec![input], Vec::new());
    let tables = doc.layers.into_inner();
    // A span covers a table's `[[layers]]` header; its fields run to the next header.
    let ends: Vec<usize> = tables.iter().skip(1).map(|t| t.span().start).chain([text.len()]).collect();
    for (i, (table, end)) in tables.into_iter().zip(ends).enumerate() {
        let span = table.span();
        let layer = RawLayer::read(table.into_inner(), i, &model).map_err(|msg| {
            let line = field_line(&text[span.start..end], &msg).map_or(0, |l| l - 1);
            Error::at_line(path, line_of(text, span.start) + line, msg)
        })?;
        let node = Node {
            name: layer.name.clone(),
            layer: layer.kind.layer(init).map_err(|e| at(span.clone(), layer.fault(e)))?,
            inputs: layer.inputs.clone(),
        };
        model.layers.push(node);
        let inputs: Vec<Shape> = model.sources(i).iter().map(|&j| shapes[j]).collect();
        if let Some(c) = layer.kind.channels().filter(|&c| c != inputs[0].c) {
            let msg = format!("num_features {c}, but its input has {} channels: {}", inputs[0].c, inputs[0]);
            return Err(at(span.clone(), layer.fault(msg)));
        }
        let shape = model.layers[i].layer.kind().output_shape_of(&inputs);
        shapes.push(shape.map_err(|e| at(span.clone(), layer.fault(error_text(e))))?);
        starts.push(span.start);
    }
    // Every layer's output is read: by a later layer, or, for the last, by the loss.
    let last = model.layers.len() - 1;
    if let Some(i) = (0..last).find(|&i| !(i + 1..=last).any(|r| model.sources(r).contains(&(i + 1)))) {
        let msg = format!("the output of layer {i} ({:?}) is not used: no layer below takes it", model.key(i));
        return Err(Error::at_line(path, line_of(text, starts[i]), msg));
    }
    Ok(model)
}

/// One `[[layers]]` table: the fields every kind has, and the kind's own.
struct RawLayer {
    name: Option<String>,
    index: usize,
    kind: RawKind,
    inputs: Vec<usize>,
}

impl RawLayer {
    /// Reads layer `index` after the layers of `before`.
    fn read(mut table: toml::Table, index: usize, before: &Model) -> std::result::Result<Self, String> {
        let kind = match table.get("kind") {
            Some(toml::Value::String(k)) => format!("{k} "),
            _ => String::new(),
        };
        let label = |name: &Option<String>| match name {
            Some(n) => format!("{kind}{n:?}"),
            None => format!("{kind}(layer {index})"),
        };
        let name = match table.remove("name") {
            None => None,
            Some(toml::Value::String(s)) if valid_name(&s) => Some(s),
            Some(v) => {
                return Err(format!(
                    "{}: name must be letters, digits and _ (a Python name), got {}",
                    label(&None),
                    describe(&v)
                ))
            }
        };
        if name.as_deref() == Some("input") {
            return Err(format!("{}: \"input\" names the model's input; choose another name", label(&name)));
        }
        if let Some(n) = &name {
            if before.layers.iter().any(|l| l.name.as_ref() == Some(n)) {
                return Err(format!("{}: another layer is already named {n:?}", label(&name)));
            }
        }
        let inputs = match table.remove("inputs") {
            Some(inputs) => resolve_inputs(inputs, before).map_err(|e| format!("{}: {e}", label(&name)))?,
            None => Vec::new(),
        };
        let kind = RawKind::read(table).map_err(|e| format!("{}: {e}", label(&name)))?;
        Ok(RawLayer { name, index, kind, inputs })
    }

    /// `conv2d "down2": {msg}` or `conv2d (layer 3): {msg}`.
    fn fault(&self, msg: String) -> String {
        match &self.name {
            Some(n) => format!("{} {n:?}: {msg}", self.kind.name()),
            None => format!("{} (layer {}): {msg}", self.kind.name(), self.index),
        }
    }
}

/// `inputs = [...]` names earlier layers (or "input"), by name or, for an unnamed one, by its
/// index; the node numbers of [`Node::inputs`], empty where it is just the layer before.
fn resolve_inputs(inputs: toml::Value, before: &Model) -> std::result::Result<Vec<usize>, String> {
    let toml::Value::Array(names) = inputs else {
        return Err(format!("inputs must be a list of layer names, got {}", describe(&inputs)));
    };
    let mut nodes = Vec::new();
    for name in &names {
        let toml::Value::String(name) = name else {
            return Err(format!("inputs must be a list of layer names, got {}", describe(name)));
        };
        let layer = (0..before.layers.len()).find(|&i| before.key(i) == *name);
        match (name.as_str(), layer) {
            ("input", _) => nodes.push(0),
            (_, Some(i)) => nodes.push(i + 1),
            _ => return Err(format!("unknown input {name:?}: inputs name the model's \"input\" or a layer above this one (a layer cannot take its own output or a later one's, so there are no cycles)")),
        }
    }
    if nodes.is_empty() {
        return Err("inputs is empty: name the values this layer takes".into());
    }
    Ok(if nodes == [before.layers.len()] { Vec::new() } else { nodes })
}

/// A value that is not what a field takes: its text where it is a string, else its type.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        v => format!("a {}", v.type_str()),
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The 1-based line, within a layer's text, of the field that the message `unknown field
/// \`x\`` names.
fn field_line(layer: &str, msg: &str) -> Option<usize> {
    let field = msg.split_once("unknown field `")?.1.split('`').next()?;
    layer.lines().position(|l| l.split('=').next().is_some_and(|k| k.trim() == field)).map(|i| i + 1)
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// A model error's message without its `model: ` prefix.
fn error_text(e: Error) -> String {
    match e {
        Error::Model(msg) => msg,
        e => e.to_string(),
    }
}
