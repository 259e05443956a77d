//! A small RTSP server for trying gradcam-stream's RTSP input, and for its tests: a camera, or a
//! farm of them, at rtsp://127.0.0.1:PORT/PATH, in real time.
//!
//! ```text
//! cargo run --release --example rtsp_serve -- 8554 /clip samples/bikes.mp4
//! cargo run --release --example rtsp_serve -- 8554 /live test:ball:640x480:25
//! cargo run --release --example rtsp_serve -- 8554 /cam samples/bikes.mp4 --loop --cameras 64
//! ```
//! An H.264 file is served as it is stored, never re-encoded: parsed, payloaded, its sound (AAC,
//! MP3, Opus, G.711) as a second stream, so a camera costs almost nothing and one machine plays
//! many. Any other file, and a test pattern, is encoded once with x264. With `--cameras N` the
//! one source feeds N mounts, PATH0 … PATH{N-1}, each a camera of its own to a client; the CPU
//! this process uses is printed every 10 s (`farm: …`). A file is served once and then ends the
//! stream; `--loop` starts it over with timestamps that keep rising. Port 0 picks a free port;
//! each URL is printed on stdout as `serving: URL`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;

use gradcam_stream::frame::EncodedTap;
use gradcam_stream::pipeline::{self, rtsp::Server, sink, sound};

/// The parsed H.264 (one access unit a buffer, parameter sets before each key frame).
const AU: &str =
    "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au";

/// How a source is served: passed through, or encoded here.
fn encode(head: &str) -> String {
    format!(
        "{head} ! videoconvert ! video/x-raw,format=I420 \
         ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max=15 ! {AU} \
         ! appsink name=video sync=true"
    )
}

/// What is in the file at `uri`: whether its video is H.264, and its sound.
fn discover(uri: &str) -> Result<(bool, Option<sound::Track>)> {
    let d = pbutils::Discoverer::new(gst::ClockTime::from_seconds(10))?;
    let info = d
        .discover_uri(uri)
        .with_context(|| format!("cannot read {uri}"))?;
    let h264 = info
        .video_streams()
        .first()
        .and_then(|v| v.caps())
        .and_then(|c| c.structure(0).map(|s| s.name() == "video/x-h264"))
        .context("the file has no video")?;
    Ok((h264, sound::probe(uri, Duration::from_secs(10))))
}

/// A file's H.264 and sound, parsed (no decoding) by parsebin, to the appsinks.
fn passthrough(pipeline: &gst::Pipeline, location: &str, with_sound: bool) -> Result<()> {
    let head = gst::parse::bin_from_description(
        &format!("filesrc location=\"{location}\" ! parsebin name=parse"),
        false,
    )?;
    pipeline.add(&head)?;
    let video =
        gst::parse::bin_from_description(&format!("{AU} ! appsink name=video sync=true"), true)?;
    let audio = gst::parse::bin_from_description("queue ! appsink name=sound sync=true", true)?;
    pipeline.add(&video)?;
    if with_sound {
        pipeline.add(&audio)?;
    }
    let parse = head.by_name("parse").context("parsebin")?;
    let (video, audio) = (video.downgrade(), audio.downgrade());
    let head_weak = head.downgrade();
    parse.connect_pad_added(move |_, pad| {
        let name = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
            .unwrap_or_default();
        let into = if name == "video/x-h264" {
            video.upgrade()
        } else if name.starts_with("audio/") && with_sound {
            audio.upgrade()
        } else {
            None
        };
        let (Some(into), Some(head)) = (into, head_weak.upgrade()) else {
            return;
        };
        let Some(sinkpad) = into.static_pad("sink").filter(|p| !p.is_linked()) else {
            return;
        };
        // The pad is parsebin's, inside the head bin: ghost it out.
        let Ok(ghost) = gst::GhostPad::with_target(pad) else {
            return;
        };
        let _ = ghost.set_active(true);
        if head.add_pad(&ghost).is_ok() {
            let _ = ghost.link(&sinkpad);
        }
    });
    Ok(())
}

/// The percentage of one core this process has used since `start`.
fn cpu_percent(start: Instant) -> f64 {
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    100.0 * (secs(r.ru_utime) + secs(r.ru_stime)) / start.elapsed().as_secs_f64().max(1e-3)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let looping = args.iter().any(|a| a == "--loop");
    let mut rest: Vec<&String> = args.iter().filter(|a| *a != "--loop").collect();
    let mut cameras = 1usize;
    if let Some(i) = rest.iter().position(|a| *a == "--cameras") {
        cameras = rest
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .context("--cameras N: a count of at least 1")?;
        rest.drain(i..i + 2);
    }
    let [port, path, source] = rest.as_slice() else {
        bail!("usage: rtsp_serve PORT /PATH (FILE | test:PATTERN:WxH:FPS) [--loop] [--cameras N]");
    };
    pipeline::init()?;
    let pipeline = gst::Pipeline::new();
    let track = match source.strip_prefix("test:") {
        Some(spec) => {
            let [pattern, size, fps] = spec.split(':').collect::<Vec<_>>()[..] else {
                bail!("test source: test:PATTERN:WxH:FPS");
            };
            let (w, h) = size.split_once('x').context("WxH")?;
            let head = format!(
                "videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={w},height={h},framerate={fps}/1"
            );
            pipeline.add(&gst::parse::bin_from_description(&encode(&head), false)?)?;
            None
        }
        None => {
            let abs =
                std::fs::canonicalize(source).with_context(|| format!("cannot open {source}"))?;
            let location = abs.display().to_string().replace('"', "\\\"");
            let (h264, track) = discover(&format!("file://{}", abs.display()))?;
            if h264 {
                passthrough(
                    &pipeline,
                    &location,
                    track.is_some_and(|t| t.codec.is_some()),
                )?;
                track.filter(|t| t.codec.is_some())
            } else {
                let head = format!("filesrc location=\"{location}\" ! decodebin");
                pipeline.add(&gst::parse::bin_from_description(&encode(&head), false)?)?;
                None
            }
        }
    };

    let mut server = Server::open("127.0.0.1", port.parse().context("PORT")?, None, None)?;
    let mut taps: Vec<Arc<dyn EncodedTap>> = Vec::new();
    let mut urls = Vec::new();
    for n in 0..cameras {
        let mount = if cameras == 1 {
            path.to_string()
        } else {
            format!("{path}{n}")
        };
        let codec = track.and_then(|t| t.codec);
        taps.push(server.mount(&mount, codec)?);
        urls.push(format!("{}{mount}", server.base));
    }
    let appsink = |name: &str| {
        pipeline
            .by_name(name)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
    };
    sink::attach(&appsink("video").context("no video appsink")?, taps.clone());
    if let Some(s) = appsink("sound") {
        sink::attach_sound(&s, taps.clone());
    }

    pipeline.set_state(gst::State::Paused)?;
    let _ = pipeline.state(gst::ClockTime::from_seconds(10));
    if looping && !source.starts_with("test:") {
        // A segment seek: each pass ends with SEGMENT_DONE, not EOS, and the next one's running
        // time goes on from there.
        pipeline.seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT,
            gst::ClockTime::ZERO,
        )?;
    }
    pipeline.set_state(gst::State::Playing)?;
    for url in &urls {
        println!("serving: {url}");
    }
    let start = Instant::now();
    let mut told = Instant::now();
    let bus = pipeline.bus().context("no bus")?;
    loop {
        if cameras > 1 && told.elapsed() >= Duration::from_secs(10) {
            let cpu = cpu_percent(start);
            println!(
                "farm: {cameras} cameras, {cpu:.1}% of a core ({:.2}% each)",
                cpu / cameras as f64
            );
            told = Instant::now();
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(500)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::SegmentDone(_) => {
                pipeline.seek_simple(gst::SeekFlags::SEGMENT, gst::ClockTime::ZERO)?;
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => bail!("{}", e.error()),
            _ => {}
        }
    }
    for t in &taps {
        t.finish();
    }
    pipeline.set_state(gst::State::Null)?;
    drop(server);
    Ok(())
}
