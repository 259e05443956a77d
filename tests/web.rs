//! The web view (`--web`) as a person uses it: Debian's Chromium, driven by Playwright
//! (tests/web_view.py), plays the live streams; independent clients (ffprobe, raw sockets)
//! check the timestamps, the credentials, the recordings and the slow viewers.

mod common;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::*;

/// The browser half of a check: web_view.py's one JSON line, printed; fails with its reason.
fn browser(args: &[&str]) -> Result<serde_json::Value> {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        bail!("Debian's chromium is not installed (make setup installs it)");
    }
    let o = std::process::Command::new(python())
        .arg(root().join("tests/web_view.py"))
        .args(args)
        .output()
        .context("running tests/web_view.py")?;
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().last().unwrap_or("");
    println!("web_view.py {}: {line}", args[0]);
    if !o.status.success() {
        bail!(
            "web_view.py {args:?} failed: {line}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(serde_json::from_str(line)?)
}

/// The web view's base URL a run prints (`web: http://…/`).
fn web_url(run: &Running) -> Result<String> {
    let l = run.wait_for("web: ", Duration::from_secs(60))?;
    let url = l.split_whitespace().nth(1).context("a URL")?;
    Ok(url.trim_end_matches('/').to_owned())
}

/// `/api/streams`, by stream name.
fn streams(url: &str) -> Result<std::collections::HashMap<String, serde_json::Value>> {
    let (code, body) = http_get(&format!("{url}/api/streams"))?;
    anyhow::ensure!(code == 200, "/api/streams: {code}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body)?;
    Ok(list
        .into_iter()
        .map(|s| (s["name"].as_str().unwrap_or("").to_owned(), s))
        .collect())
}

fn dropped(url: &str, name: &str) -> Result<u64> {
    Ok(streams(url)?[name]["dropped"].as_u64().unwrap_or(u64::MAX))
}

/// The upper bound of the bucket of `stream`'s latency histogram (/metrics) that holds its
/// 95th percentile, in ms.
fn latency_p95_ms(url: &str, stream: &str) -> Result<f64> {
    let (code, body) = http_get(&format!("{url}/metrics"))?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))?;
    let buckets = parsed
        .samples
        .into_iter()
        .filter(|s| s.metric == "gradcam_stream_latency_seconds")
        .filter(|s| s.labels.get("stream") == Some(stream))
        .find_map(|s| match s.value {
            prometheus_parse::Value::Histogram(h) => Some(h),
            _ => None,
        })
        .with_context(|| format!("no latency for {stream} in /metrics"))?;
    let total = buckets.last().map_or(0.0, |b| b.count);
    anyhow::ensure!(total > 0.0, "no latency for {stream} in /metrics");
    let le = buckets
        .iter()
        .find(|b| b.count >= 0.95 * total)
        .map(|b| b.less_than)
        .context("a bucket")?;
    Ok(le * 1000.0)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")
}

#[test]
fn two_live_streams_play_in_the_browser_and_a_lost_one_says_so() -> Result<()> {
    let camera = Running::rtsp_server(0, "/cam", "test:ball:320x240:15")?;
    let cam_url = camera.url()?;
    let run = Running::explain(&[
        "--input",
        "a=test://ball?size=640x360&fps=15",
        "--input",
        &format!("b={cam_url}"),
        "--web",
        "127.0.0.1:0",
        "--reconnect-max",
        "2",
        "--progress",
        "none",
    ])?;
    let url = web_url(&run)?;
    // The page's latency (capture to display) is checked against the program's own (capture
    // to output, its /metrics histogram) on this same run: the web path (the live encoder,
    // the WebSocket, the browser's buffer) may add at most 700 ms to it. A fixed bound held at
    // 40 frames/s and failed on a machine explaining 20.
    let r = browser(&[
        "overview",
        &url,
        "--streams",
        "a=640x360,b=320x240",
        "--seconds",
        "20",
        "--max-p95",
        "10000",
    ])?;
    for name in ["a", "b"] {
        let f = &r["figures"][name];
        let program = latency_p95_ms(&url, name)?;
        // The page times the frames headless Chromium paints (requestVideoFrameCallback): 5
        // to 30 of them in 20 s here. Over fewer than 20 the 95th percentile is the one worst
        // frame; the median is compared then (a web path that buffers moves it as much).
        let sampled = f["frames"].as_u64().context("a frame count")?;
        let (which, page) = match sampled {
            20.. => ("p95", f["latency_p95_ms"].as_f64().context("a p95")?),
            _ => ("p50", f["latency_p50_ms"].as_f64().context("a p50")?),
        };
        println!(
            "stream {name}: latency p50 {} ms, p95 {} ms over {sampled} frames in the browser; \
             the program's p95 at most {program} ms",
            f["latency_p50_ms"], f["latency_p95_ms"]
        );
        assert!(
            page <= program + 700.0,
            "stream {name}: the page's {which} {page} ms (over {sampled} frames) is over the \
             program's p95 {program} ms + 700"
        );
    }
    // The camera goes away: its tile says so with the reason, the other tile plays on.
    drop(camera);
    let start = std::time::Instant::now();
    loop {
        let s = streams(&url)?;
        let b = &s["b"];
        if b["state"] != "up" && b["reason"].as_str().is_some_and(|r| !r.is_empty()) {
            println!("b: {} ({})", b["state"], b["reason"]);
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "b still {b} after its camera went away"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Stream a plays on while b is down: at least half the pace it kept in the overview above
    // (on this 2-core machine, overloaded on purpose, 0.8 media seconds a second).
    let pace = r["figures"]["a"]["advanced_s"]
        .as_f64()
        .context("a's advance")?
        / 20.0;
    browser(&[
        "tile-state",
        &url,
        "b",
        "--streams",
        "a=640x360",
        "--seconds",
        "8",
        "--baseline-rate",
        &format!("{:.3}", pace.min(1.0)),
    ])?;
    Ok(())
}

#[test]
fn a_streams_page_shows_its_timeline_top_k_and_a_second_tab() -> Result<()> {
    let run = Running::explain(&[
        "--input",
        "cam=test://ball?size=320x240&fps=10",
        "--web",
        "127.0.0.1:0",
        "--top-k",
        "3",
        "--progress",
        "none",
    ])?;
    let url = web_url(&run)?;
    let shot = tempfile::tempdir()?;
    let png = shot.path().join("stream.png");
    let r = browser(&[
        "stream",
        &url,
        "cam",
        "--top-k",
        "3",
        "--seconds",
        "6",
        "--screenshot",
        png.to_str().unwrap(),
    ])?;
    let f = &r["figures"];
    let picture = image::open(&png)?;
    assert!(picture.width() >= 1000, "a screenshot of the page");
    assert_eq!(f["bars"], 3, "{f}");
    assert!(f["points"].as_u64().unwrap_or(0) > 10, "{f}");
    assert_eq!(
        f["drops_while_second_tab"], 0,
        "the second tab cost frames: {f}"
    );
    let (code, body) = http_get(&format!("{url}/stream/nope"))?;
    assert_eq!(code, 404);
    assert!(body.contains("no stream named nope"), "{body}");
    Ok(())
}

#[test]
fn ten_viewers_share_one_encoder_and_a_stalled_viewer_holds_nobody() -> Result<()> {
    let port = free_port()?;
    let rtsp = format!("rtsp://127.0.0.1:{port}/cam");
    let run = Running::explain(&[
        "--input",
        "cam=test://ball?size=320x240&fps=10",
        "--output",
        &rtsp,
        "--web",
        "127.0.0.1:0",
        // What viewers cost the stream is under test, not the model: with the real one, ten
        // Chromium tabs beside it on a 2-core CPU without AVX-512 left it short of 10 fps.
        "--model",
        fixture().to_str().unwrap(),
        "--progress",
        "none",
    ])?;
    let url = web_url(&run)?;
    std::thread::sleep(Duration::from_secs(2));
    // A viewer that connects and never reads, beside one that plays.
    let before = dropped(&url, "cam")?;
    let stall_url = url.clone();
    let stalled = std::thread::spawn(move || {
        browser(&["stall", &stall_url, "cam", "--seconds", "14"]).map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = rss_kib(run.child.id())?;
    let dir = tempfile::tempdir()?;
    let mp4 = dir.path().join("other.mp4");
    let r = browser(&[
        "record-ws",
        &url,
        "cam",
        "--seconds",
        "11",
        "--out",
        mp4.to_str().unwrap(),
    ])?;
    let played = packet_times(&[], &mp4)?.len();
    println!("the other viewer played {played} frames in 11 s: {r}");
    assert!(played >= 80, "the other viewer got {played} frames");
    let rss_after = rss_kib(run.child.id())?;
    stalled.join().expect("the stall thread")?;
    println!(
        "a viewer stalled for 14 s: RSS {} → {} MiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "memory grew with the stalled socket: {rss_before} → {rss_after} KiB"
    );
    assert_eq!(
        dropped(&url, "cam")?,
        before,
        "the stalled viewer cost frames"
    );
    // Ten viewers in the browser: one encoder (the RTSP output's), no frame lost.
    let before = dropped(&url, "cam")?;
    let r = browser(&["viewers", &url, "cam", "--count", "10", "--seconds", "10"])?;
    let s = streams(&url)?;
    let cam = &s["cam"];
    println!(
        "{} viewers: {} encoder(s), advanced {}",
        r["figures"]["viewers"], cam["encoders"], r["figures"]["advanced_s"]
    );
    assert_eq!(cam["encoders"], 1, "RTSP and web share one encoder: {cam}");
    assert_eq!(
        cam["dropped"].as_u64(),
        Some(before),
        "viewers cost frames: {cam}"
    );
    // RTSP from the same encoder still plays.
    assert!(rtsp_frames(&rtsp, 5)?.len() >= 5);
    Ok(())
}

#[test]
fn live_outputs_keep_the_cameras_spacing_and_a_late_viewer_starts_at_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let rtsp = format!("rtsp://127.0.0.1:{port}/cam");
    let run = Running::explain(&[
        "--input",
        "cam=test://ball?size=320x240&fps=25",
        "--output",
        &rtsp,
        "--web",
        "127.0.0.1:0",
        // The spacing of the outputs is under test, not the model: the tiny one keeps up with
        // 25 fps on any machine (a CPU without AVX-512 explains the real one at about 35 fps,
        // and drops then show as gaps).
        "--model",
        fixture().to_str().unwrap(),
        "--progress",
        "none",
    ])?;
    let url = web_url(&run)?;
    std::thread::sleep(Duration::from_secs(3));
    // The web: a raw WebSocket client's fMP4, read back by ffprobe.
    let mp4 = dir.path().join("web.mp4");
    let r = browser(&[
        "record-ws",
        &url,
        "cam",
        "--seconds",
        "6",
        "--out",
        mp4.to_str().unwrap(),
    ])?;
    let first = r["figures"]["first_frame_s"].as_f64().unwrap_or(99.0);
    println!("a viewer joining mid-stream got its first frame in {first:.2} s");
    assert!(first < 1.0, "{r}");
    let web = intervals(&packet_times(&[], &mp4)?);
    // RTSP: ffprobe's own client.
    let rtsp_times = packet_times(&["-rtsp_transport", "tcp", "-read_intervals", "%+6"], &rtsp)?;
    let rtsp_gaps = intervals(&rtsp_times);
    for (what, gaps) in [("web", &web), ("rtsp", &rtsp_gaps)] {
        let (p50, p90) = (quantile(gaps, 0.5), quantile(gaps, 0.9));
        let p10 = quantile(gaps, 0.1);
        println!(
            "{what}: {} frame intervals, p10 {p10:.1} ms, median {p50:.1} ms, p90 {p90:.1} ms",
            gaps.len()
        );
        assert!(gaps.len() > 50, "{what}: {} frames", gaps.len());
        assert!(
            (36.0..=44.0).contains(&p50) && p10 >= 30.0 && p90 <= 50.0,
            "{what}'s frames do not keep the camera's 40 ms: {gaps:?}"
        );
    }
    Ok(())
}

#[test]
fn credentials_guard_everything_and_tls_carries_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    anyhow::ensure!(st.status.success(), "openssl: {}", stderr(&st));
    let rec = dir.path().join("rec.mp4");
    let port = free_port()?;
    let run = Running::explain(&[
        "--input",
        "cam=test://ball?size=320x240&fps=10",
        "--output",
        rec.to_str().unwrap(),
        "--output",
        &format!("rtsp://127.0.0.1:{port}/cam"),
        "--web",
        "127.0.0.1:0",
        "--web-auth",
        "viewer:s3cret",
        "--rtsp-auth",
        "viewer:s3cret",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--progress",
        "none",
    ])?;
    let url = web_url(&run)?;
    assert!(url.starts_with("https://"), "{url}");
    std::thread::sleep(Duration::from_secs(3));
    let get = |path: &str, user: Option<&str>| -> Result<u16> {
        let mut c = std::process::Command::new("curl");
        c.args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ]);
        if let Some(u) = user {
            c.args(["-u", u]);
        }
        let o = c.arg(format!("{url}{path}")).output()?;
        Ok(String::from_utf8_lossy(&o.stdout).parse().unwrap_or(0))
    };
    let recording = "/recordings/0/rec.mp4";
    for path in [
        "/",
        "/stream/cam",
        "/live/cam",
        recording,
        "/metrics",
        "/api/streams",
    ] {
        assert_eq!(get(path, None)?, 401, "{path} without credentials");
        assert_eq!(
            get(path, Some("viewer:wrong"))?,
            401,
            "{path}, wrong password"
        );
        if path != "/live/cam" {
            assert_eq!(
                get(path, Some("viewer:s3cret"))?,
                200,
                "{path} with credentials"
            );
        }
    }
    // Every answer carries the protective headers, a refusal too; behind credentials nothing
    // is cached.
    let headers = |path: &str, user: Option<&str>| -> Result<String> {
        let mut c = std::process::Command::new("curl");
        c.args(["-sk", "-o", "/dev/null", "-D", "-", "--max-time", "5"]);
        if let Some(u) = user {
            c.args(["-u", u]);
        }
        let o = c.arg(format!("{url}{path}")).output()?;
        Ok(String::from_utf8_lossy(&o.stdout).to_ascii_lowercase())
    };
    for (path, user) in [
        ("/", Some("viewer:s3cret")),
        ("/stream/cam", Some("viewer:s3cret")),
        ("/assets/gradcam.js", Some("viewer:s3cret")),
        ("/", None),
    ] {
        let h = headers(path, user)?;
        for want in [
            "content-security-policy: default-src 'self'; script-src 'self'; style-src 'self';",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "cache-control: no-store",
        ] {
            assert!(h.contains(want), "{path} ({user:?}) lacks {want}: {h}");
        }
    }
    // The live endpoint takes a WebSocket upgrade: with the credentials it gives frames.
    let r = browser(&[
        "record-ws",
        &url,
        "cam",
        "--seconds",
        "2",
        "--user",
        "viewer:s3cret",
        "--insecure",
    ])?;
    assert!(r["figures"]["video_messages"].as_u64() > Some(5), "{r}");
    // A browser with the credentials plays over https:// (and its WebSocket over wss://).
    browser(&[
        "overview",
        &url,
        "--streams",
        "cam=320x240",
        "--seconds",
        "6",
        "--user",
        "viewer:s3cret",
        "--insecure",
        "--max-p95",
        "2000",
    ])?;
    // RTSPS, through ffprobe.
    let o = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "10000000", "-show_entries"])
        .args(["stream=codec_name,width,height", "-of", "csv=p=0"])
        .arg(format!("rtsps://viewer:s3cret@127.0.0.1:{port}/cam"))
        .output()?;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("h264,320,240"), "rtsps: {out} {}", stderr(&o));
    Ok(())
}

#[test]
fn recordings_play_in_the_page_and_nothing_else_is_reachable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rec = dir.path().join("rec.mp4");
    let meta = dir.path().join("rec.jsonl");
    let run = Running::explain(&[
        "--input",
        "cam=test://ball?size=320x240&fps=10",
        "--output",
        rec.to_str().unwrap(),
        "--metadata",
        meta.to_str().unwrap(),
        "--web",
        "127.0.0.1:0",
        "--progress",
        "none",
    ])?;
    let url = web_url(&run)?;
    std::thread::sleep(Duration::from_secs(5));
    let r = browser(&["recordings", &url])?;
    assert_eq!(r["figures"]["files"], serde_json::json!(["rec.mp4"]), "{r}");
    let (code, body) = http_get(&format!("{url}/api/recordings"))?;
    assert_eq!(code, 200);
    let list: Vec<serde_json::Value> = serde_json::from_str(&body)?;
    let file_url = format!("{url}{}", list[0]["url"].as_str().context("url")?);
    let o = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
        ])
        .args(["-r", "0-99", &file_url])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "206 100");
    for path in [
        "/recordings/../../etc/passwd",
        "/recordings/0/..%2F..%2F..%2Fetc%2Fpasswd",
        "/recordings/0/passwd",
        "/recordings/7/rec.mp4",
    ] {
        let o = std::process::Command::new("curl")
            .args([
                "-s",
                "--path-as-is",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!("{url}{path}"))
            .output()?;
        assert_eq!(String::from_utf8_lossy(&o.stdout), "404", "{path}");
    }
    // Ctrl-C: the page's streams end, the recording is finished and plays.
    run.signal("-INT")?;
    let (code, out) = run.wait(Duration::from_secs(30))?;
    assert_eq!(code, Some(0), "{out}");
    let p = probe(&rec, 0)?;
    assert!(p.pts.len() > 20, "{} frames in the recording", p.pts.len());
    assert!(metadata(&meta)?.len() > 20);

    // Segments are listed as splitmuxsink opens them, newest first.
    let seg = dir.path().join("seg.mp4");
    let run = Running::explain(&[
        "--input",
        "cam=test://ball?size=160x120&fps=10",
        "--output",
        seg.to_str().unwrap(),
        "--segment",
        "2s",
        "--web",
        "127.0.0.1:0",
        "--progress",
        "none",
    ])?;
    let url = web_url(&run)?;
    std::thread::sleep(Duration::from_secs(7));
    let (_, body) = http_get(&format!("{url}/api/recordings"))?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&body)?;
    let files: Vec<&str> = list.iter().filter_map(|r| r["file"].as_str()).collect();
    println!("segments listed: {files:?}");
    assert!(files.len() >= 2, "{files:?}");
    assert!(files[0] > files[1], "newest first: {files:?}");
    Ok(())
}

/// Successive differences in milliseconds; a frame split over two packets (a key frame and
/// its parameter sets) counts once.
fn intervals(times: &[f64]) -> Vec<f64> {
    let mut t = times.to_vec();
    t.dedup();
    t.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect()
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(((s.len() as f64 * q) as usize).min(s.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

#[test]
fn a_lossy_cameras_tile_shows_its_loss_and_the_metrics_count_it() -> Result<()> {
    // A camera losing 5% of its RTP packets (examples/rtsp_serve --drop, seeded).
    let camera = Running::rtsp_cameras(0, "/cam", "test:ball:640x360:25", &["--drop", "0.05"])?;
    let run = Running::explain(&[
        "--input",
        &format!("door={}", camera.url()?),
        "--model",
        fixture().to_str().unwrap(),
        "--web",
        "127.0.0.1:0",
        "--progress",
        "none",
    ])?;
    let url = web_url(&run)?;
    let r = browser(&["tile-loss", &url, "door"])?;
    println!("door: {}", r["figures"]["counts"]);
    let s = &streams(&url)?["door"];
    let percent = s["loss_percent"].as_f64().context("a loss share")?;
    assert!(percent > 0.0 && percent < 50.0, "{s}");
    assert!(s["packets_lost"].as_u64() > Some(0) && s["frames_damaged"].as_u64() > Some(0));
    let (code, body) = http_get(&format!("{url}/metrics"))?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))?;
    for name in [
        "gradcam_stream_rtp_packets_lost_total",
        "gradcam_stream_frames_damaged_total",
    ] {
        let sample = parsed
            .samples
            .iter()
            .find(|m| m.metric == name && m.labels.get("stream") == Some("door"))
            .with_context(|| format!("{name}{{stream=\"door\"}} in /metrics"))?;
        match sample.value {
            prometheus_parse::Value::Counter(v) => assert!(v > 0.0, "{name} {v}"),
            ref v => bail!("{name} is not a counter: {v:?}"),
        }
    }
    Ok(())
}
