//! Many streams in one process, on loopback: RTSP sources served by examples/rtsp_serve.rs,
//! a file and a test:// source share the model's batches; each gets its own file, RTSP mount
//! and metadata; a killed source server comes back without disturbing the others; /metrics
//! (parsed as Prometheus text) and /healthz tell the truth; the RTSP server's credentials
//! keep strangers out and never reach the logs; a live recording survives SIGKILL; --segment
//! splits one.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use md5::Digest as _;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn streams_share_the_model_each_with_its_own_outputs_and_a_killed_source_comes_back() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let (p1, p2) = (free_port()?, free_port()?);
    let _cam1 = Running::rtsp_server(p1, "/live", "test:ball:160x120:15")?;
    let cam2 = Running::rtsp_server(p2, "/live", "test:snow:176x144:15")?;
    _cam1.url()?;
    cam2.url()?;
    let rec = dir.path().join("rec-{stream}.mp4");
    let meta = dir.path().join("meta-{stream}.jsonl");
    let run = Running::explain(&[
        "--input",
        &format!("cam1=rtsp://127.0.0.1:{p1}/live"),
        "--input",
        &format!("cam2=rtsp://127.0.0.1:{p2}/live"),
        "--input",
        &format!("clip={}", s(&sample("bikes.mp4"))),
        "--input",
        "test://ball?size=192x144&fps=15",
        "--output",
        s(&rec),
        "--output",
        "rtsp://127.0.0.1:0/{stream}",
        "--metadata",
        s(&meta),
        "--metrics",
        "127.0.0.1:0",
        "--model",
        s(&fixture()),
        "--max-frames",
        "150",
        "--on-overload",
        "block",
        "--reconnect-max",
        "0",
        "--rtsp-transport",
        "tcp",
        "--progress",
        "none",
    ])?;
    let base = metrics_url(&run)?;
    // One RTSP server, a mount per stream, each serving its own stream's size.
    let served = run.wait_for("/cam1", Duration::from_secs(30))?;
    let cam1_out = served
        .split("serving: ")
        .nth(1)
        .context("url")?
        .trim()
        .to_owned();
    let sizes = rtsp_frames(&cam1_out, 5)?;
    assert!(
        sizes.len() == 5 && sizes.iter().all(|&s| s == (160, 120)),
        "{sizes:?}"
    );
    let (code, body) = http_get(&format!("{base}/healthz"))?;
    assert_eq!(code, 200, "{body}");

    // The file stream ends first: its counters then match its finished output.
    eventually(Duration::from_secs(60), "clip's 150 frames out", || {
        Ok(get(&scrape(&base)?, "gradcam_stream_frames_out_total", "clip") == 150.0)
    })?;
    let m = scrape(&base)?;
    assert_eq!(get(&m, "gradcam_stream_frames_in_total", "clip"), 150.0);
    assert_eq!(get(&m, "gradcam_stream_frames_dropped_total", "clip"), 0.0);
    assert!(get(&m, "gradcam_batch_size_count", "") > 0.0, "{m:?}");
    assert!(get(&m, "gradcam_stream_latency_seconds_count", "cam1") > 0.0);

    // Kill one source server mid-run: that stream reconnects, the others go on.
    let before = get(&m, "gradcam_stream_frames_in_total", "cam1");
    drop(cam2);
    run.wait_for("reconnecting in", Duration::from_secs(20))?;
    eventually(Duration::from_secs(10), "cam2 down, cam1 still up", || {
        let m = scrape(&base)?;
        Ok(get(&m, "gradcam_stream_up", "cam2") == 0.0
            && get(&m, "gradcam_stream_up", "cam1") == 1.0
            && get(&m, "gradcam_stream_frames_in_total", "cam1") > before)
    })?;
    let _cam2 = Running::rtsp_server(p2, "/live", "test:snow:176x144:15")?;
    run.wait_for("reconnected after", Duration::from_secs(30))?;

    let (code, log) = run.wait(Duration::from_secs(90))?;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("done: stream cam2: 150 frames, 1 reconnect"),
        "{log}"
    );
    for (name, size) in [
        ("cam1", (160, 120)),
        ("cam2", (176, 144)),
        ("clip", (640, 272)),
        ("3", (192, 144)),
    ] {
        let out = dir.path().join(format!("rec-{name}.mp4"));
        let p = probe(&out, 0).with_context(|| format!("stream {name}"))?;
        assert_eq!(p.pts.len(), 150, "stream {name}");
        assert_eq!((p.width, p.height), size, "stream {name}");
        let lines = metadata(&dir.path().join(format!("meta-{name}.jsonl")))?;
        assert_eq!(lines.len(), 150, "stream {name}");
        assert!(lines.iter().all(|l| l["stream"] == name), "stream {name}");
        let frames: Vec<u64> = lines.iter().map(|l| l["frame"].as_u64().unwrap()).collect();
        assert_eq!(
            frames,
            (0..150).collect::<Vec<_>>(),
            "stream {name} in order"
        );
    }
    Ok(())
}

#[test]
fn a_stream_down_beyond_its_budget_fails_alone_and_turns_healthz_503() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let nothing = free_port()?;
    let run = Running::explain(&[
        "--input",
        &format!("gone=rtsp://127.0.0.1:{nothing}/x"),
        "--input",
        "live=test://ball?size=160x120&fps=15",
        "--output",
        s(&dir.path().join("rec-{stream}.mp4")),
        "--metrics",
        "127.0.0.1:0",
        "--model",
        s(&fixture()),
        "--reconnect-max",
        "2",
        "--duration",
        "8",
        "--progress",
        "none",
    ])?;
    let base = metrics_url(&run)?;
    let (code, body) = http_get(&format!("{base}/healthz"))?;
    assert_eq!(code, 200, "within its budget: {body}");
    eventually(Duration::from_secs(20), "healthz 503", || {
        Ok(http_get(&format!("{base}/healthz"))?.0 == 503)
    })?;
    let (_, body) = http_get(&format!("{base}/healthz"))?;
    assert!(body.starts_with("stream gone is down: "), "{body}");
    assert_eq!(body.trim_end().lines().count(), 1, "{body}");
    // The other stream still flows.
    let m = scrape(&base)?;
    assert_eq!(get(&m, "gradcam_stream_up", "live"), 1.0);

    let (code, log) = run.wait(Duration::from_secs(30))?;
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("error: stream gone: rtsp://127.0.0.1:")
            && log.contains("the other streams go on"),
        "{log}"
    );
    let last = log.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("error: 1 of 2 streams failed: gone ("),
        "{log}"
    );
    assert_eq!(files_in(dir.path()), vec!["rec-live.mp4"], "{log}");
    let p = probe(&dir.path().join("rec-live.mp4"), 0)?;
    assert!(p.pts.len() > 60, "{} frames", p.pts.len());
    Ok(())
}

#[test]
fn the_rtsp_server_keeps_strangers_out_and_credentials_stay_out_of_the_logs() -> Result<()> {
    let port = free_port()?;
    let source = Running::rtsp_server(port, "/cam", "test:ball:160x120:15")?;
    source.url()?;
    let run = Running::explain(&[
        "--input",
        &format!("door=rtsp://admin:hunter2-src@127.0.0.1:{port}/cam"),
        "--output",
        "rtsp://127.0.0.1:0/{stream}",
        "--rtsp-auth",
        "viewer:s3cret-view",
        "--rtsp-transport",
        "tcp",
        "--model",
        s(&fixture()),
        "--duration",
        "14",
        "--stats",
        "1",
        "--progress",
        "lines",
    ])?;
    let url = run.url()?;
    assert!(url.ends_with("/door"), "{url}");
    let (code, challenges) = rtsp_describe(&url, None)?;
    assert_eq!(code, 401);
    // Digest and Basic are both offered; a Digest answer (RFC 2617, no qop, as the server
    // asks) is let in, and one made with a wrong password is not.
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic ")),
        "{challenges:?}"
    );
    let digest = challenges
        .iter()
        .find(|c| c.starts_with("Digest "))
        .with_context(|| format!("no Digest offered: {challenges:?}"))?;
    let param = |name: &str| -> Result<String> {
        let at = digest
            .find(&format!("{name}=\""))
            .with_context(|| format!("no {name} in {digest}"))?;
        let rest = &digest[at + name.len() + 2..];
        Ok(rest[..rest.find('"').context("an unclosed quote")?].to_owned())
    };
    let (realm, nonce) = (param("realm")?, param("nonce")?);
    let md5 = |s: String| format!("{:x}", md5::Md5::digest(s.as_bytes()));
    let answer = |password: &str| {
        let ha1 = md5(format!("viewer:{realm}:{password}"));
        let ha2 = md5(format!("DESCRIBE:{url}"));
        let response = md5(format!("{ha1}:{nonce}:{ha2}"));
        format!(
            r#"Digest username="viewer", realm="{realm}", nonce="{nonce}", uri="{url}", response="{response}""#
        )
    };
    assert_eq!(rtsp_describe(&url, Some(&answer("s3cret-view")))?.0, 200);
    assert_eq!(rtsp_describe(&url, Some(&answer("guess")))?.0, 401);
    let with = url.replace("rtsp://", "rtsp://viewer:s3cret-view@");
    let wrong = url.replace("rtsp://", "rtsp://viewer:guess@");
    let ffprobe = |u: &str| {
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-select_streams",
                "v:0",
            ])
            .args(["-show_entries", "stream=width,height", "-of", "csv=p=0", u])
            .output()
    };
    let ok = ffprobe(&with)?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "160,120");
    assert!(!ffprobe(&wrong)?.status.success(), "a wrong password plays");

    // The source goes away: the reconnect lines name the input, masked.
    drop(source);
    run.wait_for("reconnecting in", Duration::from_secs(20))?;
    let (code, log) = run.wait(Duration::from_secs(40))?;
    assert!(code == Some(0) || code == Some(1), "{log}");
    assert!(log.contains("rtsp://admin:***@127.0.0.1"), "{log}");
    assert!(!log.contains("hunter2-src"), "{log}");
    assert!(!log.contains("s3cret-view"), "{log}");
    Ok(())
}

#[test]
fn serving_to_the_network_without_credentials_warns() -> Result<()> {
    let o = run(&[
        "--input",
        "test://ball?size=64x48&fps=15",
        "--output",
        "rtsp://0.0.0.0:0/x",
        "--model",
        s(&fixture()),
        "--max-frames",
        "3",
    ])?;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let warnings: Vec<_> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("--rtsp-auth"), "{err}");
    Ok(())
}

#[test]
fn a_live_recording_killed_outright_stays_playable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("rec.mp4");
    let run = Running::explain(&[
        "--input",
        "test://ball?size=320x240&fps=15",
        "--output",
        s(&out),
        "--model",
        s(&fixture()),
        "--progress",
        "lines",
    ])?;
    run.wait_for("progress:", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(8));
    run.signal("-KILL")?;
    let (code, _) = run.wait(Duration::from_secs(10))?;
    assert_eq!(code, None, "killed by a signal");
    let secs = ffprobe_seconds(&out)?;
    assert!(secs >= 6.0, "{secs} s of video survived");
    assert!(probe(&out, 0)?.pts.len() >= 90);

    // A file-to-file job killed outright leaves a hidden partial; the next run removes it.
    let clip = dir.path().join("o.mp4");
    let job = Running::explain(&[
        "--input",
        s(&sample("bigbuckbunny.mp4")),
        "--output",
        s(&clip),
        "--model",
        s(&model()),
        "--progress",
        "lines",
    ])?;
    job.wait_for("progress:", Duration::from_secs(30))?;
    job.signal("-KILL")?;
    job.wait(Duration::from_secs(10))?;
    assert!(
        files_in(dir.path())
            .iter()
            .any(|f| f.starts_with(".o.mp4.partial-")),
        "{:?}",
        files_in(dir.path())
    );
    let o = explain(
        s(&sample("bikes.mp4")),
        s(&clip),
        s(&fixture()),
        &["--max-frames", "5"],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files_in(dir.path()), vec!["o.mp4", "rec.mp4"]);
    Ok(())
}

/// Seconds of video ffprobe decodes in `path`.
fn ffprobe_seconds(path: &Path) -> Result<f64> {
    let times = packet_times(&[], path)?;
    let (lo, hi) = times
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &t| (a.min(t), b.max(t)));
    anyhow::ensure!(!times.is_empty(), "no packets in {}", path.display());
    Ok(hi - lo)
}

#[test]
fn segments_split_a_live_recording_into_playable_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let o = run(&[
        "--input",
        "test://ball?size=160x120&fps=15",
        "--output",
        s(&dir.path().join("rec.mp4")),
        "--segment",
        "5s",
        "--duration",
        "16",
        "--model",
        s(&fixture()),
    ])?;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let written: usize = err
        .lines()
        .find_map(|l| l.strip_prefix("done: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("the done line")?;
    let files = files_in(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let mut frames = 0;
    for (i, f) in files.iter().enumerate() {
        assert_eq!(f, &format!("rec-{i:05}.mp4"));
        frames += probe(&dir.path().join(f), 0)?.pts.len();
    }
    assert_eq!(frames, written, "{files:?}");
    Ok(())
}

#[test]
fn a_short_soak_recovers_both_killed_cameras() -> Result<()> {
    // `make soak`'s script, shortened as CI runs it: 4 live RTSP cameras for 60 s, two camera
    // servers killed and restarted midway. Asserted: no crash, both killed streams recover.
    // Its timings are reported, not asserted (that is `make soak`'s job).
    let o = Command::new(python())
        .arg(root().join("scripts/soak.py"))
        .args([
            "--ci",
            "--streams",
            "4",
            "--seconds",
            "60",
            "--size",
            "320x180",
        ])
        .args(["--model", s(&fixture())])
        .output()?;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("recovery: 2 of 2 killed streams came back"),
        "{out}"
    );
    assert!(out.contains("soak: PASS"), "{out}");
    Ok(())
}
