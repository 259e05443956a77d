//! The input half: a source that decodes to raw video, converted to RGBx and handed, frame by
//! frame, to the worker's channel from the appsink. The sources:
//!
//! ```text
//! file, http(s), rtsp:  {uridecodebin name=decode} -(first video pad)-
//! webcam:               {v4l2src name=webcam} - {capsfilter name=mode} - {decodebin name=decode} -
//! test://:              {videotestsrc name=test} - {capsfilter name=mode} -
//!     … - {videoconvert name=convert} - {capsfilter video/x-raw,format=RGBx} - {appsink name=frames}
//! ```
//! A live source's frames (and sound) are stamped from the feed's own clock, placed where its
//! first frame arrived since one epoch that outlives reconnects (see [`LiveClock`]), so the
//! output's timestamps keep the camera's spacing and rise monotonically.
//! The appsink callback never blocks for the model: it waits only for room in the bounded
//! channel (that is the back-pressure that keeps a file input from racing ahead), and gives up
//! as soon as the run is stopping.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::sound;
use super::times::{running_time, stream_time};
use crate::config::{Input, Overload, RtspSettings, RtspTransport};
use crate::frame::Frame;
use crate::stats::{Stage, Tally};

/// Runs its closure when dropped: on every way out of a scope.
struct Defer<F: FnMut()>(F);

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

pub struct Source {
    pub pipeline: gst::Pipeline,
}

fn make(factory: &str, name: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .with_context(|| {
            format!("creating GStreamer element {factory}; is its plugin installed? (make setup)")
        })
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
}

fn capsfilter(name: &str, caps: &gst::Caps) -> Result<gst::Element> {
    gst::ElementFactory::make("capsfilter")
        .name(name)
        .property("caps", caps)
        .build()
        .context("creating capsfilter")
}

/// What is done to frames on their way to the hand-off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prepare {
    /// A live stream that drops most of its frames decodes only its key frames until it keeps
    /// up again (see [`key_frames_while_behind`]).
    pub key_frames_when_behind: bool,
    /// Deinterlace interlaced frames (GStreamer's `deinterlace`, one frame out per frame in;
    /// progressive frames pass untouched).
    pub deinterlace: bool,
    /// Turn frames upright as the stream's orientation tag says (`videoflip
    /// video-direction=auto`, which swaps width and height for a quarter turn).
    pub upright: bool,
}

/// `{source} - [deinterlace] - {videoconvert name=convert} - [videoflip name=upright]
/// - {capsfilter RGBx} - {appsink name=frames}`
pub fn build(
    input: &Input,
    rtsp: &RtspSettings,
    handoff: Handoff,
    prepare: Prepare,
) -> Result<Source> {
    let pipeline = gst::Pipeline::with_name("source");
    let convert = make("videoconvert", "convert")?;
    // Converting each frame to RGBx is per-pixel work on the host: spread it over the cores
    // (0: one thread a core).
    convert.set_property("n-threads", 0u32);
    let caps = gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::Rgbx)
        .build();
    let filter = capsfilter("rgbx", &caps)?;
    let sink = gst_app::AppSink::builder()
        .name("frames")
        .sync(handoff.paced)
        .enable_last_sample(false)
        .max_buffers(2)
        .build();
    let mut chain = Vec::new();
    if prepare.deinterlace {
        let d = make("deinterlace", "deinterlace")?;
        d.set_property_from_str("fields", "top");
        // Interpolating the kept field leaves no combing at all (the motion-adaptive default
        // keeps some); the model sees a whole picture.
        d.set_property_from_str("method", "linear");
        chain.push(d);
    }
    chain.push(convert);
    if prepare.upright {
        let flip = make("videoflip", "upright")?;
        flip.set_property_from_str("video-direction", "auto");
        chain.push(flip);
    }
    chain.push(filter);
    chain.push(sink.clone().upcast());
    pipeline.add_many(&chain)?;
    gst::Element::link_many(&chain)?;
    // Where the decoded frames enter the chain.
    let convert = chain[0].clone();
    match input {
        Input::Video { uri, .. } => add_decoder(&pipeline, uri, &convert)?,
        Input::Rtsp { uri } => add_rtsp(&pipeline, uri, rtsp, &convert)?,
        Input::Webcam { device, size, fps } => {
            add_webcam(&pipeline, device, *size, *fps, &convert)?
        }
        Input::Test {
            pattern,
            width,
            height,
            fps,
        } => add_test(&pipeline, pattern, (*width, *height), *fps, &convert)?,
        Input::Image(_) | Input::Folder(_) => {
            anyhow::bail!("a still image has no GStreamer source")
        }
    }
    let live = handoff.epoch.map(LiveClock::new);
    if let (true, Some(_), Some(decode)) = (
        prepare.key_frames_when_behind,
        handoff.max_latency,
        pipeline.by_name("decode"),
    ) {
        key_frames_while_behind(&decode, handoff.tally.clone());
    }
    if let (Some(out), Some(decode)) = (&handoff.sound, pipeline.by_name("decode")) {
        add_sound(&pipeline, &decode, out.clone(), &handoff, live.clone())?;
    }
    set_callback(&sink, handoff, live);
    Ok(Source { pipeline })
}

/// `{decode} -(first audio pad)- queue - {appsink name=sound}`: the sound, left encoded where
/// an output carries it so, handed to the output restamped as the frames are.
fn add_sound(
    pipeline: &gst::Pipeline,
    decode: &gst::Element,
    out: sound::Handoff,
    h: &Handoff,
    live: Option<LiveClock>,
) -> Result<()> {
    decode.set_property("caps", sound::decode_caps());
    let queue = make("queue", "soundq")?;
    let sink = gst_app::AppSink::builder()
        .name("sound")
        .sync(h.paced)
        .async_(false)
        .enable_last_sample(false)
        .build();
    pipeline.add_many([&queue, sink.upcast_ref()])?;
    queue.link(&sink)?;
    let (place, hook): (Option<sound::Placer>, _) = match (&h.window, &live) {
        (Some(w), _) => {
            let (w, hook) = (w.clone(), w.on_first.clone());
            (Some(Arc::new(move |t| w.sound_place(t))), Some(hook))
        }
        (None, Some(l)) => {
            let (l, hook) = (l.clone(), l.on_first.clone());
            (Some(Arc::new(move |t| l.sound_place(t))), Some(hook))
        }
        (None, None) => (None, None),
    };
    let flush = sound::attach(&sink, out, live.is_some(), place);
    if let Some(Ok(mut f)) = hook.as_ref().map(|h| h.lock()) {
        *f = Some(flush);
    }
    Ok(())
}

/// Called once, when a timeline's first frame has come (the sound waiting for it goes on).
type Hook = Arc<Mutex<Option<Arc<dyn Fn() + Send + Sync>>>>;

/// Whether a stream is behind, judged once a group of pictures: more than half of the frames
/// it decoded since the previous key frame were dropped.
#[derive(Debug, Default)]
struct Behind {
    /// The stream's received and dropped counts at the previous key frame.
    at_key: Option<(u64, u64)>,
    shedding: bool,
}

impl Behind {
    /// At a key frame: whether the frames up to the next one are left undecoded.
    fn at_key_frame(&mut self, received: u64, dropped: u64) -> bool {
        if let Some((r, d)) = self.at_key.replace((received, dropped)) {
            self.shedding = 2 * dropped.saturating_sub(d) > received.saturating_sub(r);
        }
        self.shedding
    }
}

/// While the stream drops most of its frames, its video decoder gets key frames only: the
/// frames between them would be decoded and converted just to be dropped, on the cores the
/// model needs. Decided at each key frame, so a group of pictures is decoded whole or not at
/// all, and every frame is decoded again once the key frames alone keep up. (The decoder's own
/// `skip-frame` cannot say "key frames only" in gst-libav 1.22, so the encoded frames are held
/// back at its sink pad instead.)
fn key_frames_while_behind(decode: &gst::Element, tally: Tally) {
    let Some(bin) = decode.downcast_ref::<gst::Bin>() else {
        return;
    };
    bin.connect_deep_element_added(move |_, _, element| {
        let is_video_decoder = element.factory().is_some_and(|f| {
            let klass = f.klass();
            klass.contains("Decoder") && klass.contains("Video")
        });
        let Some(pad) = element.static_pad("sink").filter(|_| is_video_decoder) else {
            return;
        };
        let tally = tally.clone();
        let behind = Mutex::new(Behind::default());
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let Ok(mut behind) = behind.lock() else {
                return gst::PadProbeReturn::Ok;
            };
            let stats = &tally.stream;
            if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                behind.at_key_frame(
                    stats.received.load(Ordering::Relaxed),
                    stats.dropped.load(Ordering::Relaxed),
                );
                gst::PadProbeReturn::Ok
            } else if behind.shedding {
                tally.undecoded();
                gst::PadProbeReturn::Drop
            } else {
                gst::PadProbeReturn::Ok
            }
        });
    });
}

fn run_hook(hook: &Hook) {
    let f = hook.lock().ok().and_then(|f| f.clone());
    if let Some(f) = f {
        f();
    }
}

/// How fast a live timeline may be moved back, as a share of the time that passes: 100 ppm,
/// more than a camera's quartz drifts, and slow enough that a decoder catching up on a
/// backlog (frames arriving earlier and earlier) moves it by a millisecond in ten seconds.
const DRIFT_PER: i64 = 10_000;

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
    on_first: Hook,
}

impl LiveClock {
    fn new(epoch: Instant) -> LiveClock {
        LiveClock {
            epoch,
            offset: Arc::default(),
            on_first: Arc::default(),
        }
    }

    /// A frame's timestamp, from its running time and when it arrived.
    fn frame(&self, running: Option<u64>, arrived: Instant) -> u64 {
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
    fn sound_place(&self, running: u64) -> sound::Place {
        match self.offset.lock().ok().and_then(|o| o.map(|(c, _)| c)) {
            None => sound::Place::Wait,
            Some(c) => sound::Place::At((running as i64 + c).max(0) as u64),
        }
    }
}

/// `{uridecodebin (rtspsrc, configured as it is made)} - …`
fn add_rtsp(
    pipeline: &gst::Pipeline,
    uri: &str,
    rtsp: &RtspSettings,
    convert: &gst::Element,
) -> Result<()> {
    add_decoder(pipeline, uri, convert)?;
    let settings = *rtsp;
    pipeline
        .by_name("decode")
        .expect("just added")
        .connect("source-setup", false, move |args| {
            if let Some(src) = args.get(1).and_then(|v| v.get::<gst::Element>().ok()) {
                configure_rtspsrc(&src, &settings);
            }
            None
        });
    Ok(())
}

/// `{v4l2src} - {capsfilter mode} - {decodebin} - …`
fn add_webcam(
    pipeline: &gst::Pipeline,
    device: &std::path::Path,
    size: Option<(u32, u32)>,
    fps: Option<u32>,
    convert: &gst::Element,
) -> Result<()> {
    let src = make("v4l2src", "webcam")?;
    src.set_property("device", device.to_string_lossy().as_ref());
    // Raw and MJPEG cameras alike: ask for the mode in either form, decodebin decodes.
    let mut caps = gst::Caps::new_empty();
    for name in ["video/x-raw", "image/jpeg"] {
        let mut st = gst::Structure::new_empty(name);
        if let Some((w, h)) = size {
            st.set("width", w as i32);
            st.set("height", h as i32);
        }
        if let Some(f) = fps {
            st.set("framerate", gst::Fraction::new(f as i32, 1));
        }
        caps.get_mut().expect("new caps").append_structure(st);
    }
    let mode = capsfilter("mode", &caps)?;
    let decode = make("decodebin", "decode")?;
    pipeline.add_many([&src, &mode, &decode])?;
    gst::Element::link_many([&src, &mode, &decode])?;
    link_first_video_pad(&decode, convert);
    Ok(())
}

/// `{videotestsrc is-live} - {capsfilter mode} - …`
fn add_test(
    pipeline: &gst::Pipeline,
    pattern: &str,
    (width, height): (u32, u32),
    fps: u32,
    convert: &gst::Element,
) -> Result<()> {
    let src = make("videotestsrc", "test")?;
    src.set_property("is-live", true);
    let known = src
        .find_property("pattern")
        .and_then(|p| p.downcast::<gst::glib::ParamSpecEnum>().ok())
        .is_some_and(|p| {
            let class = p.enum_class();
            class.value_by_nick(pattern).is_some()
                || pattern.parse().is_ok_and(|n| class.value(n).is_some())
        });
    if !known {
        anyhow::bail!(
            "test://{pattern}: unknown pattern; use smpte, ball, snow, black, white, gradient, … (gst-inspect-1.0 videotestsrc)"
        );
    }
    src.set_property_from_str("pattern", pattern);
    let caps = gst_video::VideoCapsBuilder::new()
        .width(width as i32)
        .height(height as i32)
        .framerate(gst::Fraction::new(fps as i32, 1))
        .build();
    let mode = capsfilter("mode", &caps)?;
    pipeline.add_many([&src, &mode])?;
    gst::Element::link_many([&src, &mode, convert]).with_context(|| {
        format!("test://{pattern}: videotestsrc cannot give {width}x{height} at {fps} fps")
    })?;
    Ok(())
}

/// rtspsrc's latency and transports; `timeout` makes `auto` fall back to TCP after 2 s
/// without a UDP packet.
fn configure_rtspsrc(src: &gst::Element, s: &RtspSettings) {
    if src.find_property("latency").is_some() {
        src.set_property("latency", s.latency_ms);
    }
    if src.find_property("buffer-mode").is_some() {
        // Timestamps from the camera's RTP clock, the streams lined up by its RTCP reports.
        // The default (`slave`) restamps by arrival; here that put a camera's sound 20 to
        // 130 ms after its pictures, a different amount each connection. The camera's clock
        // drifting from ours is taken up by `LiveClock`.
        src.set_property_from_str("buffer-mode", "synced");
    }
    if src.find_property("protocols").is_some() {
        let protocols = match s.transport {
            RtspTransport::Auto => "udp+tcp",
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        };
        src.set_property_from_str("protocols", protocols);
        src.set_property("timeout", 2_000_000u64);
    }
}

/// uridecodebin, linked to `convert` once it finds a video stream.
fn add_decoder(pipeline: &gst::Pipeline, uri: &str, convert: &gst::Element) -> Result<()> {
    let decode = make("uridecodebin", "decode")?;
    decode.set_property("uri", uri);
    pipeline.add(&decode)?;
    link_first_video_pad(&decode, convert);
    Ok(())
}

/// Link the first video pad `decode` (a decodebin) adds to `convert`; report an input with
/// no video stream. A hardware decoder (NVDEC's nvh264dec, where the nvcodec plugin finds a
/// GPU) may give frames in GPU memory: `cudadownload` brings those to the host first.
fn link_first_video_pad(decode: &gst::Element, convert: &gst::Element) {
    // Link the first video stream; other streams (audio, subtitles) stay unlinked and are skipped.
    let convert_weak = convert.downgrade();
    decode.connect_pad_added(move |decode, pad| {
        let Some(convert) = convert_weak.upgrade() else {
            return;
        };
        let Some(sinkpad) = convert.static_pad("sink") else {
            return;
        };
        let caps = pad.current_caps();
        let kind = |k: &str| {
            caps.as_ref()
                .and_then(|c| c.structure(0).map(|s| s.name().starts_with(k)))
                .unwrap_or(false)
        };
        if kind("audio/") {
            link_sound(decode, pad);
        }
        if !kind("video/") || sinkpad.is_linked() {
            return;
        }
        let in_gpu_memory = caps
            .as_ref()
            .and_then(|c| c.features(0))
            .is_some_and(|f| f.contains("memory:CUDAMemory"));
        let linked = if in_gpu_memory {
            link_through_download(decode, pad, &sinkpad)
        } else {
            pad.link(&sinkpad).map(|_| ()).map_err(|e| format!("{e:?}"))
        };
        if let Err(e) = linked {
            gst::element_error!(
                convert,
                gst::StreamError::Format,
                ("cannot link the decoded video stream: {e}")
            );
        }
    });
    let convert_weak = convert.downgrade();
    decode.connect_no_more_pads(move |decode| {
        let Some(convert) = convert_weak.upgrade() else {
            return;
        };
        if !convert.static_pad("sink").is_some_and(|p| p.is_linked()) {
            gst::element_error!(
                decode,
                gst::StreamError::WrongType,
                ("the input has no video stream")
            );
        }
    });
}

/// The first audio pad to the pipeline's sound queue, where it has one, through the codec's
/// parser (which gives each buffer its duration: an RTP depayloader's often have none).
fn link_sound(decode: &gst::Element, pad: &gst::Pad) {
    let Some(bin) = decode.parent().and_then(|p| p.downcast::<gst::Bin>().ok()) else {
        return;
    };
    let Some(sinkpad) = bin.by_name("soundq").and_then(|q| q.static_pad("sink")) else {
        return;
    };
    if sinkpad.is_linked() {
        return;
    }
    let codec = pad.current_caps().and_then(|c| sound::Codec::of(&c));
    let parser = codec
        .map(|c| c.parser())
        .filter(|p| *p != "identity")
        .and_then(|p| gst::ElementFactory::make(p).build().ok());
    let Some(parser) = parser else {
        let _ = pad.link(&sinkpad);
        return;
    };
    let linked = bin.add(&parser).is_ok()
        && parser.sync_state_with_parent().is_ok()
        && parser
            .static_pad("src")
            .is_some_and(|p| p.link(&sinkpad).is_ok())
        && parser
            .static_pad("sink")
            .is_some_and(|p| pad.link(&p).is_ok());
    if !linked {
        gst::element_error!(
            decode,
            gst::StreamError::Failed,
            ("cannot take the input's sound; --no-audio leaves it out")
        );
    }
}

/// `pad` (frames in CUDA memory) → cudadownload → `sinkpad`, inside the decoder's pipeline.
fn link_through_download(
    decode: &gst::Element,
    pad: &gst::Pad,
    sinkpad: &gst::Pad,
) -> std::result::Result<(), String> {
    let download = gst::ElementFactory::make("cudadownload")
        .name("download")
        .build()
        .map_err(|_| {
            "the decoder gives CUDA memory and cudadownload (nvcodec) is missing".to_owned()
        })?;
    let bin = decode
        .parent()
        .and_then(|p| p.downcast::<gst::Bin>().ok())
        .ok_or("the decoder has no pipeline")?;
    bin.add(&download).map_err(|e| e.to_string())?;
    download
        .sync_state_with_parent()
        .map_err(|e| e.to_string())?;
    let (dl_sink, dl_src) = (
        download
            .static_pad("sink")
            .ok_or("cudadownload has no sink pad")?,
        download
            .static_pad("src")
            .ok_or("cudadownload has no src pad")?,
    );
    pad.link(&dl_sink).map_err(|e| format!("{e:?}"))?;
    dl_src.link(sinkpad).map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn set_callback(sink: &gst_app::AppSink, h: Handoff, live: Option<LiveClock>) {
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
    on_first: Hook,
}

enum Place {
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

    fn place(&self, pts: u64) -> Place {
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
    fn frames(&self, appsink: &gst_app::AppSink, rate: (i32, i32)) -> u64 {
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

/// Into the stream's queue, by its overload policy: a live stream drops its oldest waiting
/// frame to make room; otherwise the source waits for room (Flushing once the run stops, the
/// stream is closed or the worker is gone).
fn enqueue(mut frame: Frame, tx: &Sender<Frame>, h: &Handoff) -> Result<(), gst::FlowError> {
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
fn to_frame(sample: &gst::Sample, stream: usize, index: u64) -> Option<Frame> {
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
    })
}

/// Frames in the whole input, from its duration and frame rate (0 when either is unknown).
fn expected_frames(appsink: &gst_app::AppSink, rate: (i32, i32)) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_sheds_its_frames_between_key_frames_while_it_drops_most_of_them() {
        let mut b = Behind::default();
        // The first key frame has nothing to judge by.
        assert!(!b.at_key_frame(0, 0));
        // 25 frames decoded, 12 dropped: not most of them.
        assert!(!b.at_key_frame(25, 12));
        // 25 more, 13 of them dropped: the next group is left undecoded.
        assert!(b.at_key_frame(50, 25));
        // Only its key frame was decoded, and it was explained: every frame again.
        assert!(!b.at_key_frame(51, 25));
        // The key frame alone dropped too: still behind.
        assert!(b.at_key_frame(76, 45));
        assert!(b.at_key_frame(77, 46));
    }

    fn handoff() -> Handoff {
        let (tx, rx) = crossbeam_channel::bounded(1);
        Handoff {
            stream: 0,
            slot: Arc::new(Mutex::new(Some(tx))),
            overload: Overload::Drop,
            max_latency: None,
            oldest: rx,
            max_frames: None,
            stop: Arc::new(AtomicBool::new(false)),
            tally: Tally {
                stream: Arc::new(crate::stats::Stats::default()),
                all: Arc::new(crate::stats::Stats::default()),
            },
            index: Arc::new(AtomicU64::new(0)),
            epoch: Some(Instant::now()),
            paced: false,
            window: None,
            sound: None,
        }
    }

    #[test]
    fn the_webcam_pipeline_asks_for_the_mode_raw_or_mjpeg() -> Result<()> {
        gst::init()?;
        let input = Input::Webcam {
            device: "/dev/video0".into(),
            size: Some((1280, 720)),
            fps: Some(30),
        };
        let rtsp = RtspSettings {
            latency_ms: 200,
            transport: RtspTransport::Auto,
            reconnect_max: 0,
        };
        let both = Prepare {
            deinterlace: true,
            upright: true,
            ..Prepare::default()
        };
        let src = build(&input, &rtsp, handoff(), both)?;
        // The deinterlacer takes the decoded frames, and the frames are turned after conversion.
        for name in ["deinterlace", "convert", "upright", "rgbx", "frames"] {
            assert!(src.pipeline.by_name(name).is_some(), "{name}");
        }
        let none = build(&input, &rtsp, handoff(), Prepare::default())?;
        assert!(none.pipeline.by_name("deinterlace").is_none());
        assert!(none.pipeline.by_name("upright").is_none());
        let cam = src.pipeline.by_name("webcam").expect("v4l2src");
        assert_eq!(cam.property::<String>("device"), "/dev/video0");
        let caps = src
            .pipeline
            .by_name("mode")
            .expect("capsfilter")
            .property::<gst::Caps>("caps");
        let names: Vec<_> = caps.iter().map(|s| s.name().to_string()).collect();
        assert_eq!(names, ["video/x-raw", "image/jpeg"]);
        for s in caps.iter() {
            assert_eq!(s.get::<i32>("width")?, 1280);
            assert_eq!(
                s.get::<gst::Fraction>("framerate")?,
                gst::Fraction::new(30, 1)
            );
        }
        assert!(src.pipeline.by_name("decode").is_some());
        Ok(())
    }
}
