//! A small RTSP server for trying gradcam-stream's RTSP input, and for its tests: serves a
//! video file, or a live test pattern, as H.264 at rtsp://127.0.0.1:PORT/PATH, in real time.
//!
//! ```text
//! cargo run --release --example rtsp_serve -- 8554 /clip samples/bikes.mp4
//! cargo run --release --example rtsp_serve -- 8554 /live test:ball:640x480:25
//! ```
//! A file is served once and then ends the stream (add `--loop` to start it over instead).
//! Port 0 picks a free port; the URL is printed on stdout as `serving: URL`.

use anyhow::{bail, Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use gradcam_stream::frame::{Encoded, EncodedTap};
use gradcam_stream::pipeline::{self, rtsp::Server};

/// Each encoded frame to the server, stamped with the time it left the encoder (a camera's
/// capture clock: continuous when a file starts over).
fn feed(appsink: &gst_app::AppSink, pipeline: &gst::Pipeline, tap: std::sync::Arc<dyn EncodedTap>) {
    let clock = gst::SystemClock::obtain();
    let start = clock.time();
    let _ = pipeline;
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |appsink| {
                let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if tap.take_keyframe_request() {
                    let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
                        .all_headers(true)
                        .build();
                    if let Some(pad) = appsink.static_pad("sink") {
                        pad.push_event(event);
                    }
                }
                let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let s = caps.structure(0).ok_or(gst::FlowError::NotNegotiated)?;
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                tap.push(&Encoded {
                    data: map.as_slice(),
                    pts: (clock.time() - start).nseconds(),
                    duration: buffer.duration().map(|d| d.nseconds()),
                    key: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    width: s.get::<i32>("width").unwrap_or(0) as u32,
                    height: s.get::<i32>("height").unwrap_or(0) as u32,
                });
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let looping = args.iter().any(|a| a == "--loop");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--loop").collect();
    let [port, path, source] = args.as_slice() else {
        bail!("usage: rtsp_serve PORT /PATH (FILE | test:PATTERN:WxH:FPS) [--loop]");
    };
    pipeline::init()?;
    let server = Server::start("127.0.0.1", port.parse().context("PORT")?, path)?;

    let head = match source.strip_prefix("test:") {
        Some(spec) => {
            let [pattern, size, fps] = spec.split(':').collect::<Vec<_>>()[..] else {
                bail!("test source: test:PATTERN:WxH:FPS");
            };
            let (w, h) = size.split_once('x').context("WxH")?;
            format!(
                "videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={w},height={h},framerate={fps}/1"
            )
        }
        None => {
            let abs =
                std::fs::canonicalize(source).with_context(|| format!("cannot open {source}"))?;
            format!("filesrc location=\"{}\" ! decodebin", abs.display())
        }
    };
    let desc = format!(
        "{head} ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max=15 \
         ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! appsink name=out sync=true"
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let appsink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("no appsink")?;
    feed(&appsink, &pipeline, server.feeds.clone());
    pipeline.set_state(gst::State::Playing)?;
    println!("serving: {}", server.url);

    let bus = pipeline.bus().context("no bus")?;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) if looping => {
                pipeline.seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::ZERO)?;
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => bail!("{}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    drop(server);
    Ok(())
}
