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
    /// Input, repeatable (one stream each, explained in shared batches): a video file path or URI
    /// (file://, http(s)://), an RTSP feed (rtsp://[user:password@]host[:port]/path), a webcam
    /// (/dev/videoN or v4l2:///dev/videoN), a live test source (test://[pattern][?size=WxH&fps=N]),
    /// or an image (.png .jpg .jpeg .bmp .webp .tiff). Name a stream with a prefix:
    /// `cam1=rtsp://…` (streams are otherwise named 0, 1, …)
    #[arg(short, long, value_name = "[NAME=]PATH|URI")]
    pub input: Vec<String>,

    /// Output, repeatable: a video file (.mp4, .mkv), an RTSP server (rtsp://0.0.0.0:8554/gradcam;
    /// port 0 picks a free one), display (a window) or null (discard); an image for image input.
    /// With several inputs, `{stream}` in it is each stream's name: rec-{stream}.mp4,
    /// rtsp://0.0.0.0:8554/{stream}
    #[arg(short, long, value_name = "PATH|URL")]
    pub output: Vec<String>,

    /// Split each recording into numbered files this long (10m, 30s, 1h) through splitmuxsink:
    /// rec.mp4 becomes rec-00000.mp4, rec-00001.mp4, …
    #[arg(long, value_name = "DURATION")]
    pub segment: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at /healthz
    /// (e.g. 127.0.0.1:9464)
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Make the RTSP server demand these credentials (Basic or Digest); the environment
    /// variable GRADCAM_RTSP_AUTH does the same without showing them in the process list
    #[arg(long, value_name = "USER:PASSWORD")]
    pub rtsp_auth: Option<String>,

    /// Capture size to ask a webcam (or test:// source) for
    #[arg(long, value_name = "WxH")]
    pub input_size: Option<String>,

    /// Frame rate to ask a webcam (or test:// source) for
    #[arg(long, value_name = "N")]
    pub input_fps: Option<u32>,

    /// RTSP input: jitter-buffer latency in milliseconds [default: 200]
    #[arg(long, value_name = "MS")]
    pub rtsp_latency_ms: Option<u32>,

    /// RTSP input transport: auto (UDP, falling back to TCP), tcp or udp [default: auto]
    #[arg(long, value_name = "auto|tcp|udp")]
    pub rtsp_transport: Option<String>,

    /// RTSP input: reconnect tries in a row (1 s, 2 s, 4 s … apart, at most 30 s) before giving up;
    /// 0 reconnects forever [default: 5]
    #[arg(long, value_name = "N")]
    pub reconnect_max: Option<u32>,

    /// Print a stats line (frames in/out, dropped, reconnects, fps, latency p50/p95) every
    /// SECONDS [default when given without a value: 5]
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "5")]
    pub stats: Option<f64>,

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

    /// The model's arithmetic: fp32, or fp16 (on a CUDA GPU: about twice the throughput, maps
    /// that correlate ≥ 0.98 with fp32's) [default: fp32]
    #[arg(long, value_name = "fp32|fp16")]
    pub precision: Option<String>,

    /// H.264 encoder for file and RTSP outputs: auto (NVENC where the GPU has it, else x264),
    /// x264, nvenc [default: auto]
    #[arg(long, value_name = "auto|x264|nvenc")]
    pub encoder: Option<String>,

    /// Most frames explained together in one batch [default: 8]
    #[arg(short, long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Longest wait for a batch to fill before it runs anyway, in milliseconds [default: 50]
    #[arg(long, value_name = "MS")]
    pub max_wait_ms: Option<u64>,

    /// Decoded frames of a stream that may wait for the model; a file input blocks decoding
    /// when full [default: two batches (at least 16 for files); several live streams share
    /// the two batches, at least 8 frames each]
    #[arg(long, value_name = "N")]
    pub queue_capacity: Option<usize>,

    /// Explain this class in every frame instead of each frame's top-1: an id (285) or a name
    /// from the model's classes (`tabby`, case-insensitive)
    #[arg(long, value_name = "ID|NAME", allow_hyphen_values = true)]
    pub class: Option<String>,

    /// Explain the K most likely classes of each frame; the video shows one (--show-rank), the
    /// metadata holds all K [default: 1]
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,

    /// Which of the --top-k classes the video shows, 1 to K [default: 1]
    #[arg(long, value_name = "R")]
    pub show_rank: Option<usize>,

    /// Heatmap colours: jet, turbo, inferno, viridis [default: jet]
    #[arg(long, value_name = "NAME")]
    pub colormap: Option<String>,

    /// Leave the frame as it is where the map is below T (0 to 1) [default: 0]
    #[arg(long, value_name = "T")]
    pub threshold: Option<f32>,

    /// Draw the Grad-CAM paper's localization box (15% of the map's maximum, largest region)
    #[arg(long = "box")]
    pub draw_box: bool,

    /// Do not draw the class label and probability on the frames
    #[arg(long)]
    pub no_label: bool,

    /// Temporal smoothing S in [0, 1): each map is S x the previous map + (1 - S) x its own,
    /// reset on scene cuts and class changes; 0 is off [default: 0]
    #[arg(long, value_name = "S")]
    pub smooth: Option<f32>,

    /// CAM method: gradcam, gradcam++, xgradcam, layercam, hirescam, eigencam (gradient-free)
    /// [default: gradcam]
    #[arg(long, value_name = "NAME")]
    pub method: Option<String>,

    /// Opacity of the heatmap over the frame, 0 to 1 [default: 0.5]
    #[arg(long, value_name = "A")]
    pub alpha: Option<f32>,

    /// Write one JSON object per frame (class, score, the map) to this .jsonl file (with several
    /// inputs it contains `{stream}`)
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

    /// CPU threads for the model; 0: libtorch decides on a CPU, one on a GPU [default: 0]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Progress display: auto (a bar on a terminal, lines otherwise), bar, lines, none [default: auto]
    #[arg(long, value_name = "MODE")]
    pub progress: Option<String>,
}
