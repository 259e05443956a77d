//! Merges the TOML config file and the command line into one validated [`Config`].
//! Nothing after this module sees clap types or unchecked values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cam::Method;
use crate::cli::Args;
use crate::colormap::Colormap;

/// Default model, relative to the working directory or to the project the binary was built in.
pub const DEFAULT_MODEL: &str = "models/efficientnet_lite0.pt";
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp", "tif", "tiff"];

/// The config file: the same settings as the flags, with snake_case keys. Unknown keys are errors.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub input: Option<String>,
    pub output: Option<OneOrMany>,
    /// `[[stream]]` tables: one stream each (the command line's `--input`s replace them).
    #[serde(default)]
    pub stream: Vec<StreamTable>,
    pub segment: Option<String>,
    pub metrics: Option<String>,
    pub model: Option<PathBuf>,
    pub device: Option<String>,
    pub batch_size: Option<usize>,
    pub max_wait_ms: Option<u64>,
    pub queue_capacity: Option<usize>,
    pub class: Option<ClassValue>,
    pub top_k: Option<usize>,
    pub show_rank: Option<usize>,
    pub colormap: Option<String>,
    pub threshold: Option<f32>,
    #[serde(rename = "box")]
    pub draw_box: Option<bool>,
    pub label: Option<bool>,
    pub smooth: Option<f32>,
    pub alpha: Option<f32>,
    pub metadata: Option<PathBuf>,
    pub threads: Option<usize>,
    pub progress: Option<String>,
    pub on_overload: Option<String>,
    pub max_frames: Option<u64>,
    pub duration: Option<f64>,
    pub input_size: Option<String>,
    pub input_fps: Option<u32>,
    pub rtsp_latency_ms: Option<u32>,
    pub rtsp_transport: Option<String>,
    pub reconnect_max: Option<u32>,
    pub stats: Option<f64>,
    pub method: Option<String>,
    pub precision: Option<String>,
    pub encoder: Option<String>,
}

/// One `[[stream]]` table: an input with its own outputs and the settings that may differ
/// from stream to stream. What it leaves out comes from the file's top level and the flags.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamTable {
    pub name: Option<String>,
    pub input: String,
    #[serde(alias = "output")]
    pub outputs: Option<OneOrMany>,
    pub metadata: Option<PathBuf>,
    pub class: Option<ClassValue>,
    pub smooth: Option<f32>,
    pub rtsp_latency_ms: Option<u32>,
    pub rtsp_transport: Option<String>,
    pub reconnect_max: Option<u32>,
    pub input_size: Option<String>,
    pub input_fps: Option<u32>,
    pub on_overload: Option<String>,
}

/// `class = 285` or `class = "tabby"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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

/// `output = "x.mp4"` or `output = ["x.mp4", "rtsp://0.0.0.0:8554/gradcam"]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

/// The model's arithmetic: fp16 runs it under CUDA autocast (a GPU only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Fp16,
}

/// The H.264 encoder of file and RTSP outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// NVENC where the GPU has it (GStreamer's nvh264enc is registered), else x264.
    Auto,
    X264,
    Nvenc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Auto,
    Bar,
    Lines,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A still image read with the `image` crate.
    Image(PathBuf),
    /// Anything GStreamer's uridecodebin opens; `path` is set for local files.
    Video { uri: String, path: Option<PathBuf> },
    /// `test://[pattern][?size=WxH&fps=N]`: a live synthetic source (videotestsrc).
    Test {
        pattern: String,
        width: u32,
        height: u32,
        fps: u32,
    },
    /// A V4L2 camera (`/dev/videoN`), raw or MJPEG, in the mode asked for when one is.
    Webcam {
        device: PathBuf,
        size: Option<(u32, u32)>,
        fps: Option<u32>,
    },
    /// An RTSP feed (`rtsp://host[:port]/path`), reconnected when it drops.
    Rtsp { uri: String },
}

impl Input {
    /// A live source produces frames on its own clock, whether or not we keep up.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Input::Test { .. } | Input::Webcam { .. } | Input::Rtsp { .. }
        )
    }
}

/// How rtspsrc carries the feed: `auto` tries UDP and falls back to TCP when no packet comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspTransport {
    Auto,
    Tcp,
    Udp,
}

/// RTSP input settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtspSettings {
    /// rtspsrc's jitter buffer, in milliseconds.
    pub latency_ms: u32,
    pub transport: RtspTransport,
    /// Reconnect tries in a row (1 s, 2 s, 4 s … apart, at most 30 s) before giving up;
    /// 0: forever.
    pub reconnect_max: u32,
}

/// What the appsink does when the model falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// Drop the oldest waiting frame so the newest always gets through (live default).
    Drop,
    /// Wait for room: decoding slows to the model's pace (files, always).
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Mp4,
    Matroska,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Image(PathBuf),
    Video {
        path: PathBuf,
        container: Container,
    },
    /// A recording split by splitmuxsink into files of `--segment` length: `pattern` holds
    /// the number (`rec-%05d.mp4`).
    Segments {
        pattern: PathBuf,
        container: Container,
        every: Duration,
    },
    /// Serve the explained stream over RTSP at `rtsp://host:port/path` (port 0: a free one).
    Rtsp {
        host: String,
        port: u16,
        path: String,
    },
    /// A window on the desktop (autovideosink).
    Display,
    /// Discard the frames (for measuring).
    Null,
}

/// One stream: an input, where its explained frames go, and its own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// `cam1` from `--input cam1=…`, else the position (`0`, `1`, …).
    pub name: String,
    pub input: Input,
    /// The input as logs show it: credentials in a URL masked (`rtsp://user:***@cam/…`).
    pub shown: String,
    /// One or more outputs; an image input has exactly one image output.
    pub outputs: Vec<Output>,
    pub metadata: Option<PathBuf>,
    pub class: Option<ClassSpec>,
    pub smooth: f32,
    pub overload: Overload,
    pub queue_capacity: usize,
    pub rtsp: RtspSettings,
}

/// The RTSP server's credentials (`--rtsp-auth USER:PASSWORD`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:***", self.user)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// One stream a `--input` (or `[[stream]]` table); frames of all share the model's batches.
    pub streams: Vec<Stream>,
    pub model: PathBuf,
    pub device: DeviceChoice,
    pub precision: Precision,
    pub encoder: Encoder,
    pub batch_size: usize,
    pub max_wait: Duration,
    pub method: Method,
    pub top_k: usize,
    pub show_rank: usize,
    pub colormap: Colormap,
    pub threshold: f32,
    pub draw_box: bool,
    pub label: bool,
    pub alpha: f32,
    pub threads: usize,
    pub progress: Progress,
    /// End each stream cleanly after this many frames.
    pub max_frames: Option<u64>,
    /// End the run cleanly this long after the first frame.
    pub duration: Option<Duration>,
    /// Print a stats line this often (and a final one at exit).
    pub stats_every: Option<Duration>,
    /// Serve /metrics and /healthz here.
    pub metrics: Option<std::net::SocketAddr>,
    pub rtsp_auth: Option<Credentials>,
}

impl Config {
    /// Whether the run is one still image (one stream, an image in, an image out).
    pub fn is_image(&self) -> bool {
        matches!(self.streams.as_slice(), [s] if matches!(s.input, Input::Image(_)))
    }
}

/// An error in what the user asked for (exit status 2), as opposed to a failure while running.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // toml's message spans several lines; keep the first, which names key and line.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid TOML").to_owned();
            let detail = e.message().trim().to_owned();
            usage(format!("config {}: {first}: {detail}", path.display()))
        })
    }
}

impl Config {
    /// Merge the config file named by `--config` (if any) under the flags, then validate.
    pub fn from_args(args: Args) -> Result<Self> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    pub fn merge(a: Args, mut f: FileConfig) -> Result<Self> {
        // The streams as given: (name, input, its outputs and overrides when from a table).
        let tables: Vec<StreamTable> = if !a.input.is_empty() {
            a.input
                .iter()
                .map(|i| StreamTable {
                    input: i.clone(),
                    ..StreamTable::default()
                })
                .collect()
        } else if !f.stream.is_empty() {
            std::mem::take(&mut f.stream)
        } else if let Some(i) = f.input.take() {
            vec![StreamTable {
                input: i,
                ..StreamTable::default()
            }]
        } else {
            bail!(usage(
                "no input given; pass --input FILE|URI (or set `input` or [[stream]] tables in the config file)"
            ));
        };
        let several = tables.len() > 1;
        let n_streams = tables.len();
        let outputs = if a.output.is_empty() {
            f.output
                .clone()
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
        } else {
            a.output.clone()
        };
        let batch_size = a.batch_size.or(f.batch_size).unwrap_or(8);
        if !(1..=256).contains(&batch_size) {
            bail!(usage(format!(
                "--batch-size {batch_size} is out of range; use 1 to 256"
            )));
        }
        let top_k = a.top_k.or(f.top_k).unwrap_or(1);
        if !(1..=20).contains(&top_k) {
            bail!(usage(format!(
                "--top-k {top_k} is out of range; use 1 to 20"
            )));
        }
        let segment = match a.segment.as_deref().or(f.segment.as_deref()) {
            Some(s) => Some(parse_duration(s).ok_or_else(|| {
                usage(format!(
                    "--segment {s}: use a duration such as 30s, 10m or 1h"
                ))
            })?),
            None => None,
        };

        let mut names = Vec::new();
        let mut streams = Vec::new();
        for (n, t) in tables.into_iter().enumerate() {
            let (name, spec) = match t.name.clone() {
                Some(name) => (name, t.input.clone()),
                None => split_name(&t.input).unwrap_or_else(|| (n.to_string(), t.input.clone())),
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!(usage(format!(
                    "stream name `{name}`: use letters, digits, '-', '_' or '.'"
                )));
            }
            if names.contains(&name) {
                bail!(usage(format!(
                    "stream name `{name}` is given twice; give each --input its own NAME="
                )));
            }
            names.push(name.clone());
            // Flags first, then the stream's table, then the file's top level.
            // What the stream's own table names needs no {stream}; what all share does.
            let (outputs, own_outputs) = match (&t.outputs, a.output.is_empty()) {
                (Some(o), true) => (o.clone().into_vec(), true),
                _ => (outputs.clone(), false),
            };
            let own_metadata = a.metadata.is_none() && t.metadata.is_some();
            let shared = (several && !own_outputs, several && !own_metadata);
            let metadata = a
                .metadata
                .clone()
                .or(t.metadata.clone())
                .or(f.metadata.clone());
            let stream = Stream::merge(
                &name,
                &spec,
                &outputs,
                metadata,
                shared,
                &t,
                &a,
                &f,
                (batch_size, n_streams),
                top_k,
                segment,
            )?;
            streams.push(stream);
        }
        if several && streams.iter().any(|s| matches!(s.input, Input::Image(_))) {
            bail!(usage(
                "an image input explains one picture; give it alone, not among several inputs"
            ));
        }
        let mut seen: Vec<&Output> = Vec::new();
        for s in &streams {
            for o in &s.outputs {
                if !matches!(o, Output::Null | Output::Display) && seen.contains(&o) {
                    bail!(usage(format!(
                        "two streams write the same output ({o:?}); put {{stream}} in it"
                    )));
                }
                seen.push(o);
            }
        }

        let device = match a.device.or(f.device).as_deref().unwrap_or("auto") {
            "auto" => DeviceChoice::Auto,
            "cpu" => DeviceChoice::Cpu,
            "cuda" | "gpu" => DeviceChoice::Cuda,
            other => bail!(usage(format!(
                "unknown device `{other}`; use auto, cpu or cuda"
            ))),
        };
        let progress = match a.progress.or(f.progress).as_deref().unwrap_or("auto") {
            "auto" => Progress::Auto,
            "bar" => Progress::Bar,
            "lines" => Progress::Lines,
            "none" => Progress::None,
            other => bail!(usage(format!(
                "unknown progress mode `{other}`; use auto, bar, lines or none"
            ))),
        };
        let alpha = a.alpha.or(f.alpha).unwrap_or(0.5);
        if !(0.0..=1.0).contains(&alpha) {
            bail!(usage(format!(
                "--alpha {alpha} is out of range; use 0 to 1"
            )));
        }
        let show_rank = a.show_rank.or(f.show_rank).unwrap_or(1);
        if !(1..=top_k).contains(&show_rank) {
            bail!(usage(format!(
                "--show-rank {show_rank} is out of range; use 1 to --top-k ({top_k})"
            )));
        }
        let colormap = match a.colormap.or(f.colormap) {
            None => Colormap::Jet,
            Some(c) => Colormap::parse(&c).ok_or_else(|| {
                usage(format!(
                    "unknown --colormap `{c}`; use jet, turbo, inferno or viridis"
                ))
            })?,
        };
        let threshold = a.threshold.or(f.threshold).unwrap_or(0.0);
        if !(0.0..1.0).contains(&threshold) {
            bail!(usage(format!(
                "--threshold {threshold} is out of range; use 0 to 1 (below 1)"
            )));
        }
        let model = a.model.or(f.model).unwrap_or_else(default_model);
        let max_frames = a.max_frames.or(f.max_frames);
        if max_frames == Some(0) {
            bail!(usage("--max-frames must be at least 1"));
        }
        let duration = match a.duration.or(f.duration) {
            Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
            Some(d) => bail!(usage(format!(
                "--duration {d} must be a positive number of seconds"
            ))),
            None => None,
        };
        let stats_every = match a.stats.or(f.stats) {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => bail!(usage(format!(
                "--stats {s} must be a positive number of seconds"
            ))),
            None => None,
        };
        let precision = match a.precision.or(f.precision).as_deref() {
            None | Some("fp32") => Precision::Fp32,
            Some("fp16") => Precision::Fp16,
            Some(other) => bail!(usage(format!(
                "unknown --precision `{other}`; use fp32 or fp16 (fp16 on a CUDA GPU)"
            ))),
        };
        let encoder = match a.encoder.or(f.encoder).as_deref() {
            None | Some("auto") => Encoder::Auto,
            Some("x264") => Encoder::X264,
            Some("nvenc") => Encoder::Nvenc,
            Some(other) => bail!(usage(format!(
                "unknown --encoder `{other}`; use auto, x264 or nvenc"
            ))),
        };
        let method = match a.method.or(f.method) {
            None => Method::GradCam,
            Some(m) => Method::parse(&m).ok_or_else(|| {
                let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
                usage(format!("unknown --method `{m}`; use {}", names.join(", ")))
            })?,
        };
        let metrics = match a.metrics.or(f.metrics) {
            Some(m) => Some(parse_metrics_addr(&m)?),
            None => None,
        };
        let rtsp_auth = match a.rtsp_auth {
            Some(c) => Some(parse_credentials(&c, "--rtsp-auth")?),
            None => match std::env::var("GRADCAM_RTSP_AUTH") {
                Ok(c) if !c.is_empty() => Some(parse_credentials(&c, "GRADCAM_RTSP_AUTH")?),
                _ => None,
            },
        };
        if rtsp_auth.is_some()
            && !streams
                .iter()
                .any(|s| s.outputs.iter().any(|o| matches!(o, Output::Rtsp { .. })))
        {
            bail!(usage(
                "--rtsp-auth protects an rtsp:// output, and there is none; add --output rtsp://HOST:PORT/PATH or drop --rtsp-auth"
            ));
        }
        Ok(Config {
            streams,
            method,
            top_k,
            show_rank,
            colormap,
            threshold,
            draw_box: a.draw_box || f.draw_box.unwrap_or(false),
            label: !a.no_label && f.label.unwrap_or(true),
            model,
            device,
            precision,
            encoder,
            batch_size,
            max_wait: Duration::from_millis(a.max_wait_ms.or(f.max_wait_ms).unwrap_or(50)),
            alpha,
            threads: a.threads.or(f.threads).unwrap_or(0),
            progress,
            max_frames,
            duration,
            stats_every,
            metrics,
            rtsp_auth,
        })
    }
}

impl Stream {
    /// One stream's settings: its table's, else the flags', else the file's top level.
    #[allow(clippy::too_many_arguments)]
    fn merge(
        name: &str,
        spec: &str,
        outputs: &[String],
        metadata: Option<PathBuf>,
        (shared_outputs, shared_metadata): (bool, bool),
        t: &StreamTable,
        a: &Args,
        f: &FileConfig,
        (batch_size, n_streams): (usize, usize),
        top_k: usize,
        segment: Option<Duration>,
    ) -> Result<Stream> {
        let shown = crate::redact::uri(spec);
        let input_size = match a
            .input_size
            .clone()
            .or(t.input_size.clone())
            .or(f.input_size.clone())
        {
            Some(s) => Some(parse_size(&s).ok_or_else(|| {
                usage(format!("--input-size {s}: use WIDTHxHEIGHT, e.g. 1280x720"))
            })?),
            None => None,
        };
        let input_fps = a.input_fps.or(t.input_fps).or(f.input_fps);
        if input_fps == Some(0) {
            bail!(usage("--input-fps must be at least 1"));
        }
        let input = parse_input(spec, input_size, input_fps)?;
        if outputs.is_empty() {
            bail!(usage(
                "no output given; pass --output out.mp4 (or set `output` in the config file)"
            ));
        }
        let with_name = |o: &str, what: &str, shared: bool| -> Result<String> {
            if !o.contains("{stream}") {
                if shared && !matches!(o, "null" | "display") {
                    bail!(usage(format!(
                        "{what} {o}: with several inputs every {what} must contain {{stream}} (each stream's name), e.g. rec-{{stream}}.mp4 or rtsp://0.0.0.0:8554/{{stream}}"
                    )));
                }
                return Ok(o.to_owned());
            }
            Ok(o.replace("{stream}", name))
        };
        let outputs = outputs
            .iter()
            .map(|o| with_name(o, "--output", shared_outputs))
            .collect::<Result<Vec<_>>>()?;
        let mut outputs = parse_outputs(&outputs, &input)?;
        if let Some(every) = segment {
            for o in &mut outputs {
                if let Output::Video { path, container } = o {
                    *o = Output::Segments {
                        pattern: segment_pattern(path),
                        container: *container,
                        every,
                    };
                }
            }
        }
        let metadata = match metadata {
            Some(m) => {
                let m = PathBuf::from(with_name(
                    &m.to_string_lossy(),
                    "--metadata",
                    shared_metadata,
                )?);
                if m.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                    bail!(usage(format!(
                        "--metadata {}: use a .jsonl file name",
                        m.display()
                    )));
                }
                Some(m)
            }
            None => None,
        };
        // Two batches: one to gather while the model explains the other. A live source's
        // queue is latency, so no more there: with several live streams the two batches are
        // shared out (every stream fills batches), at least 8 frames each: with 2 or 4 the
        // other streams dropped a frame or two whenever a lost camera came back (the soak). A file's queue is
        // at least 16 frames of slack.
        let queue_capacity =
            a.queue_capacity
                .or(f.queue_capacity)
                .unwrap_or(if input.is_live() && n_streams > 1 {
                    (2 * batch_size).div_ceil(n_streams).max(8)
                } else if input.is_live() {
                    2 * batch_size
                } else {
                    (2 * batch_size).max(16)
                });
        if queue_capacity * n_streams < batch_size || queue_capacity == 0 {
            bail!(usage(format!(
                "--queue-capacity {queue_capacity} is smaller than --batch-size {batch_size}: a batch could never fill; use a queue of at least the batch size (two batches is the default)"
            )));
        }
        let class_value = match (&a.class, &t.class, &f.class) {
            (Some(s), _, _) => Some(ClassValue::Name(s.clone())),
            (None, Some(c), _) | (None, None, Some(c)) => Some(c.clone()),
            (None, None, None) => None,
        };
        let class = class_value.map(|c| match c {
            ClassValue::Id(id) => ClassSpec::Id(id),
            ClassValue::Name(s) => match s.trim().parse::<i64>() {
                Ok(id) => ClassSpec::Id(id),
                Err(_) => ClassSpec::Name(s),
            },
        });
        if let Some(ClassSpec::Id(c)) = class {
            if c < 0 {
                bail!(usage(format!(
                    "--class {c} is negative; use a class id from 0 to (number of classes - 1) or a class name"
                )));
            }
        }
        if top_k > 1 && class.is_some() {
            bail!(usage(
                "--top-k explains each frame's most likely classes; drop --class, or --top-k"
            ));
        }
        let smooth = a.smooth.or(t.smooth).or(f.smooth).unwrap_or(0.0);
        if !(0.0..1.0).contains(&smooth) {
            bail!(usage(format!(
                "--smooth {smooth} is out of range; use 0 (off) to below 1"
            )));
        }
        let overload = match a
            .on_overload
            .as_deref()
            .or(t.on_overload.as_deref())
            .or(f.on_overload.as_deref())
        {
            None if input.is_live() => Overload::Drop,
            None | Some("block") => Overload::Block,
            Some("drop") if input.is_live() => Overload::Drop,
            Some("drop") => bail!(usage(
                "--on-overload drop applies to live sources; a file input never drops frames"
            )),
            Some(other) => bail!(usage(format!(
                "unknown --on-overload `{other}`; use drop or block"
            ))),
        };
        let transport = match a
            .rtsp_transport
            .as_deref()
            .or(t.rtsp_transport.as_deref())
            .or(f.rtsp_transport.as_deref())
        {
            None | Some("auto") => RtspTransport::Auto,
            Some("tcp") => RtspTransport::Tcp,
            Some("udp") => RtspTransport::Udp,
            Some(other) => bail!(usage(format!(
                "unknown --rtsp-transport `{other}`; use auto, tcp or udp"
            ))),
        };
        Ok(Stream {
            name: name.to_owned(),
            input,
            shown,
            outputs,
            metadata,
            class,
            smooth,
            overload,
            queue_capacity,
            rtsp: RtspSettings {
                latency_ms: a
                    .rtsp_latency_ms
                    .or(t.rtsp_latency_ms)
                    .or(f.rtsp_latency_ms)
                    .unwrap_or(200),
                transport,
                reconnect_max: a
                    .reconnect_max
                    .or(t.reconnect_max)
                    .or(f.reconnect_max)
                    .unwrap_or(5),
            },
        })
    }
}

/// `cam1=rtsp://…` → (`cam1`, `rtsp://…`): a prefix of name characters before the first `=`,
/// when what follows is not empty and the whole is not a file that exists.
fn split_name(spec: &str) -> Option<(String, String)> {
    let (name, rest) = spec.split_once('=')?;
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (plain && !rest.is_empty() && !Path::new(spec).exists())
        .then(|| (name.to_owned(), rest.to_owned()))
}

/// `30s`, `10m`, `1h`, `1500ms` or plain seconds (`90`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then(|| Duration::from_secs_f64(v * scale))
}

/// `rec.mp4` → `rec-%05d.mp4`; a path that already holds a `%…d` keeps it.
fn segment_pattern(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    if s.contains('%') {
        return path.to_owned();
    }
    let stem = path
        .file_stem()
        .map(|x| x.to_string_lossy())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|x| x.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-%05d.{ext}"))
}

/// `HOST:PORT` for the metrics server; a bare port means loopback.
fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let spec = if s.parse::<u16>().is_ok() {
        format!("127.0.0.1:{s}")
    } else {
        s.to_owned()
    };
    spec.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            usage(format!(
                "--metrics {s}: use HOST:PORT, e.g. 127.0.0.1:9464 (port 0 picks a free one)"
            ))
        })
}

fn parse_credentials(s: &str, what: &str) -> Result<Credentials> {
    match s.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            crate::redact::secret(password);
            Ok(Credentials {
                user: user.to_owned(),
                password: password.to_owned(),
            })
        }
        _ => bail!(usage(format!("{what}: use USER:PASSWORD, both non-empty"))),
    }
}

/// `models/…` under the working directory, else under the project the binary sits in
/// (`target/release/gradcam-stream` → `../../models/…`), so `make demo` output runs from anywhere.
fn default_model() -> PathBuf {
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

fn extension(p: &Path) -> Option<String> {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

pub fn is_image_path(p: &Path) -> bool {
    extension(p).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

fn parse_input(s: &str, size: Option<(u32, u32)>, fps: Option<u32>) -> Result<Input> {
    let input = if let Some((scheme, rest)) = s.split_once("://") {
        match scheme {
            "test" => parse_test(rest)?,
            "file" => local_input(PathBuf::from(rest))?,
            "v4l2" => webcam(Path::new(rest))?,
            "http" | "https" => Input::Video {
                uri: s.to_owned(),
                path: None,
            },
            "rtsp" | "rtsps" | "rtspt" | "rtspu" => {
                if rest.split('/').next().unwrap_or("").is_empty() {
                    bail!(usage(format!(
                        "{s}: no host; use rtsp://HOST[:PORT]/PATH"
                    )));
                }
                Input::Rtsp { uri: s.to_owned() }
            }
            _ => bail!(usage(format!(
                "unsupported input scheme `{scheme}://` in {s}; use a file path, file://, http(s)://, rtsp://, v4l2:// (or /dev/videoN) or test://"
            ))),
        }
    } else if s.starts_with("/dev/video") {
        webcam(Path::new(s))?
    } else {
        local_input(PathBuf::from(s))?
    };
    // A requested capture mode applies to sources that have modes.
    match input {
        Input::Webcam { device, .. } => Ok(Input::Webcam { device, size, fps }),
        Input::Test {
            pattern,
            width,
            height,
            fps: test_fps,
        } => {
            let (width, height) = size.unwrap_or((width, height));
            Ok(Input::Test {
                pattern,
                width,
                height,
                fps: fps.unwrap_or(test_fps),
            })
        }
        _ if size.is_some() || fps.is_some() => bail!(usage(format!(
            "--input-size and --input-fps apply to webcams and test:// sources, not to {s}"
        ))),
        other => Ok(other),
    }
}

/// A V4L2 device node that exists and is a character device.
fn webcam(device: &Path) -> Result<Input> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(device).map_err(|_| {
        usage(format!(
            "webcam {} does not exist; list the cameras with `v4l2-ctl --list-devices` or `ls /dev/video*`",
            device.display()
        ))
    })?;
    if !meta.file_type().is_char_device() {
        bail!(usage(format!(
            "{} is not a video device; give a camera node such as /dev/video0",
            device.display()
        )));
    }
    Ok(Input::Webcam {
        device: device.to_owned(),
        size: None,
        fps: None,
    })
}

/// `test://[pattern][?size=WxH&fps=N]`, e.g. `test://ball?size=640x480&fps=30`.
fn parse_test(rest: &str) -> Result<Input> {
    let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
    let pattern = if pattern.is_empty() { "smpte" } else { pattern };
    let (mut width, mut height, mut fps) = (640, 480, 30);
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let bad = || usage(format!("test:// option `{kv}`: use size=WxH and fps=N"));
        match kv.split_once('=').ok_or_else(bad)? {
            ("size", v) => {
                let (w, h) = v.split_once('x').ok_or_else(bad)?;
                width = w.parse().map_err(|_| bad())?;
                height = h.parse().map_err(|_| bad())?;
            }
            ("fps", v) => fps = v.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        }
    }
    if width == 0 || height == 0 || fps == 0 {
        bail!(usage(format!(
            "test://{rest}: size and fps must be positive"
        )));
    }
    Ok(Input::Test {
        pattern: pattern.to_owned(),
        width,
        height,
        fps,
    })
}

fn local_input(path: PathBuf) -> Result<Input> {
    if !path.exists() {
        bail!(usage(format!(
            "input {} does not exist; check the path",
            path.display()
        )));
    }
    if path.is_dir() {
        bail!(usage(format!(
            "input {} is a directory; give a video or image file",
            path.display()
        )));
    }
    if is_image_path(&path) {
        return Ok(Input::Image(path));
    }
    let abs = std::fs::canonicalize(&path)
        .with_context(|| format!("resolving input {}", path.display()))?;
    let uri = file_uri(&abs);
    Ok(Input::Video {
        uri,
        path: Some(path),
    })
}

/// `file://` URI with the characters GStreamer's URI parser rejects percent-encoded.
fn file_uri(abs: &Path) -> String {
    let mut uri = String::from("file://");
    for b in abs.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

fn parse_outputs(specs: &[String], input: &Input) -> Result<Vec<Output>> {
    let mut outputs: Vec<Output> = Vec::new();
    for spec in specs {
        let o = parse_output(spec, input)?;
        if outputs.contains(&o) {
            bail!(usage(format!("output {spec} is given twice")));
        }
        outputs.push(o);
    }
    if matches!(input, Input::Image(_)) && outputs.len() > 1 {
        bail!(usage("an image input has one output image"));
    }
    if outputs.len() > 1 && outputs.contains(&Output::Null) {
        bail!(usage(
            "output null discards the frames; drop it when there are other outputs"
        ));
    }
    Ok(outputs)
}

/// `rtsp://HOST[:PORT][/PATH]` for the server: port 8554 and path /gradcam when left out.
fn parse_rtsp_output(spec: &str) -> Result<Output> {
    let rest = &spec["rtsp://".len()..];
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let bad = || {
        usage(format!(
            "output {spec}: use rtsp://HOST:PORT/PATH, e.g. rtsp://0.0.0.0:8554/gradcam (port 0 picks a free one)"
        ))
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (authority, 8554),
    };
    if host.is_empty() {
        return Err(bad());
    }
    let path = match path.trim_end_matches('/') {
        "" => "/gradcam".to_owned(),
        p => p.to_owned(),
    };
    Ok(Output::Rtsp {
        host: host.to_owned(),
        port,
        path,
    })
}

fn parse_output(spec: &str, input: &Input) -> Result<Output> {
    let path = Path::new(spec);
    if matches!(spec, "null" | "display") {
        if let Input::Image(_) = input {
            bail!(usage(format!(
                "output {spec} is for video inputs; give an image path"
            )));
        }
        if spec == "null" {
            return Ok(Output::Null);
        }
        let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        if !graphical {
            bail!(usage(
                "output display needs a graphical session and DISPLAY is not set; run it on a desktop or under xvfb-run, or write a file or rtsp:// instead"
            ));
        }
        return Ok(Output::Display);
    }
    if let Some((scheme, _)) = spec.split_once("://") {
        if scheme == "rtsp" && !matches!(input, Input::Image(_)) {
            return parse_rtsp_output(spec);
        }
        bail!(usage(format!(
            "unsupported output `{spec}`; use a .mp4 or .mkv file, rtsp://HOST:PORT/PATH, display or null"
        )));
    }
    let ext = extension(path).unwrap_or_default();
    match input {
        Input::Image(_) => {
            if !is_image_path(path) {
                bail!(usage(format!(
                    "output {} must be an image (.png, .jpg, …) for an image input",
                    path.display()
                )));
            }
            Ok(Output::Image(path.to_owned()))
        }
        _ => {
            let container = match ext.as_str() {
                "mp4" | "m4v" | "mov" => Container::Mp4,
                "mkv" => Container::Matroska,
                _ => bail!(usage(format!(
                    "output {}: unsupported extension; use .mp4 or .mkv, rtsp://HOST:PORT/PATH, display or null for a video input",
                    path.display()
                ))),
            };
            Ok(Output::Video {
                path: path.to_owned(),
                container,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(input: &str, output: &str) -> Args {
        Args {
            input: vec![input.into()],
            output: vec![output.into()],
            ..Args::default()
        }
    }

    fn this_file() -> String {
        format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn defaults_fill_what_is_missing() -> Result<()> {
        let c = Config::merge(args(&this_file(), "x.mp4"), FileConfig::default())?;
        assert_eq!(c.batch_size, 8);
        assert_eq!(c.max_wait, Duration::from_millis(50));
        assert_eq!(c.alpha, 0.5);
        assert_eq!(c.device, DeviceChoice::Auto);
        assert!(
            matches!(c.streams[0].input, Input::Video { ref uri, .. } if uri.starts_with("file:///"))
        );
        assert_eq!(
            c.streams[0].outputs[0],
            Output::Video {
                path: "x.mp4".into(),
                container: Container::Mp4
            }
        );
        Ok(())
    }

    #[test]
    fn command_line_overrides_file() -> Result<()> {
        let file: FileConfig = toml::from_str("batch_size = 4\nalpha = 0.3\ndevice = \"cpu\"")?;
        let mut a = args(&this_file(), "x.mkv");
        a.batch_size = Some(2);
        let c = Config::merge(a, file)?;
        assert_eq!(c.batch_size, 2);
        assert_eq!(c.alpha, 0.3);
        assert_eq!(c.device, DeviceChoice::Cpu);
        assert!(matches!(
            c.streams[0].outputs[0],
            Output::Video {
                container: Container::Matroska,
                ..
            }
        ));
        Ok(())
    }

    #[test]
    fn test_sources_and_overload_policy() -> Result<()> {
        let c = Config::merge(
            args("test://ball?size=64x48&fps=60", "null"),
            FileConfig::default(),
        )?;
        assert_eq!(
            c.streams[0].input,
            Input::Test {
                pattern: "ball".into(),
                width: 64,
                height: 48,
                fps: 60
            }
        );
        assert_eq!(c.streams[0].outputs, vec![Output::Null]);
        assert_eq!(c.streams[0].overload, Overload::Drop);
        assert_eq!(c.streams[0].queue_capacity, 2 * c.batch_size);
        let mut a = args("test://", "x.mp4");
        a.on_overload = Some("block".into());
        assert_eq!(
            Config::merge(a, FileConfig::default())?.streams[0].overload,
            Overload::Block
        );
        let file = Config::merge(args(&this_file(), "x.mp4"), FileConfig::default())?;
        assert_eq!(file.streams[0].overload, Overload::Block);
        assert_eq!(file.streams[0].queue_capacity, 16);
        let mut a = args(&this_file(), "x.mp4");
        a.batch_size = Some(32);
        let c = Config::merge(a, FileConfig::default())?;
        assert_eq!(c.streams[0].queue_capacity, 64, "two batches");
        let mut a = args(&this_file(), "x.mp4");
        a.on_overload = Some("drop".into());
        let e = Config::merge(a, FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("never drops"), "{e}");
        let e =
            Config::merge(args("test://ball?size=64", "null"), FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("size=WxH"), "{e}");
        Ok(())
    }

    #[test]
    fn several_outputs_and_live_inputs() -> Result<()> {
        let file: FileConfig = toml::from_str(
            "output = [\"a.mp4\", \"rtsp://0.0.0.0:0/x\", \"rtsp://127.0.0.1\"]\nreconnect_max = 2",
        )?;
        let mut a = args("rtsp://cam.local:554/stream1", "");
        a.output.clear();
        let c = Config::merge(a, file)?;
        assert_eq!(
            c.streams[0].input,
            Input::Rtsp {
                uri: "rtsp://cam.local:554/stream1".into()
            }
        );
        assert_eq!(c.streams[0].overload, Overload::Drop);
        assert_eq!(c.streams[0].rtsp.reconnect_max, 2);
        assert_eq!(c.streams[0].rtsp.transport, RtspTransport::Auto);
        assert_eq!(
            c.streams[0].outputs[1..],
            [
                Output::Rtsp {
                    host: "0.0.0.0".into(),
                    port: 0,
                    path: "/x".into()
                },
                Output::Rtsp {
                    host: "127.0.0.1".into(),
                    port: 8554,
                    path: "/gradcam".into()
                }
            ]
        );
        let mut a = args("test://snow", "null");
        a.input_size = Some("64x32".into());
        a.input_fps = Some(5);
        a.stats = Some(2.0);
        let c = Config::merge(a, FileConfig::default())?;
        assert!(matches!(
            c.streams[0].input,
            Input::Test {
                width: 64,
                height: 32,
                fps: 5,
                ..
            }
        ));
        assert_eq!(c.stats_every, Some(Duration::from_secs(2)));
        Ok(())
    }

    #[test]
    fn several_inputs_are_named_streams_with_their_own_outputs() -> Result<()> {
        let a = Args {
            input: vec![
                "cam1=rtsp://admin:pw@10.0.0.5/stream1".into(),
                "test://ball".into(),
            ],
            output: vec![
                "rec-{stream}.mp4".into(),
                "rtsp://0.0.0.0:8554/{stream}".into(),
            ],
            metadata: Some("meta-{stream}.jsonl".into()),
            ..Args::default()
        };
        let c = Config::merge(a, FileConfig::default())?;
        let names: Vec<_> = c.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["cam1", "1"]);
        assert_eq!(c.streams[0].shown, "rtsp://admin:***@10.0.0.5/stream1");
        assert_eq!(
            c.streams[1].outputs,
            [
                Output::Video {
                    path: "rec-1.mp4".into(),
                    container: Container::Mp4
                },
                Output::Rtsp {
                    host: "0.0.0.0".into(),
                    port: 8554,
                    path: "/1".into()
                }
            ]
        );
        assert_eq!(c.streams[0].metadata, Some("meta-cam1.jsonl".into()));
        // Two live streams share the two batches of queue: 8 frames each at batch size 8.
        assert_eq!(c.streams[0].queue_capacity, 8);

        // Without {stream}, two streams would write one file.
        let a = Args {
            input: vec!["test://ball".into(), "test://snow".into()],
            output: vec!["rec.mp4".into()],
            ..Args::default()
        };
        let e = Config::merge(a, FileConfig::default()).unwrap_err();
        assert!(
            e.is::<UsageError>() && e.to_string().contains("{stream}"),
            "{e}"
        );
        let a = Args {
            input: vec!["a=test://ball".into(), "a=test://snow".into()],
            output: vec!["{stream}.mp4".into()],
            ..Args::default()
        };
        let e = Config::merge(a, FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        Ok(())
    }

    #[test]
    fn stream_tables_set_their_own_settings() -> Result<()> {
        let file: FileConfig = toml::from_str(
            r#"
            output = "rec-{stream}.mkv"
            smooth = 0.5
            reconnect_max = 3
            [[stream]]
            name = "door"
            input = "rtsp://10.0.0.5/a"
            class = "tabby"
            reconnect_max = 0
            [[stream]]
            name = "yard"
            input = "test://ball"
            outputs = ["yard.mp4", "rtsp://127.0.0.1:8554/yard"]
            smooth = 0.0
            "#,
        )?;
        let c = Config::merge(Args::default(), file)?;
        let (door, yard) = (&c.streams[0], &c.streams[1]);
        assert_eq!(door.class, Some(ClassSpec::Name("tabby".into())));
        assert_eq!(door.rtsp.reconnect_max, 0);
        assert_eq!(door.smooth, 0.5);
        assert_eq!(
            door.outputs,
            [Output::Video {
                path: "rec-door.mkv".into(),
                container: Container::Matroska
            }]
        );
        assert_eq!(yard.smooth, 0.0);
        assert_eq!(yard.rtsp.reconnect_max, 3);
        assert_eq!(yard.outputs.len(), 2);
        Ok(())
    }

    #[test]
    fn segments_metrics_and_credentials() -> Result<()> {
        let mut a = args("test://ball", "rec.mp4");
        a.segment = Some("10m".into());
        a.metrics = Some("9464".into());
        let c = Config::merge(a, FileConfig::default())?;
        assert_eq!(
            c.streams[0].outputs,
            [Output::Segments {
                pattern: "rec-%05d.mp4".into(),
                container: Container::Mp4,
                every: Duration::from_secs(600)
            }]
        );
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse()?));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("-1s"), None);
        let mut a = args("test://ball", "rtsp://0.0.0.0:0/x");
        a.rtsp_auth = Some("viewer:s3cret".into());
        let c = Config::merge(a, FileConfig::default())?;
        let creds = c.rtsp_auth.expect("credentials");
        assert_eq!(format!("{creds:?}"), "viewer:***");
        let mut a = args("test://ball", "rtsp://0.0.0.0:0/x");
        a.rtsp_auth = Some("viewer".into());
        let e = Config::merge(a, FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("USER:PASSWORD"), "{e}");
        let mut a = args("test://ball", "x.mp4");
        a.rtsp_auth = Some("viewer:pw".into());
        let e = Config::merge(a, FileConfig::default()).unwrap_err();
        assert!(
            e.to_string().contains("no rtsp:// output") || e.to_string().contains("there is none"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let r: std::result::Result<FileConfig, _> = toml::from_str("batchsize = 4");
        assert!(r.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn shipped_config_parses() -> Result<()> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/default.toml");
        FileConfig::load(&p)?;
        Ok(())
    }

    #[test]
    fn shipped_stream_configs_make_valid_runs() -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let c = Config::merge(
            Args::default(),
            FileConfig::load(&root.join("configs/streams.toml"))?,
        )?;
        let names: Vec<_> = c.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["door", "yard", "lab"]);
        assert_eq!(c.streams[0].shown, "rtsp://viewer:***@10.0.0.5:554/stream1");
        // The Kubernetes example's config, as mounted from its ConfigMap.
        let yaml = std::fs::read_to_string(root.join("deploy/kubernetes.yaml"))?;
        let toml_text: String = yaml
            .lines()
            .skip_while(|l| !l.contains("streams.toml: |"))
            .skip(1)
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        let file: FileConfig = toml::from_str(&toml_text)?;
        let c = Config::merge(Args::default(), file)?;
        assert_eq!(c.streams.len(), 2);
        assert_eq!(c.metrics, Some("0.0.0.0:9464".parse()?));
        Ok(())
    }

    #[test]
    fn bad_values_are_usage_errors() {
        type Edit = fn(&mut Args);
        let cases: &[(&str, Edit)] = &[
            ("batch-size", |a| a.batch_size = Some(0)),
            ("alpha", |a| a.alpha = Some(1.5)),
            ("device", |a| a.device = Some("tpu".into())),
            ("negative", |a| a.class = Some("-1".into())),
            ("jsonl", |a| a.metadata = Some("m.json".into())),
            ("--max-frames", |a| a.max_frames = Some(0)),
            ("--duration", |a| a.duration = Some(-1.0)),
            ("--precision", |a| a.precision = Some("fp8".into())),
            ("--encoder", |a| a.encoder = Some("vp9".into())),
            ("smaller than --batch-size", |a| {
                a.batch_size = Some(16);
                a.queue_capacity = Some(8);
            }),
        ];
        for (needle, edit) in cases {
            let mut a = args(&this_file(), "x.mp4");
            edit(&mut a);
            let e = Config::merge(a, FileConfig::default()).unwrap_err();
            assert!(e.is::<UsageError>(), "{e}");
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        }
    }

    #[test]
    fn inputs_and_outputs_are_classified() -> Result<()> {
        assert!(
            Config::merge(args("/no/such/file.mp4", "x.mp4"), FileConfig::default())
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert!(
            Config::merge(args(&this_file(), "x.avi"), FileConfig::default())
                .unwrap_err()
                .to_string()
                .contains(".mp4 or .mkv")
        );
        assert!(
            Config::merge(args("rtmp://host/x", "x.mp4"), FileConfig::default())
                .unwrap_err()
                .to_string()
                .contains("unsupported input scheme")
        );
        assert_eq!(
            file_uri(Path::new("/a b/c#d.mp4")),
            "file:///a%20b/c%23d.mp4"
        );
        Ok(())
    }
}
