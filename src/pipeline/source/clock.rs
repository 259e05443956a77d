//! A live source's clock: frames (and sound) stamped from the feed's own timestamps, placed
//! where its first frame arrived since one epoch that outlives reconnects.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::pipeline::sound;

/// How fast a live timeline may be moved back, as a share of the time that passes: 100 ppm,
/// more than a camera's quartz drifts, and slow enough that a decoder catching up on a
/// backlog (frames arriving earlier and earlier) moves it by a millisecond in ten seconds.
pub(super) const DRIFT_PER: i64 = 10_000;

/// A live feed's timeline, one per source pipeline: frames and sound are stamped from their
/// running time (the feed's own clock, its streams in step), moved by the first frame to where
/// that frame arrived since the epoch (which outlives reconnects, so the timestamps keep
/// rising when a rebuilt feed's clock starts over), and moved back a little whenever a frame
/// would be stamped later than it arrived (the feed's clock running fast).
#[derive(Clone)]
pub struct LiveClock {
    epoch: Instant,
    /// Where running time lies on the epoch's timeline, and when (since the epoch) the last
    /// frame arrived.
    offset: Arc<Mutex<Option<(i64, i64)>>>,
    pub(super) on_first: Hook,
}

impl LiveClock {
    pub(super) fn new(epoch: Instant) -> LiveClock {
        LiveClock {
            epoch,
            offset: Arc::default(),
            on_first: Arc::default(),
        }
    }

    /// A frame's timestamp, from its running time and when it arrived.
    pub(super) fn frame(&self, running: Option<u64>, arrived: Instant) -> u64 {
        let since = arrived.duration_since(self.epoch).as_nanos() as i64;
        let Some(running) = running else {
            return since as u64;
        };
        let (offset, first) = match self.offset.lock() {
            Ok(mut o) => match *o {
                Some((c, before)) => {
                    // A frame stamped after it arrived: the feed's clock runs ahead of ours.
                    // Bring the timeline back, by DRIFT_PER of the time since the last frame.
                    let ahead = running as i64 + c - since;
                    let c = c - ahead.clamp(0, (since - before).max(0) / DRIFT_PER);
                    *o = Some((c, since));
                    (c, false)
                }
                None => {
                    *o = Some((since - running as i64, since));
                    (since - running as i64, true)
                }
            },
            Err(_) => return since as u64,
        };
        if first {
            run_hook(&self.on_first);
        }
        (running as i64 + offset).max(0) as u64
    }

    /// Where a sound buffer at this running time goes: on the frames' timeline, once the first
    /// frame has fixed it.
    pub(super) fn sound_place(&self, running: u64) -> sound::Place {
        match self.offset.lock().ok().and_then(|o| o.map(|(c, _)| c)) {
            None => sound::Place::Wait,
            Some(c) => sound::Place::At((running as i64 + c).max(0) as u64),
        }
    }
}

/// Called once, when a timeline's first frame has come (the sound waiting for it goes on).
pub(super) type Hook = Arc<Mutex<Option<Arc<dyn Fn() + Send + Sync>>>>;

pub(super) fn run_hook(hook: &Hook) {
    let f = hook.lock().ok().and_then(|f| f.clone());
    if let Some(f) = f {
        f();
    }
}
