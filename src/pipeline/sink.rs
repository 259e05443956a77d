//! The output half: explained frames go into an `appsrc` and a `tee` hands them to each output
//! branch.
//!
//! ```text
//! {appsrc name=frames} - {tee name=split}
//!   file:    - queue - videoconvert - {capsfilter name=chromaN} - {x264enc|nvh264enc name=encN}
//!                - mp4mux|matroskamux - filesink (mp4mux writes 1 s fragments for a live
//!                recording, so that whatever kills the process leaves a playable file)
//!   segments: - ( queue - videoconvert - capsfilter - encoder - {splitmuxsink name=fileN} ),
//!                in a bin that keeps splitmuxsink's preroll to itself: the pipeline would
//!                otherwise wait in PAUSED for it while a live branch holds its first frame
//!                and a query queued behind that frame blocks the tee
//!   live:    - queue (leaky) - videoconvert - {capsfilter name=chromaN} - {encoder, zero latency}
//!                - h264parse - {appsink name=liveN} → every RTSP mount of the stream and the
//!                web view's viewers (one encoder however many of them there are)
//!   display: - queue (leaky) - videoconvert - autovideosink
//!   null:    - fakesink
//! ```
//! The sinks are `async=false`: none waits for preroll, so one branch holding its first frame
//! cannot stall the tee for the others (a serialized query queued behind it would).
//! Every push blocks while a file's encoder is behind (appsrc `block=true`), which throttles
//! the pusher thread and not a GStreamer streaming thread. The live branches (rtsp, display)
//! leak their oldest frame instead of holding the others back.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::sound;
use crate::config::{Container, Encoder};
use crate::frame::{Encoded, EncodedTap, Frame};

pub struct Sink {
    pub pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    /// The stream's sound, where it has one; the sound after this timestamp is left out (the
    /// end of the explained video, once known).
    pub sound: Option<gst_app::AppSrc>,
    sound_until: Arc<AtomicU64>,
    /// Where the last frame pushed ends.
    end: u64,
    caps: Option<(u32, u32, (i32, i32))>,
    /// The last timestamp pushed, to keep them strictly increasing.
    last_pts: Option<u64>,
}

/// The least gap between two output timestamps. A live feed can deliver a burst (a jitter
/// buffer flushing after a reconnect) whose arrival times lie microseconds apart, closer than
/// the muxer's time scale resolves: such frames would share a timestamp in the file.
const MIN_GAP_NS: u64 = 1_000_000;

/// The H.264 encoder an output uses, once `auto` is resolved on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    X264,
    /// NVENC through nvcodec's nvh264enc.
    Nvenc,
}

/// `--encoder` on this machine: NVENC when asked for or, with auto, when GStreamer has it
/// (nvcodec registers nvh264enc only where the GPU has an NVENC engine: L4, T4, A10, RTX;
/// not H100 or H200).
pub fn resolve_encoder(choice: Encoder) -> Result<Codec> {
    let nvenc = gst::ElementFactory::find("nvh264enc").is_some();
    match choice {
        Encoder::X264 => Ok(Codec::X264),
        Encoder::Auto if nvenc => Ok(Codec::Nvenc),
        Encoder::Auto => Ok(Codec::X264),
        Encoder::Nvenc if nvenc => Ok(Codec::Nvenc),
        Encoder::Nvenc => anyhow::bail!(
            "--encoder nvenc: this machine has no NVENC encoder (GStreamer's nvh264enc is missing: it needs an NVIDIA GPU with an NVENC engine, its driver, and gstreamer1.0-plugins-bad's nvcodec); use --encoder x264 (or auto)"
        ),
    }
}

/// The encoder (named `name`) as a gst-launch fragment; `live` for a low-latency stream with
/// a keyframe at least every 30 frames. x264 uses a thread per core (its default).
fn encoder_fragment(codec: Codec, name: &str, live: bool) -> String {
    match (codec, live) {
        (Codec::X264, false) => format!("x264enc name={name} speed-preset=ultrafast bframes=0"),
        (Codec::X264, true) => format!(
            "x264enc name={name} speed-preset=ultrafast tune=zerolatency bframes=0 key-int-max=30"
        ),
        (Codec::Nvenc, _) => format!("nvh264enc name={name}"),
    }
}

/// NVENC's settings, where this nvcodec has them: no B-frames (frames leave in order, as
/// x264's do here) and, live, no lookahead delay and a keyframe every 30 frames.
fn configure_nvenc(enc: &gst::Element, live: bool) {
    let set = |name: &str, value: gst::glib::Value| {
        if enc
            .find_property(name)
            .is_some_and(|p| p.value_type() == value.type_())
        {
            enc.set_property_from_value(name, &value);
        }
    };
    set("bframes", 0u32.to_value());
    if live {
        set("zerolatency", true.to_value());
        set("gop-size", 30i32.to_value());
    }
}

/// The encoder and muxer (named `mux{n}`) for a file of `container` kind, as a gst-launch
/// fragment; `fragmented`: an MP4 written in 1 s fragments, playable up to the last one at any
/// moment.
fn file_fragment(container: Container, codec: Codec, n: usize, fragmented: bool) -> String {
    let mux = match (container, fragmented) {
        (Container::Mp4, false) => "mp4mux",
        (Container::Mp4, true) => "mp4mux fragment-duration=1000",
        (Container::Matroska, _) => "matroskamux",
    };
    format!(
        "{} ! {mux} name=mux{n}",
        encoder_fragment(codec, &format!("enc{n}"), false)
    )
}

fn target(container: Container) -> sound::Target {
    match container {
        Container::Mp4 => sound::Target::Mp4,
        Container::Matroska => sound::Target::Matroska,
    }
}

/// Branch `n`'s share of the sound, into `into` (a muxer's pad, an appsink): through a queue
/// that holds whatever the video lags behind, made to fit `target`.
fn sound_part(track: sound::Track, target: sound::Target, n: usize, into: &str) -> String {
    let queue = if target == sound::Target::Rtsp {
        // Viewers want it now: keep 2 s at most.
        "queue leaky=downstream max-size-buffers=0 max-size-bytes=0 max-size-time=2000000000"
    } else {
        "queue max-size-buffers=0 max-size-bytes=0 max-size-time=0"
    };
    format!(
        " sounds. ! {queue} name=soundq{n} ! {}{into}",
        track.fitting(target)
    )
}

/// What splitmuxsink muxes each segment with, and the muxer's settings.
fn segment_muxer(container: Container) -> (&'static str, gst::Structure) {
    match container {
        Container::Mp4 => (
            "mp4mux",
            gst::Structure::builder("properties")
                .field("fragment-duration", 1000u32)
                .build(),
        ),
        Container::Matroska => ("matroskamux", gst::Structure::new_empty("properties")),
    }
}

fn quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One place the explained frames go.
#[derive(Clone)]
pub enum Branch<'a> {
    /// An encoded file at this (partial) path; fragmented (a live recording) or not.
    File(&'a Path, Container, bool),
    /// Numbered files (`pattern` holds `%05d`) of at most this many nanoseconds each.
    Segments(&'a Path, Container, u64),
    /// One zero-latency H.264 encoder whose frames go to each of these (RTSP mounts, the
    /// web view).
    Live(Vec<Arc<dyn EncodedTap>>),
    /// A window.
    Display,
    /// Nowhere (measuring).
    Null,
}

/// A queue that keeps only the newest couple of frames when its branch falls behind.
const LEAKY_QUEUE: &str =
    "queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0";

/// The colour conversion before an encoder, on every core (0: a thread a core).
const CONVERT: &str = "videoconvert n-threads=0";

/// Branch `n`'s share of the sound, if it carries any (files, segments, RTSP mounts).
fn sound_branch(t: sound::Track, branch: &Branch, n: usize) -> String {
    match branch {
        Branch::File(_, c, _) => sound_part(t, target(*c), n, &format!("mux{n}.audio_%u")),
        Branch::Segments(_, c, _) => sound_part(t, target(*c), n, &format!("file{n}.audio_%u")),
        Branch::Live(taps) if taps.iter().any(|t| t.wants_sound()) => sound_part(
            t,
            sound::Target::Rtsp,
            n,
            &format!("appsink name=sound{n} sync=false async=false enable-last-sample=false"),
        ),
        _ => String::new(),
    }
}

/// Branch `n`'s video, as a gst-launch fragment.
fn video_branch(branch: &Branch, codec: Codec, n: usize) -> String {
    match branch {
        Branch::File(path, container, fragmented) => format!(
            "queue ! {CONVERT} ! capsfilter name=chroma{n} caps=video/x-raw,format=I420 ! {} ! filesink name=file{n} async=false location={}",
            file_fragment(*container, codec, n, *fragmented),
            quote(path)
        ),
        Branch::Segments(pattern, container, every) => format!(
            "bin.( async-handling=true queue ! {CONVERT} ! capsfilter name=chroma{n} caps=video/x-raw,format=I420 ! {} ! splitmuxsink name=file{n} send-keyframe-requests=true max-size-time={every} muxer-factory={} location={} )",
            encoder_fragment(codec, &format!("enc{n}"), false),
            segment_muxer(*container).0,
            quote(pattern)
        ),
        Branch::Live(_) => format!(
            "{LEAKY_QUEUE} ! {CONVERT} ! capsfilter name=chroma{n} caps=video/x-raw,format=I420 ! \
             {} ! \
             h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au ! \
             appsink name=live{n} sync=false async=false enable-last-sample=false",
            encoder_fragment(codec, &format!("enc{n}"), true)
        ),
        Branch::Display => {
            format!("{LEAKY_QUEUE} ! videoconvert ! autovideosink name=display{n} sync=false")
        }
        Branch::Null => format!("fakesink name=null{n} sync=false async=false"),
    }
}

/// The whole output pipeline as a gst-launch description.
fn describe(branches: &[Branch], codec: Codec, track: Option<sound::Track>) -> String {
    let mut desc = String::from("appsrc name=frames format=time block=true ! tee name=split");
    let mut sounds = String::new();
    for (n, branch) in branches.iter().enumerate() {
        if let Some(t) = track {
            sounds.push_str(&sound_branch(t, branch, n));
        }
        desc.push_str(&format!(" split. ! {}", video_branch(branch, codec, n)));
    }
    if let Some(t) = track.filter(|_| !sounds.is_empty()) {
        desc.push_str(&format!(" {}{sounds}", t.head()));
    }
    desc
}

/// The output pipeline for `branches`; `track`: the stream's sound, which its files,
/// segments and RTSP mounts carry.
pub fn build(branches: &[Branch], codec: Codec, track: Option<sound::Track>) -> Result<Sink> {
    let desc = describe(branches, codec, track);
    let pipeline = gst::parse::launch(&desc)
        .with_context(|| format!("building the output pipeline `{desc}`; are the GStreamer plugins installed? (make setup)"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("the output description is not a pipeline"))?;
    pipeline.set_property("name", "sink");
    // The sink autovideosink picks is made later, inside it: unset its `async` there too.
    pipeline.connect_deep_element_added(|_, _, element| {
        if element.element_flags().contains(gst::ElementFlags::SINK)
            && element.find_property("async").is_some()
        {
            element.set_property("async", false);
        }
    });
    let appsrc = pipeline
        .by_name("frames")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .context("the output pipeline has no appsrc")?;
    for (n, branch) in branches.iter().enumerate() {
        if let (Codec::Nvenc, Some(enc)) = (codec, pipeline.by_name(&format!("enc{n}"))) {
            configure_nvenc(&enc, matches!(branch, Branch::Live(_)));
        }
        if let (Branch::Segments(_, container, _), Some(split)) =
            (branch, pipeline.by_name(&format!("file{n}")))
        {
            split.set_property("muxer-properties", segment_muxer(*container).1);
        }
        if let Branch::Live(taps) = branch {
            let appsink = pipeline
                .by_name(&format!("live{n}"))
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                .context("the output pipeline has no live appsink")?;
            attach(&appsink, taps.clone());
            if let Some(appsink) = pipeline
                .by_name(&format!("sound{n}"))
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            {
                attach_sound(&appsink, taps.clone());
            }
        }
    }
    let sound_until = Arc::new(AtomicU64::new(u64::MAX));
    for e in pipeline.iterate_elements().into_iter().flatten() {
        if let (true, Some(pad)) = (e.name().starts_with("soundq"), e.static_pad("src")) {
            let until = sound_until.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let late = info
                    .buffer()
                    .and_then(|b| b.pts())
                    .is_some_and(|t| t.nseconds() >= until.load(Ordering::Relaxed));
                if late {
                    gst::PadProbeReturn::Drop
                } else {
                    gst::PadProbeReturn::Ok
                }
            });
        }
    }
    let sound = pipeline
        .by_name("sound")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
    Ok(Sink {
        pipeline,
        appsrc,
        sound,
        sound_until,
        end: 0,
        caps: None,
        last_pts: None,
    })
}

/// Hand each sound buffer from `appsink` (the track as the RTSP mounts carry it) to every tap
/// that takes sound.
pub fn attach_sound(appsink: &gst_app::AppSink, taps: Vec<Arc<dyn EncodedTap>>) {
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |appsink| {
                let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                for t in taps.iter().filter(|t| t.wants_sound()) {
                    t.push_sound(&sample);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// Hand each encoded frame from `appsink` (H.264 byte-stream, one access unit a buffer) to
/// every tap; a tap that gained a consumer makes the encoder upstream send a key frame.
pub fn attach(appsink: &gst_app::AppSink, taps: Vec<Arc<dyn EncodedTap>>) {
    let ending = taps.clone();
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |appsink| {
                let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if taps.iter().any(|t| t.take_keyframe_request()) {
                    let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                        .all_headers(true)
                        .build();
                    if let Some(pad) = appsink.static_pad("sink") {
                        pad.push_event(event);
                    }
                }
                let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let size = caps.structure(0).map_or((0, 0), |s| {
                    (
                        s.get::<i32>("width").unwrap_or(0) as u32,
                        s.get::<i32>("height").unwrap_or(0) as u32,
                    )
                });
                let Ok(map) = buffer.map_readable() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                // The encoder offsets its timestamps (by 1000 hours, so that no DTS is
                // negative) and its segment with them: the running time is the frame's own.
                let pts = buffer
                    .pts()
                    .map_or(0, |t| super::times::running_time(&sample, t));
                let frame = Encoded {
                    data: map.as_slice(),
                    pts,
                    duration: buffer.duration().map(|t| t.nseconds()),
                    key: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    width: size.0,
                    height: size.1,
                };
                for t in &taps {
                    t.push(&frame);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .eos(move |_| {
                for t in &ending {
                    t.finish();
                }
            })
            .build(),
    );
}

/// The video encoders in an output pipeline (a stream's whole encoding cost).
pub fn encoders(pipeline: &gst::Pipeline) -> usize {
    pipeline
        .iterate_recurse()
        .into_iter()
        .flatten()
        .filter(|e| {
            e.factory().is_some_and(|f| {
                f.metadata(gst::ELEMENT_METADATA_KLASS)
                    .is_some_and(|k| k.contains("Encoder"))
            })
        })
        .count()
}

impl Sink {
    /// Queue one frame for encoding; blocks while the encoder is behind.
    pub fn push(&mut self, frame: Frame) -> Result<()> {
        let key = (frame.width, frame.height, frame.rate);
        if self.caps != Some(key) {
            let caps = gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgbx)
                .width(frame.width as i32)
                .height(frame.height as i32)
                .framerate(gst::Fraction::new(frame.rate.0, frame.rate.1))
                .build();
            // x264 encodes 4:2:0 (the format every player takes) only at even sizes; an odd
            // size keeps its exact resolution in 4:4:4 instead of being scaled. Set before the
            // caps, and only when it changes: a new filter makes the appsrc renegotiate (an
            // allocation query through the tee), and while a segment muxer has not prerolled
            // a live branch holds its first frame, so that query would wait for ever.
            let chroma = if frame.width.is_multiple_of(2) && frame.height.is_multiple_of(2) {
                gst_video::VideoFormat::I420
            } else {
                gst_video::VideoFormat::Y444
            };
            let chroma = gst_video::VideoCapsBuilder::new().format(chroma).build();
            for e in self.pipeline.iterate_elements().into_iter().flatten() {
                if e.name().starts_with("chroma") && e.property::<gst::Caps>("caps") != chroma {
                    e.set_property("caps", &chroma);
                }
            }
            self.appsrc.set_caps(Some(&caps));
            // Room for a few frames: enough to keep the encoder busy, little memory.
            self.appsrc.set_max_bytes(frame.pixels.len() as u64 * 4);
            self.caps = Some(key);
        }
        let pts = match (frame.pts, self.last_pts) {
            (Some(p), Some(last)) => Some(p.max(last + MIN_GAP_NS)),
            (p, _) => p,
        };
        if let Some(p) = pts {
            self.last_pts = pts;
            self.end = self.end.max(p + frame.duration.unwrap_or(0));
        }
        let mut buffer = gst::Buffer::from_mut_slice(frame.pixels);
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            b.set_pts(pts.map(gst::ClockTime::from_nseconds));
            b.set_duration(frame.duration.map(gst::ClockTime::from_nseconds));
            b.set_offset(frame.index);
        }
        self.appsrc
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("the output pipeline refused a frame: {e:?}"))
    }

    /// No more frames: the encoder flushes and the muxer finalizes the file, then EOS reaches the bus.
    /// The sound ends with the explained video.
    pub fn finish(&self) {
        let _ = self.appsrc.end_of_stream();
        if let Some(sound) = &self.sound {
            self.sound_until.store(self.end, Ordering::Relaxed);
            let _ = sound.end_of_stream();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_branch_builds() -> Result<()> {
        gst::init()?;
        let dir = tempfile::tempdir()?;
        let (mp4, mkv) = (dir.path().join("a"), dir.path().join("b"));
        let sink = build(
            &[
                Branch::File(&mp4, Container::Mp4, false),
                Branch::File(&mkv, Container::Matroska, true),
                Branch::Live(vec![Arc::new(crate::pipeline::rtsp::Feeds::default())]),
                Branch::Display,
                Branch::Null,
                Branch::Segments(&mkv, Container::Mp4, 5_000_000_000),
            ],
            Codec::X264,
            None,
        )?;
        for name in [
            "file0", "file1", "live2", "display3", "null4", "enc0", "enc2", "file5",
        ] {
            assert!(sink.pipeline.by_name(name).is_some(), "{name}");
        }
        // Two files, the live branch and the segments: one encoder each.
        assert_eq!(encoders(&sink.pipeline), 4);
        // With sound (G.711, which MP4 cannot carry): the files and segments take it, the MP4s
        // through an AAC encoder.
        let g711 = sound::Track {
            codec: Some(sound::Codec::Alaw),
        };
        let sink = build(
            &[
                Branch::File(&mp4, Container::Mp4, false),
                Branch::File(&mkv, Container::Matroska, false),
                Branch::Null,
                Branch::Segments(&mkv, Container::Mp4, 5_000_000_000),
            ],
            Codec::X264,
            Some(g711),
        )?;
        assert!(sink.sound.is_some());
        for name in ["soundq0", "soundq1", "soundq3"] {
            assert!(sink.pipeline.by_name(name).is_some(), "{name}");
        }
        assert!(sink.pipeline.by_name("soundq2").is_none());
        // Three video encoders and the two MP4s' AAC encoders.
        assert_eq!(encoders(&sink.pipeline), 5);
        Ok(())
    }

    #[test]
    fn encoders_resolve_on_this_machine() -> Result<()> {
        gst::init()?;
        assert_eq!(resolve_encoder(Encoder::X264)?, Codec::X264);
        let nvenc = gst::ElementFactory::find("nvh264enc").is_some();
        let auto = resolve_encoder(Encoder::Auto)?;
        assert_eq!(auto, if nvenc { Codec::Nvenc } else { Codec::X264 });
        match resolve_encoder(Encoder::Nvenc) {
            Ok(c) => assert!(nvenc && c == Codec::Nvenc),
            Err(e) => {
                assert!(!nvenc);
                let msg = e.to_string();
                assert!(
                    msg.contains("no NVENC") && msg.contains("--encoder x264"),
                    "{msg}"
                );
                assert_eq!(msg.lines().count(), 1);
            }
        }
        Ok(())
    }
}
