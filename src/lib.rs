//! gpu-train: a small deep-learning trainer. Models are planned once ([`graph`]) and the plan runs
//! on a [`backend`]; the CPU backend is the reference.

pub mod backend;
pub mod bench;
pub mod error;
pub mod graph;
pub mod model;
pub mod optim;
pub mod rng;

pub use error::{Error, Result};
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod files;
pub mod folder;
pub mod predict;
pub mod report;
pub mod reproduce;
pub mod run;
pub mod tasks;
pub mod train;
