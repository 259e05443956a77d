//! The engine through the library, on the real model: a batch of N gives the same maps and
//! classes as N batches of one, and the blend on the model's device gives the pixels the
//! host blend gives.

mod common;

use anyhow::Result;
use common::*;
use gradcam_stream::config::{DeviceChoice, Layout, Precision};
use gradcam_stream::engine::{BlendAt, Engine, Settings};
use gradcam_stream::frame::Frame;

fn engine(model: std::path::PathBuf, blend: BlendAt, smooth: f32) -> Result<Engine> {
    Engine::new(&Settings {
        device: DeviceChoice::Cpu,
        blend,
        smooth,
        ..Settings::new(model)
    })
}

/// The largest difference between two maps.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Real frames: some of bikes.mp4, of different content.
fn frames() -> Result<Vec<Frame>> {
    let p = probe(&sample("bikes.mp4"), 250)?;
    Ok([0usize, 60, 120, 180, 240]
        .iter()
        .map(|&i| Frame::from_rgb(i as u64, p.width, p.height, &p.frames_rgb[i]))
        .collect())
}

#[test]
fn a_batch_equals_frames_one_at_a_time() -> Result<()> {
    let frames = frames()?;
    for model in [model(), fixture()] {
        let mut e = engine(model, BlendAt::Host, 0.0)?;
        let batch = e.explain(frames.clone())?;
        for (f, b) in frames.iter().zip(&batch) {
            let one = e.explain(vec![f.clone()])?.remove(0);
            assert_eq!(one.target.class, b.target.class, "frame {}", f.index);
            let diff = max_diff(&one.cam.data, &b.cam.data);
            assert!(diff < 1e-3, "frame {}: maps differ by {diff}", f.index);
            assert!((one.target.prob - b.target.prob).abs() < 1e-4);
        }
    }
    Ok(())
}

/// Pearson correlation of two maps.
fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&x| x as f64).sum::<f64>() / n,
        b.iter().map(|&x| x as f64).sum::<f64>() / n,
    );
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt().max(1e-12)
}

/// Channels-last batches give contiguous batches' maps (to 1e-5) and classes; bf16, where
/// this CPU has it, gives maps that correlate ≥ 0.98 with fp32's and the same classes.
#[test]
fn layouts_give_the_same_maps_and_bf16_stays_close() -> Result<()> {
    let frames = frames()?;
    let run = |layout, precision| -> Result<Vec<gradcam_stream::frame::Explained>> {
        Engine::new(&Settings {
            device: DeviceChoice::Cpu,
            blend: BlendAt::Host,
            layout,
            precision,
            ..Settings::new(model())
        })?
        .explain(frames.clone())
    };
    let nchw = run(Layout::Contiguous, Precision::Fp32)?;
    let nhwc = run(Layout::ChannelsLast, Precision::Fp32)?;
    for (a, b) in nchw.iter().zip(&nhwc) {
        assert_eq!(a.target.class, b.target.class);
        let diff = max_diff(&a.cam.data, &b.cam.data);
        assert!(diff <= 1e-5, "channels-last moved a map by {diff}");
    }
    if !gradcam_stream::engine::cpu_autocast::supported() {
        return skip(
            "bf16",
            "no bf16 instructions on this CPU (bf16 is checked where there are)",
        );
    }
    let bf16 = run(Layout::ChannelsLast, Precision::Bf16)?;
    for (a, b) in nchw.iter().zip(&bf16) {
        assert_eq!(a.target.class, b.target.class);
        let r = correlation(&a.cam.data, &b.cam.data);
        eprintln!(
            "bf16 against fp32, frame {}: correlation {r:.4}",
            a.frame.index
        );
        assert!(r >= 0.98, "bf16 map correlates {r:.4} with fp32's");
    }
    Ok(())
}

#[test]
fn the_device_blend_gives_the_host_blends_pixels() -> Result<()> {
    let frames = frames()?;
    let on_host = engine(model(), BlendAt::Host, 0.0)?.explain(frames.clone())?;
    let on_device = engine(model(), BlendAt::Device, 0.0)?.explain(frames.clone())?;
    let lut = gradcam_stream::colormap::Colormap::Jet.lut();
    for ((h, d), f) in on_host.into_iter().zip(on_device).zip(&frames) {
        assert!(!h.blended && d.blended);
        assert_eq!(h.cam, d.cam);
        assert_ne!(d.frame.pixels, f.pixels, "the device blend changed nothing");
        let mut want = h.frame.pixels.clone();
        let (w, ht) = (f.width as usize, f.height as usize);
        gradcam_stream::overlay::blend(&mut want, w, ht, &h.cam, 0.5, 0.0, &lut);
        // The two upsample in float in a different order: a level can differ by one where a
        // value sits on a rounding boundary, moving a pixel by a few steps of 255.
        let (mut differ, mut worst) = (0usize, 0u8);
        for (a, b) in want.iter().zip(&d.frame.pixels) {
            if a != b {
                differ += 1;
                worst = worst.max(a.abs_diff(*b));
            }
        }
        assert!(worst <= 4, "frame {}: a pixel differs by {worst}", f.index);
        assert!(
            differ * 1000 <= want.len(),
            "frame {}: {differ} of {} bytes differ",
            f.index,
            want.len()
        );
    }
    Ok(())
}

/// A stream that keeps its results only (`--output null`) shares batches with one that is
/// shown: only the shown stream's frames are blended and copied back, with the pixels they get
/// when every frame is shown; the other's come back as they went in, with the same results.
#[test]
fn frames_of_a_stream_nobody_sees_are_not_blended_or_copied_back() -> Result<()> {
    use gradcam_stream::engine::{Copies, StreamSettings};
    let f = frames()?;
    let batch: Vec<Frame> = f[..4]
        .iter()
        .enumerate()
        .map(|(i, x)| Frame {
            stream: i % 2,
            ..x.clone()
        })
        .collect();
    let run = |draw: [bool; 2]| -> Result<(Vec<gradcam_stream::frame::Explained>, Copies)> {
        let mut e = Engine::new(&Settings {
            device: DeviceChoice::Cpu,
            blend: BlendAt::Device,
            streams: draw
                .iter()
                .map(|&draw| StreamSettings {
                    draw,
                    ..StreamSettings::default()
                })
                .collect(),
            ..Settings::new(model())
        })?;
        let out = e.explain(batch.clone())?;
        Ok((out, e.copies()))
    };
    let (all, all_copies) = run([true, true])?;
    let (some, some_copies) = run([true, false])?;
    let (none, none_copies) = run([false, false])?;
    // Each frame copied once into the batch's upload buffer; back only those blended.
    let on_cpu = |host| Copies {
        host,
        to_device: 0,
        from_device: 0,
    };
    assert_eq!(all_copies, on_cpu(4 + 4));
    assert_eq!(some_copies, on_cpu(4 + 2));
    assert_eq!(none_copies, on_cpu(4));
    for (i, ((a, s), n)) in all.iter().zip(&some).zip(&none).enumerate() {
        assert_eq!(
            (a.frame.stream, a.frame.index),
            (s.frame.stream, s.frame.index)
        );
        // Three engines: libtorch's thread count (the governor's choice) may differ between
        // them, and with it the order of a sum.
        for other in [s, n] {
            assert_eq!(a.target.class, other.target.class, "frame {i}");
            let diff = max_diff(&a.cam.data, &other.cam.data);
            assert!(diff < 1e-4, "frame {i}: maps differ by {diff}");
        }
        assert!(a.blended && !n.blended, "frame {i}");
        assert_eq!(n.frame.pixels, batch[i].pixels, "frame {i} was drawn on");
        assert_ne!(
            a.frame.pixels, batch[i].pixels,
            "frame {i}: the blend changed nothing"
        );
        if i % 2 == 0 {
            assert!(s.blended, "frame {i} of the shown stream");
            let differ = (a.frame.pixels.iter().zip(&s.frame.pixels))
                .filter(|(x, y)| x.abs_diff(**y) > 4)
                .count();
            assert!(
                differ * 1000 <= a.frame.pixels.len(),
                "frame {i} blended otherwise"
            );
        } else {
            assert!(!s.blended, "frame {i} of the unseen stream");
            assert_eq!(s.frame.pixels, batch[i].pixels, "frame {i} was drawn on");
        }
    }
    Ok(())
}

#[test]
fn smoothing_carries_over_batches_as_frame_by_frame() -> Result<()> {
    // A smoothed stream explained in one batch and frame by frame gives the same maps: the
    // state moves from frame to frame whatever the batch boundaries.
    let p = probe(&sample("bikes.mp4"), 12)?;
    let frames: Vec<Frame> = (0..12)
        .map(|i| Frame::from_rgb(i as u64, p.width, p.height, &p.frames_rgb[i]))
        .collect();
    let batched = engine(model(), BlendAt::Host, 0.5)?.explain(frames.clone())?;
    let mut e = engine(model(), BlendAt::Host, 0.5)?;
    let mut unsmoothed = engine(model(), BlendAt::Host, 0.0)?;
    let mut changed = 0;
    for (f, b) in frames.into_iter().zip(&batched) {
        let raw = unsmoothed.explain(vec![f.clone()])?.remove(0);
        let one = e.explain(vec![f])?.remove(0);
        assert_eq!(one.target.class, b.target.class);
        let diff = max_diff(&one.cam.data, &b.cam.data);
        assert!(diff < 1e-3, "maps differ by {diff}");
        changed += usize::from(raw.cam != one.cam);
    }
    assert!(changed >= 6, "smoothing changed only {changed} of 12 maps");
    Ok(())
}

#[test]
fn the_worker_overlapping_batches_keeps_every_frame_in_order() -> Result<()> {
    // The overlap of batch N+1's gathering with batch N's work is what runs on a GPU; forced
    // here on the CPU, it must give the same frames, in order, as one batch after another.
    use gradcam_stream::stats::Stats;
    use std::sync::Arc;
    let p = probe(&sample("bikes.mp4"), 21)?;
    let frames: Vec<Frame> = (0..21)
        .map(|i| Frame::from_rgb(i as u64, p.width, p.height, &p.frames_rgb[i]))
        .collect();
    // (index, class, map, pixels) of each frame out.
    type Out = (u64, i64, Vec<f32>, Vec<u8>);
    let run = |pipelined: bool| -> Result<Vec<Out>> {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let (results_tx, results_rx) = crossbeam_channel::bounded(2);
        let settings = Settings {
            device: DeviceChoice::Cpu,
            pipelined: Some(pipelined),
            blend: BlendAt::Device,
            smooth: 0.5,
            max_wait: std::time::Duration::from_millis(5),
            ..Settings::new(model())
        };
        let (_, worker) = gradcam_stream::worker::spawn(
            settings,
            vec![rx],
            results_tx,
            Arc::new(Stats::default()),
        )?;
        let feeder = {
            let frames = frames.clone();
            std::thread::spawn(move || {
                for (i, f) in frames.into_iter().enumerate() {
                    if i % 5 == 4 {
                        // Pauses make partial batches, as a live source does.
                        std::thread::sleep(std::time::Duration::from_millis(30));
                    }
                    tx.send(f).unwrap();
                }
            })
        };
        let out: Vec<_> = results_rx
            .iter()
            .flat_map(|d| d.explained)
            .map(|e| (e.frame.index, e.target.class, e.cam.data, e.frame.pixels))
            .collect();
        feeder.join().unwrap();
        worker.join().unwrap()?;
        Ok(out)
    };
    let overlapped = run(true)?;
    let serial = run(false)?;
    let order: Vec<u64> = overlapped.iter().map(|r| r.0).collect();
    assert_eq!(order, (0..21).collect::<Vec<u64>>());
    assert_eq!(overlapped.len(), serial.len());
    for (a, b) in overlapped.iter().zip(&serial) {
        assert_eq!(a.1, b.1, "frame {}", a.0);
        let diff =
            a.2.iter()
                .zip(&b.2)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
        assert!(diff < 1e-3, "frame {}: maps differ by {diff}", a.0);
        let px =
            a.3.iter()
                .zip(&b.3)
                .filter(|(x, y)| x.abs_diff(**y) > 4)
                .count();
        assert!(px * 1000 <= a.3.len(), "frame {}: {px} bytes differ", a.0);
    }
    Ok(())
}

#[test]
fn streams_sharing_batches_keep_their_own_smoothing_and_class() -> Result<()> {
    // Two streams of different pictures, explained in shared batches (each batch holds some
    // frames of both), must give each stream exactly what it gets explained alone: smoothing
    // state is per stream, and so is a fixed class.
    use gradcam_stream::engine::StreamSettings;
    let f = frames()?;
    // Stream 0: six consecutive frames (one shot: smoothing carries over); stream 1: others.
    let p = probe(&sample("bikes.mp4"), 6)?;
    let a: Vec<Frame> = (0..6)
        .map(|i| Frame::from_rgb(i as u64, p.width, p.height, &p.frames_rgb[i]))
        .collect();
    let mut b: Vec<Frame> = [3, 4, 3, 4, 3, 4].iter().map(|&i| f[i].clone()).collect();
    for x in &mut b {
        x.stream = 1;
    }
    let settings = |streams: Vec<StreamSettings>| Settings {
        device: DeviceChoice::Cpu,
        blend: BlendAt::Host,
        streams,
        ..Settings::new(model())
    };
    let per_stream = vec![
        StreamSettings {
            smooth: 0.6,
            ..StreamSettings::default()
        },
        StreamSettings {
            class: Some(gradcam_stream::config::ClassSpec::Id(281)),
            ..StreamSettings::default()
        },
    ];
    let mut shared = Engine::new(&settings(per_stream.clone()))?;
    let mut mixed = Vec::new();
    for k in 0..3 {
        let batch: Vec<Frame> = a[2 * k..2 * k + 2]
            .iter()
            .chain(&b[2 * k..2 * k + 2])
            .cloned()
            .collect();
        mixed.extend(shared.explain(batch)?);
    }
    let mut alone_a = Engine::new(&settings(vec![per_stream[0].clone()]))?;
    let mut alone_b = Engine::new(&settings(vec![
        per_stream[0].clone(),
        per_stream[1].clone(),
    ]))?;
    let mut alone = Vec::new();
    for k in 0..3 {
        alone.extend(alone_a.explain(a[2 * k..2 * k + 2].to_vec())?);
        alone.extend(alone_b.explain(b[2 * k..2 * k + 2].to_vec())?);
    }
    assert_eq!(mixed.len(), 12);
    for (m, o) in mixed.iter().zip(&alone) {
        assert_eq!(
            (m.frame.stream, m.frame.index),
            (o.frame.stream, o.frame.index)
        );
        assert_eq!(m.target.class, o.target.class);
        let diff = max_diff(&m.cam.data, &o.cam.data);
        assert!(
            diff < 1e-3,
            "stream {}: maps differ by {diff}",
            m.frame.stream
        );
    }
    assert!(mixed
        .iter()
        .filter(|e| e.frame.stream == 1)
        .all(|e| e.target.class == 281));
    // Smoothing did act on stream 0 (else the test would show nothing).
    let mut raw = Engine::new(&settings(vec![]))?;
    let unsmoothed = raw.explain(a.clone())?;
    let changed = unsmoothed
        .iter()
        .zip(mixed.iter().filter(|e| e.frame.stream == 0))
        .filter(|(u, m)| max_diff(&u.cam.data, &m.cam.data) > 1e-3)
        .count();
    assert!(changed >= 3, "smoothing changed {changed} of 6 maps");
    Ok(())
}
