//! Class activation maps: pure tensor maths on activations and a head, one file per method.
//! No I/O, no frames, no devices chosen here.

pub mod gradcam;

pub use gradcam::{gradcam, normalize, CamBatch};
