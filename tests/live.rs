//! The live test source (`test://`), the overload policy and the null output.

mod common;

use anyhow::Result;
use common::*;

#[test]
fn a_live_test_source_to_a_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("live.mp4");
    let o = explain(
        "test://ball?size=160x120&fps=30",
        out.to_str().unwrap(),
        fixture().to_str().unwrap(),
        &["--max-frames", "20"],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let p = probe(&out, 0)?;
    assert_eq!((p.width, p.height), (160, 120));
    assert_eq!(p.pts.len(), 20);
    assert!(
        p.pts.windows(2).all(|w| w[0] < w[1]),
        "timestamps not increasing: {:?}",
        p.pts
    );
    Ok(())
}

#[test]
fn a_live_source_faster_than_the_model_drops_the_oldest_frames() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("live.mp4");
    // 240 fps is several times what the real model explains on this machine.
    let o = explain(
        "test://ball?size=320x240&fps=240",
        out.to_str().unwrap(),
        model().to_str().unwrap(),
        &["--duration", "2"],
    )?;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let dropped: u64 = err
        .split(" dropped (model behind the source)")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop count in: {err}"));
    assert!(dropped > 0, "{err}");
    let p = probe(&out, 0)?;
    assert!(!p.pts.is_empty());
    assert!(
        p.pts.windows(2).all(|w| w[0] < w[1]),
        "timestamps not increasing"
    );
    // The run ended on time: about 2 s of source frames, not a backlog.
    let span = p.pts.last().unwrap() - p.pts[0];
    assert!(span < 3_000_000_000, "output spans {span} ns");
    Ok(())
}

#[test]
fn null_output_discards() -> Result<()> {
    let o = explain(
        sample("bikes.mp4").to_str().unwrap(),
        "null",
        fixture().to_str().unwrap(),
        &[],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("done: 250 frames") && stderr(&o).contains("→ null"),
        "{}",
        stderr(&o)
    );
    Ok(())
}

#[test]
fn files_never_drop() -> Result<()> {
    let o = explain(
        sample("bikes.mp4").to_str().unwrap(),
        "null",
        fixture().to_str().unwrap(),
        &["--on-overload", "drop"],
    )?;
    assert_fails(&o, 2, "a file input never drops frames");
    let o = explain(
        "test://nosuchpattern",
        "null",
        fixture().to_str().unwrap(),
        &[],
    )?;
    assert_fails(&o, 1, "test://nosuchpattern: unknown pattern");
    Ok(())
}
