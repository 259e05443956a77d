//! GStreamer lives here and nowhere else: building the input and output pipelines, the bus
//! loop that watches both, and an orderly shutdown.
//!
//! ```text
//! [source pipeline]  uridecodebin → videoconvert → appsink ──Frame──▶ (worker)
//! [sink pipeline]    (renderer) ──Frame──▶ pusher thread → appsrc → x264enc → mux → filesink
//! ```
//! Two pipelines rather than one, so that the output's preroll never waits on the input's.
//! End of stream: source EOS → the frame channel closes → the worker drains and ends → the
//! renderer ends → the pusher sends EOS into the appsrc → the muxer finalizes → sink EOS.

pub mod sink;
pub mod source;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{Receiver, Sender};
use gstreamer as gst;
use gstreamer::prelude::*;

use crate::config::{Input, Overload};
use crate::frame::Frame;
use crate::shutdown;
use crate::stats::{Reporter, Stats};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Source,
    Sink,
}

enum Event {
    Eos(Role),
    Error(String),
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
                let _ = events.send(Event::Error(describe_error(role, err)));
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
    if role == Role::Source {
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
    if e.matches(gst::ResourceError::OpenWrite)
        || e.matches(gst::ResourceError::Write)
        || e.matches(gst::ResourceError::NoSpaceLeft)
    {
        return format!("writing the output failed: {e}; check free space and permissions");
    }
    format!("encoding the output failed in {element}: {e}")
}

/// When a run ends early, cleanly: the output is finalized with what was explained so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_frames: Option<u64>,
    pub duration: Option<Duration>,
}

/// A video run: decode `input` into `frames`, send what arrives on `rendered` to `target`.
/// Returns once the output is finalized (or the first error); the caller's threads in
/// between end when their channels close. `oldest` is the receiving end of `frames`, used to
/// drop the oldest waiting frame when `overload` says so.
#[allow(clippy::too_many_arguments)]
pub fn run_video(
    input: &Input,
    target: sink::Target,
    overload: Overload,
    limits: Limits,
    frames: Sender<Frame>,
    oldest: Receiver<Frame>,
    rendered: Receiver<Frame>,
    stats: Arc<Stats>,
    reporter: &mut Reporter,
) -> Result<()> {
    let (events_tx, events) = crossbeam_channel::unbounded();
    let slot: source::FrameSlot = Arc::new(Mutex::new(Some(frames)));
    let stop = Arc::new(AtomicBool::new(false));

    let mut sink = sink::build(target)?;
    let src = source::build(
        input,
        source::Handoff {
            slot: slot.clone(),
            overload,
            oldest,
            max_frames: limits.max_frames,
            stop: stop.clone(),
            stats: stats.clone(),
        },
    )?;
    watch(&src.pipeline, Role::Source, events_tx.clone());
    watch(&sink.pipeline, Role::Sink, events_tx.clone());

    let sink_pipeline = sink.pipeline.clone();
    let pusher_stats = stats.clone();
    let pusher_events = events_tx.clone();
    let pusher = std::thread::Builder::new()
        .name("gradcam-pusher".into())
        .spawn(move || {
            let r = (|| {
                for frame in rendered.iter() {
                    sink.push(frame)?;
                    pusher_stats.written.fetch_add(1, Ordering::Relaxed);
                }
                sink.finish();
                Ok(())
            })();
            let _ = pusher_events.send(Event::PusherDone(r));
        })
        .context("starting the output thread")?;

    let result = (|| -> Result<()> {
        sink_pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| anyhow!("cannot start the output pipeline"))?;
        // A source that fails at once (missing plugin, bad URI) posts its error on the bus.
        let _ = src.pipeline.set_state(gst::State::Playing);
        loop {
            crossbeam_channel::select! {
                recv(events) -> ev => match ev.expect("we hold a sender") {
                    Event::Eos(Role::Source) => {
                        source::close(&slot);
                    }
                    Event::Eos(Role::Sink) => return Ok(()),
                    Event::Error(msg) => return Err(anyhow!(msg)),
                    Event::PusherDone(Err(e)) => return Err(e),
                    Event::PusherDone(Ok(())) => {}
                },
                default(Duration::from_millis(100)) => {
                    reporter.update(&stats);
                    let out_of_time = limits.duration.is_some_and(|d| stats.started() && stats.elapsed() >= d);
                    if (shutdown::requested() || out_of_time) && !stop.load(Ordering::Relaxed) {
                        // Accept no more frames; those in flight still reach the output,
                        // then EOS finalizes it.
                        stop.store(true, Ordering::Relaxed);
                        source::close(&slot);
                        let _ = src.pipeline.set_state(gst::State::Null);
                    }
                }
            }
        }
    })();

    // Shut down: close the frame channel so the worker drains, unblock the callback and any
    // push in progress, then wait for the pusher.
    stop.store(true, Ordering::Relaxed);
    source::close(&slot);
    let _ = src.pipeline.set_state(gst::State::Null);
    let _ = sink_pipeline.set_state(gst::State::Null);
    let _ = pusher.join();
    reporter.update(&stats);
    result
}
