//! A lossy camera link: a test camera (examples/rtsp_serve.rs `--drop P`, seeded) loses a share
//! of its RTP packets on the way. Frames decoded from damaged data are known, counted, and
//! never explained as if whole: marked (no map, a badge), skipped, or explained with the badge.
//! After a loss burst (`--burst MS:EVERY`) the camera is asked for a key frame: one that
//! answers (its own x264) recovers within half a second, one that cannot (a file served as
//! stored) at its next key frame.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use serde_json::Value;

const CAMERA: &str = "test:ball:640x360:25";

/// gradcam-stream on a test camera (`camera`: rtsp_serve's source, then its flags) with the
/// fixture model, written to `output` with `flags`: the run's log (the run must succeed).
fn camera_run(camera: &[&str], output: &str, flags: &[&str]) -> Result<String> {
    let server = Running::rtsp_cameras(0, "/cam", camera[0], &camera[1..])?;
    let o = explain(&server.url()?, output, fixture().to_str().unwrap(), flags)?;
    drop(server);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    Ok(log)
}

/// Six seconds of a camera losing `drop` of its packets, explained with `on_damaged`: the
/// metadata lines, the run's log and the output video.
fn lossy_run(
    dir: &std::path::Path,
    loss: &str,
    on_damaged: &str,
) -> Result<(Vec<Value>, String, std::path::PathBuf)> {
    let out = dir.join(format!("{on_damaged}-{loss}.mp4"));
    let meta = dir.join(format!("{on_damaged}-{loss}.jsonl"));
    let log = camera_run(
        &[CAMERA, "--drop", loss],
        out.to_str().unwrap(),
        &[
            "--duration",
            "6",
            "--on-damaged",
            on_damaged,
            "--metadata",
            meta.to_str().unwrap(),
            "--on-overload",
            "block",
            "--stats",
            "2",
        ],
    )?;
    Ok((metadata(&meta)?, log, out))
}

/// The number before `what` in the run's done line (` RTP packets lost`: 36), 0 if absent.
fn done_number(log: &str, what: &str) -> u64 {
    log.lines()
        .find(|l| l.starts_with("done:"))
        .and_then(|done| {
            let i = done.find(what)?;
            done[..i].trim_end().rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// The done line's `K key frames asked for` (0 if absent).
fn key_frames_asked(log: &str) -> u64 {
    done_number(log, " key frames asked for")
}

/// The done line's `N RTP packets lost, M frames decoded from damaged data` (0, 0 if absent).
fn losses(log: &str) -> (u64, u64) {
    (
        done_number(log, " RTP packets lost"),
        done_number(log, " frames decoded from damaged data"),
    )
}

/// The run's last stats line (`stats: total …`), its fields by name.
fn total_stats(log: &str) -> std::collections::HashMap<String, String> {
    log.lines()
        .find(|l| l.starts_with("stats: total "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The share of strongly coloured pixels in each frame of `video` (a heatmap's colours; the
/// test camera's picture and the badge are grey).
fn coloured_shares(dir: &std::path::Path, video: &std::path::Path) -> Result<Vec<f64>> {
    let raw = dir.join("frames.rgbx");
    raw_frames(video, &raw)?;
    let bytes = std::fs::read(&raw)?;
    Ok(bytes
        .chunks_exact(640 * 360 * 4)
        .map(|f| {
            let coloured = f
                .chunks_exact(4)
                .filter(|p| {
                    let (hi, lo) = (p[..3].iter().max().unwrap(), p[..3].iter().min().unwrap());
                    hi - lo > 80
                })
                .count();
            coloured as f64 / (640 * 360) as f64
        })
        .collect())
}

#[test]
fn a_whole_feed_has_no_damage_and_a_lossy_ones_damaged_frames_carry_no_map() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (lines, log, _) = lossy_run(dir.path(), "0", "mark")?;
    assert!(lines.len() > 100, "{} frames\n{log}", lines.len());
    assert!(lines.iter().all(|l| l.get("damaged").is_none()), "{log}");
    assert_eq!(losses(&log), (0, 0), "{log}");
    assert!(!log.contains("packets_lost="), "{log}");

    let (lines, log, out) = lossy_run(dir.path(), "0.02", "mark")?;
    let (lost, damaged) = losses(&log);
    assert!(lost > 0 && damaged > 0, "{log}");
    let marked: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].get("damaged").is_some())
        .collect();
    assert_eq!(
        marked.len() as u64,
        damaged,
        "every damaged frame has its line\n{log}"
    );
    assert!(marked.len() < lines.len(), "some frames are whole\n{log}");
    for &i in &marked {
        let l = &lines[i];
        assert_eq!(l["damaged"], true);
        assert!(l.get("cam").is_none() && l.get("class").is_none(), "{l}");
    }
    let indices: Vec<u64> = lines.iter().map(|l| l["frame"].as_u64().unwrap()).collect();
    assert!(
        indices.windows(2).all(|w| w[0] < w[1]),
        "lines in order: {indices:?}"
    );
    let shares = coloured_shares(dir.path(), &out)?;
    assert_eq!(shares.len(), lines.len(), "every frame is in the video");
    for &i in &marked {
        assert!(
            shares[i] < 0.01,
            "damaged frame {i}: {:.3} coloured",
            shares[i]
        );
    }
    let whole: Vec<f64> = (0..lines.len())
        .filter(|i| !marked.contains(i))
        .map(|i| shares[i])
        .collect();
    assert!(
        whole.iter().filter(|&&s| s > 0.2).count() * 2 > whole.len(),
        "whole frames carry the heatmap: {whole:?}"
    );
    // The stats line counts the loss too.
    let total = total_stats(&log);
    assert_eq!(total["packets_lost"], lost.to_string(), "{log}");
    assert_eq!(total["damaged"], damaged.to_string(), "{log}");
    Ok(())
}

#[test]
fn skipped_damaged_frames_are_left_out_and_explained_ones_keep_the_badge() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (lines, log, out) = lossy_run(dir.path(), "0.05", "skip")?;
    let (lost, damaged) = losses(&log);
    assert!(lost > 0 && damaged > 0, "{log}");
    assert!(lines
        .iter()
        .all(|l| l.get("damaged").is_none() && l.get("cam").is_some()));
    assert_eq!(
        coloured_shares(dir.path(), &out)?.len(),
        lines.len(),
        "the video holds the explained frames only"
    );
    let given: u64 = total_stats(&log)["in"].parse()?;
    assert_eq!(given, lines.len() as u64 + damaged, "{log}");

    let (lines, log, _) = lossy_run(dir.path(), "0.05", "explain")?;
    let (_, damaged) = losses(&log);
    let explained_damaged = lines
        .iter()
        .filter(|l| l.get("damaged") == Some(&Value::Bool(true)))
        .inspect(|l| assert!(l.get("cam").is_some() && l.get("class").is_some(), "{l}"))
        .count();
    assert!(damaged > 0, "{log}");
    assert_eq!(explained_damaged as u64, damaged, "{log}");
    Ok(())
}

/// A camera that loses 5% of its packets on the UDP path only, read for `seconds` with
/// `--rtsp-transport transport`: the run's log.
fn udp_lossy_run(transport: &str, seconds: &str) -> Result<String> {
    camera_run(
        &[CAMERA, "--drop-udp", "0.05"],
        "null",
        &[
            "--duration",
            seconds,
            "--rtsp-transport",
            transport,
            "--stats",
            "2",
        ],
    )
}

#[test]
fn a_camera_losing_over_udp_moves_to_tcp_once_and_loses_no_more() -> Result<()> {
    let log = udp_lossy_run("auto", "22")?;
    let switch = "of its RTP packets lost over UDP in the last 10 s; reconnecting over TCP";
    assert_eq!(log.matches(switch).count(), 1, "{log}");
    // Before the switch packets were lost; after it (and the new connection's first stats
    // line) none.
    let after: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains(switch))
        .filter(|l| l.starts_with("stats: t="))
        .skip(1)
        .collect();
    assert!(after.len() >= 3, "{log}");
    let lost = |l: &str| {
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix("packets_lost="))
            .map(str::to_owned)
    };
    let first = lost(after[0]).expect("packets were lost over UDP");
    assert!(
        after
            .iter()
            .all(|l| lost(l).as_deref() == Some(first.as_str())),
        "packets lost over TCP:\n{log}"
    );
    assert!(
        !log.contains("reconnected after"),
        "not counted as a reconnect\n{log}"
    );

    // `udp` stays as it is: it keeps losing.
    let log = udp_lossy_run("udp", "12")?;
    assert!(!log.contains(switch), "{log}");
    assert!(losses(&log).0 > 0, "{log}");
    Ok(())
}

/// `seconds` of `camera` (rtsp_serve's source and flags, with loss bursts) over UDP: each
/// damaged run's recovery, in seconds from the last whole frame before it (the burst's start,
/// to a frame) to the first whole frame after it (capture times), and the run's log.
fn recoveries(camera: &[&str], seconds: &str) -> Result<(Vec<f64>, String)> {
    let dir = tempfile::tempdir()?;
    let meta = dir.path().join("m.jsonl");
    let log = camera_run(
        camera,
        "null",
        &[
            "--duration",
            seconds,
            "--rtsp-transport",
            "udp",
            "--metadata",
            meta.to_str().unwrap(),
        ],
    )?;
    let mut out = Vec::new();
    let (mut whole, mut run_from) = (None, None);
    for l in metadata(&meta)? {
        let t = l["pts_ns"].as_f64().unwrap() / 1e9;
        if l.get("damaged").is_some() {
            run_from = run_from.or(Some(whole));
        } else {
            if let Some(Some(from)) = run_from.take() {
                out.push(t - from);
            }
            whole = Some(t);
        }
    }
    eprintln!("recoveries (s): {out:.3?}");
    Ok((out, log))
}

#[test]
fn a_camera_that_answers_key_frame_requests_recovers_within_half_a_second() -> Result<()> {
    // x264 with a key frame only every 10 s: without the request each burst would leave the
    // picture damaged for seconds.
    let camera = [CAMERA, "--key-int", "250", "--burst", "80:3000"];
    let (recoveries, log) = recoveries(&camera, "13")?;
    assert!(recoveries.len() >= 3, "{recoveries:?}\n{log}");
    assert!(key_frames_asked(&log) >= 3, "{log}");
    for r in &recoveries {
        assert!(*r < 0.5, "recovered after {r:.3} s: {recoveries:?}\n{log}");
    }
    Ok(())
}

#[test]
fn a_camera_that_cannot_answer_recovers_at_its_next_key_frame() -> Result<()> {
    // A file served as stored, a key frame a second: no encoder to answer the request.
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("camera.mp4");
    camera_clip(&clip, "testsrc=size=640x360:rate=25", 25)?;
    let clip = clip.to_str().unwrap();
    let camera = [clip, "--loop", "--burst", "80:3000"];
    let (recoveries, log) = recoveries(&camera, "13")?;
    assert!(recoveries.len() >= 3, "{recoveries:?}\n{log}");
    assert!(key_frames_asked(&log) >= 3, "asked all the same\n{log}");
    for r in &recoveries {
        assert!(*r < 1.1, "recovered after {r:.3} s: {recoveries:?}\n{log}");
    }
    assert!(
        recoveries.iter().any(|r| *r > 0.5),
        "a burst mid-interval waits for the next key frame: {recoveries:?}"
    );
    Ok(())
}

/// Debian's promtool, which scripts/setup.sh takes out of its prometheus package.
fn promtool() -> std::path::PathBuf {
    root().join("target/tools/promtool")
}

#[test]
fn a_lossy_cameras_metrics_pass_promtool() -> Result<()> {
    let promtool = promtool();
    anyhow::ensure!(
        promtool.exists(),
        "{} is missing: run scripts/setup.sh (make test does)",
        promtool.display()
    );
    let server = Running::rtsp_cameras(0, "/cam", CAMERA, &["--drop", "0.03"])?;
    let run = Running::explain(&[
        "--input",
        &server.url()?,
        "--output",
        "null",
        "--model",
        fixture().to_str().unwrap(),
        "--duration",
        "30",
        "--metrics",
        "127.0.0.1:0",
    ])?;
    let base = metrics_url(&run)?;
    eventually(Duration::from_secs(20), "packets counted lost", || {
        let m = scrape(&base)?;
        Ok(get(&m, "gradcam_stream_rtp_packets_lost_total", "0") > 0.0
            && get(&m, "gradcam_stream_frames_damaged_total", "0") > 0.0
            && get(&m, "gradcam_stream_key_frame_requests_total", "0") > 0.0)
    })?;
    let (_, body) = http_get(&format!("{base}/metrics"))?;
    let mut check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    check.stdin.take().unwrap().write_all(body.as_bytes())?;
    let out = check.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{body}");
    assert!(said.trim().is_empty(), "promtool found: {said}");
    run.signal("-INT")?;
    let (code, log) = run.wait(Duration::from_secs(30))?;
    assert_eq!(code, Some(0), "{log}");
    drop(server);
    Ok(())
}
