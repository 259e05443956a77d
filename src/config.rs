//! Merges the TOML config file and the command line into one validated [`Config`].
//! Nothing after this module sees clap types or unchecked values. The settings are declared
//! once in `settings.rs`, which also layers them (flags over a stream's table over the file's
//! top level over the defaults); this module validates the merged result, once, and builds the
//! values the run uses.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::cli::Args;
pub use crate::endpoint::{
    is_image_path, parse_duration, Container, Credentials, Input, Output, Tls, WebView,
};
use crate::endpoint::{
    is_name, metadata_path, parse_input, parse_metrics_addr, parse_outputs, parse_size,
    rtsp_credentials, segment_pattern, split_name, tls, web_view, with_name,
};
pub use crate::settings::named::{
    BoxMaps, Colormap, Deinterlace, DeviceChoice, Encoder, Layout, MethodChoice, Named, OnDamaged,
    Orientation, Overload, Precision, Progress, Realtime, RtspTransport, WhenBehind,
};
use crate::settings::PerStream;
pub use crate::settings::{
    ClassSpec, ClassValue, FileConfig, OneOrMany, Run, StreamTable, DEFAULT_MODEL,
};
use crate::shard::Shard;
pub(crate) use crate::usage::usage;
pub use crate::usage::UsageError;

/// RTSP input settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtspSettings {
    /// rtspsrc's jitter buffer, in milliseconds.
    pub latency_ms: u32,
    pub transport: RtspTransport,
    /// Reconnect tries in a row (1 s, 2 s, 4 s … apart, at most 30 s) before giving up;
    /// 0: forever.
    pub reconnect_max: u32,
    /// What becomes of a frame decoded from damaged data.
    pub on_damaged: OnDamaged,
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
    pub metadata: Option<std::path::PathBuf>,
    /// Its class, smoothing and whether it is drawn, as the engine takes them.
    pub explain: crate::engine::StreamSettings,
    pub overload: Overload,
    /// A live stream's bound on a frame's wait for the model (None: a file, never dropped).
    pub max_latency: Option<Duration>,
    /// While the stream is behind (dropping most frames): decode its key frames only.
    pub key_frames_when_behind: bool,
    pub queue_capacity: usize,
    pub rtsp: RtspSettings,
    /// Whether its sound goes to its outputs.
    pub audio: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// One stream a `--input` (or `[[stream]]` table); frames of all share the model's batches.
    /// With `--shard`, this process's share of them only.
    pub streams: Vec<Stream>,
    /// `--shard`: which share; and how many streams the config names in all.
    pub shard: Option<Shard>,
    pub configured: usize,
    /// The run-wide settings as declared (`settings.rs`): merged, range-checked and typed.
    pub run: Run,
    /// What the engine is asked, from `run` by the checks every front end shares, with each
    /// stream's class, smoothing and whether it is drawn.
    pub engine: crate::engine::Settings,
    /// File inputs: where to start, and how much to explain; live inputs: end the run
    /// cleanly this long after the first frame.
    pub start: Option<Duration>,
    pub duration: Option<Duration>,
    /// Print a stats line this often (and a final one at exit).
    pub stats_every: Option<Duration>,
    /// Serve /metrics and /healthz here.
    pub metrics: Option<std::net::SocketAddr>,
    pub rtsp_auth: Option<Credentials>,
    pub web: Option<WebView>,
    pub tls: Option<Tls>,
}

impl Config {
    /// Whether the run explains stills: one image (in and out) or a folder of them.
    pub fn is_image(&self) -> bool {
        matches!(self.streams.as_slice(), [s] if matches!(s.input, Input::Image(_) | Input::Folder(_)))
    }
}

/// What every stream's settings depend on: resolved once, before the streams.
struct Common {
    n_streams: usize,
    /// The engine's run-wide settings; each stream's are checked against them.
    engine: crate::engine::Settings,
    /// Whether the web view shows every stream.
    watched: bool,
    /// `--queue-capacity`, as given.
    queue_capacity: Option<usize>,
    segment: Option<Duration>,
    /// The flags' outputs, else the file's top-level ones.
    outputs: Vec<String>,
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

    /// The layers merged (`settings.rs`), then checked once and turned into the run's values.
    pub fn merge(a: Args, mut f: FileConfig) -> Result<Self> {
        let tables = f.stream_tables(&a.input)?;
        let run = Run::layered(&a.settings, &f);
        let engine = crate::engine::Settings::try_from(&run)?;
        let shard = run.shard.as_deref().map(shard_of).transpose()?;
        let owned = |name: &str| shard.is_none_or(|s| s.owns(name));
        let mut mine = 0;
        for (n, t) in tables.iter().enumerate() {
            mine += usize::from(owned(&stream_name(n, t)?.0));
        }
        let web = web_view(run.web.as_deref(), a.web_auth.as_deref())?;
        let common = Common {
            n_streams: mine.max(1),
            engine,
            watched: web.is_some(),
            queue_capacity: run.queue_capacity,
            segment: match &run.segment {
                Some(s) => Some(parse_duration(s).ok_or_else(|| {
                    usage(format!(
                        "--segment {s}: use a duration such as 30s, 10m or 1h"
                    ))
                })?),
                None => None,
            },
            outputs: match (&a.output, &f.output) {
                (o, _) if !o.is_empty() => o.clone(),
                (_, Some(file)) => file.clone().into_vec(),
                // Watched in the browser alone: nothing else to write.
                (_, None) if run.web.is_some() => vec!["null".into()],
                (_, None) => vec![],
            },
        };
        let mut streams = resolve_streams(&a, &f, tables, &common)?;
        let configured = streams.len();
        streams.retain(|s| owned(&s.name));
        let serves_rtsp = streams.iter().any(Stream::serves_rtsp);
        let rtsp_auth = rtsp_credentials(a.rtsp_auth.as_deref(), serves_rtsp)?;
        let tls = tls(
            run.tls_cert.clone(),
            run.tls_key.clone(),
            web.is_some() || serves_rtsp,
        )?;
        let mut engine = common.engine;
        engine.streams = streams.iter().map(|s| s.explain.clone()).collect();
        let mut cfg = Self::from_run(run, engine, streams, rtsp_auth)?;
        (cfg.web, cfg.tls) = (web, tls);
        (cfg.shard, cfg.configured) = (shard, configured);
        Ok(cfg)
    }

    /// The run-wide values the engine does not take, each checked (the engine's were, by
    /// `engine::Settings::try_from`).
    fn from_run(
        run: Run,
        engine: crate::engine::Settings,
        streams: Vec<Stream>,
        rtsp_auth: Option<Credentials>,
    ) -> Result<Self> {
        if run.max_frames == Some(0) {
            bail!(usage("--max-frames must be at least 1"));
        }
        Ok(Config {
            streams,
            start: time("start", run.start.as_deref(), false)?,
            duration: time("duration", run.duration.as_deref(), true)?,
            stats_every: seconds("stats", run.stats)?,
            metrics: run.metrics.as_deref().map(parse_metrics_addr).transpose()?,
            rtsp_auth,
            web: None,
            tls: None,
            shard: None,
            configured: 0,
            run,
            engine,
        })
    }
}

/// `--shard`'s value, `auto` read from the host name (`HOSTNAME`, as Kubernetes sets it to the
/// pod's name, else the system's) and `GRADCAM_SHARDS`.
fn shard_of(v: &str) -> Result<Shard> {
    let host = std::env::var("HOSTNAME").ok().or_else(system_host_name);
    let shards = std::env::var("GRADCAM_SHARDS").ok();
    Shard::parse(v, host.as_deref(), shards.as_deref()).map_err(usage)
}

fn system_host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf, which outlives the call.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let end = buf.iter().position(|&b| b == 0)?;
    (r == 0).then(|| String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// A time given to `--flag` (`90`, `1:30`, `00:01:30.5`); `positive`: more than 0.
fn time(flag: &str, v: Option<&str>, positive: bool) -> Result<Option<Duration>> {
    match v.map(|s| (s, crate::endpoint::parse_time(s))) {
        Some((_, Some(d))) if !positive || !d.is_zero() => Ok(Some(d)),
        Some((s, _)) => bail!(usage(format!(
            "--{flag} {s}: use a time such as 90, 1:30 or 00:01:30.5{}",
            if positive { " (more than 0)" } else { "" }
        ))),
        None => Ok(None),
    }
}

/// A positive number of seconds given to `--flag`.
fn seconds(flag: &str, v: Option<f64>) -> Result<Option<Duration>> {
    match v {
        Some(d) if d.is_finite() && d > 0.0 => Ok(Some(Duration::from_secs_f64(d))),
        Some(d) => bail!(usage(format!(
            "--{flag} {d} must be a positive number of seconds"
        ))),
        None => Ok(None),
    }
}

/// Each table's stream, named and checked; then what only the whole set can show.
fn resolve_streams(
    a: &Args,
    f: &FileConfig,
    tables: Vec<StreamTable>,
    common: &Common,
) -> Result<Vec<Stream>> {
    let several = tables.len() > 1;
    let mut streams: Vec<Stream> = Vec::new();
    for (n, t) in tables.into_iter().enumerate() {
        let (name, spec) = stream_name(n, &t)?;
        if streams.iter().any(|s| s.name == name) {
            bail!(usage(format!(
                "stream name `{name}` is given twice; give each --input its own NAME="
            )));
        }
        // What the stream's own table names needs no {stream}; what all share does.
        let (outputs, own_outputs) = match (&t.outputs, a.output.is_empty()) {
            (Some(o), true) => (o.clone().into_vec(), true),
            _ => (common.outputs.clone(), false),
        };
        let own_metadata = a.settings.metadata.is_none() && t.metadata.is_some();
        let settings = PerStream::layered(&a.settings, &t, f);
        settings.check_ranges().map_err(usage)?;
        let shared = (several && !own_outputs, several && !own_metadata);
        streams.push(Stream::resolve(
            name, &spec, &outputs, shared, settings, common,
        )?);
    }
    if several
        && streams
            .iter()
            .any(|s| matches!(s.input, Input::Image(_) | Input::Folder(_)))
    {
        bail!(usage(
            "an image input explains one picture; give it alone, not among several inputs"
        ));
    }
    let mut seen: Vec<&Output> = Vec::new();
    for o in streams.iter().flat_map(|s| &s.outputs) {
        if !matches!(o, Output::Null | Output::Display) && seen.contains(&o) {
            bail!(usage(format!(
                "two streams write the same output ({o:?}); put {{stream}} in it"
            )));
        }
        seen.push(o);
    }
    Ok(streams)
}

/// A table's stream name (its `name`, a `NAME=` prefix, else its position) and input.
fn stream_name(n: usize, t: &StreamTable) -> Result<(String, String)> {
    let (name, spec) = match t.name.clone() {
        Some(name) => (name, t.input.clone()),
        None => split_name(&t.input).unwrap_or_else(|| (n.to_string(), t.input.clone())),
    };
    if name.is_empty() || !is_name(&name) {
        bail!(usage(format!(
            "stream name `{name}`: use letters, digits, '-', '_' or '.'"
        )));
    }
    Ok((name, spec))
}

impl Stream {
    pub fn serves_rtsp(&self) -> bool {
        self.outputs
            .iter()
            .any(|o| matches!(o, Output::Rtsp { .. }))
    }

    /// One stream's values from its merged settings.
    fn resolve(
        name: String,
        spec: &str,
        outputs: &[String],
        (shared_outputs, shared_metadata): (bool, bool),
        s: PerStream,
        common: &Common,
    ) -> Result<Stream> {
        let input_size = match &s.input_size {
            Some(v) => Some(parse_size(v).ok_or_else(|| {
                usage(format!("--input-size {v}: use WIDTHxHEIGHT, e.g. 1280x720"))
            })?),
            None => None,
        };
        if s.input_fps == Some(0) {
            bail!(usage("--input-fps must be at least 1"));
        }
        let input = parse_input(spec, input_size, s.input_fps)?;
        if outputs.is_empty() {
            bail!(usage(
                "no output given; pass --output out.mp4 (or set `output` in the config file)"
            ));
        }
        let outputs = outputs
            .iter()
            .map(|o| with_name(&name, o, "--output", shared_outputs))
            .collect::<Result<Vec<_>>>()?;
        let mut outputs = parse_outputs(&outputs, &input)?;
        if let Some(every) = common.segment {
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
        let metadata = match &s.metadata {
            Some(m) => Some(metadata_path(&name, m, shared_metadata)?),
            None => None,
        };
        let queue_capacity = queue_capacity(common.queue_capacity, &input, common)?;
        let draw = common.watched || !outputs.iter().all(|o| matches!(o, Output::Null));
        let explain = common.engine.stream(s.class, s.smooth, draw)?;
        let overload = overload(s.on_overload, &input)?;
        Ok(Stream {
            shown: crate::redact::uri(spec),
            name,
            input,
            outputs,
            metadata,
            explain,
            max_latency: (overload == Overload::Drop)
                .then(|| Duration::from_millis(s.max_latency_ms)),
            key_frames_when_behind: overload == Overload::Drop
                && s.when_behind == WhenBehind::KeyFrames,
            overload,
            queue_capacity,
            rtsp: RtspSettings {
                latency_ms: s.rtsp_latency_ms,
                transport: s.rtsp_transport,
                reconnect_max: s.reconnect_max,
                on_damaged: s.on_damaged,
            },
            audio: s.audio,
        })
    }
}

/// Two batches: one to gather while the model explains the other. A live source's queue is
/// latency, so no more there: with several live streams the two batches are shared out (every
/// stream fills batches), at least 8 frames each: with 2 or 4 the other streams dropped a frame
/// or two whenever a lost camera came back (the soak). A file's queue is at least 16 frames of
/// slack.
fn queue_capacity(given: Option<usize>, input: &Input, c: &Common) -> Result<usize> {
    let two = 2 * c.engine.batch_size;
    let q = given.unwrap_or(if input.is_live() && c.n_streams > 1 {
        two.div_ceil(c.n_streams).max(8)
    } else if input.is_live() {
        two
    } else {
        two.max(16)
    });
    if q * c.n_streams < c.engine.batch_size || q == 0 {
        bail!(usage(format!(
            "--queue-capacity {q} is smaller than --batch-size {}: a batch could never fill; use a queue of at least the batch size (two batches is the default)",
            c.engine.batch_size
        )));
    }
    Ok(q)
}

/// Live sources drop by default; a file never drops.
fn overload(given: Option<Overload>, input: &Input) -> Result<Overload> {
    Ok(match given {
        None if input.is_live() => Overload::Drop,
        None | Some(Overload::Block) => Overload::Block,
        Some(Overload::Drop) if input.is_live() => Overload::Drop,
        Some(Overload::Drop) => bail!(usage(
            "--on-overload drop applies to live sources; a file input never drops frames"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
    fn the_web_view_takes_an_address_credentials_and_tls() -> Result<()> {
        let mut a = args("test://ball", "null");
        a.settings.web = Some("8080".into());
        a.web_auth = Some("viewer:s3cret".into());
        let c = Config::merge(a, FileConfig::default())?;
        let web = c.web.expect("a web view");
        assert_eq!(
            web.addr.to_string(),
            "127.0.0.1:8080",
            "a bare port is loopback"
        );
        assert_eq!(web.auth.expect("credentials").user, "viewer");
        assert_eq!(c.run.realtime, Realtime::Auto);

        // Watched in the browser alone: no --output needed.
        let mut a = Args {
            input: vec!["test://ball".into()],
            ..Args::default()
        };
        a.settings.web = Some("127.0.0.1:0".into());
        let c = Config::merge(a, FileConfig::default())?;
        assert_eq!(c.streams[0].outputs, vec![Output::Null]);

        let mut a = args("test://ball", "null");
        a.web_auth = Some("viewer:s3cret".into());
        let e = Config::merge(a, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--web-auth protects the web view"), "{e}");

        let mut a = args("test://ball", "null");
        a.settings.web = Some("127.0.0.1:0".into());
        a.settings.tls_cert = Some(this_file().into());
        let e = Config::merge(a, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-cert needs --tls-key"), "{e}");

        let mut a = args("test://ball", "null");
        a.settings.tls_cert = Some(this_file().into());
        a.settings.tls_key = Some(this_file().into());
        let e = Config::merge(a, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("there is neither"), "{e}");

        let mut a = args("test://ball", "null");
        a.settings.web = Some("127.0.0.1:0".into());
        a.settings.tls_cert = Some("/no/cert.pem".into());
        a.settings.tls_key = Some(this_file().into());
        let e = Config::merge(a, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--tls-cert /no/cert.pem") && e.contains("readable PEM"),
            "{e}"
        );

        // A name is read where it is given: the flag's parser refuses it.
        let e = <Args as clap::Parser>::try_parse_from(["x", "--realtime", "sometimes"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown --realtime `sometimes`; use auto, on or off"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn defaults_fill_what_is_missing() -> Result<()> {
        let c = Config::merge(args(&this_file(), "x.mp4"), FileConfig::default())?;
        assert_eq!(c.run.batch_size, 8);
        assert_eq!(c.engine.max_wait, Duration::from_millis(50));
        assert_eq!(c.run.alpha, 0.5);
        assert_eq!(c.run.device, DeviceChoice::Auto);
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
        a.settings.batch_size = Some(2);
        let c = Config::merge(a, file)?;
        assert_eq!(c.run.batch_size, 2);
        assert_eq!(c.run.alpha, 0.3);
        assert_eq!(c.run.device, DeviceChoice::Cpu);
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
        assert_eq!(c.streams[0].queue_capacity, 2 * c.run.batch_size);
        let mut a = args("test://", "x.mp4");
        a.settings.on_overload = Some(Overload::Block);
        assert_eq!(
            Config::merge(a, FileConfig::default())?.streams[0].overload,
            Overload::Block
        );
        let file = Config::merge(args(&this_file(), "x.mp4"), FileConfig::default())?;
        assert_eq!(file.streams[0].overload, Overload::Block);
        assert_eq!(file.streams[0].queue_capacity, 16);
        let mut a = args(&this_file(), "x.mp4");
        a.settings.batch_size = Some(32);
        let c = Config::merge(a, FileConfig::default())?;
        assert_eq!(c.streams[0].queue_capacity, 64, "two batches");
        let mut a = args(&this_file(), "x.mp4");
        a.settings.on_overload = Some(Overload::Drop);
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
        a.settings.input_size = Some("64x32".into());
        a.settings.input_fps = Some(5);
        a.settings.stats = Some(2.0);
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
            settings: crate::settings::Flags {
                metadata: Some("meta-{stream}.jsonl".into()),
                ..Default::default()
            },
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
        assert_eq!(door.explain.class, Some(ClassSpec::Name("tabby".into())));
        assert_eq!(door.rtsp.reconnect_max, 0);
        assert_eq!(door.explain.smooth, 0.5);
        assert_eq!(
            door.outputs,
            [Output::Video {
                path: "rec-door.mkv".into(),
                container: Container::Matroska
            }]
        );
        assert_eq!(yard.explain.smooth, 0.0);
        assert_eq!(yard.rtsp.reconnect_max, 3);
        assert_eq!(yard.outputs.len(), 2);
        Ok(())
    }

    #[test]
    fn segments_metrics_and_credentials() -> Result<()> {
        let mut a = args("test://ball", "rec.mp4");
        a.settings.segment = Some("10m".into());
        a.settings.metrics = Some("9464".into());
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
        let c = Config::merge(Args::default(), file.clone())?;
        assert_eq!(c.streams.len(), 6);
        assert_eq!(c.metrics, Some("0.0.0.0:9464".parse()?));
        // As its three pods run it: every camera in exactly one of them.
        let mut held = 0;
        for i in 0..3 {
            let mut a = Args::default();
            a.settings.shard = Some(format!("{i}/3"));
            held += Config::merge(a, file.clone())?.streams.len();
        }
        assert_eq!(held, 6);
        Ok(())
    }

    #[test]
    fn bad_values_are_usage_errors() {
        type Edit = fn(&mut Args);
        let cases: &[(&str, Edit)] = &[
            ("batch-size", |a| a.settings.batch_size = Some(0)),
            ("alpha", |a| a.settings.alpha = Some(1.5)),
            ("negative", |a| {
                a.settings.class = Some(ClassValue::Name("-1".into()))
            }),
            ("jsonl", |a| a.settings.metadata = Some("m.json".into())),
            ("--max-frames", |a| a.settings.max_frames = Some(0)),
            ("--duration", |a| a.settings.duration = Some("-1".into())),
            ("--start", |a| a.settings.start = Some("1:75".into())),
            ("smaller than --batch-size", |a| {
                a.settings.batch_size = Some(16);
                a.settings.queue_capacity = Some(8);
            }),
        ];
        for (needle, edit) in cases {
            let mut a = args(&this_file(), "x.mp4");
            edit(&mut a);
            let e = Config::merge(a, FileConfig::default()).unwrap_err();
            assert!(e.is::<UsageError>(), "{e}");
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        }
        for (flag, v, needle) in [
            (
                "--device",
                "tpu",
                "unknown --device `tpu`; use auto, cpu or cuda",
            ),
            ("--precision", "fp8", "unknown --precision `fp8`"),
            ("--encoder", "vp9", "unknown --encoder `vp9`"),
            (
                "--layout",
                "planar",
                "unknown --layout `planar`; use auto, channels-last or contiguous",
            ),
            (
                "--colormap",
                "hot",
                "unknown --colormap `hot`; use jet, turbo, inferno or viridis",
            ),
            (
                "--method",
                "scorecam",
                "unknown --method `scorecam`; use gradcam, gradcam++",
            ),
            (
                "--on-overload",
                "later",
                "unknown --on-overload `later`; use drop or block",
            ),
        ] {
            let e = <Args as clap::Parser>::try_parse_from(["x", flag, v]).unwrap_err();
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
            assert_eq!(e.exit_code(), 2);
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
            crate::endpoint::file_uri(Path::new("/a b/c#d.mp4")),
            "file:///a%20b/c%23d.mp4"
        );
        Ok(())
    }
}
