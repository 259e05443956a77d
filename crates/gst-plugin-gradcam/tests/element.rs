//! The GStreamer element `gradcam`, loaded from the plugin this crate builds (the
//! `libgstgradcam.so` beside the tests, as installed): inspected, in gst-launch pipelines (file
//! and live), under gstreamer-check's Harness against the program's own output, and with bad
//! values. `cargo test --workspace` builds both the plugin and the program these tests run.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_check as gst_check;
use gstreamer_video as gst_video;

/// The folder of the newest libgstgradcam.so of this build: the one `cargo test` builds as
/// an example (examples/plugin.rs), or the library's own from `cargo build`.
fn plugin_dir() -> PathBuf {
    let built = |d: PathBuf| {
        let t = std::fs::metadata(d.join("libgstgradcam.so"))
            .and_then(|m| m.modified())
            .ok()?;
        Some((t, d))
    };
    [build_dir().join("examples"), build_dir()]
        .into_iter()
        .filter_map(built)
        .max()
        .map(|(_, d)| d)
        .unwrap_or_else(|| {
            panic!(
                "no libgstgradcam.so in {}: run cargo test --workspace (or cargo build)",
                build_dir().display()
            )
        })
}

/// GStreamer in this process, with the plugin loaded (another test may have started
/// GStreamer before, so the plugin is loaded by path rather than through GST_PLUGIN_PATH).
fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The element's default model is models/… under the repository (cargo starts a
        // crate's tests in the crate's folder).
        std::env::set_current_dir(root()).expect("the repository");
        gst::init().expect("GStreamer");
        let path = plugin_dir().join("libgstgradcam.so");
        let plugin = gst::Plugin::load_file(&path).expect("the plugin loads");
        gst::Registry::get().add_plugin(&plugin).ok();
    });
}

fn gst_launch(args: &[&str]) -> Result<std::process::Output> {
    Command::new("gst-launch-1.0")
        .current_dir(root())
        .env("GST_PLUGIN_PATH", plugin_dir())
        .args(args)
        .output()
        .context("running gst-launch-1.0")
}

const PROPERTIES: [&str; 20] = [
    "model",
    "device",
    "precision",
    "layout",
    "threads",
    "boxes",
    "box-maps",
    "batch-size",
    "max-wait-ms",
    "method",
    "class",
    "top-k",
    "show-rank",
    "colormap",
    "alpha",
    "threshold",
    "box",
    "label",
    "smooth",
    "post-messages",
];

#[test]
fn gst_inspect_loads_the_plugin_and_documents_every_property() -> Result<()> {
    let o = Command::new("gst-inspect-1.0")
        .env("GST_PLUGIN_PATH", plugin_dir())
        .arg("gradcam")
        .output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", stderr(&o));
    for p in PROPERTIES {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{p} ")))
            .unwrap_or_else(|| panic!("property {p} not listed:\n{text}"));
        let blurb = line.split_once(':').map_or("", |(_, b)| b.trim());
        assert!(blurb.len() > 10, "property {p} is not documented: {line}");
    }
    for format in ["RGBx", "BGRx", "RGBA", "BGRA"] {
        assert!(text.contains(format), "caps lack {format}:\n{text}");
    }
    // Enumerated properties list their values.
    for value in [
        "(3): bf16",
        "(2): contiguous",
        "(2): gradcam++",
        "(3): viridis",
        "(2): cuda",
    ] {
        assert!(text.contains(value), "{value} not listed:\n{text}");
    }
    Ok(())
}

/// The element's properties and the program's settings are one declaration (`settings.rs`):
/// every property but the element's own (`post-messages`) and the model path (the program's
/// looks beside its binary) has the default `--help` shows, and a numeric one the declared range.
#[test]
fn element_properties_match_the_declared_settings() -> Result<()> {
    init();
    let element = gst::ElementFactory::make("gradcam").build()?;
    let shown: std::collections::HashMap<_, _> = gradcam_stream::settings::shown_defaults()
        .into_iter()
        .collect();
    for p in PROPERTIES {
        let key = match p {
            "model" | "post-messages" => continue,
            "box" => "draw_box",
            other => &other.replace('-', "_"),
        };
        let spec = element
            .find_property(p)
            .ok_or_else(|| anyhow!("no property {p}"))?;
        let default = spec.default_value();
        let text = if let Ok(v) = default.get::<Option<String>>() {
            v.unwrap_or_default()
        } else if let Ok(v) = default.get::<u32>() {
            v.to_string()
        } else if let Ok(v) = default.get::<f64>() {
            v.to_string()
        } else if let Ok(v) = default.get::<bool>() {
            v.to_string()
        } else if let Some((_, v)) = gst::glib::EnumValue::from_value(default) {
            v.nick().to_owned()
        } else {
            panic!("property {p}: an unexpected type {}", default.type_());
        };
        match shown.get(key) {
            Some(want) => assert_eq!(&text, want, "property {p}'s default"),
            None if p == "class" => assert_eq!(text, "", "no class: each frame's top-1"),
            None => assert!(
                ["box", "label"].contains(&p),
                "property {p} has no declared setting"
            ),
        }
        if let Some((lo, hi, inclusive)) = gradcam_stream::settings::bounds(key) {
            let (min, max) = if let Some(s) = spec.downcast_ref::<gst::glib::ParamSpecUInt>() {
                (f64::from(s.minimum()), f64::from(s.maximum()))
            } else if let Some(s) = spec.downcast_ref::<gst::glib::ParamSpecDouble>() {
                (s.minimum(), s.maximum())
            } else {
                panic!("property {p} has a range but is not a number");
            };
            assert_eq!(min, lo, "property {p}'s minimum");
            let top_ok = if inclusive {
                max == hi
            } else {
                max < hi && max > hi - 0.02
            };
            assert!(
                top_ok,
                "property {p}'s maximum {max} against the declared {hi}"
            );
        }
    }
    let (box_default, label_default) = (
        element.property::<bool>("box"),
        element.property::<bool>("label"),
    );
    let run = gradcam_stream::settings::Run::default();
    assert_eq!((box_default, label_default), (run.draw_box, run.label));
    Ok(())
}
/// The gst-launch line on a real clip: the file has the input's frame count, size,
/// rate and timestamps.
#[test]
fn a_gst_launch_pipeline_keeps_every_frame_and_timestamp() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("rec.mp4");
    let video = sample("bikes.mp4");
    let model = model();
    let line = format!(
        "filesrc location={} ! decodebin ! videoconvert ! gradcam model={} batch-size=8 ! videoconvert ! x264enc ! mp4mux ! filesink location={}",
        video.display(),
        model.display(),
        out.display()
    );
    let args: Vec<&str> = line.split(' ').collect();
    let o = gst_launch(&args)?;
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let input = probe(&video, 0)?;
    let output = probe(&out, 2)?;
    assert_eq!(output.pts.len(), 250, "bikes.mp4 has 250 frames");
    assert_eq!(output.pts.len(), input.pts.len());
    assert_eq!((output.width, output.height), (input.width, input.height));
    assert_eq!(output.rate, input.rate);
    assert_eq!(output.pts, input.pts, "timestamps pass through");
    // The heatmap is on the frames: the explained first frame differs from the input's.
    let plain = probe(&video, 1)?;
    let diff = mean_abs_diff(&plain.frames_rgb[0], &output.frames_rgb[0]);
    assert!(
        diff > 10.0,
        "the output looks like the input (mean difference {diff:.1})"
    );
    Ok(())
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

/// A photo as a raw video buffer of `format` (RGBx or BGRx; the padding byte 255, as the
/// program reads images), with timestamps.
fn photo_buffer(rgb: &image::RgbImage, format: &str, pts: u64) -> gst::Buffer {
    let mut px = Vec::with_capacity(rgb.len() / 3 * 4);
    for p in rgb.pixels() {
        let [r, g, b] = p.0;
        match format {
            "BGRx" => px.extend_from_slice(&[b, g, r, 255]),
            _ => px.extend_from_slice(&[r, g, b, 255]),
        }
    }
    let mut buffer = gst::Buffer::from_mut_slice(px);
    {
        let b = buffer.get_mut().expect("new buffer");
        b.set_pts(gst::ClockTime::from_mseconds(pts));
        b.set_duration(gst::ClockTime::from_mseconds(40));
        b.set_offset(pts / 40);
    }
    buffer
}

/// Explain `photo` under a Harness: three buffers in `format`, EOS, the three buffers out.
/// With `batch` 4 the batch is never full and the wait (120 s) outlasts the Harness's pull
/// (60 s), so the frames come out only if EOS sends the partial batch at once.
fn harness_run(
    photo: &Path,
    format: &str,
    batch: u32,
    extra: &[(&str, &str)],
) -> Result<Vec<gst::Buffer>> {
    init();
    let rgb = image::open(photo)?.to_rgb8();
    let element = gst::ElementFactory::make("gradcam")
        .property_from_str("model", model().to_str().unwrap())
        .property_from_str("device", "cpu")
        .property("batch-size", batch)
        .property("max-wait-ms", 120_000u32)
        .build()?;
    for (k, v) in extra {
        element.set_property_from_str(k, v);
    }
    let mut h = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str(&format!(
        "video/x-raw,format={format},width={},height={},framerate=25/1",
        rgb.width(),
        rgb.height()
    ));
    h.play();
    for i in 0..3 {
        h.push(photo_buffer(&rgb, format, i * 40))
            .map_err(|e| anyhow!("push: {e:?}"))?;
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(h.pull().map_err(|e| anyhow!("pull: {e}"))?);
    }
    Ok(out)
}

fn pixels(buffer: &gst::Buffer) -> Vec<u8> {
    buffer.map_readable().expect("readable").as_slice().to_vec()
}

/// The element's output equals what the program writes for the same photo and settings,
/// pixel for pixel; its ROI meta carries the class, label, probability, method and map;
/// timestamps pass through; BGRx gives the same picture as RGBx.
#[test]
fn harness_output_equals_the_program_and_carries_the_roi_meta() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Threads fixed for both: left at auto, each follows the machine's load (a busy machine
    // may give one of them a thread fewer), and libtorch's sums differ in the last bit with
    // the thread count.
    for (name, settings) in [
        ("chelsea", vec![("threads", "2")]),
        (
            "coffee",
            vec![
                ("threads", "2"),
                ("box", "true"),
                ("colormap", "turbo"),
                ("alpha", "0.4"),
            ],
        ),
    ] {
        let photo = photo(name, dir.path())?;
        let cli_out = dir.path().join(format!("{name}-cli.png"));
        let mut flags = vec!["--device".to_owned(), "cpu".to_owned()];
        for (k, v) in &settings {
            match *k {
                "box" => flags.push("--box".into()),
                _ => flags.extend([format!("--{k}"), v.to_string()]),
            }
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let o = explain(
            photo.to_str().unwrap(),
            cli_out.to_str().unwrap(),
            model().to_str().unwrap(),
            &flags,
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
        let want = image::open(&cli_out)?.to_rgb8();

        // One frame a batch, as the program explains a photo: the same pixels exactly.
        let (w, h) = want.dimensions();
        for (i, b) in harness_run(&photo, "RGBx", 1, &settings)?
            .iter()
            .enumerate()
        {
            let px = pixels(b);
            assert_eq!(px.len(), (w * h * 4) as usize);
            let rgb: Vec<u8> = px
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            let differ = rgb
                .iter()
                .zip(want.as_raw())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                differ, 0,
                "{name} frame {i}: {differ} bytes differ from the program's"
            );
        }

        // Three frames in a batch of 4, drained by EOS: timestamps pass, results on each.
        let got = harness_run(&photo, "RGBx", 4, &settings)?;
        for (i, b) in got.iter().enumerate() {
            assert_eq!(b.pts(), Some(gst::ClockTime::from_mseconds(i as u64 * 40)));
            assert_eq!(b.duration(), Some(gst::ClockTime::from_mseconds(40)));
            assert_eq!(b.offset(), i as u64);

            let roi = b
                .meta::<gst_video::VideoRegionOfInterestMeta>()
                .context("no ROI meta")?;
            assert_eq!(roi.roi_type(), "gradcam");
            let (x, y, rw, rh) = roi.rect();
            assert!(
                rw > 0 && rh > 0 && x + rw <= w && y + rh <= h,
                "{:?}",
                roi.rect()
            );
            let p = roi.param("gradcam").context("no gradcam params")?;
            let class = p.get::<i32>("class-id")?;
            let label = p.get::<String>("label")?;
            let prob = p.get::<f64>("probability")?;
            assert_eq!(p.get::<String>("method")?, "gradcam");
            assert!(!label.is_empty() && (0.0..=1.0).contains(&prob), "{p}");
            if name == "chelsea" {
                // tabby, tiger cat, Persian, Siamese, Egyptian cat
                assert!(
                    (281..=285).contains(&class),
                    "chelsea is a cat, not {class} {label}"
                );
            }
            let map = roi.param("gradcam-map").context("no map")?;
            let (mw, mh) = (map.get::<u32>("width")?, map.get::<u32>("height")?);
            let values = map.get::<gst::Array>("values")?;
            assert_eq!(values.len(), (mw * mh) as usize);
            assert!(values
                .iter()
                .all(|v| v.get::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v))));
        }

        // BGRx in: BGRx out, the same picture.
        let bgr = harness_run(&photo, "BGRx", 4, &settings)?;
        let a = pixels(&got[0]);
        let b: Vec<u8> = pixels(&bgr[0])
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0], p[3]])
            .collect();
        assert_eq!(a, b, "{name}: BGRx and RGBx give different pictures");
    }
    Ok(())
}

/// A live source: the element answers the LATENCY query with its wait added, frames flow
/// with their timestamps, and a sink that syncs to the clock drops none.
#[test]
fn a_live_pipeline_reports_the_elements_latency() -> Result<()> {
    init();
    let p = gst::parse::launch(
        "videotestsrc is-live=true pattern=ball num-buffers=60 ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! gradcam device=cpu batch-size=4 max-wait-ms=120 ! fakesink name=sink sync=true",
    )?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = p.by_name("sink").context("sink")?;
    let rendered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    sink.set_property("signal-handoffs", true);
    let r = rendered.clone();
    sink.connect("handoff", false, move |args| {
        let buffer = args[1].get::<gst::Buffer>().expect("buffer");
        r.lock()
            .unwrap()
            .push(buffer.pts().map_or(u64::MAX, |t| t.nseconds()));
        None
    });
    p.set_state(gst::State::Playing)?;
    let bus = p.bus().context("bus")?;
    let mut latency = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_mseconds(200))
            .map(|m| m.type_());
        if latency.is_none() && rendered.lock().unwrap().len() > 5 {
            let mut q = gst::query::Latency::new();
            if p.query(&mut q) {
                latency = Some(q.result());
            }
        }
        match msg {
            Some(gst::MessageType::Eos) => break,
            Some(gst::MessageType::Error) => {
                p.set_state(gst::State::Null)?;
                anyhow::bail!("pipeline error");
            }
            _ => {}
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "no EOS in 60 s");
    }
    p.set_state(gst::State::Null)?;
    let (live, min, _max) = latency.context("no latency answer")?;
    assert!(live, "videotestsrc is-live=true is live");
    assert!(
        min >= gst::ClockTime::from_mseconds(120),
        "the latency ({min}) lacks the element's 120 ms wait"
    );
    let pts = rendered.lock().unwrap().clone();
    assert_eq!(pts.len(), 60, "frames lost");
    // A live videotestsrc stamps its frames from the running time it started at, a frame
    // every 1/30 s: so do the frames that come out.
    let want: Vec<u64> = (0..60u64)
        .map(|i| pts[0] + i * 1_000_000_000 / 30)
        .collect();
    let off: Vec<i64> = pts
        .iter()
        .zip(&want)
        .map(|(&a, &b)| a as i64 - b as i64)
        .collect();
    assert!(
        off.iter().all(|d| d.abs() <= 1),
        "timestamps changed: {pts:?}"
    );
    Ok(())
}

/// An enumerated property is a GEnum: a name it does not list is refused where it is set,
/// naming the property; each other bad value fails the start with an element error that names
/// the property and the fix (the program's own checks, so `class` with `top-k` above 1 too).
#[test]
fn bad_property_values_fail_naming_the_property() -> Result<()> {
    init();
    for (property, value) in [
        ("method", "gradcam3"),
        ("device", "tpu"),
        ("colormap", "rainbow"),
        ("precision", "fp8"),
        ("layout", "planar"),
    ] {
        let e = gst::parse::launch(&format!(
            "videotestsrc num-buffers=2 ! gradcam name=g {property}={value} ! fakesink"
        ))
        .err()
        .with_context(|| format!("{property}={value} was taken"))?;
        let text = e.to_string();
        assert!(
            text.contains(&format!("\"{property}\"")) && text.contains(value),
            "{property}={value}: {text}"
        );
    }
    for (property, value, needle) in [
        (
            "model",
            "/no/such/model.pt",
            "property `model`: model /no/such/model.pt does not exist",
        ),
        (
            "class",
            "5000",
            "property `class`: class=5000 is out of range",
        ),
        ("class", "zebraa", "close matches: zebra"),
        (
            "show-rank",
            "2",
            "property `show-rank`: show-rank=2 is out of range",
        ),
        (
            "top-k",
            "3 class=5",
            "property `top-k`: top-k explains each frame's most likely classes; drop class, or top-k",
        ),
    ] {
        let p = gst::parse::launch(&format!(
            "videotestsrc num-buffers=2 ! videoconvert ! gradcam name=g device=cpu {property}={value} ! fakesink"
        ))?;
        let changed = p.set_state(gst::State::Paused);
        assert!(changed.is_err(), "{property}={value} was taken");
        let bus = p.bus().context("bus")?;
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
            .with_context(|| format!("{property}={value}: no error message"))?;
        let gst::MessageView::Error(e) = msg.view() else {
            unreachable!("filtered")
        };
        let text = e.error().to_string();
        assert!(text.contains(needle), "{property}={value}: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(
            msg.src().map(|s| s.name().to_string()).as_deref(),
            Some("g")
        );
        p.set_state(gst::State::Null)?;
    }
    Ok(())
}

/// A seek flushes: frames after it come out with the new segment's timestamps, and the
/// element keeps going (smoothing starts afresh: a new stream in the worker).
#[test]
fn a_seek_flushes_and_frames_keep_coming() -> Result<()> {
    init();
    let video = sample("bikes.mp4");
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! gradcam device=cpu batch-size=4 smooth=0.5 ! appsink name=sink sync=false",
        video.display()
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = p
        .by_name("sink")
        .context("sink")?
        .downcast::<gstreamer_app::AppSink>()
        .map_err(|_| anyhow!("appsink"))?;
    p.set_state(gst::State::Paused)?;
    let (changed, _, _) = p.state(gst::ClockTime::from_seconds(30));
    changed?;
    p.set_state(gst::State::Playing)?;
    sink.try_pull_sample(gst::ClockTime::from_seconds(30))
        .context("no first frame")?;
    let to = gst::ClockTime::from_seconds(5);
    p.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, to)?;
    let mut after = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        after.push(s.buffer().and_then(|b| b.pts()).context("pts")?);
    }
    p.set_state(gst::State::Null)?;
    assert!(!after.is_empty(), "nothing after the seek");
    let tail: Vec<_> = after.iter().filter(|&&t| t >= to).collect();
    // bikes.mp4: 250 frames at 25 fps, 10 s; from 5 s on, 125 frames.
    assert_eq!(tail.len(), 125, "{after:?}");
    assert!(after.windows(2).filter(|w| w[0] >= to).all(|w| w[1] > w[0]));
    Ok(())
}

/// With post-messages=true each frame posts an element message `gradcam` with its result.
#[test]
fn post_messages_gives_one_element_message_a_frame() -> Result<()> {
    init();
    let p = gst::parse::launch(
        "videotestsrc num-buffers=5 ! video/x-raw,width=160,height=120 ! videoconvert ! gradcam name=g device=cpu batch-size=2 post-messages=true ! fakesink",
    )?;
    p.set_state(gst::State::Playing)?;
    let bus = p.bus().context("bus")?;
    let mut got = Vec::new();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(60))
            .context("no EOS in 60 s")?;
        match msg.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().context("structure")?;
                if s.name() == "gradcam" {
                    assert_eq!(
                        msg.src().map(|o| o.name().to_string()).as_deref(),
                        Some("g")
                    );
                    for field in [
                        "class-id",
                        "label",
                        "probability",
                        "method",
                        "x",
                        "y",
                        "width",
                        "height",
                        "timestamp",
                        "map",
                    ] {
                        assert!(s.has_field(field), "no {field} in {s}");
                    }
                    got.push(s.get::<u64>("frame")?);
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => anyhow::bail!("{}", e.error()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null)?;
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    Ok(())
}

/// A detector in the element: one ROI meta per box, typed by its class's name, with its class,
/// score and track id, equal to the program's metadata boxes for the same file.
#[test]
fn a_detectors_boxes_are_roi_metas_equal_to_the_programs_metadata() -> Result<()> {
    init();
    let dir = tempfile::tempdir()?;
    let video = sample("carphone_pristine.mp4");
    let centerface = root().join("models/centerface.pt");
    let meta = dir.path().join("m.jsonl");
    let o = explain(
        video.to_str().unwrap(),
        dir.path().join("o.mp4").to_str().unwrap(),
        centerface.to_str().unwrap(),
        &["--metadata", meta.to_str().unwrap(), "--device", "cpu"],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = metadata(&meta)?;
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGBx ! gradcam device=cpu model={} ! appsink name=sink sync=false",
        video.display(),
        centerface.display()
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = p
        .by_name("sink")
        .context("sink")?
        .downcast::<gstreamer_app::AppSink>()
        .map_err(|_| anyhow!("appsink"))?;
    p.set_state(gst::State::Playing)?;
    let mut frames = 0;
    let mut boxes = 0;
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(60)) {
        let b = s.buffer().context("buffer")?;
        let want = lines[frames]["boxes"].as_array().context("boxes")?;
        let got: Vec<_> = b
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .filter(|m| m.param("detection").is_some())
            .collect();
        assert_eq!(got.len(), want.len(), "frame {frames}");
        for (m, w) in got.iter().zip(want) {
            let d = m.param("detection").context("params")?;
            assert_eq!(m.roi_type(), w["label"].as_str().unwrap());
            assert_eq!(m.id() as i64, w["id"].as_i64().unwrap());
            assert_eq!(d.get::<u64>("track-id")?, w["id"].as_u64().unwrap());
            assert_eq!(
                i64::from(d.get::<i32>("class-id")?),
                w["class"].as_i64().unwrap()
            );
            // The element's batches are not the program's (libtorch may take other kernels
            // for another batch size): the same to float rounding, not to the last bit.
            let (got, want) = (d.get::<f64>("score")?, w["score"].as_f64().unwrap());
            assert!(
                (got - want).abs() <= 1e-4,
                "frame {frames}: score {got} against {want}"
            );
            let v: Vec<f64> = w["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let (x, y, rw, rh) = m.rect();
            let near = |a: u32, b: f64| (f64::from(a) - b.round()).abs() <= 1.0;
            assert!(
                near(x, v[0]) && near(y, v[1]) && near(x + rw, v[2]) && near(y + rh, v[3]),
                "frame {frames}: {:?} against {v:?}",
                m.rect()
            );
            boxes += 1;
        }
        frames += 1;
    }
    p.set_state(gst::State::Null)?;
    assert_eq!(frames, lines.len());
    assert!(boxes >= 100, "{boxes} boxes on {frames} frames of a face");
    Ok(())
}
