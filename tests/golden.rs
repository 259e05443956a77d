//! Our Grad-CAM against the reference implementation (PyPI grad-cam, pytorch-grad-cam) on the
//! same frames, model and target layer: per-frame correlation of the maps ≥ 0.98.

mod common;

use anyhow::Result;
use common::*;

#[test]
fn maps_match_pytorch_grad_cam_on_bikes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let meta = dir.path().join("m.jsonl");
    let video = sample("bikes.mp4");
    let o = explain(
        video.to_str().unwrap(),
        out.to_str().unwrap(),
        model().to_str().unwrap(),
        &["--metadata", meta.to_str().unwrap()],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    // The decoded frames, exactly as our pipeline gets them (uridecodebin → videoconvert → RGBx).
    let raw = dir.path().join("frames.rgbx");
    let st = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "uridecodebin",
            &format!("uri=file://{}", video.display()),
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=RGBx",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", raw.display()))
        .status()?;
    assert!(st.success());
    let r = std::process::Command::new(python())
        .arg(root().join("tests/golden_gradcam.py"))
        .args([
            "--raw",
            raw.to_str().unwrap(),
            "--size",
            "640x272",
            "--metadata",
            meta.to_str().unwrap(),
            "--model",
            model().to_str().unwrap(),
            "--min-corr",
            "0.98",
        ])
        .output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    eprintln!("{report}");
    assert!(r.status.success(), "{report}");
    Ok(())
}
