//! Engine throughput, run by `make bench` (scripts/bench.py): the model's forward-only speed
//! (preprocess + features + head, no autograd) is the limit; Grad-CAM on the same batches is
//! what the engine reaches. Prints one JSON object per line.
//!
//! cargo bench --bench engine -- [--model M] [--batch-size B] [--width W] [--height H]
//!     [--seconds S per measurement] [--rounds R, the best of which is reported]
//!     [--methods: every CAM method instead of Grad-CAM alone]

use std::time::{Duration, Instant};

use anyhow::Result;
use gradcam_stream::cam::Method;
use gradcam_stream::config::{DeviceChoice, DEFAULT_MODEL};
use gradcam_stream::frame::Frame;
use gradcam_stream::worker::{Engine, Settings};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Frames per second of `f` over batches, after five warm-up calls (TorchScript's profiling
/// executor optimizes the graph over the first runs), for at least `secs`.
fn measure(batch: &[Frame], secs: f64, mut f: impl FnMut(&[Frame]) -> Result<()>) -> Result<f64> {
    for _ in 0..5 {
        f(batch)?;
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs_f64(secs) || n < 3 {
        f(batch)?;
        n += 1;
    }
    Ok((n * batch.len()) as f64 / start.elapsed().as_secs_f64())
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
    let engine = Engine::new(&Settings {
        model: model.clone().into(),
        device,
        batch_size,
        max_wait: Duration::ZERO,
        class: None,
        method: gradcam_stream::cam::Method::GradCam,
        top_k: 1,
        show_rank: 1,
        smooth: 0.0,
        threads: 0,
    })?;
    // Deterministic, non-constant pixels (a constant image would be an untypical input).
    let batch: Vec<Frame> = (0..batch_size as u64)
        .map(|i| {
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|k| ((k as u64 * 2654435761 + i * 97) >> 13) as u8)
                .collect();
            Frame::from_rgb(i, w, h, &rgb)
        })
        .collect();
    let device = engine.info().device;
    let methods: Vec<Method> = if args.iter().any(|a| a == "--methods") {
        Method::ALL.to_vec()
    } else {
        vec![Method::GradCam]
    };
    let mut engine = Some(engine);
    // Alternate them in rounds and keep each one's best: on a shared machine the best round
    // is the one least disturbed by neighbours, and all get the same chances.
    let mut forward = 0f64;
    let mut best = vec![0f64; methods.len()];
    for _ in 0..rounds {
        let e = engine.as_ref().expect("kept");
        forward = forward.max(measure(&batch, secs, |b| e.forward_only(b).map(drop))?);
        for (i, &m) in methods.iter().enumerate() {
            let e = engine.take().expect("kept").with_method(m);
            best[i] = best[i].max(measure(&batch, secs, |b| e.explain(b.to_vec()).map(drop))?);
            engine = Some(e);
        }
    }
    let mut rows = vec![("forward", forward)];
    rows.extend(methods.iter().map(|m| m.name()).zip(best));
    for (what, fps) in rows {
        println!(
            r#"{{"bench":"{what}","model":"{model}","device":"{device}","batch_size":{batch_size},"frame":"{w}x{h}","rounds":{rounds},"fps":{fps:.2}}}"#
        );
    }
    Ok(())
}
