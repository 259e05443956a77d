//! Every setting, declared once: its name, type, default, doc line and range. The command
//! line's flags ([`Flags`]), the config file's keys ([`FileConfig`], [`StreamTable`]) and the
//! merged values ([`Run`], [`PerStream`]) are all generated from these declarations by
//! `declare!` (see `settings/declare.rs`). Nothing here parses a value's meaning: `config.rs`
//! validates the merged result, once.
//!
//! A new setting is one entry below plus its use. `run` settings apply to the whole run
//! (flags, then the file's top level, then the default); `stream` settings may also be set by a
//! `[[stream]]` table (flags, then the stream's table, then the file's top level, then the
//! default).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[macro_use]
mod declare;
pub mod named;

use named::{
    BoxMaps, Colormap, Deinterlace, DeviceChoice, Encoder, Layout, MethodChoice, OnDamaged,
    Orientation, Overload, Precision, Progress, Realtime, RtspTransport, WhenBehind,
};

/// Each property the `gradcam` element (crates/gst-plugin-gradcam) has of the program's: its
/// name, the declared setting it sets, whether that is a per-stream one, and, where the flag's
/// help reads wrong for a property (a `--no-…` switch), its own. The element's properties and
/// the options reference (`options.rs`) both read it.
pub const ELEMENT_PROPERTIES: &[(&str, &str, Scope, Option<&str>)] = &[
    ("model", "model", Scope::Run, None),
    ("device", "device", Scope::Run, None),
    ("precision", "precision", Scope::Run, None),
    ("layout", "layout", Scope::Run, None),
    ("threads", "threads", Scope::Run, None),
    ("batch-size", "batch_size", Scope::Run, None),
    ("max-wait-ms", "max_wait_ms", Scope::Run, None),
    ("method", "method", Scope::Run, None),
    ("top-k", "top_k", Scope::Run, None),
    ("show-rank", "show_rank", Scope::Run, None),
    ("boxes", "boxes", Scope::Run, None),
    ("colormap", "colormap", Scope::Run, None),
    ("alpha", "alpha", Scope::Run, None),
    ("threshold", "threshold", Scope::Run, None),
    ("box", "draw_box", Scope::Run, None),
    ("box-maps", "box_maps", Scope::Run, None),
    (
        "label",
        "label",
        Scope::Run,
        Some("Draw the class label and probability on the frames"),
    ),
    ("smooth", "smooth", Scope::Stream, None),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Whether an element property's setting is a run-wide one ([`Run`]) or a stream's
/// ([`PerStream`]).
pub enum Scope {
    Run,
    Stream,
}

/// `class = 285` or `class = "tabby"` in the file; `--class` always gives text (`285` or `tabby`),
/// resolved against the model's names when it is loaded.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ClassValue {
    Id(i64),
    Name(String),
}

/// The class to explain in every frame, as given: resolved against the model's names when
/// the model is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassSpec {
    Id(i64),
    Name(String),
}

impl ClassSpec {
    /// `285` (or `"285"`) is an id, anything else a name.
    pub fn from_value(c: ClassValue) -> Self {
        match c {
            ClassValue::Id(id) => ClassSpec::Id(id),
            ClassValue::Name(s) => match s.trim().parse::<i64>() {
                Ok(id) => ClassSpec::Id(id),
                Err(_) => ClassSpec::Name(s),
            },
        }
    }
}

fn class_value(s: &str) -> Result<ClassValue, String> {
    Ok(ClassValue::Name(s.to_owned()))
}

/// `output = "x.mp4"` or `output = ["x.mp4", "rtsp://0.0.0.0:8554/gradcam"]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Default model, relative to the working directory or to the project the binary was built in.
pub const DEFAULT_MODEL: &str = "models/efficientnet_lite0.pt";

/// `models/…` under the working directory, else under the project the binary sits in
/// (`target/release/gradcam-stream` → `../../models/…`), so `make demo` output runs from anywhere.
pub fn default_model() -> PathBuf {
    let here = PathBuf::from(DEFAULT_MODEL);
    if here.exists() {
        return here;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join(DEFAULT_MODEL)))
        .filter(|p| p.exists())
        .unwrap_or(here)
}

impl FileConfig {
    /// The streams as given: the flags' `inputs`, else the file's tables, else its one `input`.
    pub fn stream_tables(&mut self, inputs: &[String]) -> Result<Vec<StreamTable>> {
        let one = |input: String| StreamTable {
            input,
            ..StreamTable::default()
        };
        if !inputs.is_empty() {
            return Ok(inputs.iter().cloned().map(one).collect());
        }
        if !self.stream.is_empty() {
            return Ok(std::mem::take(&mut self.stream));
        }
        match self.input.take() {
            Some(i) => Ok(vec![one(i)]),
            None => Err(crate::usage::usage(
                "no input given; pass --input FILE|URI (or set `input` or [[stream]] tables in the config file)",
            )),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // toml's message spans several lines; keep the first, which names key and line.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid TOML").to_owned();
            let detail = e.message().trim().to_owned();
            crate::usage::usage(format!("config {}: {first}: {detail}", path.display()))
        })
    }
}

declare! {
    run {
        /// Split each recording into numbered files this long (10m, 30s, 1h) through splitmuxsink:
        /// rec.mp4 becomes rec-00000.mp4, rec-00001.mp4, …
        #[arg(long, value_name = "DURATION")]
        segment: String;

        /// Serve Prometheus metrics at http://ADDR/metrics and a health check at /healthz
        /// (e.g. 127.0.0.1:9464)
        #[arg(long, value_name = "ADDR")]
        metrics: String;

        /// Explain only this process's share of the streams: INDEX/COUNT (0/3, 1/3, 2/3), chosen
        /// by rendezvous hashing of the stream names; auto: INDEX from the host name's trailing
        /// -N (a StatefulSet pod), COUNT from GRADCAM_SHARDS
        #[arg(long, value_name = "INDEX/COUNT|auto")]
        shard: String;

        /// Serve the web view (live explained video, timelines, recordings; and /metrics and
        /// /healthz unless --metrics is given) at http(s)://ADDR (127.0.0.1:8080; a bare port is
        /// loopback)
        #[arg(long, value_name = "ADDR")]
        web: String;

        /// PEM certificate for HTTPS on --web and RTSPS on rtsp:// outputs (with --tls-key)
        #[arg(long, value_name = "FILE")]
        tls_cert: PathBuf;

        /// PEM private key of --tls-cert
        #[arg(long, value_name = "FILE")]
        tls_key: PathBuf;

        /// Turn frames upright as their file says they are shown before the model: auto (a
        /// video's rotation tag, a photo's EXIF orientation) or none (as stored)
        #[arg(long, value_name = "auto|none")]
        orientation: Orientation = Orientation::Auto;

        /// Deinterlace interlaced input before the model and in the output: auto (progressive
        /// frames pass untouched) or off
        #[arg(long, value_name = "auto|off")]
        deinterlace: Deinterlace = Deinterlace::Auto;

        /// Pace a file input at its own frame rate, as a player does: auto (when it is watched:
        /// display, rtsp:// or --web), on, off (as fast as it is explained)
        #[arg(long, value_name = "auto|on|off")]
        realtime: Realtime = Realtime::Auto;

        /// Print a stats line (frames in/out, dropped, reconnects, fps, latency p50/p95) every
        /// SECONDS [default when given without a value: 5]
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "5")]
        stats: f64, range 0.1..=86_400.0, "0.1 to 86400 seconds";

        /// TorchScript model with `features` and `head` methods (sidecar .json beside it)
        #[arg(short, long, value_name = "FILE")]
        model: PathBuf = default_model() => "models/efficientnet_lite0.pt";

        /// Where the model runs: auto picks CUDA when a GPU is present
        #[arg(long, value_name = "auto|cpu|cuda")]
        device: DeviceChoice = DeviceChoice::Auto;

        /// The model's arithmetic: auto (on a CPU with bf16 instructions the faster of bf16 and
        /// fp32, timed at start and remembered; else fp32), fp32, fp16 (a CUDA GPU) or bf16 (such
        /// a CPU); the head, the gradient and the CAM stay fp32
        #[arg(long, value_name = "auto|fp32|fp16|bf16")]
        precision: Precision = Precision::Auto;

        /// Memory layout of a batch on its way into the model: auto (the faster for this model
        /// here, timed at start and remembered), channels-last (NHWC, as the frames arrive) or
        /// contiguous (NCHW); the maps are the same
        #[arg(long, value_name = "auto|channels-last|contiguous")]
        layout: Layout = Layout::Auto;

        /// H.264 encoder for file and RTSP outputs: auto (NVENC where the GPU has it, else x264),
        /// x264, nvenc
        #[arg(long, value_name = "auto|x264|nvenc")]
        encoder: Encoder = Encoder::Auto;

        /// Most frames explained together in one batch
        #[arg(short, long, value_name = "N")]
        batch_size: usize = 8, range 1..=256, "1 to 256";

        /// Longest wait for a batch to fill before it runs anyway, in milliseconds
        #[arg(long, value_name = "MS")]
        max_wait_ms: u64 = 50, range 0..=600_000, "0 to 600000";

        /// Decoded frames of a stream that may wait for the model; a file input blocks decoding
        /// when full [default: two batches (at least 16 for files); several live streams share
        /// the two batches, at least 8 frames each]
        #[arg(long, value_name = "N")]
        queue_capacity: usize, range 1..=100_000, "1 to 100000 (at least --batch-size)";

        /// Explain the K most likely classes of each frame; the video shows one (--show-rank), the
        /// metadata holds all K
        #[arg(long, value_name = "K")]
        top_k: usize = 1, range 1..=20, "1 to 20";

        /// Which of the --top-k classes the video shows, 1 to K
        #[arg(long, value_name = "R")]
        show_rank: usize = 1, range 1..=20, "1 to --top-k";

        /// Heatmap colours: jet, turbo, inferno, viridis
        #[arg(long, value_name = "NAME")]
        colormap: Colormap = Colormap::Jet;

        /// Leave the frame as it is where the map is below T (0 to 1)
        #[arg(long, value_name = "T")]
        threshold: f32 = 0.0, range 0.0..1.0, "0 to 1 (below 1)";

        /// Draw the Grad-CAM paper's localization box (15% of the map's maximum, largest region)
        #[arg(long = "box", num_args = 0, default_missing_value = "true")]
        #[serde(rename = "box")]
        draw_box: bool = false;

        /// Do not draw the class label and probability on the frames
        #[arg(long = "no-label", num_args = 0, default_missing_value = "false")]
        label: bool = true;

        /// CAM method: auto (gradcam for a classifier, odam for a detector), gradcam, gradcam++,
        /// xgradcam, layercam, hirescam, odam (gradient x activation, per box), eigencam
        /// (gradient-free)
        #[arg(long, value_name = "NAME")]
        method: MethodChoice = MethodChoice::Auto;

        /// A detector: the most boxes explained per frame (the best by score)
        #[arg(long, value_name = "N")]
        boxes: usize = 10, range 1..=100, "1 to 100";

        /// A detector: the least probability of a box, 0 to 1 [default: the model's own
        /// (its sidecar's; CenterFace 0.2)]
        #[arg(long, value_name = "P")]
        score_threshold: f32, range 0.0..=1.0, "0 to 1";

        /// A detector: boxes of one class overlapping a better one by more than this IoU are
        /// dropped (non-maximum suppression), 0 to 1 [default: the model's own; CenterFace 0.3]
        #[arg(long, value_name = "IOU")]
        nms_iou: f32, range 0.0..=1.0, "0 to 1";

        /// A detector: the size frames are resized to for the model, WxH, multiples of its
        /// stride [default: the sidecar's; CenterFace 320x192: a larger size finds smaller
        /// faces and costs more]
        #[arg(long, value_name = "WxH")]
        detector_size: String;

        /// A detector: where each box's map is drawn: inside (within its box) or full (the whole
        /// frame, to see where outside the box it looked)
        #[arg(long, value_name = "inside|full")]
        box_maps: BoxMaps = BoxMaps::Inside;

        /// Opacity of the heatmap over the frame, 0 to 1
        #[arg(long, value_name = "A")]
        alpha: f32 = 0.5, range 0.0..=1.0, "0 to 1";

        /// Stop after this many frames, finishing the output cleanly
        #[arg(long, value_name = "N")]
        max_frames: u64, range 1..=2_000_000_000, "1 to 2000000000";

        /// Start a file input this far in (90, 1:30, 00:01:30.5), frame-accurate; the output
        /// starts at 0
        #[arg(long, value_name = "TIME")]
        start: String;

        /// A file input: explain this much of it from --start (90, 1:30, 00:01:30.5); a live input:
        /// stop this long after the first frame arrives; either way the output is finished cleanly
        #[arg(long, value_name = "TIME")]
        duration: String;

        /// CPU threads for the model; 0: on a CPU every core while the machine is this run's own,
        /// fewer beside busy processes; one on a GPU
        #[arg(long, value_name = "N")]
        threads: usize = 0, range 0..=1024, "0 (auto) to 1024";

        /// Progress display: auto (a bar on a terminal, lines otherwise), bar, lines, none
        #[arg(long, value_name = "MODE")]
        progress: Progress = Progress::Auto;
    }
    stream {
        /// Capture size to ask a webcam (or test:// source) for
        #[arg(long, value_name = "WxH")]
        input_size: String;

        /// Frame rate to ask a webcam (or test:// source) for
        #[arg(long, value_name = "N")]
        input_fps: u32, range 1..=1000, "1 to 1000";

        /// RTSP input: jitter-buffer latency in milliseconds
        #[arg(long, value_name = "MS")]
        rtsp_latency_ms: u32 = 200, range 0..=60_000, "0 to 60000";

        /// RTSP input transport: auto (UDP, falling back to TCP when no packet comes, and moving to TCP
        /// once when more than 1% of the packets are lost over UDP in 10 s), tcp or udp
        #[arg(long, value_name = "auto|tcp|udp")]
        rtsp_transport: RtspTransport = RtspTransport::Auto;

        /// RTSP input: reconnect tries in a row (1 s, 2 s, 4 s … apart, at most 30 s) before giving up;
        /// 0 reconnects forever
        #[arg(long, value_name = "N")]
        reconnect_max: u32 = 5, range 0..=1_000_000, "0 (forever) to 1000000";

        /// Explain this class in every frame instead of each frame's top-1: an id (285) or a name
        /// from the model's classes (`tabby`, case-insensitive)
        #[arg(long, value_name = "ID|NAME", allow_hyphen_values = true, value_parser = class_value)]
        class: ClassValue;

        /// Temporal smoothing S in [0, 1): each map is S x the previous map + (1 - S) x its own,
        /// reset on scene cuts and class changes; 0 is off
        #[arg(long, value_name = "S")]
        smooth: f32 = 0.0, range 0.0..1.0, "0 (off) to below 1";

        /// Write one JSON object per frame (class, score, the map) to this .jsonl file (with several
        /// inputs it contains `{stream}`)
        #[arg(long, value_name = "FILE")]
        metadata: PathBuf;

        /// Leave the input's sound out of the outputs (by default a file's or an RTSP camera's
        /// sound goes into its files and rtsp:// outputs, re-encoded to AAC only where needed)
        #[arg(long = "no-audio", num_args = 0, default_missing_value = "false")]
        audio: bool = true;

        /// When the model falls behind a live source: drop (oldest waiting frames go, the default
        /// for live sources) or block; a file input always blocks and never drops
        #[arg(long, value_name = "drop|block")]
        on_overload: Overload;

        /// A live stream's frame that has waited longer than this for the model when a batch is
        /// formed is dropped (and counted), never explained: latency stays bounded in time,
        /// whatever the camera count. Files never drop
        #[arg(long, value_name = "MS")]
        max_latency_ms: u64 = 1000, range 1..=600_000, "1 to 600000";

        /// While a live stream drops most of its frames (over --max-latency-ms or its queue full):
        /// `key-frames` decodes only its key frames until it keeps up again, sparing the decoder the
        /// frames that would be dropped; `all` decodes every frame
        #[arg(long, value_name = "key-frames|all")]
        when_behind: WhenBehind = WhenBehind::KeyFrames;

        /// A frame of an RTSP camera decoded from damaged data (RTP packets lost before it, up to
        /// the next whole key frame): `mark` shows and records it as decoded with a "damaged"
        /// badge and no map, its metadata line saying `"damaged": true`; `skip` leaves it out of
        /// the outputs and the model; `explain` explains it anyway, badge kept
        #[arg(long, value_name = "mark|skip|explain")]
        on_damaged: OnDamaged = OnDamaged::Mark;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_declared_ones() {
        let r = Run::default();
        assert_eq!((r.batch_size, r.max_wait_ms, r.top_k), (8, 50, 1));
        assert_eq!((r.alpha, r.draw_box, r.label), (0.5, false, true));
        assert_eq!(r.queue_capacity, None);
        let s = PerStream::default();
        assert_eq!((s.rtsp_latency_ms, s.reconnect_max), (200, 5));
        assert_eq!(s.rtsp_transport, RtspTransport::Auto);
    }

    #[test]
    fn layers_show_through_where_a_layer_is_silent() -> anyhow::Result<()> {
        let file: FileConfig = toml::from_str(
            "smooth = 0.5\nreconnect_max = 3\nbatch_size = 4\n[[stream]]\ninput = \"x\"\nsmooth = 0.25\n",
        )?;
        let flags = Flags {
            batch_size: Some(2),
            reconnect_max: Some(7),
            ..Flags::default()
        };
        let run = Run::layered(&flags, &file);
        assert_eq!((run.batch_size, run.alpha), (2, 0.5));
        let s = PerStream::layered(&flags, &file.stream[0], &file);
        assert_eq!((s.smooth, s.reconnect_max), (0.25, 7));
        let s = PerStream::layered(&Flags::default(), &StreamTable::default(), &file);
        assert_eq!((s.smooth, s.reconnect_max), (0.5, 3));
        Ok(())
    }

    #[test]
    fn ranges_are_checked_with_the_flag_named() {
        let r = Run {
            alpha: 1.5,
            ..Run::default()
        };
        let e = r.check_ranges().unwrap_err();
        assert_eq!(e, "--alpha 1.5 is out of range; use 0 to 1");
        let s = PerStream {
            smooth: 1.0,
            ..PerStream::default()
        };
        assert!(s.check_ranges().unwrap_err().starts_with("--smooth 1 "));
        assert_eq!(bounds("threshold"), Some((0.0, 1.0, false)));
        assert_eq!(bounds("batch_size"), Some((1.0, 256.0, true)));
        assert_eq!(bounds("device"), None);
        // Every numeric setting has a range: a stats interval too long for a Duration was a
        // panic before it had one.
        let r = Run {
            stats: Some(1e300),
            ..Run::default()
        };
        assert_eq!(
            r.check_ranges().unwrap_err(),
            "--stats 1e300 is out of range; use 0.1 to 86400 seconds"
        );
        for name in [
            "stats",
            "score_threshold",
            "nms_iou",
            "max_frames",
            "input_fps",
            "rtsp_latency_ms",
            "reconnect_max",
        ] {
            assert!(bounds(name).is_some(), "{name}");
        }
    }
}
