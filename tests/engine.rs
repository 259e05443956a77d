//! The Grad-CAM engine through the library, on the real model: a batch of N gives the same
//! maps and classes as N batches of one.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use gradcam_stream::config::DeviceChoice;
use gradcam_stream::frame::Frame;
use gradcam_stream::worker::{Engine, Settings};

fn engine(model: std::path::PathBuf) -> Result<Engine> {
    Engine::new(&Settings {
        model,
        device: DeviceChoice::Cpu,
        batch_size: 8,
        max_wait: Duration::ZERO,
        class: None,
        method: gradcam_stream::cam::Method::GradCam,
        top_k: 1,
        show_rank: 1,
        smooth: 0.0,
        threads: 0,
    })
}

#[test]
fn a_batch_equals_frames_one_at_a_time() -> Result<()> {
    // Real frames: the first ones of bikes.mp4, of different content.
    let p = probe(&sample("bikes.mp4"), 250)?;
    let frames: Vec<Frame> = [0usize, 60, 120, 180, 240]
        .iter()
        .map(|&i| Frame::from_rgb(i as u64, p.width, p.height, &p.frames_rgb[i]))
        .collect();
    for model in [model(), fixture()] {
        let e = engine(model)?;
        let batch = e.explain(frames.clone())?;
        for (f, b) in frames.iter().zip(&batch) {
            let one = e.explain(vec![f.clone()])?.remove(0);
            assert_eq!(one.target.class, b.target.class, "frame {}", f.index);
            let diff = one
                .cam
                .data
                .iter()
                .zip(&b.cam.data)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-3, "frame {}: maps differ by {diff}", f.index);
            assert!((one.target.prob - b.target.prob).abs() < 1e-4);
        }
    }
    Ok(())
}
