//! Engine throughput, run by `make bench` (scripts/bench.py): the model's forward-only speed
//! (upload + preprocess + features + head, no autograd) is the limit; the explanation on the
//! same batches (CAM, results and blended frames back on the host) is what the engine
//! reaches. Prints one JSON object per line.
//!
//! cargo bench --bench engine -- [--model M] [--device auto|cpu|cuda]
//!     [--precision auto|fp32|fp16|bf16] [--layout auto|channels-last|contiguous] (the program's
//!     defaults when left out)
//!     [--batch-size B] [--width W] [--height H] [--seconds S per measurement]
//!     [--rounds R, the best of which is reported] [--blend auto|host|device]
//!     [--methods: every CAM method instead of Grad-CAM alone]
//!     [--vary: also Grad-CAM on batches whose sizes vary as the pipeline's do]
//!     [--pipelined: queue a batch before taking the last one's results, as on a GPU]
//!     [--smooth S: temporal smoothing, as --smooth (the frames are one stream)]
//!     [--frames FILE: raw RGBx frames of --width x --height to run on (a detector needs real
//!     pictures: random pixels hold no box), taken a batch at a time in turn]
//!     [--boxes N, --detector-size WxH: a detector's, as the program's flags]
//!
//! A detector's rows: `forward` (levels and head, no autograd), then its methods' (`odam`,
//! `gradcam`, `eigencam`: every box of every frame explained), with `boxes_per_frame`.
//!
//! Rows: `forward`, then each method's name (`gradcam`, …), then with --vary `gradcam-varied`.
//! The blend is part of the explanation where it runs on the device (`--blend device`, the
//! default on a GPU); with `--blend host` the host blend of the same frames (what the render
//! stage does, on one thread) is measured alone as `host-blend`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;
use gradcam_stream::cam::Method;
use gradcam_stream::config::{DeviceChoice, Layout, Named, Precision, DEFAULT_MODEL};
use gradcam_stream::engine::{BlendAt, Engine, Pending, Settings};
use gradcam_stream::frame::Frame;
use gradcam_tcmalloc as _; // the allocator the program runs with

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Frames per second of `f` over batches, after five warm-up calls (TorchScript's profiling
/// executor optimizes the graph over the first runs), for at least `secs`. `batches` are
/// taken in turn.
fn measure(
    batches: &[Vec<Frame>],
    secs: f64,
    mut f: impl FnMut(&[Frame]) -> Result<()>,
) -> Result<f64> {
    for b in batches.iter().cycle().take(5.max(batches.len())) {
        f(b)?;
    }
    let start = Instant::now();
    let (mut n, mut frames) = (0, 0);
    for b in batches.iter().cycle() {
        if start.elapsed() >= Duration::from_secs_f64(secs) && n >= 3 {
            break;
        }
        f(b)?;
        n += 1;
        frames += b.len();
    }
    Ok(frames as f64 / start.elapsed().as_secs_f64())
}

/// Frames per second of the explanation, driven as the worker drives it: frames are moved
/// in, not copied (each batch's frames come back with its results and go in again), and
/// where the engine is pipelined (a GPU) batch N+1 is queued before batch N's results are
/// taken. Warm-up and duration as `measure`.
fn measure_explain(e: &mut Engine, batches: &[Vec<Frame>], secs: f64) -> Result<f64> {
    let mut free: VecDeque<Vec<Frame>> = batches.iter().cloned().collect();
    if e.pipelined() {
        // Two batches in flight at once need two sets of frames.
        free.extend(batches.iter().cloned());
    }
    let mut inflight: Option<Pending> = None;
    let mut step = |e: &mut Engine, last: bool| -> Result<usize> {
        let queued = match last {
            true => None,
            false => Some(e.submit(free.pop_front().expect("recycled"))?),
        };
        let ready = match (e.pipelined(), queued) {
            (true, q) => std::mem::replace(&mut inflight, q),
            (false, q) => q,
        };
        let Some(ready) = ready else { return Ok(0) };
        let done = e.finish(ready)?;
        let n = done.len();
        free.push_back(done.into_iter().map(|x| x.frame).collect());
        Ok(n)
    };
    for _ in 0..5.max(batches.len()) {
        step(e, false)?;
    }
    let start = Instant::now();
    let (mut n, mut frames) = (0, 0);
    while start.elapsed() < Duration::from_secs_f64(secs) || n < 3 {
        frames += step(e, false)?;
        n += 1;
    }
    frames += step(e, true)?; // the batch still in flight
    Ok(frames as f64 / start.elapsed().as_secs_f64())
}

/// Batch sizes as a pipeline makes them: mostly full, some partial ones after a wait ran out.
fn varied_sizes(max: usize) -> Vec<usize> {
    [
        max,
        max,
        max - max / 4,
        1,
        max,
        max / 2,
        max,
        3,
        max - 1,
        max,
    ]
    .iter()
    .map(|&n| n.clamp(1, max))
    .collect()
}

/// The boxes a detector finds in a batch (explained once, outside the measurement).
fn e_count(e: &mut Engine, batch: &[Frame]) -> Result<usize> {
    Ok(e.explain(batch.to_vec())?
        .iter()
        .map(|x| x.boxes.as_ref().map_or(0, Vec::len))
        .sum())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model: String = arg(&args, "--model", DEFAULT_MODEL.to_owned());
    let batch_size: usize = arg(&args, "--batch-size", 8);
    let (w, h): (u32, u32) = (arg(&args, "--width", 640), arg(&args, "--height", 272));
    let secs: f64 = arg(&args, "--seconds", 4.0);
    let rounds: usize = arg(&args, "--rounds", 3);
    let device = match arg(&args, "--device", "auto".to_owned()).as_str() {
        "cpu" => DeviceChoice::Cpu,
        "cuda" => DeviceChoice::Cuda,
        _ => DeviceChoice::Auto,
    };
    let defaults = Settings::new(model.clone().into());
    let named = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let precision = match named("--precision") {
        Some(p) => Precision::parse_named("--precision", p).map_err(anyhow::Error::msg)?,
        None => defaults.precision,
    };
    let layout = match named("--layout") {
        Some(l) => Layout::parse_named("--layout", l).map_err(anyhow::Error::msg)?,
        None => defaults.layout,
    };
    let blend = match arg(&args, "--blend", "auto".to_owned()).as_str() {
        "host" => BlendAt::Host,
        "device" => BlendAt::Device,
        _ => BlendAt::Auto,
    };
    let detector_size = named("--detector-size").map(|v| {
        let (w, h) = v.split_once('x').expect("--detector-size WxH");
        [h.parse::<i64>().expect("H"), w.parse::<i64>().expect("W")]
    });
    let engine = Engine::new(&Settings {
        device,
        precision,
        layout,
        batch_size,
        blend,
        pipelined: args.iter().any(|a| a == "--pipelined").then_some(true),
        smooth: arg(&args, "--smooth", 0.0),
        boxes: arg(&args, "--boxes", defaults.boxes),
        detector_size,
        ..defaults
    })?;
    let frame = |i: u64| {
        // Deterministic, non-constant pixels (a constant image would be an untypical input).
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|k| ((k as u64 * 2654435761 + i * 97) >> 13) as u8)
            .collect();
        Frame::from_rgb(i, w, h, &rgb)
    };
    let batches: Vec<Vec<Frame>> = match named("--frames") {
        Some(path) => {
            let raw = std::fs::read(path)?;
            let n = (w * h * 4) as usize;
            anyhow::ensure!(
                !raw.is_empty() && raw.len() % n == 0,
                "--frames {path}: not RGBx {w}x{h}"
            );
            let frames: Vec<Frame> = raw
                .chunks_exact(n)
                .enumerate()
                .map(|(i, px)| {
                    let mut f = Frame::from_rgb(i as u64, 1, 1, &[0, 0, 0]);
                    (f.width, f.height, f.pixels) = (w, h, px.to_vec());
                    f
                })
                .collect();
            frames
                .chunks(batch_size)
                .filter(|c| c.len() == batch_size)
                .map(<[Frame]>::to_vec)
                .collect()
        }
        None => vec![(0..batch_size as u64).map(frame).collect()],
    };
    anyhow::ensure!(!batches.is_empty(), "fewer frames than one batch");
    let batch = batches[0].clone();
    let varied: Vec<Vec<Frame>> = varied_sizes(batch_size)
        .into_iter()
        .map(|n| batch[..n].to_vec())
        .collect();
    let detector = engine.info().detector;
    let device = engine.info().device;
    let blends = engine.blends();
    let engine_precision = engine.precision();
    let engine_layout = engine.layout();
    let mut engine = Some(engine);
    let methods: Vec<Method> = if detector {
        vec![Method::Odam, Method::GradCam, Method::EigenCam]
    } else if args.iter().any(|a| a == "--methods") {
        Method::ALL.to_vec()
    } else {
        vec![Method::GradCam]
    };
    // A detector's boxes per frame on these frames (what the explanation had to do).
    let boxes_per_frame = if detector {
        let e = engine.as_mut().expect("kept");
        let mut n = 0;
        for b in &batches {
            n += e_count(e, b)?;
        }
        n as f64 / (batches.len() * batch_size) as f64
    } else {
        0.0
    };
    let vary = args.iter().any(|a| a == "--vary");
    let one = batches.as_slice();
    // Alternate them in rounds and keep each one's best: on a shared machine the best round
    // is the one least disturbed by neighbours, and all get the same chances.
    let mut forward = 0f64;
    let mut best = vec![0f64; methods.len()];
    let (mut varied_best, mut host_blend) = (0f64, 0f64);
    for _ in 0..rounds {
        let e = engine.as_mut().expect("kept");
        forward = forward.max(measure(one, secs, |b| e.forward_only(b).map(drop))?);
        for (i, &m) in methods.iter().enumerate() {
            let mut e = engine.take().expect("kept").with_method(m);
            best[i] = best[i].max(measure_explain(&mut e, one, secs)?);
            engine = Some(e);
        }
        if vary {
            let mut e = engine.take().expect("kept").with_method(Method::GradCam);
            varied_best = varied_best.max(measure_explain(&mut e, &varied, secs)?);
            engine = Some(e);
        }
        if !blends && !detector {
            let e = engine.as_mut().expect("kept");
            let explained = e.explain(batch.clone())?;
            let lut = gradcam_stream::colormap::Colormap::Jet.lut();
            host_blend = host_blend.max(measure(one, secs / 2.0, |_| {
                for x in &explained {
                    let mut px = x.frame.pixels.clone();
                    gradcam_stream::overlay::blend(
                        &mut px, w as usize, h as usize, &x.cam, 0.5, 0.0, &lut,
                    );
                }
                Ok(())
            })?);
        }
    }
    let mut rows = vec![("forward", forward)];
    rows.extend(methods.iter().map(|m| m.name()).zip(best));
    if vary {
        rows.push(("gradcam-varied", varied_best));
    }
    if !blends && !detector {
        rows.push(("host-blend", host_blend));
    }
    let precision = match engine_precision {
        Precision::Fp16 => "fp16",
        Precision::Bf16 => "bf16",
        Precision::Fp32 | Precision::Auto => "fp32",
    };
    let layout = engine_layout.name();
    for (what, fps) in rows {
        println!(
            r#"{{"bench":"{what}","model":"{model}","device":"{device}","precision":"{precision}","layout":"{layout}","blend_on_device":{blends},"batch_size":{batch_size},"frame":"{w}x{h}","rounds":{rounds},"fps":{fps:.2},"boxes_per_frame":{boxes_per_frame:.2}}}"#
        );
    }
    Ok(())
}
