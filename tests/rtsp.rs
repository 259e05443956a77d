//! RTSP in and out, on loopback: a test server (examples/rtsp_serve.rs) serves a live source,
//! gradcam-stream reads it and serves its own output, and independent clients (GStreamer's
//! rtspsrc, ffmpeg) receive it. Also the reconnect when the source server goes away.

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use common::*;

#[test]
fn rtsp_in_to_rtsp_out_and_a_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let server = Running::rtsp_server(0, "/live", "test:ball:320x240:15")?;
    let input = server.url()?;
    let run = Running::explain(&[
        "--input",
        &input,
        "--output",
        out.to_str().unwrap(),
        "--output",
        "rtsp://127.0.0.1:0/explained",
        "--model",
        fixture().to_str().unwrap(),
        "--max-frames",
        "150",
        "--on-overload",
        "block",
        "--stats",
        "1",
    ])?;
    let served = run.url()?;
    assert!(served.starts_with("rtsp://127.0.0.1:") && served.ends_with("/explained"));
    assert!(!served.contains(":0/"), "{served}");

    // Two clients at once: GStreamer's rtspsrc here, ffmpeg beside it.
    let ffmpeg = std::thread::spawn({
        let served = served.clone();
        move || {
            Command::new("ffmpeg")
                .args(["-v", "error", "-rtsp_transport", "tcp", "-i", &served])
                .args([
                    "-frames:v",
                    "20",
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "rgb24",
                    "-",
                ])
                .output()
        }
    });
    let sizes = rtsp_frames(&served, 20)?;
    assert_eq!(sizes.len(), 20, "rtspsrc got {} frames", sizes.len());
    assert!(sizes.iter().all(|&s| s == (320, 240)), "{sizes:?}");
    let ff = ffmpeg.join().unwrap()?;
    assert!(
        ff.status.success(),
        "{}",
        String::from_utf8_lossy(&ff.stderr)
    );
    assert_eq!(ff.stdout.len(), 20 * 320 * 240 * 3, "ffmpeg frames");

    let (code, log) = run.wait(Duration::from_secs(60))?;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("done: 150 frames"), "{log}");
    let p = probe(&out, 0)?;
    assert_eq!(p.pts.len(), 150);
    assert_eq!((p.width, p.height), (320, 240));
    assert!(p.pts.windows(2).all(|w| w[0] < w[1]), "not monotonic");
    let stats = stats_lines(&log);
    assert!(!stats.is_empty(), "{log}");
    assert!(log.contains("stats: total"), "{log}");
    Ok(())
}

#[test]
fn a_dropped_feed_is_reconnected() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let port = free_port()?;
    let server = Running::rtsp_server(port, "/live", "test:ball:320x240:15")?;
    let input = server.url()?;
    let run = Running::explain(&[
        "--input",
        &input,
        "--output",
        out.to_str().unwrap(),
        "--model",
        fixture().to_str().unwrap(),
        "--duration",
        "10",
        "--rtsp-transport",
        "tcp",
        "--stats",
        "1",
    ])?;
    run.wait_for("stats: t=", Duration::from_secs(30))?;
    drop(server); // killed mid-stream
    run.wait_for("reconnecting in", Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_millis(500));
    let server = Running::rtsp_server(port, "/live", "test:ball:320x240:15")?;
    server.url()?;
    let (code, log) = run.wait(Duration::from_secs(60))?;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("frames flowing again"), "{log}");
    assert!(log.contains("1 reconnect"), "{log}");
    let last = stats_lines(&log).pop().unwrap();
    assert_eq!(last["reconnects"], "1", "{log}");
    // Frames from both connections, in one playable file, timestamps rising across the gap.
    let p = probe(&out, 0)?;
    assert!(p.pts.len() > 30, "{} frames", p.pts.len());
    assert!(p.pts.windows(2).all(|w| w[0] < w[1]), "not monotonic");
    let gap = p.pts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap > 500_000_000, "no outage visible: largest gap {gap} ns");
    Ok(())
}

#[test]
fn an_unreachable_feed_fails_after_the_reconnect_budget() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let port = free_port()?;
    let url = format!("rtsp://127.0.0.1:{port}/nothing");
    let o = explain(
        &url,
        out.to_str().unwrap(),
        fixture().to_str().unwrap(),
        &["--reconnect-max", "1"],
    )?;
    // The reconnect is logged; the error is the last line.
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("reconnecting in 1 s (try 1 of 1)"), "{err}");
    let last = err.trim_end().lines().last().unwrap();
    assert!(last.starts_with("error: "), "{err}");
    assert!(
        last.contains("cannot be opened after 1 reconnect tries"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(files_in(dir.path()).is_empty());

    // The server is up, the path is wrong.
    let server = Running::rtsp_server(0, "/live", "test:ball:160x120:15")?;
    let wrong = server.url()?.replace("/live", "/wrong");
    let o = explain(
        &wrong,
        out.to_str().unwrap(),
        fixture().to_str().unwrap(),
        &["--reconnect-max", "1"],
    )?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("error: ") && last.contains("no stream at this path"),
        "{err}"
    );
    assert!(files_in(dir.path()).is_empty());
    Ok(())
}

#[test]
fn a_port_in_use_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let out = dir.path().join("o.mp4");
    let o = run(&[
        "--input",
        "test://ball?size=160x120&fps=15",
        "--output",
        out.to_str().unwrap(),
        "--output",
        &format!("rtsp://127.0.0.1:{port}/x"),
        "--model",
        fixture().to_str().unwrap(),
        "--max-frames",
        "5",
    ])?;
    assert_fails(&o, 1, &format!("port {port} is already in use"));
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
    Ok(())
}
