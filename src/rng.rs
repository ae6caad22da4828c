//! The run's seeded generator (ChaCha8) and the counter-based hash that dropout masks come from.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub struct Rng(ChaCha8Rng);

/// Everything that determines a generator's future draws.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RngState {
    seed: [u8; 32],
    stream: u64,
    /// The position in the stream, in 32-bit words (a u128, kept as text for JSON).
    word_pos: String,
}

impl Rng {
    pub fn state(&self) -> RngState {
        RngState { seed: self.0.get_seed(), stream: self.0.get_stream(), word_pos: self.0.get_word_pos().to_string() }
    }
    pub fn from_state(s: &RngState) -> Option<Self> {
        let mut r = ChaCha8Rng::from_seed(s.seed);
        r.set_stream(s.stream);
        r.set_word_pos(s.word_pos.parse().ok()?);
        Some(Rng(r))
    }
    pub fn new(seed: u64) -> Self {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    /// Uniform in [0, 1) with 24 random bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform() as f64; // (0, 1]
        let u2 = self.uniform() as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.0.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// PCG-style integer hash; the same arithmetic runs in WGSL, so masks agree across backends.
pub fn hash32(x: u32) -> u32 {
    let state = x.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// Uniform in [0, 1) for element `i` of the mask drawn with `seed` at training step `step`.
pub fn mask_uniform(seed: u32, step: u32, i: u32) -> f32 {
    let h = hash32(i ^ hash32(step ^ hash32(seed)));
    (h >> 8) as f32 / (1u32 << 24) as f32
}
