//! The appsink's hand-off: each decoded sample made a `Frame` and sent to the worker's channel,
//! waiting only for room in it (the back-pressure that keeps a file from racing ahead), never
//! for the model, and giving up as soon as the run is stopping.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::clock::LiveClock;
use super::damage::DamageLog;
use super::window::{Place, Window};
use crate::config::{OnDamaged, Overload};
use crate::frame::Frame;
use crate::pipeline::sound;
use crate::pipeline::times::{running_time, stream_time};
use crate::stats::{Stage, Tally};

/// Runs its closure when dropped: on every way out of a scope.
pub(super) struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// The sender side of the frame channel, shared by the callback and the bus loop, which drops
/// it (closing the channel) at end of stream or on shutdown.
pub type FrameSlot = Arc<Mutex<Option<Sender<Frame>>>>;

/// Whether the channel was closed (end of input, a stop, or the last frame asked for).
pub fn is_closed(slot: &FrameSlot) -> bool {
    slot.lock().map(|s| s.is_none()).unwrap_or(true)
}

/// Drop the sender in `slot`: once the frames already queued are drained, the worker's
/// channel reports the end.
pub fn close(slot: &FrameSlot) {
    if let Ok(mut s) = slot.lock() {
        s.take();
    }
}

/// How the appsink callback hands frames on. Cloned for each (re)built source of one run.
#[derive(Clone)]
pub struct Handoff {
    /// The stream the frames belong to.
    pub stream: usize,
    pub slot: FrameSlot,
    /// With `Overload::Drop`, the receiving end too, to take the oldest waiting frame out.
    pub overload: Overload,
    /// A live frame's bound on its wait for the model (`Frame::expires`).
    pub max_latency: Option<Duration>,
    pub oldest: Receiver<Frame>,
    pub max_frames: Option<u64>,
    pub stop: Arc<AtomicBool>,
    /// The stream's counters, and the run's.
    pub tally: Tally,
    /// Frames given so far, across reconnects.
    pub index: Arc<AtomicU64>,
    /// For a live source: the instant timestamps count from (arrival time replaces the
    /// source's own timestamps, which restart on a reconnect).
    pub epoch: Option<Instant>,
    /// Hand frames on at the input's own frame rate, as a player shows them (a file watched
    /// live), rather than as fast as they decode.
    pub paced: bool,
    /// A file input's part to explain (`--start`, `--duration`).
    pub window: Option<Window>,
    /// Where the input's sound goes (None: nowhere, or it has none).
    pub sound: Option<sound::Handoff>,
    /// An RTP feed's damaged units (set where the source is built), and what becomes of the
    /// frames decoded from them.
    pub damage: Option<(DamageLog, OnDamaged)>,
}

pub(super) fn set_callback(sink: &gst_app::AppSink, h: Handoff, live: Option<LiveClock>) {
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |appsink| {
                let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let raw = sample.buffer().and_then(|b| b.pts());
                let pts = raw.map(|t| stream_time(&sample, t));
                let mut rebase = None;
                if let (Some(w), Some(pts)) = (&h.window, pts) {
                    match w.place(pts) {
                        Place::Before => return Ok(gst::FlowSuccess::Ok),
                        Place::After => {
                            close(&h.slot);
                            return Err(gst::FlowError::Eos);
                        }
                        Place::In(p) => rebase = Some(p),
                    }
                }
                let i = h.index.fetch_add(1, Ordering::Relaxed);
                if h.max_frames.is_some_and(|max| i >= max) {
                    return Err(gst::FlowError::Eos);
                }
                let damaged = damaged(&h, &sample, raw);
                if damaged == Some(OnDamaged::Skip) {
                    // Counted as given and damaged; left out of the model and the outputs.
                    h.tally.received((i == 0).then_some(0));
                    return Ok(gst::FlowSuccess::Ok);
                }
                let Some(mut frame) = to_frame(&sample, h.stream, i) else {
                    gst::element_error!(
                        appsink,
                        gst::StreamError::Format,
                        ("decoded frame {i} cannot be read as RGBx")
                    );
                    return Err(gst::FlowError::Error);
                };
                frame.pts = match (&live, rebase) {
                    (Some(l), _) => {
                        let running = raw.map(|t| running_time(&sample, t));
                        Some(l.frame(running, frame.arrived))
                    }
                    (None, Some(p)) => Some(p),
                    (None, None) => pts,
                };
                frame.expires = h.max_latency.map(|d| frame.arrived + d);
                frame.damaged = damaged;
                let expected = || match &h.window {
                    Some(w) => w.frames(appsink, frame.rate),
                    None => expected_frames(appsink, frame.rate),
                };
                h.tally.received((i == 0).then(expected));
                let Some(tx) = h.slot.lock().map(|s| s.clone()).unwrap_or(None) else {
                    return Err(gst::FlowError::Flushing);
                };
                enqueue(frame, &tx, &h)?;
                if h.max_frames.is_some_and(|max| i + 1 >= max) {
                    // The last frame asked for: close the channel so the run ends.
                    close(&h.slot);
                    return Err(gst::FlowError::Eos);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// Whether the sample was decoded from damaged data (the depayloader's mark by its timestamp
/// `raw`, or the decoder's CORRUPTED flag), and what becomes of it; counted.
fn damaged(h: &Handoff, sample: &gst::Sample, raw: Option<gst::ClockTime>) -> Option<OnDamaged> {
    let (log, on) = h.damage.as_ref()?;
    let corrupted = sample
        .buffer()
        .is_some_and(|b| b.flags().contains(gst::BufferFlags::CORRUPTED));
    let marked = raw.is_some_and(|t| log.lock().is_ok_and(|mut d| d.frame(t.nseconds())));
    (corrupted || marked).then(|| {
        h.tally.damaged();
        *on
    })
}

/// Into the stream's queue, by its overload policy: a live stream drops its oldest waiting
/// frame to make room; otherwise the source waits for room (Flushing once the run stops, the
/// stream is closed or the worker is gone).
pub(super) fn enqueue(
    mut frame: Frame,
    tx: &Sender<Frame>,
    h: &Handoff,
) -> Result<(), gst::FlowError> {
    if h.overload == Overload::Drop {
        // Newest frames win: make room by dropping the oldest waiting one.
        loop {
            match tx.try_send(frame) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(f)) => {
                    frame = f;
                    // This stream's own oldest frame: other streams have queues of their own.
                    if h.oldest.try_recv().is_ok() {
                        h.tally.dropped();
                    }
                }
                Err(TrySendError::Disconnected(_)) => return Err(gst::FlowError::Flushing),
            }
        }
    }
    let waiting = Instant::now();
    let _counted = Defer(|| h.tally.all.add_busy(Stage::SourceWait, waiting.elapsed()));
    loop {
        match tx.send_timeout(frame, Duration::from_millis(100)) {
            Ok(()) => return Ok(()),
            // Keep waiting for room unless the run is stopping or this stream was closed (its
            // end, or its failure: the bus loop then tears this pipeline down, which waits for
            // this thread).
            Err(SendTimeoutError::Timeout(f))
                if !h.stop.load(Ordering::Relaxed) && !is_closed(&h.slot) =>
            {
                frame = f
            }
            // Stopping, or the worker is gone (it reports its own error).
            Err(_) => return Err(gst::FlowError::Flushing),
        }
    }
}

/// Copy a decoded sample into a [`Frame`], dropping any row padding.
pub(super) fn to_frame(sample: &gst::Sample, stream: usize, index: u64) -> Option<Frame> {
    let info = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    frame_from_buffer(sample.buffer()?, &info, stream, index)
}

/// A raw video buffer of a 4-byte format (`info`) as a packed frame, its bytes in the buffer's
/// order (the program's appsink asks for RGBx; the element swaps BGR orders itself), row
/// padding dropped, timestamps kept. None when it cannot be read so.
pub fn frame_from_buffer(
    buffer: &gst::BufferRef,
    info: &gst_video::VideoInfo,
    stream: usize,
    index: u64,
) -> Option<Frame> {
    if info.format_info().pixel_stride()[0] as usize != Frame::CHANNELS {
        return None;
    }
    let vframe = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).ok()?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = vframe.plane_stride()[0] as usize;
    let data = vframe.plane_data(0).ok()?;
    let row = w * Frame::CHANNELS;
    let mut pixels = Vec::with_capacity(row * h);
    for y in 0..h {
        pixels.extend_from_slice(data.get(y * stride..y * stride + row)?);
    }
    let fps = info.fps();
    Some(Frame {
        stream,
        index,
        pts: buffer.pts().map(|t| t.nseconds()),
        duration: buffer.duration().map(|t| t.nseconds()),
        width: w as u32,
        height: h as u32,
        rate: (fps.numer(), fps.denom()),
        pixels,
        arrived: Instant::now(),
        expires: None,
        damaged: None,
    })
}

/// Frames in the whole input, from its duration and frame rate (0 when either is unknown).
pub(super) fn expected_frames(appsink: &gst_app::AppSink, rate: (i32, i32)) -> u64 {
    let Some(d) = appsink.query_duration::<gst::ClockTime>() else {
        return 0;
    };
    if rate.0 <= 0 || rate.1 <= 0 {
        return 0;
    }
    let frames = d.nseconds() as u128 * rate.0 as u128 / (rate.1 as u128 * 1_000_000_000);
    // Round to nearest: durations are often a few ns short of a whole frame.
    let rem = d.nseconds() as u128 * rate.0 as u128 % (rate.1 as u128 * 1_000_000_000);
    (frames + u128::from(rem * 2 >= rate.1 as u128 * 1_000_000_000)) as u64
}
