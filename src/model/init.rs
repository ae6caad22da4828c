//! Keras' initialisers, drawn from the run's seeded generator.

use super::ParamSpec;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// U(-l, l) with l = √(6 / (fan_in + fan_out)), fans including the receptive field.
    GlorotUniform,
    /// N(0, stddev).
    RandomNormal {
        stddev: f32,
    },
    Zeros,
    Ones,
}

/// Fresh values for every parameter, in order.
pub fn init_params(params: &[ParamSpec], rng: &mut Rng) -> Vec<Vec<f32>> {
    params
        .iter()
        .map(|p| {
            let n = p.len();
            match p.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::RandomNormal { stddev } => (0..n).map(|_| rng.normal() * stddev).collect(),
                Init::GlorotUniform => {
                    // [out, in, kh, kw] (or [in, out, kh, kw]): fan_in + fan_out is the same either way.
                    let receptive: usize = p.shape[2..].iter().product();
                    let fans = (p.shape[0] + p.shape[1]) * receptive;
                    let limit = (6.0 / fans as f32).sqrt();
                    (0..n).map(|_| (2.0 * rng.uniform() - 1.0) * limit).collect()
                }
            }
        })
        .collect()
}
