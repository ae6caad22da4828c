//! Optimisers with Keras semantics; each becomes one update op per parameter in the plan.

use crate::error::{Error, Result};
use crate::graph::{BufId, Op};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Optimizer {
    /// Plain SGD when `momentum` is 0, else Keras momentum (`v = m·v - lr·g; w += v`).
    Sgd { lr: f32, momentum: f32 },
    /// Keras Adam (ε added to √v, bias correction folded into the step size).
    Adam { lr: f32, beta1: f32, beta2: f32, eps: f32 },
}

impl Optimizer {
    pub fn adam(lr: f32) -> Self {
        Optimizer::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-7 }
    }

    pub fn validate(&self) -> Result<()> {
        let (lr, momentum) = match *self {
            Optimizer::Sgd { lr, momentum } => (lr, momentum),
            Optimizer::Adam { lr, .. } => (lr, 0.0),
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::Config(format!("--lr must be a positive number, got {lr}")));
        }
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::Config(format!("--momentum must be in [0, 1), got {momentum}")));
        }
        Ok(())
    }

    /// How many state tensors of a parameter's size it keeps.
    pub fn state_count(&self) -> usize {
        match *self {
            Optimizer::Sgd { momentum: 0.0, .. } => 0,
            Optimizer::Sgd { .. } => 1,
            Optimizer::Adam { .. } => 2,
        }
    }

    /// The update op for parameter `w` with gradient `g` and state buffers `state`.
    pub fn update_op(&self, w: BufId, g: BufId, state: &[BufId], len: usize) -> Op {
        match *self {
            Optimizer::Sgd { lr, momentum: 0.0 } => Op::Sgd { w, g, lr, len },
            Optimizer::Sgd { lr, momentum } => Op::Momentum { w, g, v: state[0], lr, momentum, len },
            Optimizer::Adam { lr, beta1, beta2, eps } => {
                Op::Adam { w, g, m: state[0], v: state[1], lr, beta1, beta2, eps, len }
            }
        }
    }
}

/// Keras Adam's bias correction at step `t` (1-based), `√(1-β2ᵗ)/(1-β1ᵗ)`: the step size is
/// `lr` times this. Both fast backends take it from here, so they agree to the bit. Computed in
/// f64: in f32, `1 - 0.999ᵗ` loses digits to cancellation (1e-5 of the step at t = 6).
pub fn adam_correction(beta1: f32, beta2: f32, t: u32) -> f32 {
    let (b1, b2) = (f64::from(beta1).powi(t as i32), f64::from(beta2).powi(t as i32));
    ((1.0 - b2).sqrt() / (1.0 - b1)) as f32
}
