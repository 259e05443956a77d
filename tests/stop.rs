//! Ending a run early still gives a complete, playable output: --max-frames, --duration,
//! and SIGINT/SIGTERM (a second signal quits at once and leaves nothing behind).

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;

/// gradcam-stream with these flags, its output collected as it runs.
fn spawn(args: &[&str]) -> Result<Running> {
    Running::explain(&[args, &["--progress", "lines"]].concat())
}

/// Wait until the run has written some frames (its progress line says so).
fn wait_for_frames(dir: &std::path::Path) {
    // The partial output grows once frames are encoded.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let grown = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.metadata().map(|m| m.len() > 20_000).unwrap_or(false))
            })
            .unwrap_or(false);
        if grown {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn max_frames_ends_cleanly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let meta = dir.path().join("m.jsonl");
    let o = explain(
        sample("bikes.mp4").to_str().unwrap(),
        out.to_str().unwrap(),
        fixture().to_str().unwrap(),
        &["--max-frames", "30", "--metadata", meta.to_str().unwrap()],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let p = probe(&out, 0)?;
    assert_eq!(p.pts.len(), 30);
    assert_eq!(metadata(&meta)?.len(), 30);
    assert_eq!(
        ffprobe_pts(&out)?,
        ffprobe_pts(&sample("bikes.mp4"))?[..30].to_vec()
    );
    Ok(())
}

#[test]
fn duration_ends_cleanly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let o = explain(
        sample("bigbuckbunny.mp4").to_str().unwrap(),
        out.to_str().unwrap(),
        model().to_str().unwrap(),
        &["--duration", "0.5"],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let n = probe(&out, 0)?.pts.len();
    assert!(n > 0 && n < 132, "{n} frames");
    Ok(())
}

#[test]
fn sigint_and_sigterm_finish_a_playable_file() -> Result<()> {
    for sig in ["-INT", "-TERM"] {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("o.mp4");
        let child = spawn(&[
            "--input",
            sample("bigbuckbunny.mp4").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])?;
        wait_for_frames(dir.path());
        child.signal(sig)?;
        let sent = Instant::now();
        let (code, err) = child.wait(Duration::from_secs(10))?;
        let took = sent.elapsed();
        assert_eq!(code, Some(0), "{err}");
        // The frames in flight (a file's queue of 16, the batch in the model and the one being
        // drawn: about 32) are finished at this machine's rate (the run's own `done:` figure),
        // then the file: 2 s where that rate is 21 frames a second or more.
        let fps: f64 = err
            .split(" fps)")
            .next()
            .and_then(|l| l.rsplit('(').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        let bound = Duration::from_secs_f64((0.5 + 32.0 / fps.max(1.0)).max(2.0));
        assert!(
            took < bound,
            "took {took:?} to stop (bound {bound:?} at {fps} fps)"
        );
        assert!(err.contains("stopping"), "{err}");
        let p = probe(&out, 0)?;
        assert!(
            !p.pts.is_empty() && p.pts.len() < 132,
            "{} frames",
            p.pts.len()
        );
        assert_eq!((p.width, p.height), (1280, 720));
        assert_eq!(files_in(dir.path()), vec!["o.mp4"]);
    }
    Ok(())
}

#[test]
fn a_second_signal_quits_at_once_and_leaves_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let meta = dir.path().join("o.jsonl");
    let child = spawn(&[
        "--input",
        sample("bigbuckbunny.mp4").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--metadata",
        meta.to_str().unwrap(),
    ])?;
    wait_for_frames(dir.path());
    child.signal("-INT")?;
    child.signal("-INT")?;
    let (code, err) = child.wait(Duration::from_secs(5))?;
    if code == Some(0) {
        // The first signal's clean stop won the race; the output must then be whole.
        assert!(!probe(&out, 0)?.pts.is_empty());
        return Ok(());
    }
    assert_eq!(code, Some(130), "{err}");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
    Ok(())
}
