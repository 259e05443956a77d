//! Command-line flags as parsed by clap: raw values only, no validation and no defaults
//! merged here (that is `config.rs`'s job), so the config file can fill what is left out.

use std::path::PathBuf;

use clap::Parser;

/// Explain what a vision model sees, frame by frame, with Grad-CAM.
///
/// Reads a video (any file or URI GStreamer can decode) or a still image, runs a TorchScript
/// classifier on every frame, and writes the frames with a Grad-CAM heatmap blended over them.
#[derive(Debug, Parser, Default)]
#[command(name = "gradcam-stream", version, about, long_about = None)]
pub struct Args {
    /// Input: a video file path or URI (file://, http://), a live test source
    /// (test://[pattern][?size=WxH&fps=N]), or an image (.png .jpg .jpeg .bmp .webp .tiff)
    #[arg(short, long, value_name = "PATH|URI")]
    pub input: Option<String>,

    /// Output: a video (.mp4, .mkv) or `null` (discard) for video input, an image (.png .jpg …) for image input
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// TOML config file; flags given on the command line override its values
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// TorchScript model with `features` and `head` methods (sidecar .json beside it)
    /// [default: models/efficientnet_lite0.pt]
    #[arg(short, long, value_name = "FILE")]
    pub model: Option<PathBuf>,

    /// Where the model runs: auto picks CUDA when a GPU is present [default: auto]
    #[arg(long, value_name = "auto|cpu|cuda")]
    pub device: Option<String>,

    /// Most frames explained together in one batch [default: 8]
    #[arg(short, long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Longest wait for a batch to fill before it runs anyway, in milliseconds [default: 50]
    #[arg(long, value_name = "MS")]
    pub max_wait_ms: Option<u64>,

    /// Decoded frames that may wait for the model; a file input blocks decoding when full
    /// [default: 16 for files, the batch size for live sources]
    #[arg(long, value_name = "N")]
    pub queue_capacity: Option<usize>,

    /// Explain this ImageNet class id in every frame instead of each frame's top-1 class
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub class: Option<i64>,

    /// Opacity of the heatmap over the frame, 0 to 1 [default: 0.5]
    #[arg(long, value_name = "A")]
    pub alpha: Option<f32>,

    /// Write one JSON object per frame (class, score, the map) to this .jsonl file
    #[arg(long, value_name = "FILE")]
    pub metadata: Option<PathBuf>,

    /// When the model falls behind a live source: drop (oldest waiting frames go, the default
    /// for live sources) or block; a file input always blocks and never drops
    #[arg(long, value_name = "drop|block")]
    pub on_overload: Option<String>,

    /// Stop after this many frames, finishing the output cleanly
    #[arg(long, value_name = "N")]
    pub max_frames: Option<u64>,

    /// Stop this many seconds after the first frame arrives, finishing the output cleanly
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// CPU threads for the model; 0 lets libtorch decide [default: 0]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Progress display: auto (a bar on a terminal, lines otherwise), bar, lines, none [default: auto]
    #[arg(long, value_name = "MODE")]
    pub progress: Option<String>,
}
