//! The run: wires the stages together for one or more video streams, or a still image, and
//! reports the summary. Stages meet only through channels of plain values (`Frame`,
//! `Delivery`); every stream has its own queue to the one worker and its own output.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::Sender;

use crate::config::{Config, Input, Orientation, Output, Realtime, Stream};
use crate::engine::{self, ModelInfo};
use crate::frame::EncodedTap;
use crate::frame::Frame;
use crate::outfile::OutFile;
use crate::pipeline::sound::{self, Track};
use crate::pipeline::{self, rtsp, sink::Branch};
use crate::render::{Look, Renderer};
use crate::stats::{Reporter, Stage, Stats};
use crate::web::{self, hub::Hub};
use crate::{metrics, worker};

pub fn run(cfg: Config) -> Result<()> {
    let settings = cfg.engine.clone();
    if let Some(shard) = cfg.shard {
        let names: Vec<&str> = cfg.streams.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "shard {shard}: {} of the {} streams configured{}",
            names.len(),
            cfg.configured,
            if names.is_empty() {
                "; idle, serving /healthz and /metrics until the shard count changes".into()
            } else {
                format!(": {}", names.join(", "))
            }
        );
        if names.is_empty() {
            return idle(&cfg);
        }
    }
    let s = &cfg.streams[0];
    if let (Input::Folder(dir), [Output::Pictures(pattern)]) = (&s.input, s.outputs.as_slice()) {
        let job = crate::folder::Job {
            dir,
            pattern,
            metadata: s.metadata.as_deref(),
            upright: cfg.run.orientation == Orientation::Auto,
            look: look(&cfg),
        };
        crate::folder::run(job, settings, cfg.run.batch_size)
    } else if cfg.is_image() {
        run_image(&cfg, settings)
    } else {
        run_video(&cfg, settings)
    }
}

fn look(cfg: &Config) -> Look {
    Look {
        alpha: cfg.run.alpha,
        threshold: cfg.run.threshold,
        lut: cfg.run.colormap.lut(),
        box_maps: cfg.run.box_maps,
        draw_box: cfg.run.draw_box,
        label: cfg.run.label,
    }
}

/// Whether anything shows stream `s`'s frames: false where its outputs are all `null` and
/// there is no web view, so only its results are kept (metadata, metrics) and the heatmap,
/// box and label are never drawn on its frames.
fn label(classes: &[String], id: i64) -> &str {
    classes.get(id as usize).map(String::as_str).unwrap_or("?")
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// One line when a server is reachable from the network and anyone there can watch, or the
/// credentials it asks for travel in clear.
fn warn_if_open(url: &str, host: &str, credentials: bool, tls: bool, set: &str) {
    if is_loopback(host) {
        return;
    }
    if !credentials {
        eprintln!("warning: {url} is served to the network without credentials; anyone who reaches it can watch (set {set})");
    } else if !tls {
        eprintln!("warning: {url} asks for credentials without TLS: they travel in clear; add --tls-cert FILE --tls-key FILE");
    }
}

/// Where one stream's explained frames are written: its files (whole-or-nothing, or in place
/// for a live recording), segment patterns and RTSP mounts.
struct Outlets {
    files: Vec<(OutFile, crate::config::Container, bool)>,
    mounts: Vec<Arc<rtsp::Feeds>>,
    names: Vec<String>,
}

/// Each stream's RTSP mounts.
type Mounts = Vec<Vec<Arc<rtsp::Feeds>>>;

/// Each stream's sound track, where it has one and an output carries it (files, segments,
/// rtsp://), found for all streams at once.
fn sound_tracks(cfg: &Config) -> Vec<Option<Track>> {
    let wanted = |s: &Stream| {
        s.audio
            && s.outputs.iter().any(|o| {
                matches!(
                    o,
                    Output::Video { .. } | Output::Segments { .. } | Output::Rtsp { .. }
                )
            })
    };
    std::thread::scope(|scope| {
        let probes: Vec<_> = cfg
            .streams
            .iter()
            .map(|s| {
                scope.spawn(move || {
                    let uri = match &s.input {
                        Input::Video { uri, .. } | Input::Rtsp { uri } if wanted(s) => uri,
                        _ => return None,
                    };
                    let track = sound::probe(uri, SOUND_PROBE);
                    if track.is_none() && matches!(s.input, Input::Rtsp { .. }) {
                        eprintln!(
                            "{}",
                            crate::redact::line(&format!(
                                "rtsp: {}: no sound found within {} s; its outputs carry its video only",
                                s.shown,
                                SOUND_PROBE.as_secs()
                            ))
                        );
                    }
                    track
                })
            })
            .collect();
        probes
            .into_iter()
            .map(|p| p.join().ok().flatten())
            .collect()
    })
}

/// How long finding a stream's sound may take.
const SOUND_PROBE: std::time::Duration = std::time::Duration::from_secs(5);

/// The RTSP servers of a run: one per address, one mount per stream served there, with the
/// stream's sound (`tracks`) as a second stream.
fn start_servers(cfg: &Config, tracks: &[Option<Track>]) -> Result<(Vec<rtsp::Server>, Mounts)> {
    let mut servers: Vec<((String, u16), rtsp::Server)> = Vec::new();
    let mut per_stream = Vec::new();
    for (s, track) in cfg.streams.iter().zip(tracks) {
        let mut feeds = Vec::new();
        for o in &s.outputs {
            let Output::Rtsp { host, port, path } = o else {
                continue;
            };
            let key = (host.clone(), *port);
            let at = match servers.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    let server =
                        rtsp::Server::open(host, *port, cfg.rtsp_auth.as_ref(), cfg.tls.as_ref())?;
                    warn_if_open(
                        &server.base,
                        host,
                        cfg.rtsp_auth.is_some(),
                        cfg.tls.is_some(),
                        "--rtsp-auth USER:PASSWORD or GRADCAM_RTSP_AUTH",
                    );
                    servers.push((key, server));
                    servers.len() - 1
                }
            };
            let server = &mut servers[at].1;
            feeds.push(server.mount(path, track.map(|t| t.at(sound::Target::Rtsp)))?);
            eprintln!("serving: {}{path}", server.base);
        }
        per_stream.push(feeds);
    }
    Ok((servers.into_iter().map(|(_, s)| s).collect(), per_stream))
}

fn outlets(s: &Stream, feeds: Vec<Arc<rtsp::Feeds>>) -> Result<Outlets> {
    let mut files = Vec::new();
    let mut names = Vec::new();
    for o in &s.outputs {
        match o {
            Output::Video { path, container } => {
                let live = s.input.is_live();
                let out = if live {
                    OutFile::in_place(path)?
                } else {
                    OutFile::create(path)?.0
                };
                names.push(path.display().to_string());
                files.push((out, *container, live));
            }
            Output::Segments { pattern, .. } => {
                let dir = pattern
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if !dir.is_dir() {
                    anyhow::bail!(
                        "cannot write segments {}: {} is not a directory; choose a path in an existing, writable directory",
                        pattern.display(),
                        dir.display()
                    );
                }
                names.push(pattern.display().to_string());
            }
            Output::Rtsp { .. } => names.push("rtsp".into()),
            Output::Display => names.push("display".into()),
            Output::Null => names.push("null".into()),
            Output::Image(_) | Output::Pictures(_) => {}
        }
    }
    Ok(Outlets {
        files,
        mounts: feeds,
        names,
    })
}

/// The stream's output branches: one each for its files, segments, window and null, and one
/// live encoder shared by all its RTSP mounts and the web view (`web`).
fn branches<'a>(
    s: &'a Stream,
    o: &'a Outlets,
    web: Option<Arc<dyn EncodedTap>>,
) -> Vec<Branch<'a>> {
    let mut f = o.files.iter();
    let mut out: Vec<Branch> = s
        .outputs
        .iter()
        .filter_map(|out| match out {
            Output::Video { .. } => {
                let (file, container, live) = f.next().expect("one file per file output");
                Some(Branch::File(file.partial_path(), *container, *live))
            }
            Output::Segments {
                pattern,
                container,
                every,
            } => Some(Branch::Segments(
                pattern,
                *container,
                every.as_nanos() as u64,
            )),
            Output::Rtsp { .. } => None,
            Output::Display => Some(Branch::Display),
            Output::Null | Output::Image(_) | Output::Pictures(_) => Some(Branch::Null),
        })
        .collect();
    let mut taps: Vec<Arc<dyn EncodedTap>> = o
        .mounts
        .iter()
        .map(|m| m.clone() as Arc<dyn EncodedTap>)
        .collect();
    taps.extend(web);
    if !taps.is_empty() {
        out.push(Branch::Live(taps));
    }
    out
}

/// A file input's `--start` and `--duration` as the part of it to explain.
fn window(cfg: &Config, s: &Stream) -> Option<pipeline::source::Window> {
    if s.input.is_live() || (cfg.start.is_none() && cfg.duration.is_none()) {
        return None;
    }
    let start = cfg.start.unwrap_or_default();
    let end = cfg.duration.map(|d| (start + d).as_nanos() as u64);
    Some(pipeline::source::Window::new(start.as_nanos() as u64, end))
}

/// `--start` names a point inside every file input (a usage error otherwise, naming the
/// file's length), and only file inputs.
fn check_start(cfg: &Config) -> Result<()> {
    let Some(start) = cfg.start.filter(|s| !s.is_zero()) else {
        return Ok(());
    };
    for s in &cfg.streams {
        let Input::Video { uri, .. } = &s.input else {
            return Err(crate::config::usage(format!(
                "--start applies to file inputs, and {} is live; drop --start",
                s.shown
            )));
        };
        if let Some(d) = pipeline::source::media_duration(uri).filter(|d| start >= *d) {
            return Err(crate::config::usage(format!(
                "--start {:.1} s is beyond the end of {} (its duration is {:.1} s); give a start before it",
                start.as_secs_f64(),
                s.shown,
                d.as_secs_f64()
            )));
        }
    }
    Ok(())
}

/// A shard that holds none of the streams: healthy, serving `/healthz` and `/metrics` (with
/// `--metrics` or `--web`) until it is stopped, so a StatefulSet scaled past its cameras
/// stays ready for a new count.
fn idle(cfg: &Config) -> Result<()> {
    let lines = Lines::new(cfg);
    let hub = cfg.web.as_ref().map(|_| Arc::new(Hub::new(&[])));
    let _http = serve_http(cfg, &lines, hub)?;
    while !crate::shutdown::requested() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("done: this shard held no streams");
    Ok(())
}

/// Whether a file input is paced at its own frame rate: `--realtime`, or by default when a
/// person watches it (a window, RTSP, the web view).
fn paced(cfg: &Config, s: &Stream) -> bool {
    if s.input.is_live() {
        return false; // a live source paces itself
    }
    match cfg.run.realtime {
        Realtime::On => true,
        Realtime::Off => false,
        Realtime::Auto => {
            cfg.web.is_some()
                || s.outputs
                    .iter()
                    .any(|o| matches!(o, Output::Display | Output::Rtsp { .. }))
        }
    }
}

/// A video run, as the pipeline's story: open the outputs, then the channels between the
/// stages, the metrics, the worker and the renderer; run the streams; drain; report.
fn run_video(cfg: &Config, settings: engine::Settings) -> Result<()> {
    pipeline::init()?;
    check_start(cfg)?;
    let codec = pipeline::sink::resolve_encoder(cfg.run.encoder)?;
    // Servers start first, so a port in use fails before the model loads; files are reserved
    // next, so an unwritable path does too.
    let tracks = sound_tracks(cfg);
    let (servers, mounts) = start_servers(cfg, &tracks)?;
    let outlets = cfg
        .streams
        .iter()
        .zip(mounts)
        .map(|(s, feeds)| outlets(s, feeds))
        .collect::<Result<Vec<_>>>()?;
    let lines = Lines::new(cfg);
    let hub = cfg.web.as_ref().map(|_| {
        let names: Vec<&str> = cfg.streams.iter().map(|s| s.name.as_str()).collect();
        Arc::new(Hub::new(&names))
    });
    let _http = serve_http(cfg, &lines, hub.clone())?;
    // Two batches in flight between the worker and the output, as between source and worker.
    let (delivered_tx, delivered_rx) = crossbeam_channel::bounded::<worker::Delivery>(2);
    let (info, worker) = worker::spawn(
        settings,
        lines.queues.iter().map(|(_, rx)| rx.clone()).collect(),
        delivered_tx,
        lines.all.clone(),
    )?;
    let render_thread = spawn_renderer(cfg, &info, &lines, delivered_rx, hub.clone())?;
    if let Some(hub) = &hub {
        record_live_files(cfg, &outlets, hub);
    }

    let mut reporter = Reporter::new(cfg.run.progress, cfg.stats_every);
    let all = lines.all.clone();
    let stats = lines.stats.clone();
    let piped = pipeline::run_video(
        lines.into_run(cfg, &outlets, &tracks, codec, hub.as_ref()),
        all.clone(),
        &mut reporter,
    );
    reporter.finish(&all);
    drop(servers);
    // Drain: the worker ends once every queue is closed, the renderer once the worker has.
    let worked = worker
        .join()
        .map_err(|_| anyhow!("the worker thread panicked"))?;
    let rendered = render_thread
        .join()
        .map_err(|_| anyhow!("the render thread panicked"))?;
    let outcomes = piped?;
    worked?;
    let metadata = rendered?.into_metadata();
    let ends = cfg
        .streams
        .iter()
        .zip(outlets)
        .zip(outcomes)
        .zip(&stats)
        .zip(metadata)
        .map(|((((s, o), outcome), st), meta)| StreamEnd {
            stream: s,
            outlets: o,
            outcome,
            stats: st,
            metadata: meta,
        })
        .collect();
    report(cfg, &info, &all, ends)
}

/// The channels and counters between the stages: each stream's queue to the worker and its
/// channel from the renderer, its counters, and the whole run's.
struct Lines {
    all: Arc<Stats>,
    stats: Vec<Arc<Stats>>,
    queues: Vec<(Sender<Frame>, crossbeam_channel::Receiver<Frame>)>,
    rendered: Vec<(Sender<Frame>, crossbeam_channel::Receiver<Frame>)>,
}

impl Lines {
    fn new(cfg: &Config) -> Self {
        let streams = &cfg.streams;
        Lines {
            all: Arc::new(Stats::default()),
            stats: streams.iter().map(|_| Arc::new(Stats::default())).collect(),
            queues: streams
                .iter()
                .map(|s| crossbeam_channel::bounded::<Frame>(s.queue_capacity))
                .collect(),
            rendered: streams
                .iter()
                .map(|_| crossbeam_channel::bounded::<Frame>(cfg.run.batch_size * 2))
                .collect(),
        }
    }

    /// What the pipeline needs of each stream, the channels moved into it.
    fn into_run<'a>(
        self,
        cfg: &'a Config,
        outlets: &'a [Outlets],
        tracks: &[Option<Track>],
        codec: pipeline::sink::Codec,
        hub: Option<&Arc<Hub>>,
    ) -> pipeline::Run<'a> {
        let streams = cfg
            .streams
            .iter()
            .zip(outlets)
            .zip(tracks)
            .map(|((s, o), t)| (s, o, *t))
            .zip(self.queues)
            .zip(self.rendered)
            .zip(self.stats)
            .enumerate()
            .map(
                |(i, ((((s, o, sound), (frames, oldest)), (_, rendered)), stats))| {
                    pipeline::StreamRun {
                        name: &s.name,
                        input: &s.input,
                        shown: &s.shown,
                        rtsp: s.rtsp,
                        overload: s.overload,
                        max_latency: s.max_latency,
                        branches: branches(
                            s,
                            o,
                            hub.map(|h| h.channels[i].clone() as Arc<dyn EncodedTap>),
                        ),
                        frames,
                        oldest,
                        rendered,
                        stats,
                        paced: paced(cfg, s),
                        window: window(cfg, s),
                        prepare: pipeline::source::Prepare {
                            deinterlace: cfg.run.deinterlace == crate::config::Deinterlace::Auto,
                            upright: cfg.run.orientation == Orientation::Auto,
                            key_frames_when_behind: s.key_frames_when_behind,
                        },
                        segments: hub.map(|h| segment_hook(h, s, i)),
                        sound,
                    }
                },
            )
            .collect();
        pipeline::Run {
            streams,
            codec,
            limits: pipeline::Limits {
                max_frames: cfg.run.max_frames,
                // A file's --duration is a part of it (its window); a live one's, the run's.
                duration: cfg
                    .duration
                    .filter(|_| cfg.streams.iter().any(|s| s.input.is_live())),
            },
        }
    }
}

/// `--metrics` and `--web`: one server stack, reading the same counters and queues as the
/// stats lines (and, for the web view, the hub). The web view serves the metrics too.
fn serve_http(cfg: &Config, lines: &Lines, hub: Option<Arc<Hub>>) -> Result<Vec<web::Server>> {
    let board = metrics::Board {
        streams: cfg
            .streams
            .iter()
            .zip(&lines.stats)
            .zip(&lines.queues)
            .map(|((s, st), (_, rx))| (s.name.clone(), st.clone(), rx.clone()))
            .collect(),
        all: lines.all.clone(),
    };
    let mut servers = Vec::new();
    if let Some(addr) = cfg.metrics {
        let site = web::Site {
            board: board.clone(),
            hub: None,
            auth: None,
        };
        let server = web::Server::start(addr, site, None, "metrics")?;
        eprintln!(
            "metrics: {}/metrics (health: {}/healthz)",
            server.url, server.url
        );
        servers.push(server);
    }
    if let (Some(view), Some(hub)) = (&cfg.web, hub) {
        let site = web::Site {
            board,
            hub: Some(hub),
            auth: view.auth.clone(),
        };
        let server = web::Server::start(view.addr, site, cfg.tls.as_ref(), "the web view")?;
        warn_if_open(
            &server.url,
            &view.addr.ip().to_string(),
            view.auth.is_some(),
            cfg.tls.is_some(),
            "--web-auth USER:PASSWORD or GRADCAM_WEB_AUTH",
        );
        eprintln!("web: {}/", server.url);
        servers.push(server);
    }
    Ok(servers)
}

/// The live recordings (written in place, playable while they grow) on the recordings page.
fn record_live_files(cfg: &Config, outlets: &[Outlets], hub: &Hub) {
    for (index, (s, o)) in cfg.streams.iter().zip(outlets).enumerate() {
        for (file, _, live) in &o.files {
            if *live {
                hub.recordings.add(web::hub::Recording {
                    stream: s.name.clone(),
                    index,
                    path: file.dest().to_owned(),
                    started: std::time::SystemTime::now(),
                    begins_at: 0.0,
                });
            }
        }
    }
}

/// Each segment a stream's splitmuxsink opens, onto the recordings page.
fn segment_hook(hub: &Arc<Hub>, s: &Stream, index: usize) -> pipeline::SegmentOpened {
    let (hub, stream) = (hub.clone(), s.name.clone());
    Arc::new(move |path, running_time| {
        hub.recordings.add(web::hub::Recording {
            stream: stream.clone(),
            index,
            path,
            started: std::time::SystemTime::now(),
            begins_at: running_time as f64 / 1e9,
        })
    })
}

/// The render thread: each delivered batch drawn and handed to its streams' outputs; a
/// stream whose output stopped (it reports why) is skipped, the others go on.
fn spawn_renderer(
    cfg: &Config,
    info: &ModelInfo,
    lines: &Lines,
    delivered: crossbeam_channel::Receiver<worker::Delivery>,
    hub: Option<Arc<Hub>>,
) -> Result<std::thread::JoinHandle<Result<Renderer>>> {
    let metadata: Vec<(&str, Option<&Path>)> = cfg
        .streams
        .iter()
        .map(|s| (s.name.as_str(), s.metadata.as_deref()))
        .collect();
    let draws = cfg.streams.iter().map(|s| s.explain.draw).collect();
    let mut renderer = Renderer::new(look(cfg), info, &metadata)?.drawing(draws);
    if let Some(hub) = &hub {
        hub.recordings.set_metadata(renderer.metadata_paths());
    }
    let render_stats = lines.all.clone();
    let tallies: Vec<crate::stats::Tally> = lines
        .stats
        .iter()
        .map(|s| crate::stats::Tally {
            stream: s.clone(),
            all: lines.all.clone(),
        })
        .collect();
    let mut senders: Vec<Option<Sender<Frame>>> = lines
        .rendered
        .iter()
        .map(|(tx, _)| Some(tx.clone()))
        .collect();
    std::thread::Builder::new()
        .name("gradcam-render".into())
        .spawn(move || -> Result<Renderer> {
            for delivery in delivered.iter() {
                let busy = Instant::now();
                let drawn = renderer.render_drawn(delivery.explained)?;
                render_stats.add_busy(Stage::Overlay, busy.elapsed());
                for d in drawn {
                    for b in &d.boxes {
                        tallies[d.frame.stream]
                            .stream
                            .detected(&renderer.class_name(b.class));
                    }
                    if let Some(hub) = &hub {
                        hub.channels[d.frame.stream].verdict(verdict(&renderer, &d));
                    }
                    let frame = d.frame;
                    let s = frame.stream;
                    let gone = match &senders[s] {
                        Some(tx) => tx.send(frame).is_err(),
                        None => false,
                    };
                    if gone {
                        senders[s] = None;
                    }
                }
                for s in delivery.ended {
                    senders[s] = None; // its output sees the end and finishes
                }
                for s in delivery.expired {
                    tallies[s].dropped();
                }
            }
            Ok(renderer)
        })
        .context("starting the render thread")
}

/// What the web view shows of a drawn frame.
fn verdict(renderer: &Renderer, d: &crate::render::Drawn) -> web::hub::Verdict {
    let f = &d.frame;
    web::hub::Verdict {
        t: f.pts.unwrap_or(0) as f64 / 1e9,
        cap: web::hub::epoch_ms(f.arrived),
        frame: f.index,
        class: d.target.class,
        label: renderer.class_name(d.target.class),
        prob: d.target.prob,
        top: d
            .top
            .iter()
            .map(|c| (renderer.class_name(c.class), c.prob))
            .collect(),
        peak: d.located.peak,
        width: f.width,
        height: f.height,
        boxes: renderer.is_detector().then(|| {
            d.boxes
                .iter()
                .map(|b| web::hub::BoxVerdict {
                    id: b.track,
                    label: renderer.class_name(b.class),
                    score: b.score,
                    bbox: b.bbox,
                })
                .collect()
        }),
    }
}

/// How one stream of a run ended, with what it wrote.
struct StreamEnd<'a> {
    stream: &'a Stream,
    outlets: Outlets,
    outcome: Result<()>,
    stats: &'a Stats,
    metadata: Option<crate::outfile::LineFile>,
}

/// Each stream's outputs kept when it succeeded (or, for a live recording, whatever
/// happened), removed when it wrote nothing or its file input failed; then the summary, and
/// the run's error if any stream failed.
fn report(cfg: &Config, info: &ModelInfo, all: &Stats, ends: Vec<StreamEnd>) -> Result<()> {
    let several = ends.len() > 1;
    let mut failures = Vec::new();
    for end in ends {
        let (s, written) = (end.stream, end.stats.written.load(Relaxed));
        let keep = written > 0 && (end.outcome.is_ok() || s.input.is_live());
        for (file, _, _) in end.outlets.files {
            if keep {
                file.commit()?;
            } else {
                file.discard();
            }
        }
        if let Some(m) = end.metadata.filter(|_| keep) {
            m.commit()?;
        }
        match end.outcome {
            Err(e) if !several => return Err(e),
            Err(e) => failures.push(format!("{} ({e:#})", s.name)),
            Ok(()) if written == 0 && !several => {
                anyhow::bail!("the input gave no video frames; nothing was written")
            }
            Ok(()) if written == 0 => failures.push(format!("{} (no video frames)", s.name)),
            Ok(()) => {}
        }
        if several {
            eprintln!(
                "{}",
                crate::redact::line(&format!(
                    "done: stream {}: {written} frames{} from {} → {}",
                    s.name,
                    losses(end.stats),
                    s.shown,
                    end.outlets.names.join(", ")
                ))
            );
        } else {
            summary(cfg, info, all, &end.outlets.names);
        }
    }
    if several {
        let streams = format!("{} streams", cfg.streams.len());
        summary(cfg, info, all, &[streams]);
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "{} of {} streams failed: {}",
            failures.len(),
            cfg.streams.len(),
            failures.join("; ")
        );
    }
    Ok(())
}

/// `, 3 dropped (model behind the source), 1 reconnect`, or nothing.
fn losses(stats: &Stats) -> String {
    let mut out = String::new();
    let dropped = stats.dropped.load(Relaxed);
    if dropped > 0 {
        out.push_str(&format!(", {dropped} dropped (model behind the source)"));
    }
    let undecoded = stats.undecoded.load(Relaxed);
    if undecoded > 0 {
        out.push_str(&format!(
            ", {undecoded} left undecoded (key frames only while behind)"
        ));
    }
    let reconnects = stats.reconnects.load(Relaxed);
    if reconnects > 0 {
        let s = if reconnects == 1 { "" } else { "s" };
        out.push_str(&format!(", {reconnects} reconnect{s}"));
    }
    out
}

fn summary(cfg: &Config, info: &ModelInfo, all: &Stats, dests: &[String]) {
    let written = all.written.load(Relaxed);
    let secs = all.elapsed().as_secs_f64();
    eprintln!(
        "done: {written} frames in {secs:.1} s ({:.1} fps) on {} with {}, batch size {}{} → {}",
        written as f64 / secs.max(1e-9),
        info.device,
        info.name,
        cfg.run.batch_size,
        losses(all),
        dests.join(", ")
    );
}

fn run_image(cfg: &Config, settings: engine::Settings) -> Result<()> {
    let stream = &cfg.streams[0];
    let (Input::Image(input), [Output::Image(path)]) = (&stream.input, stream.outputs.as_slice())
    else {
        unreachable!("config pairs an image with one image output")
    };
    let start = Instant::now();
    let (img, notes) = crate::still::read(input, cfg.run.orientation == Orientation::Auto)?;
    for note in notes {
        eprintln!("{}: {note}", input.display());
    }
    let format = image::ImageFormat::from_path(path).map_err(|_| {
        anyhow!(
            "output {}: unknown image format; use .png or .jpg",
            path.display()
        )
    })?;
    let (out, file) = OutFile::create(path)?;
    let frame = Frame::from_rgb(0, img.width(), img.height(), img.as_raw());

    let (frames_tx, frames_rx) = crossbeam_channel::bounded(1);
    let (results_tx, results_rx) = crossbeam_channel::bounded(1);
    let stats = Arc::new(Stats::default());
    let (info, worker) = worker::spawn(settings, vec![frames_rx], results_tx, stats)?;
    let metadata: Vec<(&str, Option<&Path>)> =
        vec![(stream.name.as_str(), stream.metadata.as_deref())];
    let mut renderer = Renderer::new(look(cfg), &info, &metadata)?;
    frames_tx.send(frame).expect("the worker is waiting");
    drop(frames_tx);
    let explained = results_rx.recv();
    worker
        .join()
        .map_err(|_| anyhow!("the worker thread panicked"))??;
    let explained = explained
        .ok()
        .and_then(|d: worker::Delivery| d.explained.into_iter().next())
        .ok_or_else(|| anyhow!("the worker ended without a result"))?;

    println!("top classes for {}:", input.display());
    for (rank, c) in explained.top.iter().enumerate() {
        println!(
            "  {}. {:>4}  {:<30} {:.4}",
            rank + 1,
            c.class,
            label(&info.classes, c.class),
            c.prob
        );
    }
    let target = explained.target;
    let frame = renderer
        .render(vec![explained])?
        .pop()
        .expect("one frame in, one out");
    let rgb =
        image::RgbImage::from_raw(frame.width, frame.height, frame.to_rgb()).expect("sizes match");
    let mut w = std::io::BufWriter::new(file);
    rgb.write_to(&mut w, format)
        .with_context(|| format!("encoding {}", path.display()))?;
    std::io::Write::flush(&mut w).with_context(|| format!("writing {}", path.display()))?;
    drop(w);
    for m in renderer.into_metadata().into_iter().flatten() {
        m.commit()?;
    }
    out.commit()?;
    eprintln!(
        "done: explained class {} ({}) in {:.2} s on {} → {}",
        target.class,
        label(&info.classes, target.class),
        start.elapsed().as_secs_f64(),
        info.device,
        path.display()
    );
    Ok(())
}
