//! gradcam-stream: Grad-CAM explanations of a TorchScript classifier on video, frame by frame.
//! The binary is a thin shell over [`run`]; the modules follow the data, one stage each.

pub mod app;
pub mod cam;
pub mod cli;
pub mod colormap;
pub mod config;
pub mod detections;
pub mod endpoint;
pub mod engine;
pub mod folder;
pub mod frame;
pub mod label;
pub mod localize;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod options;
pub mod outfile;
pub mod overlay;
pub mod parallel;
pub mod pipeline;
pub mod redact;
pub mod render;
pub mod select;
pub mod settings;
pub mod shard;
pub mod shutdown;
pub mod stats;
pub mod still;
pub mod track;
pub mod usage;
pub mod web;
pub mod worker;

pub use app::run;
