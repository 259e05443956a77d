//! GStreamer lives here and nowhere else: building each stream's input and output
//! pipelines, the bus loop that watches them all, and an orderly shutdown.
//!
//! ```text
//! stream i:  [source pipeline]  decoder → videoconvert → appsink ──Frame──▶ queue i ─┐
//!                                                                                  (worker: one
//!                                                                                   model, shared
//!                                                                                   batches)
//! stream i:  [sink pipeline]    (renderer) ──Frame──▶ pusher i → appsrc → tee → file / rtsp / … ◀┘
//! ```
//! Two pipelines per stream rather than one, so that an output's preroll never waits on its
//! input, and a dropped RTSP feed can be rebuilt (with backoff) while its output keeps going.
//! Streams are isolated: one that fails (unreachable, corrupt, its disk full) is torn down
//! and reported while the others go on.
//! End of a stream: source EOS → its queue closes → the worker hands on its last frames and
//! its end → the renderer closes its channel → the pusher sends EOS into its appsrc → the
//! muxers finalize → sink EOS. The run ends when every stream has.

pub mod rtsp;
pub mod sink;
pub mod sound;
pub mod source;
pub mod times;

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
use crate::stats::{Health, Reporter, Stage, Stats, Tally};

/// Which pipeline a bus message came from: a stream's source, numbered by how many times it
/// has been (re)built so the last words of a torn-down one are told apart, or its sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Source(usize, u32),
    Sink(usize),
}

enum Event {
    Eos(Role),
    Error(Role, String),
    PusherDone(usize, Result<()>),
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

/// Called with each segment file an output starts, and the running time (ns) it starts at.
pub type SegmentOpened = Arc<dyn Fn(std::path::PathBuf, u64) + Send + Sync>;

/// Forward the bus messages that matter to the event channel, from whatever thread posts them;
/// a segment opened goes to `segments`.
fn watch(
    pipeline: &gst::Pipeline,
    role: Role,
    events: Sender<Event>,
    segments: Option<SegmentOpened>,
) {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    bus.set_sync_handler(move |_, msg| {
        use gst::MessageView;
        match msg.view() {
            MessageView::Element(e) => {
                let opened = e
                    .structure()
                    .filter(|s| s.name() == "splitmuxsink-fragment-opened");
                if let (Some(s), Some(hook)) = (opened, &segments) {
                    if let Ok(location) = s.get::<String>("location") {
                        let at = s.get::<u64>("running-time").unwrap_or(0);
                        hook(location.into(), at);
                    }
                }
            }
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
    if let Role::Source(..) = role {
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

/// How long a local file may take to start giving frames.
const OPEN_FILE: Duration = Duration::from_secs(15);

/// How long an output may take to finalize after its EOS.
const FINALIZE: Duration = Duration::from_secs(30);

/// A feed that gives no frame this long after it was (re)built or after its last frame is
/// taken as lost (a UDP feed whose server vanished goes silent rather than failing).
const STALL: Duration = Duration::from_secs(10);

/// `--rtsp-transport auto` moves a feed from UDP to TCP when more than this share of its
/// packets (percent) was lost over the last `UDP_LOSS_SPAN`.
const UDP_LOSS_MAX_PERCENT: f64 = 1.0;
const UDP_LOSS_SPAN: Duration = Duration::from_secs(10);

/// When a run ends early, cleanly: the outputs are finalized with what was explained so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Per stream.
    pub max_frames: Option<u64>,
    /// For the run, from its first frame.
    pub duration: Option<Duration>,
}

/// One stream of a video run: what it reads, where it writes, and the channels between.
pub struct StreamRun<'a> {
    pub name: &'a str,
    pub input: &'a Input,
    /// The input as logs show it (credentials masked).
    pub shown: &'a str,
    pub rtsp: RtspSettings,
    pub overload: Overload,
    pub max_latency: Option<std::time::Duration>,
    pub branches: Vec<sink::Branch<'a>>,
    /// Its queue to the worker, and the receiving end of it (to drop the oldest frame).
    pub frames: Sender<Frame>,
    pub oldest: Receiver<Frame>,
    /// Its explained frames, from the renderer.
    pub rendered: Receiver<Frame>,
    /// Its own counters (the run's are passed beside).
    pub stats: Arc<Stats>,
    /// Decode at the input's own pace (see `source::Handoff::paced`).
    pub paced: bool,
    pub prepare: source::Prepare,
    pub window: Option<source::Window>,
    pub segments: Option<SegmentOpened>,
    /// Its sound track, which its outputs carry.
    pub sound: Option<sound::Track>,
}

/// What a video run reads and where it writes.
pub struct Run<'a> {
    pub streams: Vec<StreamRun<'a>>,
    pub codec: sink::Codec,
    pub limits: Limits,
}

/// A video run: decode each stream's input into its queue, send what arrives on its
/// `rendered` channel to its output branches. Returns once every stream's outputs are
/// finalized, with how each stream ended (its error, if it failed); an error that stops the
/// whole run (an output pipeline that cannot be built) is the outer one. An RTSP input that
/// fails or ends is rebuilt after a backoff, up to its `reconnect_max` tries in a row (0:
/// forever).
pub fn run_video(run: Run, all: Arc<Stats>, reporter: &mut Reporter) -> Result<Vec<Result<()>>> {
    let (events_tx, events) = crossbeam_channel::unbounded();
    let mut bus = BusLoop {
        lanes: Vec::with_capacity(run.streams.len()),
        events,
        stop: Arc::new(AtomicBool::new(false)),
        limits: run.limits,
        all,
    };
    // Build everything first: a pipeline that cannot be built stops the run before it starts.
    let pushers = bus.build_lanes(run.streams, run.codec, &events_tx)?;
    let threads = pushers
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.spawn(i, events_tx.clone()))
        .collect::<Result<Vec<_>>>()?;
    let result = bus.start().and_then(|()| bus.watch_until_done(reporter));
    // Shut down: close the frame channels so the worker drains, unblock the callbacks and any
    // push in progress, then wait for the pushers.
    bus.stop_all(true);
    for t in threads {
        let _ = t.join();
    }
    reporter.update(&bus.all);
    result?;
    Ok(bus
        .lanes
        .into_iter()
        .map(|l| {
            l.done
                .unwrap_or_else(|| Err(anyhow!("the stream did not finish")))
        })
        .collect())
}

/// One stream's output side: the sink pipeline and the thread that pushes its explained frames.
struct Pusher {
    sink: sink::Sink,
    rendered: Receiver<Frame>,
    tally: Tally,
}

impl Pusher {
    /// Push every rendered frame into the output, then EOS; say how it went on `events`.
    fn spawn(mut self, i: usize, events: Sender<Event>) -> Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("gradcam-push-{i}"))
            .spawn(move || {
                let r = (|| {
                    for frame in self.rendered.iter() {
                        let latency = frame.arrived.elapsed();
                        let pushing = Instant::now();
                        self.sink.push(frame)?;
                        self.tally.all.add_busy(Stage::Output, pushing.elapsed());
                        self.tally.written(latency);
                    }
                    self.sink.finish();
                    Ok(())
                })();
                let _ = events.send(Event::PusherDone(i, r));
            })
            .context("starting an output thread")
    }
}

/// The bus loop's state: every stream's lane, the events from their pipelines and pushers.
struct BusLoop<'a> {
    lanes: Vec<Lane<'a>>,
    events: Receiver<Event>,
    /// Set when the run stops taking frames (Ctrl-C, --duration, the end).
    stop: Arc<AtomicBool>,
    limits: Limits,
    all: Arc<Stats>,
}

impl<'a> BusLoop<'a> {
    /// Each stream's source and sink pipelines, built and watched; their pushers, to start.
    fn build_lanes(
        &mut self,
        streams: Vec<StreamRun<'a>>,
        codec: sink::Codec,
        events: &Sender<Event>,
    ) -> Result<Vec<Pusher>> {
        let others_go_on = streams.len() > 1;
        let mut pushers = Vec::new();
        for (i, st) in streams.into_iter().enumerate() {
            let slot: source::FrameSlot = Arc::new(Mutex::new(Some(st.frames)));
            let tally = Tally {
                stream: st.stats.clone(),
                all: self.all.clone(),
            };
            let sink = sink::build(&st.branches, codec, st.sound)?;
            let handoff = source::Handoff {
                stream: i,
                slot: slot.clone(),
                overload: st.overload,
                max_latency: st.max_latency,
                oldest: st.oldest,
                max_frames: self.limits.max_frames,
                stop: self.stop.clone(),
                tally: tally.clone(),
                index: Arc::new(AtomicU64::new(0)),
                epoch: st.input.is_live().then(Instant::now),
                paced: st.paced,
                window: st.window,
                sound: sink.sound.clone().map(sound::Handoff::new),
                damage: None,
            };
            st.stats
                .encoders
                .store(sink::encoders(&sink.pipeline) as u64, Ordering::Relaxed);
            watch(&sink.pipeline, Role::Sink(i), events.clone(), st.segments);
            let mut feed = Feed::new(i, st.input, st.shown, st.rtsp, handoff, events.clone());
            feed.prepare = st.prepare;
            feed.build()?;
            self.lanes.push(Lane {
                name: st.name.to_owned(),
                slot,
                feed,
                sink_pipeline: sink.pipeline.clone(),
                stats: st.stats.clone(),
                others_go_on,
                failed: None,
                done: None,
                pushed_eos: None,
            });
            pushers.push(Pusher {
                sink,
                rendered: st.rendered,
                tally,
            });
        }
        Ok(pushers)
    }

    /// Outputs first (each waits for frames), then the sources.
    fn start(&mut self) -> Result<()> {
        for lane in &self.lanes {
            if lane.sink_pipeline.set_state(gst::State::Playing).is_err() {
                // The element that refused posted why on the bus.
                return Err(match self.events.recv_timeout(Duration::from_millis(500)) {
                    Ok(Event::Error(_, msg)) => anyhow!(msg),
                    _ => anyhow!("cannot start the output pipeline"),
                });
            }
        }
        // A source that fails at once (missing plugin, bad URI) posts its error on the bus.
        for lane in &self.lanes {
            lane.feed.play();
        }
        Ok(())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Until every stream's output is finished: bus events as they come, and a tick every
    /// 100 ms for progress, reconnects, stalls and the run's limits.
    fn watch_until_done(&mut self, reporter: &mut Reporter) -> Result<()> {
        while self.lanes.iter().any(|l| l.done.is_none()) {
            match self.events.recv_timeout(Duration::from_millis(100)) {
                Ok(ev) => self.on_event(ev),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    reporter.update(&self.all);
                    self.tick();
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    unreachable!("the loop holds a sender")
                }
            }
        }
        Ok(())
    }

    fn on_event(&mut self, ev: Event) {
        let stopping = self.stopping();
        match ev {
            Event::Eos(Role::Source(i, g)) if g == self.lanes[i].feed.generation => {
                let lane = &mut self.lanes[i];
                // Our own end (--max-frames) closed the channel first; any other end of a
                // live feed is a loss.
                if lane.feed.reconnects() && !stopping && !source::is_closed(&lane.slot) {
                    lane.lost("the feed ended".into());
                } else {
                    source::close(&lane.slot);
                }
            }
            Event::Error(Role::Source(i, g), msg) if g == self.lanes[i].feed.generation => {
                let lane = &mut self.lanes[i];
                if source::is_closed(&lane.slot) {
                    // Its input was closed on purpose (a stop, its end, --max-frames): the
                    // last words of a source being torn down do not matter.
                } else if lane.feed.reconnects() && !stopping {
                    lane.lost(msg);
                } else {
                    lane.fail(msg);
                }
            }
            Event::Eos(Role::Source(..)) | Event::Error(Role::Source(..), _) => {}
            Event::Eos(Role::Sink(i)) => self.lanes[i].finish(),
            Event::Error(Role::Sink(i), msg) => self.lanes[i].abandon(msg),
            Event::PusherDone(i, Err(e)) => {
                if self.lanes[i].done.is_none() {
                    self.lanes[i].abandon(format!("{e:#}"));
                }
            }
            // EOS went into the appsrc: the output finalizes (see FINALIZE).
            Event::PusherDone(i, Ok(())) => self.lanes[i].pushed_eos = Some(Instant::now()),
        }
    }

    fn tick(&mut self) {
        for lane in self.lanes.iter_mut().filter(|l| l.done.is_none()) {
            // A muxer finalizes in well under this; one that does not is given up.
            if lane.pushed_eos.is_some_and(|t| t.elapsed() >= FINALIZE) {
                lane.abandon(format!(
                    "its output did not finish within {} s of its end",
                    FINALIZE.as_secs()
                ));
            }
        }
        if !self.stopping() {
            let live = |l: &&mut Lane| l.failed.is_none() && !source::is_closed(&l.slot);
            for lane in self.lanes.iter_mut().filter(live) {
                if let Err(e) = lane.feed.tick() {
                    lane.fail(e.to_string());
                }
            }
        }
        let all = &self.all;
        let out_of_time = self
            .limits
            .duration
            .is_some_and(|d| all.started() && all.elapsed() >= d);
        if (shutdown::requested() || out_of_time) && !self.stopping() {
            // Accept no more frames; those in flight still reach the outputs, then EOS
            // finalizes them.
            self.stop_all(false);
        }
    }

    /// Take no more frames: close every input (and, at the very end, stop the outputs too).
    fn stop_all(&mut self, outputs_too: bool) {
        self.stop.store(true, Ordering::Relaxed);
        for lane in &mut self.lanes {
            source::close(&lane.slot);
            lane.feed.teardown();
            if outputs_too {
                let _ = lane.sink_pipeline.set_state(gst::State::Null);
            }
        }
    }
}

/// One stream's state in the bus loop.
struct Lane<'a> {
    name: String,
    slot: source::FrameSlot,
    feed: Feed<'a>,
    sink_pipeline: gst::Pipeline,
    stats: Arc<Stats>,
    /// Whether other streams share the run: then a failure is announced here, as it happens,
    /// since the run goes on (alone, the run's error says it).
    others_go_on: bool,
    /// Why the stream failed; its output still drains and finishes.
    failed: Option<String>,
    /// How it ended, once its output is finished.
    done: Option<Result<()>>,
    /// When its pusher sent EOS into the output.
    pushed_eos: Option<Instant>,
}

impl Lane<'_> {
    /// The stream failed: stop its input (its frames in flight still reach its output, which
    /// then finishes) and say so; the other streams go on.
    fn fail(&mut self, why: String) {
        if self.failed.is_some() {
            return;
        }
        if self.others_go_on {
            eprintln!(
                "{}",
                crate::redact::line(&format!(
                    "error: stream {}: {why}; the other streams go on",
                    self.name
                ))
            );
        }
        self.stats.set_health(Health::Failed(why.clone()));
        self.failed = Some(why);
        source::close(&self.slot);
        self.feed.teardown();
    }

    /// Its feed was lost: reconnect, or fail once the tries are spent.
    fn lost(&mut self, why: String) {
        if let Err(e) = self.feed.lost(why) {
            self.fail(e.to_string());
        }
    }

    /// Its output failed or hung: fail, stop the output and take it as finished.
    fn abandon(&mut self, why: String) {
        self.fail(why);
        let _ = self.sink_pipeline.set_state(gst::State::Null);
        self.finish();
    }

    /// Its output is finished (or abandoned).
    fn finish(&mut self) {
        if self.done.is_some() {
            return;
        }
        source::close(&self.slot);
        self.feed.teardown();
        self.done = Some(match &self.failed {
            Some(why) => Err(anyhow!("{why}")),
            None => {
                self.stats.set_health(Health::Ended);
                Ok(())
            }
        });
    }
}

/// The input pipeline of a stream, rebuilt when an RTSP feed drops.
struct Feed<'a> {
    stream: usize,
    input: &'a Input,
    shown: &'a str,
    rtsp: RtspSettings,
    handoff: source::Handoff,
    prepare: source::Prepare,
    events: Sender<Event>,
    pipeline: Option<gst::Pipeline>,
    generation: u32,
    /// When the current pipeline was built, and how many frames had arrived by then.
    built: Instant,
    received_at_build: u64,
    /// Reconnect tries since frames last flowed, and when the next one is due.
    tries: u32,
    retry_at: Option<Instant>,
    /// The current pipeline's loss state (an RTSP feed's).
    damage: Option<source::damage::DamageLog>,
}

impl<'a> Feed<'a> {
    fn new(
        stream: usize,
        input: &'a Input,
        shown: &'a str,
        rtsp: RtspSettings,
        handoff: source::Handoff,
        events: Sender<Event>,
    ) -> Self {
        Feed {
            stream,
            input,
            shown,
            rtsp,
            handoff,
            prepare: source::Prepare::default(),
            events,
            pipeline: None,
            generation: 0,
            built: Instant::now(),
            received_at_build: 0,
            tries: 0,
            retry_at: None,
            damage: None,
        }
    }

    fn stats(&self) -> &Stats {
        &self.handoff.tally.stream
    }

    fn reconnects(&self) -> bool {
        matches!(self.input, Input::Rtsp { .. })
    }

    fn build(&mut self) -> Result<()> {
        self.generation += 1;
        let src = source::build(self.input, &self.rtsp, self.handoff.clone(), self.prepare)?;
        watch(
            &src.pipeline,
            Role::Source(self.stream, self.generation),
            self.events.clone(),
            None,
        );
        self.pipeline = Some(src.pipeline);
        self.damage = src.damage;
        self.built = Instant::now();
        self.received_at_build = self.stats().received.load(Ordering::Relaxed);
        Ok(())
    }

    /// Play; a file that starts past its beginning is first prerolled and sought to the key
    /// frame before the start (the frames before it are dropped as they come).
    fn play(&self) {
        let Some(p) = &self.pipeline else {
            return;
        };
        if let Some(start) = self
            .handoff
            .window
            .as_ref()
            .map(|w| w.start)
            .filter(|s| *s > 0)
        {
            let _ = p.set_state(gst::State::Paused);
            let _ = p.state(gst::ClockTime::from_seconds(OPEN_FILE.as_secs()));
            let flags =
                gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE;
            let _ = p.seek_simple(flags, gst::ClockTime::from_nseconds(start));
        }
        let _ = p.set_state(gst::State::Playing);
    }

    fn teardown(&mut self) {
        self.retry_at = None;
        if let Some(p) = self.pipeline.take() {
            let _ = p.set_state(gst::State::Null);
        }
    }

    /// The feed failed or ended: schedule a rebuild, or give up when the budget is spent.
    fn lost(&mut self, why: String) -> Result<()> {
        self.teardown();
        let stats = self.handoff.tally.stream.clone();
        let ever = stats.received.load(Ordering::Relaxed) > 0;
        let max = self.rtsp.reconnect_max;
        if max > 0 && self.tries >= max {
            stats.set_health(Health::Reconnecting {
                tries: self.tries,
                max,
                why: why.clone(),
            });
            let what = if ever {
                "was lost and did not come back"
            } else {
                "cannot be opened"
            };
            anyhow::bail!(
                "{} {what} after {} reconnect tries: {why}; check that the server is up and the host, port and path are right (--reconnect-max sets the tries, 0 for ever)",
                self.shown,
                self.tries
            );
        }
        self.tries += 1;
        let wait = backoff(self.tries);
        let of = if max > 0 {
            format!(" of {max}")
        } else {
            String::new()
        };
        eprintln!(
            "{}",
            crate::redact::line(&format!(
                "rtsp: {}: {why}; reconnecting in {} s (try {}{of})",
                self.shown,
                wait.as_secs(),
                self.tries,
            ))
        );
        stats.set_health(Health::Reconnecting {
            tries: self.tries,
            max,
            why,
        });
        self.retry_at = Some(Instant::now() + wait);
        Ok(())
    }

    /// `--rtsp-transport auto`: a feed that keeps losing packets over UDP is reconnected over
    /// TCP, once, saying why (TCP resends what is lost, so frames arrive whole, late where the
    /// link is slow, rather than damaged).
    fn over_tcp_when_udp_loses(&mut self) {
        let over_udp = self
            .damage
            .as_ref()
            .and_then(|d| d.lock().ok().map(|d| d.over_udp))
            .unwrap_or(false);
        if self.rtsp.transport != crate::config::RtspTransport::Auto
            || !over_udp
            || self.built.elapsed() < UDP_LOSS_SPAN
        {
            return;
        }
        let Some(loss) = self.stats().loss_percent_over(UDP_LOSS_SPAN.as_secs()) else {
            return;
        };
        if loss <= UDP_LOSS_MAX_PERCENT {
            return;
        }
        eprintln!(
            "{}",
            crate::redact::line(&format!(
                "rtsp: {}: {loss:.1}% of its RTP packets lost over UDP in the last {} s; \
                 reconnecting over TCP, which resends them (frames whole, later on a slow link)",
                self.shown,
                UDP_LOSS_SPAN.as_secs()
            ))
        );
        self.rtsp.transport = crate::config::RtspTransport::Tcp;
        self.teardown();
        self.retry_at = Some(Instant::now());
    }

    /// Every tick: rebuild when a retry is due, notice frames flowing (again), and take a
    /// silent feed as lost.
    fn tick(&mut self) -> Result<()> {
        let stats = self.handoff.tally.stream.clone();
        let received = stats.received.load(Ordering::Relaxed);

        if !self.reconnects() {
            if received > 0 && stats.health() == Health::Starting {
                stats.set_health(Health::Up);
            }
            // decodebin now and then swallows a demuxer's error on a damaged file (about 1
            // run in 30 on a truncated MP4): the pipeline stays in READY for ever, and no
            // message says why.
            let local = matches!(self.input, Input::Video { path: Some(_), .. });
            let stuck = self
                .pipeline
                .as_ref()
                .is_some_and(|p| p.state(gst::ClockTime::ZERO).1 <= gst::State::Ready);
            if local && received == 0 && stuck && self.built.elapsed() >= OPEN_FILE {
                anyhow::bail!(
                    "the input did not start within {} s and GStreamer gave no reason: it is probably damaged or truncated; re-encode or re-download it",
                    OPEN_FILE.as_secs()
                );
            }
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
        if received > self.received_at_build {
            if self.tries > 0 {
                self.handoff.tally.reconnected();
                eprintln!(
                    "{}",
                    crate::redact::line(&format!(
                        "rtsp: {}: reconnected after {} tries; frames flowing again",
                        self.shown, self.tries
                    ))
                );
                self.tries = 0;
            }
            if !stats.health().up() {
                stats.set_health(Health::Up);
            }
        }
        let quiet = if received > self.received_at_build {
            stats.since_last_frame()
        } else {
            self.built.elapsed()
        };
        if self.pipeline.is_some() && quiet >= STALL {
            self.lost(format!("no frame for {} s", STALL.as_secs()))?;
        }
        self.over_tcp_when_udp_loses();
        Ok(())
    }
}
