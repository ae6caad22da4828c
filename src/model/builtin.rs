//! The model files shipped inside the binary (`gpu-train models`).

use super::{file, Model};
use crate::error::{Error, Result};
use std::path::Path;

/// A built-in model file.
pub struct Builtin {
    pub name: &'static str,
    pub text: &'static str,
}

pub const BUILTINS: &[Builtin] = &[
    Builtin { name: "mnist-mlp", text: include_str!("../../models/mnist-mlp.toml") },
    Builtin { name: "mnist-cnn", text: include_str!("../../models/mnist-cnn.toml") },
    Builtin { name: "warwick-fcn", text: include_str!("../../models/warwick-fcn.toml") },
    Builtin { name: "warwick-unet", text: include_str!("../../models/warwick-unet.toml") },
];

impl Builtin {
    /// The built-in model called `name`.
    pub fn get(name: &str) -> Result<&'static Builtin> {
        BUILTINS.iter().find(|b| b.name == name).ok_or_else(|| {
            let names: Vec<_> = BUILTINS.iter().map(|b| b.name).collect();
            Error::Config(format!("no built-in model {name:?}: the built-in models are {}", names.join(", ")))
        })
    }

    pub fn model(&self) -> Model {
        file::parse(self.text, Path::new(&format!("{}.toml", self.name))).expect("a built-in model file reads")
    }

    /// The first sentence of its opening comment.
    pub fn about(&self) -> String {
        let comment: Vec<&str> = self.text.lines().map_while(|l| l.strip_prefix("# ")).collect();
        let joined = comment.join(" ");
        joined.split_once(": ").map_or(joined.clone(), |(head, _)| head.to_string())
    }
}
