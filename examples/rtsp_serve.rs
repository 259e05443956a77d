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

use gradcam_stream::pipeline::{self, rtsp::Server};

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
    server.feeds.clone().attach(&appsink);
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
