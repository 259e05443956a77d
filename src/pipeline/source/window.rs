//! A file input's part to explain (`--start`, `--duration`), frame-accurate, and a file's
//! length.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::clock::{run_hook, Hook};
use crate::pipeline::sound;

/// How long the media at `uri` lasts, as its demuxer says (None when it cannot tell).
pub fn media_duration(uri: &str) -> Option<std::time::Duration> {
    let play = gst::ElementFactory::make("playbin")
        .property("uri", uri)
        .build()
        .ok()?;
    for sink in ["video-sink", "audio-sink"] {
        let fake = gst::ElementFactory::make("fakesink").build().ok()?;
        play.set_property(sink, &fake);
    }
    let _ = play.set_state(gst::State::Paused);
    let (ready, _, _) = play.state(gst::ClockTime::from_seconds(15));
    let d = ready
        .ok()
        .and_then(|_| play.query_duration::<gst::ClockTime>());
    let _ = play.set_state(gst::State::Null);
    d.map(|d| std::time::Duration::from_nanos(d.nseconds()))
}

/// The part of a file input to explain: its frames from `start` and before `end` (ns),
/// restamped so that the first of them is at 0 (as `ffmpeg -ss … -t …` writes them).
#[derive(Clone)]
pub struct Window {
    pub start: u64,
    pub end: Option<u64>,
    /// The first frame's timestamp in the file (u64::MAX until it comes).
    first: Arc<AtomicU64>,
    /// Called once it has come.
    pub(super) on_first: Hook,
}

pub(super) enum Place {
    Before,
    In(u64),
    After,
}

impl Window {
    pub fn new(start: u64, end: Option<u64>) -> Window {
        Window {
            start,
            end,
            first: Arc::new(AtomicU64::new(u64::MAX)),
            on_first: Arc::default(),
        }
    }

    pub(super) fn place(&self, pts: u64) -> Place {
        if pts < self.start {
            return Place::Before;
        }
        if self.end.is_some_and(|e| pts >= e) {
            return Place::After;
        }
        let first =
            match self
                .first
                .compare_exchange(u64::MAX, pts, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    run_hook(&self.on_first);
                    pts
                }
                Err(f) => f,
            };
        Place::In(pts.saturating_sub(first))
    }

    /// Where a sound buffer at `pts` goes: kept, restamped as the frames are, from the first
    /// frame's time on and before the end.
    pub fn sound_place(&self, pts: u64) -> sound::Place {
        if pts < self.start || self.end.is_some_and(|e| pts >= e) {
            return sound::Place::Out;
        }
        match self.first.load(Ordering::Relaxed) {
            u64::MAX => sound::Place::Wait,
            f if pts < f => sound::Place::Out,
            f => sound::Place::At(pts - f),
        }
    }

    /// Frames in the window (0 while unknown).
    pub(super) fn frames(&self, appsink: &gst_app::AppSink, rate: (i32, i32)) -> u64 {
        let Some(d) = appsink.query_duration::<gst::ClockTime>() else {
            return 0;
        };
        let end = self.end.map_or(d.nseconds(), |e| e.min(d.nseconds()));
        if rate.0 <= 0 || rate.1 <= 0 || end <= self.start {
            return 0;
        }
        ((end - self.start) as u128 * rate.0 as u128 / (rate.1 as u128 * 1_000_000_000)) as u64
    }
}
