//! Helpers for the integration tests: run the built binary, make clips with GStreamer, and
//! decode outputs back to check what was written.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{anyhow, bail, Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn model() -> PathBuf {
    root().join("models/efficientnet_lite0.pt")
}

pub fn fixture() -> PathBuf {
    root().join("models/fixture.pt")
}

pub fn sample(name: &str) -> PathBuf {
    root().join("samples").join(name)
}

pub fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// Run gradcam-stream with `args`; progress off so stderr holds only messages.
pub fn run(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
        .args(args)
        .args(["--progress", "none"])
        .output()
        .context("running gradcam-stream")
}

/// Run gradcam-stream on `input` into `output` with `model`, plus `extra` flags.
pub fn explain(input: &str, output: &str, model: &str, extra: &[&str]) -> Result<Output> {
    let mut args = vec!["--input", input, "--output", output, "--model", model];
    args.extend_from_slice(extra);
    run(&args)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert a failed run: the status, one line on stderr containing `needle`, no panic.
pub fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "status for: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "`{needle}` not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Files in `dir`, to check that a failed run left nothing behind.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Encode `n` frames of videotestsrc at `w`x`h` and `rate` into an MP4 at `path`.
pub fn make_clip(path: &Path, w: u32, h: u32, rate: (i32, i32), n: u32) -> Result<()> {
    gst::init()?;
    // x264 encodes 4:2:0 only at even sizes; odd ones need 4:4:4.
    let format = if w.is_multiple_of(2) && h.is_multiple_of(2) {
        "I420"
    } else {
        "Y444"
    };
    let desc = format!(
        "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,format={format},width={w},height={h},framerate={}/{} \
         ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location=\"{}\"",
        rate.0,
        rate.1,
        path.display()
    );
    run_to_eos(
        &gst::parse::launch(&desc)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("not a pipeline"))?,
    )
}

fn run_to_eos(p: &gst::Pipeline) -> Result<()> {
    p.set_state(gst::State::Playing)?;
    let bus = p.bus().context("bus")?;
    let r = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(60)) else {
            break Err(anyhow!("timed out"));
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => break Err(anyhow!("{} ({:?})", e.error(), e.debug())),
            _ => {}
        }
    };
    p.set_state(gst::State::Null)?;
    r
}

/// What a decoded video holds.
#[derive(Debug, PartialEq)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
    pub rate: (i32, i32),
    pub pts: Vec<u64>,
    /// Mean RGB of each frame's pixels, for coarse content checks.
    pub frames_rgb: Vec<Vec<u8>>,
}

/// Decode a video file completely with GStreamer; `keep` frames' RGB pixels are kept.
pub fn probe(path: &Path, keep: usize) -> Result<Probe> {
    gst::init()?;
    let uri = format!("file://{}", std::fs::canonicalize(path)?.display());
    let desc = format!(
        "uridecodebin uri=\"{uri}\" ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false"
    );
    let p = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = p
        .by_name("sink")
        .context("sink")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow!("appsink"))?;
    p.set_state(gst::State::Playing)?;
    let mut out = Probe {
        width: 0,
        height: 0,
        rate: (0, 1),
        pts: vec![],
        frames_rgb: vec![],
    };
    loop {
        let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(60)) else {
            break;
        };
        let info = gst_video::VideoInfo::from_caps(s.caps().context("caps")?)?;
        out.width = info.width();
        out.height = info.height();
        out.rate = (info.fps().numer(), info.fps().denom());
        let buf = s.buffer().context("buffer")?;
        out.pts.push(buf.pts().context("pts")?.nseconds());
        if out.frames_rgb.len() < keep {
            let f = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info)?;
            let stride = f.plane_stride()[0] as usize;
            let data = f.plane_data(0)?;
            let mut rgb = Vec::new();
            for y in 0..info.height() as usize {
                rgb.extend_from_slice(&data[y * stride..y * stride + info.width() as usize * 3]);
            }
            out.frames_rgb.push(rgb);
        }
    }
    let bus = p.bus().context("bus")?;
    let err = bus.pop_filtered(&[gst::MessageType::Error]);
    p.set_state(gst::State::Null)?;
    if let Some(m) = err {
        if let gst::MessageView::Error(e) = m.view() {
            bail!("decoding {}: {}", path.display(), e.error());
        }
    }
    Ok(out)
}

/// Frame timestamps (ns) as ffprobe, an independent reader that honours MP4 edit lists, sees them.
pub fn ffprobe_pts(path: &Path) -> Result<Vec<u64>> {
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .context("running ffprobe")?;
    if !o.status.success() {
        bail!(
            "ffprobe {}: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split(',').next().map(str::trim).filter(|t| !t.is_empty()))
        .map(|l| {
            let t: f64 = l.parse().with_context(|| format!("bad pts {l}"))?;
            Ok((t * 1e9).round() as u64)
        })
        .collect()
}

/// Read a JSON-lines metadata file.
pub fn metadata(path: &Path) -> Result<Vec<serde_json::Value>> {
    std::fs::read_to_string(path)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad line {l}")))
        .collect()
}
