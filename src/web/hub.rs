//! Each stream's side of the web view: the encoded frames from the stream's one live encoder,
//! cut into fMP4 fragments once and handed to every viewer; the render stage's per-frame
//! verdicts, kept for the timeline and handed on; the files the run records. Never blocks the
//! thread that feeds it: every viewer has a bounded queue, and a viewer whose queue is full
//! skips to the next key frame, and is dropped once it has been full for [`STALLED`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use super::fmp4::{self, Params};
use crate::frame::{Encoded, EncodedTap};

/// What a viewer's socket carries: fMP4 (the init segment, then a fragment a frame) and JSON
/// lines (the codec, each frame's verdict, the end).
#[derive(Debug, Clone)]
pub enum Message {
    Video(Bytes),
    Text(Arc<str>),
}

/// Messages a viewer may have waiting: about two seconds of 25 fps video with its verdicts.
pub const VIEWER_QUEUE: usize = 128;

/// A viewer whose queue has been full this long is dropped (its socket closed).
pub const STALLED: Duration = Duration::from_secs(10);

/// How much of the verdicts' past a stream keeps for its timeline.
pub const HISTORY: Duration = Duration::from_secs(300);

/// What the model said about one frame, as the page shows it: `t` is the frame's timestamp
/// in seconds (the video's media time), `cap` its capture time (ms since the Unix epoch).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub t: f64,
    pub cap: f64,
    pub frame: u64,
    pub class: i64,
    pub label: String,
    pub prob: f32,
    pub top: Vec<(String, f32)>,
    pub peak: (u32, u32),
    pub width: u32,
    pub height: u32,
    /// A detector's boxes, best first (absent for a classifier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boxes: Option<Vec<BoxVerdict>>,
}

/// One box of a detector's frame, as the page lists it and plots its track's score.
#[derive(Debug, Clone, Serialize)]
pub struct BoxVerdict {
    /// Its track id.
    pub id: u64,
    pub label: String,
    pub score: f32,
    /// x1, y1, x2, y2 in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Milliseconds since the Unix epoch of an `Instant` in the recent past.
pub fn epoch_ms(at: Instant) -> f64 {
    let ago = at.elapsed();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(ago).as_secs_f64() * 1000.0
}

struct Viewer {
    tx: mpsc::Sender<Message>,
    /// Sent a key frame since it joined or last skipped: delta frames may follow.
    started: bool,
    full_since: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    params: Option<Params>,
    /// The codec line and init segment for the current parameters.
    init: Option<(Arc<str>, Bytes)>,
    viewers: Vec<Viewer>,
    sequence: u32,
    history: VecDeque<(Instant, Arc<str>)>,
    latest: Option<Verdict>,
    ended: bool,
}

/// One stream's web side.
pub struct Channel {
    pub name: String,
    inner: Mutex<Inner>,
    keyframe_wanted: AtomicBool,
    /// Viewers dropped because they stopped reading.
    pub dropped_viewers: AtomicU64,
}

impl Channel {
    pub fn new(name: &str) -> Channel {
        Channel {
            name: name.to_owned(),
            inner: Mutex::new(Inner::default()),
            keyframe_wanted: AtomicBool::new(false),
            dropped_viewers: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new viewer: its queue starts with the codec and init segment (when known), then
    /// frames from the next key frame, which the encoder is asked for now.
    pub fn join(&self) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
        let mut inner = self.lock();
        if let Some((line, init)) = &inner.init {
            let _ = tx.try_send(Message::Text(line.clone()));
            let _ = tx.try_send(Message::Video(init.clone()));
        }
        if inner.ended {
            let _ = tx.try_send(Message::Text(END.into()));
        } else {
            inner.viewers.push(Viewer {
                tx,
                started: false,
                full_since: None,
            });
        }
        self.keyframe_wanted.store(true, Ordering::Relaxed);
        rx
    }

    pub fn viewers(&self) -> usize {
        self.lock().viewers.len()
    }

    /// The verdict of a frame about to be encoded: kept for the timeline, sent to each viewer
    /// (a viewer with no room misses it; its video is skipped too).
    pub fn verdict(&self, v: Verdict) {
        let line: Arc<str> = match serde_json::to_string(&Tagged {
            kind: "verdict",
            v: &v,
        }) {
            Ok(s) => s.into(),
            Err(_) => return,
        };
        let now = Instant::now();
        let mut inner = self.lock();
        while inner
            .history
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > HISTORY)
        {
            inner.history.pop_front();
        }
        inner.history.push_back((now, line.clone()));
        inner.latest = Some(v);
        for viewer in &inner.viewers {
            let _ = viewer.tx.try_send(Message::Text(line.clone()));
        }
    }

    /// The verdicts of the last `within`, oldest first, as one JSON array.
    pub fn history(&self, within: Duration) -> String {
        let now = Instant::now();
        let inner = self.lock();
        let lines: Vec<&str> = inner
            .history
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= within)
            .map(|(_, l)| &**l)
            .collect();
        format!("[{}]", lines.join(","))
    }

    pub fn latest(&self) -> Option<Verdict> {
        self.lock().latest.clone()
    }

    /// Hand a message to every viewer; one with no room skips to the next key frame (or,
    /// full too long, is dropped).
    fn broadcast(&self, inner: &mut Inner, fragment: Bytes, key: bool) {
        let now = Instant::now();
        let before = inner.viewers.len();
        inner.viewers.retain_mut(|v| {
            if !v.started && !key {
                return !v.tx.is_closed();
            }
            match v.tx.try_send(Message::Video(fragment.clone())) {
                Ok(()) => {
                    v.started = true;
                    v.full_since = None;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    v.started = false;
                    let since = *v.full_since.get_or_insert(now);
                    now.duration_since(since) < STALLED
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        let gone = before - inner.viewers.len();
        self.dropped_viewers
            .fetch_add(gone as u64, Ordering::Relaxed);
    }
}

const END: &str = r#"{"type":"end"}"#;

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    v: &'a T,
}

#[derive(Serialize)]
struct InitLine<'a> {
    codec: &'a str,
    width: u32,
    height: u32,
}

impl EncodedTap for Channel {
    fn push(&self, e: &Encoded) {
        let mut inner = self.lock();
        if e.key {
            if let Some(p) = Params::of(e.data, e.width, e.height) {
                if inner.params.as_ref() != Some(&p) {
                    let codec = p.codec();
                    let line = serde_json::to_string(&Tagged {
                        kind: "init",
                        v: &InitLine {
                            codec: &codec,
                            width: p.width,
                            height: p.height,
                        },
                    })
                    .unwrap_or_default();
                    let init = Bytes::from(p.init_segment());
                    // Viewers get the new description before the frames it describes.
                    for v in &inner.viewers {
                        let _ = v.tx.try_send(Message::Text(line.as_str().into()));
                        let _ = v.tx.try_send(Message::Video(init.clone()));
                    }
                    inner.init = Some((line.into(), init));
                    inner.params = Some(p);
                }
            }
        }
        if inner.init.is_none() {
            return; // nothing a player could decode yet
        }
        let ticks = |ns: u64| (ns as u128 * fmp4::TIMESCALE as u128 / 1_000_000_000) as u64;
        let duration = e.duration.map_or(3600, |d| ticks(d).max(1) as u32);
        inner.sequence = inner.sequence.wrapping_add(1);
        let fragment = fmp4::fragment(inner.sequence, ticks(e.pts), duration, e.key, e.data);
        self.broadcast(&mut inner, Bytes::from(fragment), e.key);
    }

    fn take_keyframe_request(&self) -> bool {
        self.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    fn finish(&self) {
        let mut inner = self.lock();
        inner.ended = true;
        for v in inner.viewers.drain(..) {
            let _ = v.tx.try_send(Message::Text(END.into()));
        }
    }
}

/// A file this run writes that the recordings page may serve.
#[derive(Debug, Clone)]
pub struct Recording {
    pub stream: String,
    /// The stream's number in the run.
    pub index: usize,
    pub path: PathBuf,
    pub started: SystemTime,
    /// The timestamp (s) of the stream's frames at which this file begins.
    pub begins_at: f64,
}

/// Every file the run has written, in the order they were started, and where each stream's
/// metadata lines are being written.
#[derive(Default)]
pub struct Recordings {
    list: Mutex<Vec<Recording>>,
    metadata: Mutex<Vec<Option<PathBuf>>>,
}

impl Recordings {
    /// Each stream's metadata file, in stream order.
    pub fn set_metadata(&self, paths: Vec<Option<PathBuf>>) {
        if let Ok(mut m) = self.metadata.lock() {
            *m = paths;
        }
    }

    /// The metadata lines of the stream numbered `stream`, while they are written.
    pub fn metadata(&self, stream: usize) -> Option<PathBuf> {
        let m = self.metadata.lock().ok()?;
        m.get(stream).cloned().flatten().filter(|p| p.is_file())
    }

    pub fn add(&self, r: Recording) {
        if let Ok(mut l) = self.list.lock() {
            if !l.iter().any(|x| x.path == r.path) {
                l.push(r);
            }
        }
    }

    /// The recording numbered `id` (its place in the list).
    pub fn get(&self, id: usize) -> Option<Recording> {
        self.list.lock().ok()?.get(id).cloned()
    }

    /// Those on disk now, newest first, with their numbers.
    pub fn existing(&self) -> Vec<(usize, Recording)> {
        let Ok(l) = self.list.lock() else {
            return vec![];
        };
        let mut out: Vec<(usize, Recording)> = l
            .iter()
            .cloned()
            .enumerate()
            .filter(|(_, r)| r.path.is_file())
            .collect();
        out.sort_by(|a, b| b.1.started.cmp(&a.1.started).then(b.0.cmp(&a.0)));
        out
    }
}

/// The web view's side of a run: a channel a stream, and the recordings.
pub struct Hub {
    pub channels: Vec<Arc<Channel>>,
    pub recordings: Recordings,
}

impl Hub {
    pub fn new(names: &[&str]) -> Hub {
        Hub {
            channels: names.iter().map(|n| Arc::new(Channel::new(n))).collect(),
            recordings: Recordings::default(),
        }
    }

    pub fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.channels.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn au(key: bool) -> Vec<u8> {
        let mut v = Vec::new();
        if key {
            v.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0, 0, 0, 1, 0x68, 0xce]);
            v.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88]);
        } else {
            v.extend_from_slice(&[0, 0, 0, 1, 0x41, 0x9a]);
        }
        v
    }

    fn push(c: &Channel, pts: u64, key: bool) {
        let data = au(key);
        c.push(&Encoded {
            data: &data,
            pts,
            duration: Some(40_000_000),
            key,
            width: 64,
            height: 48,
        });
    }

    #[test]
    fn a_viewer_gets_the_init_then_frames_from_a_key_frame() {
        let c = Channel::new("cam");
        push(&c, 0, true);
        let mut rx = c.join();
        assert!(c.take_keyframe_request());
        match rx.try_recv() {
            Ok(Message::Text(t)) => assert!(t.contains("avc1.42c01f"), "{t}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(rx.try_recv(), Ok(Message::Video(_))));
        push(&c, 40_000_000, false); // before its first key frame: skipped
        assert!(rx.try_recv().is_err());
        push(&c, 80_000_000, true);
        push(&c, 120_000_000, false);
        assert!(matches!(rx.try_recv(), Ok(Message::Video(_))));
        assert!(matches!(rx.try_recv(), Ok(Message::Video(_))));
    }

    #[test]
    fn a_viewer_that_stops_reading_skips_and_never_holds_the_others() {
        let c = Channel::new("cam");
        push(&c, 0, true);
        let _stalled = c.join();
        let mut reading = c.join();
        for i in 1..(VIEWER_QUEUE as u64 * 3) {
            push(&c, i * 40_000_000, i % 30 == 0);
            while reading.try_recv().is_ok() {}
        }
        assert_eq!(c.viewers(), 2, "not yet stalled for {STALLED:?}");
    }
}
