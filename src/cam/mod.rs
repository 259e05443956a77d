//! Class activation maps: pure tensor maths on activations and a head. No I/O, no frames, no
//! devices chosen here. `gradcam.rs` holds the shared backward pass and normalization,
//! `methods.rs` each method's weighting.

pub mod gradcam;
pub mod methods;

pub use gradcam::{normalize, CamBatch, Target};
pub use methods::{combine, compute, gradcam, Method};
