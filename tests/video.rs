//! End to end on video: the real model, real clips, outputs decoded back and compared.

mod common;

use anyhow::Result;
use common::*;

/// Run on `input`, then check the output frame for frame against the input.
fn assert_frame_exact(
    input: &std::path::Path,
    out_name: &str,
    model: &std::path::Path,
) -> Result<Vec<serde_json::Value>> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join(out_name);
    let meta = dir.path().join("meta.jsonl");
    let o = explain(
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        model.to_str().unwrap(),
        &["--metadata", meta.to_str().unwrap()],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let a = probe(input, 0)?;
    let b = probe(&out, 0)?;
    assert!(!a.pts.is_empty());
    assert_eq!((b.width, b.height), (a.width, a.height), "resolution");
    assert_eq!(b.rate, a.rate, "frame rate");
    assert_eq!(b.pts.len(), a.pts.len(), "frame count");
    // GStreamer's qtdemux shifts B-frame streams by their composition offset, so compare its
    // timestamps relative to the first frame, and the absolute ones as ffprobe reads them.
    let rel = |p: &[u64]| p.iter().map(|t| t - p[0]).collect::<Vec<_>>();
    assert_eq!(rel(&b.pts), rel(&a.pts), "frame spacing");
    assert_eq!(ffprobe_pts(&out)?, ffprobe_pts(input)?, "timestamps");
    // Only the output and the metadata: no partial files left beside them.
    let mut want = vec!["meta.jsonl".to_owned(), out_name.to_owned()];
    want.sort();
    assert_eq!(files_in(dir.path()), want);
    let lines = metadata(&meta)?;
    assert_eq!(lines.len(), a.pts.len(), "one metadata line per frame");
    let shown = ffprobe_pts(input)?;
    for (i, (l, pts)) in lines.iter().zip(&shown).enumerate() {
        // The metadata carries the times a player shows (the edit list applied).
        assert_eq!(l["frame"], i as u64);
        // (ffprobe prints microseconds.)
        let got = l["pts_ns"].as_u64().unwrap_or(u64::MAX);
        assert!(got.abs_diff(*pts) < 1_000, "frame {i}: {got} against {pts}");
    }
    Ok(lines)
}

#[test]
fn bikes_is_frame_exact_and_explained() -> Result<()> {
    let lines = assert_frame_exact(&sample("bikes.mp4"), "bikes.mp4", &model())?;
    for l in &lines {
        let (h, w) = (
            l["cam"]["h"].as_u64().unwrap(),
            l["cam"]["w"].as_u64().unwrap(),
        );
        assert_eq!((h, w), (7, 7));
        let data: Vec<f64> = l["cam"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(data.len(), 49);
        assert!(data.iter().all(|v| (0.0..=1.0).contains(v)));
        let score = l["score"].as_f64().unwrap();
        assert!(score > 0.0 && score <= 1.0);
        let class = l["class"].as_u64().unwrap();
        assert!(class < 1000);
        assert!(!l["label"].as_str().unwrap().is_empty());
    }
    Ok(())
}

#[test]
fn bigbuckbunny_is_frame_exact() -> Result<()> {
    assert_frame_exact(&sample("bigbuckbunny.mp4"), "bbb.mkv", &model())?;
    Ok(())
}

#[test]
fn odd_size_ntsc_rate_clip_is_frame_exact() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("odd.mp4");
    make_clip(&clip, 176, 144, (30000, 1001), 45)?;
    assert_frame_exact(&clip, "odd_out.mp4", &model())?;
    // Odd width (RGB rows not a multiple of 4 bytes), on the small model.
    let clip = dir.path().join("odd2.mp4");
    make_clip(&clip, 175, 97, (30000, 1001), 20)?;
    let b = probe(&clip, 0)?;
    assert_frame_exact(&clip, "odd2_out.mp4", &fixture())?;
    assert_eq!((b.width, b.height), (175, 97));
    Ok(())
}

#[test]
fn the_heatmap_is_drawn_over_the_frames() -> Result<()> {
    // alpha 0 must reproduce the input (no label drawn); alpha 1 must change it a lot.
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("in.mp4");
    make_clip(&clip, 160, 120, (25, 1), 8)?;
    let mut means = vec![];
    for alpha in ["0", "1"] {
        let out = dir.path().join(format!("a{alpha}.mp4"));
        let o = explain(
            clip.to_str().unwrap(),
            out.to_str().unwrap(),
            fixture().to_str().unwrap(),
            &["--alpha", alpha, "--no-label"],
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
        means.push(probe(&out, 1)?.frames_rgb.remove(0));
    }
    let src = probe(&clip, 1)?.frames_rgb.remove(0);
    let diff = |a: &[u8], b: &[u8]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / a.len() as f64
    };
    assert!(
        diff(&src, &means[0]) < 4.0,
        "alpha 0 changed the frame: {}",
        diff(&src, &means[0])
    );
    assert!(
        diff(&src, &means[1]) > 30.0,
        "alpha 1 left the frame: {}",
        diff(&src, &means[1])
    );
    Ok(())
}

#[test]
fn class_flag_fixes_the_target() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("in.mp4");
    make_clip(&clip, 64, 48, (25, 1), 5)?;
    let out = dir.path().join("o.mp4");
    let meta = dir.path().join("m.jsonl");
    let o = explain(
        clip.to_str().unwrap(),
        out.to_str().unwrap(),
        fixture().to_str().unwrap(),
        &["--class", "7", "--metadata", meta.to_str().unwrap()],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = metadata(&meta)?;
    assert_eq!(lines.len(), 5);
    assert!(lines
        .iter()
        .all(|l| l["class"] == 7 && l["label"] == "class7"));
    Ok(())
}

#[test]
fn config_file_is_read_and_flags_override_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("in.mp4");
    make_clip(&clip, 64, 48, (25, 1), 3)?;
    let out = dir.path().join("o.mp4");
    let meta = dir.path().join("m.jsonl");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "model = \"{}\"\nclass = 2\nbatch_size = 2\nmetadata = \"{}\"\n",
            fixture().display(),
            meta.display()
        ),
    )?;
    let o = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--input",
        clip.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--class",
        "3",
    ])?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(metadata(&meta)?.iter().all(|l| l["class"] == 3));
    std::fs::write(&cfg, "batch_sise = 2\n")?;
    let o = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--input",
        clip.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ])?;
    assert_fails(&o, 2, "unknown field `batch_sise`");
    Ok(())
}

#[test]
fn help_and_version() -> Result<()> {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
        .arg("--help")
        .output()?;
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for flag in [
        "--input",
        "--output",
        "--config",
        "--model",
        "--device",
        "--batch-size",
        "--max-wait-ms",
        "--queue-capacity",
        "--class",
        "--alpha",
        "--metadata",
        "--threads",
        "--progress",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert!(
        help.contains("[default: 8]") && help.contains("[default: 0.5]"),
        "{help}"
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
        .arg("--version")
        .output()?;
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("gradcam-stream "));
    Ok(())
}

#[test]
fn stats_say_where_the_time_goes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let o = explain(
        sample("bikes.mp4").to_str().unwrap(),
        out.to_str().unwrap(),
        model().to_str().unwrap(),
        &["--stats", "1"],
    )?;
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let total = err
        .lines()
        .find(|l| l.starts_with("stats: total"))
        .unwrap_or_else(|| panic!("no total line: {err}"));
    let field = |k: &str| -> f64 {
        let v = total
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {total}"));
        v.trim_end_matches(['%', 'm', 's']).parse().unwrap()
    };
    for stage in ["source", "model", "overlay", "output"] {
        let share = field(stage);
        assert!((0.0..=100.0).contains(&share), "{stage}={share}: {total}");
    }
    // On a CPU the model is the bottleneck of this run: the stage busiest by far.
    assert!(field("model") >= 50.0, "{total}");
    assert!(field("queue_wait") > 0.0, "{total}");
    // Whole frames copied per frame explained: once into the batch the model takes; on a GPU
    // also to the device, and the blended frame back (this run's output shows every frame).
    let gpu = if tch::Cuda::is_available() { 1.0 } else { 0.0 };
    assert_eq!(
        [field("host"), field("to_device"), field("from_device")],
        [1.0 + gpu, gpu, gpu],
        "{total}"
    );
    if !tch::Cuda::is_available() {
        assert!(!total.contains("gpu_mem="), "{total}");
    }
    Ok(())
}

/// `--precision auto` and `--layout auto` (the defaults) time each candidate at start and keep
/// the fastest, say so in the start line and the `--stats` total, and remember the choice: the
/// next start with the same model takes it from the file without timing. Given settings are
/// not timed.
#[test]
fn auto_precision_and_layout_are_timed_once_and_remembered() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let out = dir.path().join("o.mp4");
    let start = |extra: &[&str]| -> Result<(String, String)> {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
            .env("GRADCAM_CACHE_DIR", &cache)
            .args(["--input", sample("bikes.mp4").to_str().unwrap()])
            .args(["--output", out.to_str().unwrap(), "--max-frames", "8"])
            .args(["--progress", "none", "--stats", "5"])
            .args(extra)
            .output()?;
        let err = stderr(&o);
        anyhow::ensure!(o.status.success(), "{err}");
        let line = |p: &str| {
            let found: Vec<&str> = err.lines().filter(|l| l.starts_with(p)).collect();
            assert_eq!(found.len(), 1, "one {p} line: {err}");
            found[0].to_owned()
        };
        Ok((line("start: "), line("stats: total")))
    };
    let (first, total) = start(&[])?;
    println!("{first}\n{total}");
    let (_, rest) = first
        .split_once(" in ")
        .unwrap_or_else(|| panic!("{first}"));
    let chosen: Vec<&str> = rest.split_whitespace().take(2).collect();
    let timed = rest
        .split_once(": ")
        .and_then(|(how, t)| how.contains("timed now").then_some(t))
        .unwrap_or_else(|| panic!("not timed at the first start: {first}"));
    let times: Vec<(String, f64)> = timed
        .trim_end_matches(')')
        .split(", ")
        .map(|t| {
            let w: Vec<&str> = t.split_whitespace().collect();
            (format!("{} {}", w[0], w[1]), w[2].parse().unwrap())
        })
        .collect();
    assert!(times.len() >= 2, "{first}");
    let fastest = times
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|t| t.0.clone());
    assert_eq!(Some(chosen.join(" ")), fastest, "{first}");
    assert!(
        total.ends_with(&format!(" precision={} layout={}", chosen[0], chosen[1])),
        "{total}"
    );
    let (again, _) = start(&[])?;
    println!("{again}");
    assert!(
        again.contains(&format!(
            "in {} (the faster, as timed before: {})",
            chosen.join(" "),
            cache.join("tuned").display()
        )),
        "{again}"
    );
    let (given, total) = start(&["--precision", "fp32", "--layout", "contiguous"])?;
    assert!(given.ends_with(" in fp32 contiguous"), "{given}");
    assert!(
        total.ends_with(" precision=fp32 layout=contiguous"),
        "{total}"
    );
    Ok(())
}
