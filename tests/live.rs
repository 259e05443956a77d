//! Live sources and outputs: the test source (`test://`), the overload policy and bounded
//! latency, a stop by signal, the null and display outputs, and webcam errors.

mod common;

use anyhow::{Context, Result};
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

#[test]
fn overload_keeps_latency_bounded() -> Result<()> {
    // 240 fps at 640x480 is more than the real model explains on a CPU (about 100 fps end to
    // end on the 2-core development machine): frames must be dropped, and latency must stay
    // flat rather than grow with a backlog.
    let run = Running::explain(&[
        "--input",
        "test://ball?size=640x480&fps=240",
        "--output",
        "null",
        "--duration",
        "12",
        "--stats",
        "1",
    ])?;
    let (code, log) = run.wait(std::time::Duration::from_secs(90))?;
    assert_eq!(code, Some(0), "{log}");
    let p95: Vec<f64> = stats_lines(&log)
        .iter()
        .filter_map(|s| s.get("latency_p95")?.trim_end_matches("ms").parse().ok())
        .collect();
    assert!(p95.len() >= 9, "{log}");
    let third = p95.len() / 3;
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (first, last) = (median(&p95[..third]), median(&p95[p95.len() - third..]));
    assert!(
        last <= first * 1.5 + 250.0,
        "p95 grew from {first} ms to {last} ms: {p95:?}"
    );
    let total = log.lines().find(|l| l.starts_with("stats: total")).unwrap();
    assert!(!total.contains("dropped=0 "), "{total}");
    Ok(())
}

#[test]
fn more_cameras_than_the_model_explains_keep_latency_within_the_bound() -> Result<()> {
    // 16 live 640x360 cameras at 10 fps are more than this machine explains (about 90 of the
    // 160 frames a second): without a bound, a frame waits as long as the queues take to
    // drain. With --max-latency-ms 300 a frame older than that when a batch forms is dropped,
    // so the explained ones stay within the bound plus a batch's model time.
    let mut args: Vec<String> = Vec::new();
    for i in 0..16 {
        args.extend([
            "--input".into(),
            format!("c{i}=test://ball?size=640x360&fps=10"),
        ]);
    }
    args.extend(
        [
            "--output",
            "null",
            "--duration",
            "12",
            "--stats",
            "4",
            "--max-latency-ms",
            "300",
            // The bound is the wait plus one batch's model time: batches of 4 keep that within
            // 200 ms on a CPU without AVX-512 too (8 frames of 640x360 take about 230 ms there).
            "--batch-size",
            "4",
        ]
        .map(String::from),
    );
    let run = Running::explain(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let (code, log) = run.wait(std::time::Duration::from_secs(120))?;
    assert_eq!(code, Some(0), "{log}");
    let total = log
        .lines()
        .find(|l| l.starts_with("stats: total"))
        .context("no total")?;
    println!("{total}");
    let p95: f64 = total
        .split_whitespace()
        .find_map(|f| f.strip_prefix("latency_p95="))
        .and_then(|v| v.trim_end_matches("ms").parse().ok())
        .context("no p95")?;
    // The bound: the wait (300 ms), one batch of 4 at this machine's rate (the run's own
    // frames explained a second, the model saturated), and 100 ms for the rest of the way;
    // 500 ms on a CPU that explains 40 frames a second.
    let fps: f64 = total
        .split_whitespace()
        .find_map(|f| f.strip_prefix("fps="))
        .and_then(|v| v.parse().ok())
        .context("no fps")?;
    let bound = 300.0 + 4000.0 / fps.max(1.0) + 100.0;
    assert!(p95 <= bound, "p95 {p95} ms over {bound:.0} ms: {total}");
    // Every stream explains frames: the drops are shared, not one stream starved.
    let explained = explained_per_stream(&log);
    println!("frames explained per stream: {explained:?}");
    assert_eq!(explained.len(), 16, "{log}");
    assert!(explained.iter().all(|&n| n > 0), "{explained:?}");
    let (least, most) = (
        explained.iter().min().unwrap(),
        explained.iter().max().unwrap(),
    );
    assert!(*most <= least * 2 + 5, "unfair: {explained:?}");
    Ok(())
}

#[test]
fn sigint_on_a_live_run_finishes_a_playable_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("live.mp4");
    let run = Running::explain(&[
        "--input",
        "test://ball?size=320x240&fps=30",
        "--output",
        out.to_str().unwrap(),
        "--stats",
        "1",
    ])?;
    run.wait_for("stats: t=", std::time::Duration::from_secs(30))?;
    run.signal("-INT")?;
    let sent = std::time::Instant::now();
    let (code, log) = run.wait(std::time::Duration::from_secs(10))?;
    assert_eq!(code, Some(0), "{log}");
    // Promptly: a run that finished its file in a second or two here took 2.4 s once on a
    // busy machine, so the bound leaves room for the machine, not for a slow stop.
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    let p = probe(&out, 0)?;
    assert!(p.pts.len() > 5, "{} frames", p.pts.len());
    assert!(p.pts.windows(2).all(|w| w[0] < w[1]));
    Ok(())
}

/// How often a run whose only problem is opening the display is tried, a second apart: under
/// make test's two lanes three tries once were not enough.
const DISPLAY_TRIES: u32 = 8;

/// Our own Xvfb on a display number of this process, once its socket exists; and that number.
fn xvfb() -> Result<(Running, u32)> {
    // A killed Xvfb leaves its lock file and socket behind: take a display number whose are
    // both free, from one that depends on this process and call.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let taken = |n: u32| {
        std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
            || std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
    };
    let mut n = 200 + (std::process::id() % 300) * 4 + call % 4;
    while taken(n) {
        n += 1;
    }
    let xvfb = Running::start(
        std::path::Path::new("Xvfb"),
        &[
            &format!(":{n}"),
            "-nolisten",
            "tcp",
            "-screen",
            "0",
            "640x480x24",
        ],
    )?;
    // Started: its socket takes a connection (the file alone may be there a moment before).
    let socket = std::path::PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    let start = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "Xvfb :{n} did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok((xvfb, n))
}

/// A file watched in a window plays at its own pace (bikes.mp4: 10 s), while the same file to
/// a file alone runs as fast as it is explained.
#[test]
fn a_watched_file_plays_at_its_own_pace() -> Result<()> {
    let (_xvfb, n) = xvfb()?;
    let bikes = sample("bikes.mp4");
    let clip = probe(&bikes, 0)?;
    let length = clip.pts.len() as f64 / 25.0;
    // The run's own figure: from its first frame to its last written (start-up aside). A
    // just-started Xvfb can refuse the first X connections: a run whose only problem is
    // opening the display is tried again (DISPLAY_TRIES), as in the display test.
    let timed = |output: &str, extra: &[&str]| -> Result<f64> {
        let mut tries = 0;
        let (o, err) = loop {
            tries += 1;
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
                .env("DISPLAY", format!(":{n}"))
                .args(["--input", bikes.to_str().unwrap(), "--output", output])
                .args(["--progress", "none"])
                .args(extra)
                .output()?;
            let err = stderr(&o);
            if o.status.success() || !err.contains("X output") || tries == DISPLAY_TRIES {
                break (o, err);
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        };
        anyhow::ensure!(o.status.success(), "{err}");
        let secs = err
            .split(" frames in ")
            .nth(1)
            .and_then(|r| r.split(' ').next()?.parse().ok());
        secs.ok_or_else(|| anyhow::anyhow!("no `done:` line in {err}"))
    };
    let dir = tempfile::tempdir()?;
    let to_file = timed(dir.path().join("o.mp4").to_str().unwrap(), &[])?;
    let forced = timed("display", &["--realtime", "off"])?;
    if forced >= length * 0.6 {
        // Pacing shows only where the file is explained well within its length: at 0.78x
        // (7.8 s unpaced) a paced run took 11.1 s, the start and the stalls past its slack.
        return skip(
            "speed",
            &format!("this machine explains bikes.mp4 ({length:.1} s) in {forced:.1} s unpaced, not within 0.6x its length: a paced run has no slack to keep its pace"),
        );
    }
    let shown = timed("display", &[])?;
    println!(
        "bikes.mp4 ({length:.1} s): to a window {shown:.1} s, to a file {to_file:.1} s, to a window with --realtime off {forced:.1} s"
    );
    assert!(
        shown >= length * 0.9 && shown <= length * 1.1,
        "a watched clip of {length:.1} s took {shown:.1} s"
    );
    assert!(
        to_file < length * 0.8,
        "to a file it is paced: {to_file:.1} s"
    );
    assert!(
        forced < length * 0.8,
        "--realtime off is not paced: {forced:.1} s"
    );
    Ok(())
}

#[test]
fn display_output_under_xvfb() -> Result<()> {
    let (_xvfb, n) = xvfb()?;
    // On a loaded machine a just-started Xvfb can still refuse the first X connections, so a
    // run whose only problem is opening the display is tried again (DISPLAY_TRIES).
    let mut tries = 0;
    let (o, err) = loop {
        tries += 1;
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
            .env("DISPLAY", format!(":{n}"))
            .args([
                "--input",
                "test://ball?size=160x120&fps=15",
                "--output",
                "display",
            ])
            .args(["--model", fixture().to_str().unwrap(), "--max-frames", "30"])
            .args(["--progress", "none"])
            .output()?;
        let err = stderr(&o);
        if o.status.success() || !err.contains("X output") || tries == DISPLAY_TRIES {
            break (o, err);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    assert!(o.status.success(), "{err}");
    // A live source: on a loaded machine the model may fall behind and drop a few of the 30
    // frames (CI once dropped 3), which is the live path working, not the window failing.
    let line = err
        .lines()
        .find(|l| l.contains("done: "))
        .unwrap_or_default();
    let explained: u32 = line
        .split("done: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        explained >= 15 && line.contains("→ display"),
        "at least half of the 30 frames shown in the window: {err}"
    );

    // No graphical session: one clear line.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .args(["--input", "test://", "--output", "display"])
        .output()?;
    assert_fails(&o, 2, "DISPLAY is not set");
    Ok(())
}

#[test]
fn webcams_that_cannot_capture_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let out = out.to_str().unwrap();
    let fix = fixture();
    let fix = fix.to_str().unwrap();
    assert_fails(
        &explain("/dev/video99", out, fix, &[])?,
        2,
        "does not exist",
    );
    assert_fails(
        &explain("v4l2:///dev/video99", out, fix, &[])?,
        2,
        "does not exist",
    );
    assert_fails(
        &explain("v4l2:///etc/hostname", out, fix, &[])?,
        2,
        "is not a video device",
    );
    // A character device that is no camera: v4l2src itself refuses it.
    assert_fails(&explain("v4l2:///dev/null", out, fix, &[])?, 1, "webcam");
    assert!(files_in(dir.path()).is_empty());
    Ok(())
}
