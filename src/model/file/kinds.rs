//! Each layer kind's fields in a model file: its PyTorch constructor's, where it has one.

use crate::model::{Act, BatchNorm2d, Conv2d, Conv2dTranspose, Dense, Dropout, Init, Layer, LEAKY_SLOPE};
use serde::de::IntoDeserializer;
use serde::Deserialize;

/// A `[[layers]]` table's `kind` and the fields that kind takes.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawKind {
    Dense {
        out_features: usize,
        init: Option<Init>,
        #[serde(default)]
        l2: f32,
    },
    Conv2d {
        out_channels: usize,
        kernel_size: usize,
        #[serde(default)]
        padding: Padding,
        #[serde(default = "one")]
        stride: usize,
        init: Option<Init>,
        #[serde(default)]
        l2: f32,
    },
    Conv2dTranspose {
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        init: Option<Init>,
        #[serde(default)]
        l2: f32,
    },
    MaxPool2d {
        kernel_size: usize,
        stride: Option<usize>,
    },
    AvgPool2d {
        kernel_size: usize,
        stride: Option<usize>,
    },
    Flatten {},
    Dropout {
        #[serde(default = "half")]
        p: f32,
    },
    Relu {},
    Sigmoid {},
    Tanh {},
    LeakyRelu {
        negative_slope: Option<f32>,
    },
    Softmax {},
    Concat {},
    Add {},
    Upsample2d {
        scale_factor: usize,
        #[serde(default = "nearest")]
        mode: String,
    },
    BatchNorm2d {
        num_features: Option<usize>,
        #[serde(default = "bn_momentum")]
        momentum: f32,
        #[serde(default = "bn_eps")]
        eps: f32,
    },
}

fn nearest() -> String {
    "nearest".into()
}

fn bn_momentum() -> f32 {
    BatchNorm2d::default().momentum
}

fn bn_eps() -> f32 {
    BatchNorm2d::default().eps
}

/// `padding = "same"`, `"valid"` or a number of zeros on each side (PyTorch's default, 0).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(untagged)]
pub enum Padding {
    Named(String),
    Zeros(usize),
    #[default]
    #[serde(skip)]
    Default,
}

fn one() -> usize {
    1
}

fn half() -> f32 {
    0.5
}

const KINDS: &str =
    "dense, conv2d, conv2d_transpose, max_pool2d, avg_pool2d, flatten, dropout, relu, leaky_relu, sigmoid, tanh, softmax, concat, add, upsample2d, batch_norm2d";

impl RawKind {
    /// The kind's own fields of a layer table (its name and inputs already taken out).
    pub fn read(table: toml::Table) -> Result<Self, String> {
        match table.get("kind") {
            None => return Err(format!("no kind: say which layer this is (kind = \"...\", one of {KINDS})")),
            Some(toml::Value::String(k)) if !KINDS.split(", ").any(|known| known == k) => {
                return Err(format!("unknown kind {k:?}: the kinds are {KINDS}"))
            }
            _ => {}
        }
        RawKind::deserialize(toml::Value::Table(table).into_deserializer()).map_err(|e| e.message().trim().to_string())
    }

    /// The channels the layer says it takes (a batch normalisation's `num_features`), to check.
    pub fn channels(&self) -> Option<usize> {
        match self {
            RawKind::BatchNorm2d { num_features, .. } => *num_features,
            _ => None,
        }
    }

    /// The name the file gives this kind.
    pub fn name(&self) -> &'static str {
        match self {
            RawKind::Dense { .. } => "dense",
            RawKind::Conv2d { .. } => "conv2d",
            RawKind::Conv2dTranspose { .. } => "conv2d_transpose",
            RawKind::MaxPool2d { .. } => "max_pool2d",
            RawKind::AvgPool2d { .. } => "avg_pool2d",
            RawKind::Flatten {} => "flatten",
            RawKind::Dropout { .. } => "dropout",
            RawKind::Relu {} => "relu",
            RawKind::Sigmoid {} => "sigmoid",
            RawKind::Tanh {} => "tanh",
            RawKind::LeakyRelu { .. } => "leaky_relu",
            RawKind::Softmax {} => "softmax",
            RawKind::Concat {} => "concat",
            RawKind::Add {} => "add",
            RawKind::Upsample2d { .. } => "upsample2d",
            RawKind::BatchNorm2d { .. } => "batch_norm2d",
        }
    }

    /// The layer, weights initialised with `init` unless it names its own; or what the trainer
    /// cannot run.
    pub fn layer(&self, default_init: Init) -> Result<Layer, String> {
        let init = |own: &Option<Init>| own.unwrap_or(default_init);
        let l2_ok = |l2: f32| match l2.is_finite() && l2 >= 0.0 {
            true => Ok(l2),
            false => Err(format!("l2 must be a number ≥ 0, got {l2}")),
        };
        let positive = |field: &str, n: usize| match n {
            0 => Err(format!("{field} must be at least 1")),
            _ => Ok(n),
        };
        Ok(match self {
            RawKind::Dense { out_features, init: own, l2 } => Layer::Dense(Dense {
                units: positive("out_features", *out_features)?,
                init: init(own),
                l2: l2_ok(*l2)?,
            }),
            RawKind::Conv2d { out_channels, kernel_size, padding, stride, init: own, l2 } => {
                let k = positive("kernel_size", *kernel_size)?;
                if !matches!(stride, 1 | 2) {
                    return Err(format!("stride {stride} is not supported: convolutions take stride 1 or 2"));
                }
                Layer::Conv2d(Conv2d {
                    filters: positive("out_channels", *out_channels)?,
                    kernel: k,
                    pad: zeros(k, *stride, padding)?,
                    stride: *stride,
                    init: init(own),
                    l2: l2_ok(*l2)?,
                })
            }
            RawKind::Conv2dTranspose { out_channels, kernel_size, stride, init: own, l2 } => {
                if (*kernel_size, *stride) != (2, 2) {
                    return Err(format!(
                        "kernel_size {kernel_size} with stride {stride} is not supported: a transposed convolution takes kernel_size 2 and stride 2"
                    ));
                }
                let filters = positive("out_channels", *out_channels)?;
                Layer::Conv2dTranspose(Conv2dTranspose { filters, init: init(own), l2: l2_ok(*l2)? })
            }
            RawKind::MaxPool2d { kernel_size, stride } => {
                pool_window(*kernel_size, *stride)?;
                Layer::MaxPool2d
            }
            RawKind::AvgPool2d { kernel_size, stride } => {
                pool_window(*kernel_size, *stride)?;
                Layer::AvgPool2d
            }
            RawKind::Flatten {} => Layer::Flatten,
            RawKind::Dropout { p } if !(0.0..1.0).contains(p) => return Err(format!("p must be in [0, 1), got {p}")),
            RawKind::Dropout { p } => Layer::Dropout(Dropout { rate: *p }),
            RawKind::Relu {} => Layer::Activation(Act::Relu),
            RawKind::Sigmoid {} => Layer::Activation(Act::Sigmoid),
            RawKind::Tanh {} => Layer::Activation(Act::Tanh),
            RawKind::LeakyRelu { negative_slope: Some(s) } if *s != LEAKY_SLOPE => {
                return Err(format!("negative_slope {s} is not supported: this version's leaky relu has PyTorch's default slope, {LEAKY_SLOPE}"))
            }
            RawKind::LeakyRelu { .. } => Layer::Activation(Act::LeakyRelu),
            RawKind::Softmax {} => Layer::Activation(Act::Softmax),
            RawKind::Concat {} => Layer::Concat,
            RawKind::Add {} => Layer::Add,
            RawKind::Upsample2d { scale_factor, mode } => {
                if (*scale_factor, mode.as_str()) != (2, "nearest") {
                    return Err(format!(
                        "scale_factor {scale_factor} with mode {mode:?} is not supported: upsampling is 2x, \"nearest\""
                    ));
                }
                Layer::Upsample2d
            }
            RawKind::BatchNorm2d { momentum, eps, .. } => Layer::BatchNorm2d(BatchNorm2d { momentum: *momentum, eps: *eps }),
        })
    }
}

/// The zeros on each side that `padding` asks of a `k x k` kernel at `stride`: `"valid"` (or
/// PyTorch's default) none, `"same"` `k/2` for an odd kernel at stride 1 (as PyTorch, which
/// refuses it for strided convolutions), a number that many, fewer than `k` (more would give
/// outputs that see only zeros).
fn zeros(k: usize, stride: usize, padding: &Padding) -> Result<usize, String> {
    match padding {
        Padding::Named(s) if s == "valid" => Ok(0),
        Padding::Default => Ok(0),
        Padding::Named(s) if s == "same" && stride != 1 => {
            Err(format!("padding \"same\" with stride {stride} is not supported (nor in PyTorch): give a number"))
        }
        Padding::Named(s) if s == "same" && k.is_multiple_of(2) => {
            Err(format!("kernel_size {k} with padding \"same\" is not supported: the kernel must be odd"))
        }
        Padding::Named(s) if s == "same" => Ok(k / 2),
        Padding::Named(s) => Err(format!("padding {s:?} is not one of \"same\", \"valid\" or a number")),
        Padding::Zeros(p) if *p >= k => {
            Err(format!("padding {p} with kernel_size {k} is not supported: at most {}", k - 1))
        }
        Padding::Zeros(p) => Ok(*p),
    }
}

/// Poolings take 2x2 windows at stride 2.
fn pool_window(k: usize, stride: Option<usize>) -> Result<(), String> {
    let s = stride.unwrap_or(k);
    if (k, s) != (2, 2) {
        return Err(format!(
            "kernel_size {k} with stride {s} is not supported: poolings take kernel_size 2 and stride 2"
        ));
    }
    Ok(())
}
