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
//!
//! Below: `handoff` (the appsink's callback), `clock` (a live feed's timestamps), `window` (a
//! file's `--start`/`--duration` part) and `behind` (key-frame shedding while a stream drops).

use std::sync::Arc;

use anyhow::{Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::sound;
use crate::config::{Input, RtspSettings, RtspTransport};

mod behind;
mod clock;
pub mod damage;
mod handoff;
mod window;

use behind::key_frames_while_behind;
use clock::LiveClock;
use handoff::set_callback;
pub use handoff::{close, frame_from_buffer, is_closed, FrameSlot, Handoff};
pub use window::{media_duration, Window};

pub struct Source {
    pub pipeline: gst::Pipeline,
    /// An RTSP feed's loss state (its damaged units, whether it came over UDP).
    pub damage: Option<damage::DamageLog>,
}

fn make(factory: &str, name: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .with_context(|| {
            format!("creating GStreamer element {factory}; is its plugin installed? (make setup)")
        })
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
    mut handoff: Handoff,
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
    if let (Input::Rtsp { .. }, Some(decode)) = (input, pipeline.by_name("decode")) {
        let log = damage::DamageLog::default();
        damage::watch(&decode, log.clone(), handoff.tally.clone());
        handoff.damage = Some((log, rtsp.on_damaged));
    }
    if let (Some(out), Some(decode)) = (&handoff.sound, pipeline.by_name("decode")) {
        add_sound(&pipeline, &decode, out.clone(), &handoff, live.clone())?;
    }
    let damage = handoff.damage.as_ref().map(|(log, _)| log.clone());
    set_callback(&sink, handoff, live);
    Ok(Source { pipeline, damage })
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
    damage::request_key_frames(src);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::config::Overload;
    use crate::stats::Tally;

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
            damage: None,
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
            on_damaged: crate::config::OnDamaged::Mark,
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
