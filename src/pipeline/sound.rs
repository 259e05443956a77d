//! A stream's sound track. It never goes near the model: the source pipeline hands it, as the
//! demuxer gives it, straight to the output pipeline's `appsrc name=sound`, and each output
//! takes it as it is where its container or RTSP payloader carries the codec, re-encoded to AAC
//! otherwise.
//!
//! ```text
//! source:  uridecodebin (video decoded; AAC, MP3, Opus, G.711 left encoded, other audio
//!          decoded) -(first audio pad)- queue - {appsink name=sound} ──restamped──┐
//! output:  {appsrc name=sound} - parser - {tee name=sounds}  ◀────────────────────┘
//!            - queue - [decode/convert - avenc_aac - aacparse] - the file's muxer
//!            - queue (leaky) - [… AAC] - {appsink} → the RTSP mounts' second stream
//! ```
//! The sound keeps the input's own timestamps, moved exactly as the video's are (a file's part
//! is restamped from its first frame; a live camera's from when its first sound arrived), so
//! the two stay in sync whatever the model drops; it ends where the explained video ends.
//! Whether a stream has sound is found when the run starts (GStreamer's discoverer), since a
//! muxer takes no new track once it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;

/// The codecs an output can carry without re-encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Aac,
    /// MPEG-1/2 audio, layers 1 to 3 (MP3, MP2).
    Mpeg,
    Opus,
    /// G.711.
    Alaw,
    Mulaw,
}

/// Where a stream's sound goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Mp4,
    Matroska,
    Rtsp,
}

impl Codec {
    /// The codec of encoded sound caps; None for decoded (or any other) sound.
    pub fn of(caps: &gst::CapsRef) -> Option<Codec> {
        let s = caps.structure(0)?;
        match s.name().as_str() {
            "audio/mpeg" => match s.get::<i32>("mpegversion").ok()? {
                1 => Some(Codec::Mpeg),
                2 | 4 => Some(Codec::Aac),
                _ => None,
            },
            "audio/x-opus" => Some(Codec::Opus),
            "audio/x-alaw" => Some(Codec::Alaw),
            "audio/x-mulaw" => Some(Codec::Mulaw),
            _ => None,
        }
    }

    /// Whether `target` carries this codec as it is (MP4 has no G.711; Matroska and RTSP
    /// take all five).
    pub fn fits(self, target: Target) -> bool {
        target != Target::Mp4 || matches!(self, Codec::Aac | Codec::Mpeg | Codec::Opus)
    }

    /// The element that frames it for a muxer or payloader (G.711 needs none).
    pub fn parser(self) -> &'static str {
        match self {
            Codec::Aac => "aacparse",
            Codec::Mpeg => "mpegaudioparse",
            Codec::Opus => "opusparse",
            Codec::Alaw | Codec::Mulaw => "identity",
        }
    }

    /// Its RTP payloader, as a gst-launch fragment.
    pub fn payloader(self) -> &'static str {
        match self {
            Codec::Aac => "aacparse ! rtpmp4gpay",
            Codec::Mpeg => "mpegaudioparse ! rtpmpapay",
            Codec::Opus => "opusparse ! rtpopuspay",
            Codec::Alaw => "rtppcmapay",
            Codec::Mulaw => "rtppcmupay",
        }
    }
}

/// What the source's decodebin stops at: decoded video, sound in a codec some output carries
/// as it is, and any other sound decoded.
pub fn decode_caps() -> gst::Caps {
    "video/x-raw(ANY); audio/mpeg, mpegversion=(int){1, 2, 4}; audio/x-opus; \
     audio/x-alaw; audio/x-mulaw; audio/x-raw(ANY)"
        .parse()
        .expect("the decode caps parse")
}

/// Decoded sound to AAC, at 44.1 kHz or more (AAC frames are 1024 samples: 128 ms at
/// telephone G.711's 8 kHz, longer than a video frame).
macro_rules! to_aac {
    () => {
        "audioconvert ! audioresample ! audio/x-raw,rate=[44100,96000] ! avenc_aac ! aacparse ! "
    };
}

/// The sound a stream's source will hand on: its codec where some output can carry it as it
/// is, None when it is decoded first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    pub codec: Option<Codec>,
}

impl Track {
    /// What `target` gets: the track as it is, or AAC.
    pub fn at(self, target: Target) -> Codec {
        match self.codec {
            Some(c) if c.fits(target) => c,
            _ => Codec::Aac,
        }
    }

    /// The gst-launch fragment that makes the track fit `target` (empty when it already does),
    /// ending in a link.
    pub fn fitting(self, target: Target) -> &'static str {
        match self.codec {
            Some(c) if c.fits(target) => "",
            Some(_) => concat!("decodebin ! ", to_aac!()),
            None => to_aac!(),
        }
    }

    /// The output's head: the appsrc the source pushes into, and the track's parser.
    pub fn head(self) -> String {
        let parser = self.codec.map_or("identity", Codec::parser);
        format!(
            "appsrc name=sound format=time block=false max-bytes=0 ! {parser} ! tee name=sounds"
        )
    }
}

/// The sound track of the media at `uri`, as GStreamer's discoverer finds it within `timeout`
/// (None: no sound, or none found in time).
pub fn probe(uri: &str, timeout: Duration) -> Option<Track> {
    let discoverer =
        pbutils::Discoverer::new(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64)).ok()?;
    let info = discoverer.discover_uri(uri).ok()?;
    let stream = info.audio_streams().into_iter().next()?;
    let caps = stream.caps()?;
    Some(Track {
        codec: Codec::of(&caps),
    })
}

/// How the source restamps a stream's sound before handing it to the output's appsrc: as the
/// video's frames are (see `source::Handoff`).
#[derive(Clone)]
pub struct Handoff {
    pub appsrc: gst_app::AppSrc,
    /// The last timestamp handed on, across reconnects (u64::MAX before the first), and where
    /// that buffer ends (u64::MAX when unknown).
    last: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
}

impl Handoff {
    pub fn new(appsrc: gst_app::AppSrc) -> Handoff {
        Handoff {
            appsrc,
            last: Arc::new(AtomicU64::new(u64::MAX)),
            next: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }
}

/// Where a sound buffer goes, given the part of the file explained.
pub enum Place {
    /// Before the part, or after it: not kept.
    Out,
    /// Not known yet (the part's first frame has not come): kept until it is.
    Wait,
    /// Kept, at this timestamp.
    At(u64),
}

/// How far a buffer's own time may be from where the one before ends and still be put there:
/// half a video frame at 25 fps (beyond it the sound is put back on the frames' timeline).
const ALIGN: u64 = 20_000_000;

/// How far one chained buffer may move toward its own time (1 ms: about 5% of an AAC frame,
/// more than a live timeline moves back for drift in the same time).
const NUDGE: i64 = 1_000_000;

/// How long a buffer of `size` bytes of these caps plays, where the codec says (AAC and MPEG
/// audio frames hold a fixed count of samples; G.711 is a byte a sample).
fn length(caps: &gst::Caps, size: usize) -> Option<u64> {
    let s = caps.structure(0)?;
    let rate = s.get::<i32>("rate").ok().filter(|r| *r > 0)? as u64;
    let samples = match Codec::of(caps)? {
        Codec::Aac => 1024,
        Codec::Mpeg if s.get::<i32>("layer").ok() == Some(1) => 384,
        Codec::Mpeg => 1152,
        Codec::Alaw | Codec::Mulaw => {
            (size as u64) / s.get::<i32>("channels").unwrap_or(1).max(1) as u64
        }
        Codec::Opus => return None,
    };
    Some(samples * 1_000_000_000 / rate)
}

/// Says where a sound buffer at a stream time goes, for a file's part.
pub type Placer = Arc<dyn Fn(u64) -> Place + Send + Sync>;

/// One source pipeline's sound: the handoff, and this pipeline's own state (a live feed's
/// offset, buffers waiting for the first frame of a file's part).
struct Restamp {
    out: Handoff,
    /// Buffers before the part's first frame is known, with their stream times.
    waiting: Vec<(u64, gst::Buffer)>,
    caps: Option<gst::Caps>,
}

/// Hand each sound buffer `appsink` takes to the output, restamped: `place` says where a
/// buffer goes, from its running time (`live`) or its stream time (a file's part); None keeps
/// a whole file's stream times. Returns what hands on the buffers kept waiting for the first
/// frame: call it once that frame has come (the sound may all have come before it).
pub fn attach(
    appsink: &gst_app::AppSink,
    out: Handoff,
    live: bool,
    place: Option<Placer>,
) -> Arc<dyn Fn() + Send + Sync> {
    let state = Arc::new(Mutex::new(Restamp {
        out,
        waiting: Vec::new(),
        caps: None,
    }));
    let (st, placer) = (state.clone(), place.clone());
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |appsink| {
                let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let (Some(buffer), Ok(mut st)) = (sample.buffer_owned(), st.lock()) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                if let Some(caps) = sample.caps_owned() {
                    if st.caps.as_ref() != Some(&caps) {
                        st.out.appsrc.set_caps(Some(&caps));
                        st.caps = Some(caps);
                    }
                }
                let time = |t| match live {
                    true => super::times::running_time(&sample, t),
                    false => super::times::stream_time(&sample, t),
                };
                let Some(pts) = buffer.pts().map(time) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                match &placer {
                    Some(place) => {
                        st.waiting.push((pts, buffer));
                        st.flush(place.as_ref());
                    }
                    None => st.push(buffer, pts),
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Arc::new(move || {
        if let (Some(place), Ok(mut st)) = (&place, state.lock()) {
            st.flush(place.as_ref());
        }
    })
}

impl Restamp {
    /// The waiting buffers on, once the part's first frame is known (those outside it go).
    fn flush(&mut self, place: &(dyn Fn(u64) -> Place + Send + Sync)) {
        if let Some(Place::Wait) = self.waiting.first().map(|(t, _)| place(*t)) {
            return;
        }
        for (t, b) in std::mem::take(&mut self.waiting) {
            match place(t) {
                Place::At(at) => self.push(b, at),
                Place::Wait => self.waiting.push((t, b)),
                Place::Out => {}
            }
        }
    }

    /// Into the output at `at`; a buffer that would not come after the last one handed on (a
    /// reconnect's overlap) is left out. A refusal means the output has ended: nothing to do.
    fn push(&mut self, buffer: gst::Buffer, at: u64) {
        // Sound plays sample after sample: a buffer within ALIGN of where the one before ends
        // is put there (a live feed's jitter buffer stamps the first second or so unevenly,
        // and a muxer would stretch or squeeze the samples to those stamps).
        // A chained buffer moves toward its own time by at most NUDGE, so the chain follows
        // the timeline it is placed on (a camera's, brought back for drift) without a gap.
        let next = self.out.next.load(Ordering::Relaxed);
        let at = if next != u64::MAX && at.abs_diff(next) < ALIGN {
            (next as i64 + (at as i64 - next as i64).clamp(-NUDGE, NUDGE)) as u64
        } else {
            at
        };
        let last = self.out.last.load(Ordering::Relaxed);
        if last != u64::MAX && at <= last {
            return;
        }
        self.out.last.store(at, Ordering::Relaxed);
        let length = buffer
            .duration()
            .map(|d| d.nseconds())
            .or_else(|| self.caps.as_ref().and_then(|c| length(c, buffer.size())));
        self.out
            .next
            .store(length.map_or(u64::MAX, |l| at + l), Ordering::Relaxed);
        let mut b = buffer.copy();
        b.make_mut().set_pts(gst::ClockTime::from_nseconds(at));
        b.make_mut().set_dts(gst::ClockTime::NONE);
        let _ = self.out.appsrc.push_buffer(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_are_read_from_caps_and_fit_their_targets() {
        gst::init().unwrap();
        let of = |s: &str| Codec::of(&s.parse::<gst::Caps>().unwrap());
        assert_eq!(
            of("audio/mpeg, mpegversion=(int)4, stream-format=raw"),
            Some(Codec::Aac)
        );
        assert_eq!(of("audio/mpeg, mpegversion=(int)2"), Some(Codec::Aac));
        assert_eq!(
            of("audio/mpeg, mpegversion=(int)1, layer=(int)3"),
            Some(Codec::Mpeg)
        );
        assert_eq!(of("audio/x-opus"), Some(Codec::Opus));
        assert_eq!(of("audio/x-alaw"), Some(Codec::Alaw));
        assert_eq!(of("audio/x-raw, format=S16LE"), None);
        assert_eq!(of("audio/x-vorbis"), None);
        // G.711 has no place in MP4: re-encoded there, kept in Matroska and RTSP.
        let g711 = Track {
            codec: Some(Codec::Alaw),
        };
        assert_eq!(g711.at(Target::Mp4), Codec::Aac);
        assert!(g711.fitting(Target::Mp4).contains("avenc_aac"));
        assert_eq!(g711.at(Target::Matroska), Codec::Alaw);
        assert_eq!(g711.fitting(Target::Rtsp), "");
        let pcm = Track { codec: None };
        assert_eq!(pcm.at(Target::Rtsp), Codec::Aac);
        assert!(pcm.fitting(Target::Matroska).starts_with("audioconvert"));
        // Every fragment parses as GStreamer's.
        for t in [g711, pcm] {
            let desc = format!("{} sounds. ! queue ! fakesink", t.head());
            gst::parse::launch(&desc).unwrap();
        }
        assert!(decode_caps().size() >= 6);
    }
}
