//! GStreamer lives here and nowhere else: building the input and output pipelines, the bus
//! loop that watches both, and an orderly shutdown.
//!
//! ```text
//! [source pipeline]  decoder → videoconvert → appsink ──Frame──▶ (worker)
//! [sink pipeline]    (renderer) ──Frame──▶ pusher thread → appsrc → tee → file / rtsp / display
//! ```
//! Two pipelines rather than one, so that the output's preroll never waits on the input's, and
//! a dropped RTSP feed can be rebuilt (with backoff) while the output keeps going.
//! End of stream: source EOS → the frame channel closes → the worker drains and ends → the
//! renderer ends → the pusher sends EOS into the appsrc → the muxers finalize → sink EOS.

pub mod rtsp;
pub mod sink;
pub mod source;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{Receiver, Sender};
use gstreamer as gst;
use gstreamer::prelude::*;

use crate::config::{Input, Overload, RtspSettings};
use crate::frame::Frame;
use crate::shutdown;
use crate::stats::{Reporter, Stage, Stats};

/// Which pipeline a bus message came from; a source is numbered by how many times it has
/// been (re)built, so the last words of a torn-down one are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Source(u32),
    Sink,
}

enum Event {
    Eos(Role),
    Error(Role, String),
    PusherDone(Result<()>),
}

pub fn init() -> Result<()> {
    gst::init().context("initializing GStreamer")?;
    quiet_library_warnings();
    Ok(())
}

/// GStreamer's own CRITICAL and WARNING log lines (for instance decodebin racing its teardown
/// after an input turns out not to be video) would break the one-line error promise; the error
/// that matters reaches the bus and is reported. `GRADCAM_DEBUG=1` shows them.
fn quiet_library_warnings() {
    if std::env::var_os("GRADCAM_DEBUG").is_some_and(|v| !v.is_empty()) {
        return;
    }
    let levels = gst::glib::LogLevels::LEVEL_CRITICAL | gst::glib::LogLevels::LEVEL_WARNING;
    for domain in ["GStreamer", "GLib", "GLib-GObject"] {
        gst::glib::log_set_handler(Some(domain), levels, false, false, |_, _, _| {});
    }
}

/// Forward the bus messages that matter to the event channel, from whatever thread posts them.
fn watch(pipeline: &gst::Pipeline, role: Role, events: Sender<Event>) {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    bus.set_sync_handler(move |_, msg| {
        use gst::MessageView;
        match msg.view() {
            MessageView::Eos(_) => {
                let _ = events.send(Event::Eos(role));
            }
            MessageView::Error(err) => {
                let _ = events.send(Event::Error(role, describe_error(role, err)));
            }
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}

/// One line for a GStreamer error: what failed, where, and what to do.
fn describe_error(role: Role, err: &gst::message::Error) -> String {
    let e = err.error();
    let element = err.src().map(|s| s.name().to_string()).unwrap_or_default();
    if let Role::Source(_) = role {
        if e.matches(gst::ResourceError::Busy) {
            return format!("the webcam is busy ({e}); close the program that has it open, or pick another /dev/videoN");
        }
        if element == "webcam" {
            return format!("the webcam cannot capture: {e}; check the device, and that --input-size/--input-fps name a mode it has (v4l2-ctl --list-formats-ext)");
        }
        if element == "source" && e.matches(gst::ResourceError::OpenReadWrite) {
            return format!("cannot reach the RTSP server ({e})");
        }
        if element == "source" && e.matches(gst::ResourceError::NotFound) {
            return format!("the RTSP server has no stream at this path ({e})");
        }
        if e.matches(gst::StreamError::TypeNotFound) || e.matches(gst::StreamError::WrongType) {
            return format!("the input is not a video GStreamer can decode ({e}); give a video file such as .mp4, .mkv or .webm");
        }
        if e.matches(gst::StreamError::Demux) || e.matches(gst::StreamError::Decode) {
            return format!("the input is damaged or truncated ({e}); re-encode or re-download it");
        }
        if e.matches(gst::ResourceError::NotFound) || e.matches(gst::ResourceError::OpenRead) {
            return format!("cannot open the input: {e}; check the path or URI");
        }
        if e.matches(gst::StreamError::Failed) && element == "decode" {
            return format!("{e}; give a file that holds a video track");
        }
        if e.matches(gst::CoreError::MissingPlugin) || e.matches(gst::StreamError::CodecNotFound) {
            return format!("no decoder for the input's format ({e}); install the GStreamer plugins (make setup)");
        }
        return format!("decoding the input failed in {element}: {e}");
    }
    if element.starts_with("display") {
        return format!(
            "the display output failed: {e}; check DISPLAY, or use a file or rtsp:// output"
        );
    }
    if e.matches(gst::ResourceError::OpenWrite)
        || e.matches(gst::ResourceError::Write)
        || e.matches(gst::ResourceError::NoSpaceLeft)
    {
        return format!("writing the output failed: {e}; check free space and permissions");
    }
    format!("encoding the output failed in {element}: {e}")
}

/// Reconnect delays: 1 s, 2 s, 4 s … at most 30 s.
fn backoff(try_number: u32) -> Duration {
    Duration::from_secs(1u64 << try_number.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// A feed that gives no frame this long after it was (re)built or after its last frame is
/// taken as lost (a UDP feed whose server vanished goes silent rather than failing).
const STALL: Duration = Duration::from_secs(10);

/// When a run ends early, cleanly: the output is finalized with what was explained so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_frames: Option<u64>,
    pub duration: Option<Duration>,
}

/// What a video run reads and where it writes.
pub struct Run<'a> {
    pub input: &'a Input,
    pub rtsp: RtspSettings,
    pub branches: Vec<sink::Branch<'a>>,
    pub codec: sink::Codec,
    pub overload: Overload,
    pub limits: Limits,
}

/// A video run: decode `run.input` into `frames`, send what arrives on `rendered` to the
/// output branches. Returns once the outputs are finalized (or the first error); the caller's
/// threads in between end when their channels close. `oldest` is the receiving end of
/// `frames`, used to drop the oldest waiting frame when `overload` says so. An RTSP input
/// that fails or ends is rebuilt after a backoff, up to `rtsp.reconnect_max` tries in a row.
pub fn run_video(
    run: Run,
    frames: Sender<Frame>,
    oldest: Receiver<Frame>,
    rendered: Receiver<Frame>,
    stats: Arc<Stats>,
    reporter: &mut Reporter,
) -> Result<()> {
    let Run {
        input,
        rtsp,
        branches,
        codec,
        overload,
        limits,
    } = run;
    let (events_tx, events) = crossbeam_channel::unbounded();
    let slot: source::FrameSlot = Arc::new(Mutex::new(Some(frames)));
    let stop = Arc::new(AtomicBool::new(false));
    let handoff = source::Handoff {
        slot: slot.clone(),
        overload,
        oldest,
        max_frames: limits.max_frames,
        stop: stop.clone(),
        stats: stats.clone(),
        index: Arc::new(AtomicU64::new(0)),
        epoch: input.is_live().then(Instant::now),
    };

    let mut sink = sink::build(&branches, codec)?;
    watch(&sink.pipeline, Role::Sink, events_tx.clone());
    let mut feed = Feed {
        input,
        rtsp,
        handoff,
        events: events_tx.clone(),
        pipeline: None,
        generation: 0,
        built: Instant::now(),
        received_at_build: 0,
        tries: 0,
        retry_at: None,
    };
    feed.build()?;

    let sink_pipeline = sink.pipeline.clone();
    let pusher_stats = stats.clone();
    let pusher_events = events_tx.clone();
    let pusher = std::thread::Builder::new()
        .name("gradcam-pusher".into())
        .spawn(move || {
            let r = (|| {
                for frame in rendered.iter() {
                    pusher_stats.record_latency(frame.arrived.elapsed());
                    let pushing = Instant::now();
                    sink.push(frame)?;
                    pusher_stats.add_busy(Stage::Output, pushing.elapsed());
                    pusher_stats.written.fetch_add(1, Ordering::Relaxed);
                }
                sink.finish();
                Ok(())
            })();
            let _ = pusher_events.send(Event::PusherDone(r));
        })
        .context("starting the output thread")?;

    let result = (|| -> Result<()> {
        if sink_pipeline.set_state(gst::State::Playing).is_err() {
            // The element that refused posted why on the bus.
            return Err(match events.recv_timeout(Duration::from_millis(500)) {
                Ok(Event::Error(_, msg)) => anyhow!(msg),
                _ => anyhow!("cannot start the output pipeline"),
            });
        }
        // A source that fails at once (missing plugin, bad URI) posts its error on the bus.
        feed.play();
        loop {
            crossbeam_channel::select! {
                recv(events) -> ev => match ev.expect("we hold a sender") {
                    Event::Eos(Role::Source(g)) if g == feed.generation => {
                        // Our own end (--max-frames) closed the channel first; any other end
                        // of a live feed is a loss.
                        if feed.reconnects() && !stop.load(Ordering::Relaxed) && !source::is_closed(&slot) {
                            feed.lost("the feed ended".into(), &stats)?;
                        } else {
                            source::close(&slot);
                        }
                    }
                    Event::Error(Role::Source(g), msg) if g == feed.generation => {
                        if feed.reconnects() && !stop.load(Ordering::Relaxed) {
                            feed.lost(msg, &stats)?;
                        } else {
                            return Err(anyhow!(msg));
                        }
                    }
                    Event::Eos(Role::Source(_)) | Event::Error(Role::Source(_), _) => {}
                    Event::Eos(Role::Sink) => return Ok(()),
                    Event::Error(Role::Sink, msg) => return Err(anyhow!(msg)),
                    Event::PusherDone(Err(e)) => return Err(e),
                    Event::PusherDone(Ok(())) => {}
                },
                default(Duration::from_millis(100)) => {
                    reporter.update(&stats);
                    let stopping = stop.load(Ordering::Relaxed);
                    if !stopping {
                        feed.tick(&stats)?;
                    }
                    let out_of_time = limits.duration.is_some_and(|d| stats.started() && stats.elapsed() >= d);
                    if (shutdown::requested() || out_of_time) && !stopping {
                        // Accept no more frames; those in flight still reach the output,
                        // then EOS finalizes it.
                        stop.store(true, Ordering::Relaxed);
                        source::close(&slot);
                        feed.teardown();
                    }
                }
            }
        }
    })();

    // Shut down: close the frame channel so the worker drains, unblock the callback and any
    // push in progress, then wait for the pusher.
    stop.store(true, Ordering::Relaxed);
    source::close(&slot);
    feed.teardown();
    let _ = sink_pipeline.set_state(gst::State::Null);
    let _ = pusher.join();
    reporter.update(&stats);
    result
}

/// The input pipeline of a run, rebuilt when an RTSP feed drops.
struct Feed<'a> {
    input: &'a Input,
    rtsp: RtspSettings,
    handoff: source::Handoff,
    events: Sender<Event>,
    pipeline: Option<gst::Pipeline>,
    generation: u32,
    /// When the current pipeline was built, and how many frames had arrived by then.
    built: Instant,
    received_at_build: u64,
    /// Reconnect tries since frames last flowed, and when the next one is due.
    tries: u32,
    retry_at: Option<Instant>,
}

impl Feed<'_> {
    fn reconnects(&self) -> bool {
        matches!(self.input, Input::Rtsp { .. })
    }

    fn build(&mut self) -> Result<()> {
        self.generation += 1;
        let src = source::build(self.input, &self.rtsp, self.handoff.clone())?;
        watch(
            &src.pipeline,
            Role::Source(self.generation),
            self.events.clone(),
        );
        self.pipeline = Some(src.pipeline);
        self.built = Instant::now();
        self.received_at_build = self.handoff.stats.received.load(Ordering::Relaxed);
        Ok(())
    }

    fn play(&self) {
        if let Some(p) = &self.pipeline {
            let _ = p.set_state(gst::State::Playing);
        }
    }

    fn teardown(&mut self) {
        if let Some(p) = self.pipeline.take() {
            let _ = p.set_state(gst::State::Null);
        }
    }

    fn uri(&self) -> &str {
        match self.input {
            Input::Rtsp { uri } => uri,
            _ => "the input",
        }
    }

    /// The feed failed or ended: schedule a rebuild, or give up when the budget is spent.
    fn lost(&mut self, why: String, stats: &Stats) -> Result<()> {
        self.teardown();
        let ever = stats.received.load(Ordering::Relaxed) > 0;
        if self.tries >= self.rtsp.reconnect_max {
            let what = if ever {
                "was lost and did not come back"
            } else {
                "cannot be opened"
            };
            anyhow::bail!(
                "{} {what} after {} reconnect tries: {why}; check that the server is up and the host, port and path are right (--reconnect-max sets the tries)",
                self.uri(),
                self.tries
            );
        }
        self.tries += 1;
        let wait = backoff(self.tries);
        eprintln!(
            "rtsp: {}: {why}; reconnecting in {} s (try {} of {})",
            self.uri(),
            wait.as_secs(),
            self.tries,
            self.rtsp.reconnect_max
        );
        self.retry_at = Some(Instant::now() + wait);
        Ok(())
    }

    /// Every tick: rebuild when a retry is due, notice frames flowing again, and take a
    /// silent feed as lost.
    fn tick(&mut self, stats: &Stats) -> Result<()> {
        if !self.reconnects() {
            return Ok(());
        }
        if let Some(at) = self.retry_at {
            if Instant::now() >= at {
                self.retry_at = None;
                self.build()?;
                self.play();
            }
            return Ok(());
        }
        let received = stats.received.load(Ordering::Relaxed);
        if self.tries > 0 && received > self.received_at_build {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "rtsp: {}: reconnected after {} tries; frames flowing again",
                self.uri(),
                self.tries
            );
            self.tries = 0;
        }
        let quiet = if received > self.received_at_build {
            stats.since_last_frame()
        } else {
            self.built.elapsed()
        };
        if self.pipeline.is_some() && quiet >= STALL {
            self.lost(format!("no frame for {} s", STALL.as_secs()), stats)?;
        }
        Ok(())
    }
}
