//! The explanation itself: class names, top-k, the colormaps, threshold, box and label drawn on
//! the frame, temporal smoothing, and the metadata against its JSON Schema.

mod common;

use std::path::Path;

use anyhow::Result;
use common::*;

fn rgb(path: &Path) -> Result<image::RgbImage> {
    Ok(image::open(path)?.to_rgb8())
}

#[test]
fn a_class_by_name_and_close_matches() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cat = photo("chelsea", dir.path())?;
    let (out, meta) = (dir.path().join("o.png"), dir.path().join("m.jsonl"));
    let o = explain(
        cat.to_str().unwrap(),
        out.to_str().unwrap(),
        model().to_str().unwrap(),
        &["--class", "TABBY", "--metadata", meta.to_str().unwrap()],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metadata(&meta)?.remove(0);
    assert_eq!(
        (m["class"].as_i64(), m["label"].as_str()),
        (Some(281), Some("tabby"))
    );
    std::fs::remove_file(&out)?;
    let o = explain(
        cat.to_str().unwrap(),
        out.to_str().unwrap(),
        model().to_str().unwrap(),
        &["--class", "tabbby"],
    )?;
    assert_fails(
        &o,
        2,
        "--class `tabbby` is not a class of this model; close matches: tabby (281)",
    );
    assert!(!out.exists());
    Ok(())
}

#[test]
fn top_k_explains_k_classes_and_shows_the_rank_asked_for() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cat = photo("chelsea", dir.path())?;
    let (out, meta) = (dir.path().join("o.png"), dir.path().join("m.jsonl"));
    let o = explain(
        cat.to_str().unwrap(),
        out.to_str().unwrap(),
        model().to_str().unwrap(),
        &[
            "--top-k",
            "3",
            "--show-rank",
            "2",
            "--metadata",
            meta.to_str().unwrap(),
        ],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metadata(&meta)?.remove(0);
    let topk = m["topk"].as_array().unwrap();
    assert_eq!(topk.len(), 3);
    assert_eq!(topk[0]["id"], 285);
    assert_eq!(m["class"], topk[1]["id"], "the video shows rank 2");
    assert_eq!(m["cam"], topk[1]["cam"]);
    assert_ne!(topk[0]["cam"], topk[1]["cam"], "each class has its own map");
    let p: Vec<f64> = topk
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
    Ok(())
}

#[test]
fn colormaps_threshold_box_and_label_change_the_picture() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cat = photo("chelsea", dir.path())?;
    let fix = model();
    let run_with = |name: &str, extra: &[&str]| -> Result<(image::RgbImage, serde_json::Value)> {
        let out = dir.path().join(format!("{name}.png"));
        let meta = dir.path().join(format!("{name}.jsonl"));
        let mut args = vec!["--metadata", meta.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = explain(
            cat.to_str().unwrap(),
            out.to_str().unwrap(),
            fix.to_str().unwrap(),
            &args,
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
        Ok((rgb(&out)?, metadata(&meta)?.remove(0)))
    };
    let source = rgb(&cat)?;
    let (plain, _) = run_with("plain", &["--no-label"])?;
    let mut seen = vec![plain.clone()];
    for c in ["turbo", "inferno", "viridis"] {
        let (img, _) = run_with(c, &["--no-label", "--colormap", c])?;
        assert!(
            seen.iter().all(|s| s != &img),
            "{c} looks like another colormap"
        );
        seen.push(img);
    }
    // A threshold leaves the frame as it was wherever the map is below it.
    let (thr, _) = run_with("thr", &["--no-label", "--threshold", "0.6"])?;
    let same = |a: &image::RgbImage, b: &image::RgbImage| {
        a.pixels().zip(b.pixels()).filter(|(p, q)| p == q).count() as f64 / a.len() as f64 * 3.0
    };
    assert!(same(&thr, &source) > 0.3, "{}", same(&thr, &source));
    assert!(same(&plain, &source) < 0.05, "{}", same(&plain, &source));
    // The box is drawn where the metadata says, in white.
    let (boxed, m) = run_with("box", &["--no-label", "--box"])?;
    let b = &m["box"];
    let (x0, y0, x1) = (
        b["x0"].as_u64().unwrap() as u32,
        b["y0"].as_u64().unwrap() as u32,
        b["x1"].as_u64().unwrap() as u32,
    );
    assert!(x1 > x0);
    for x in x0..x1 {
        assert_eq!(boxed.get_pixel(x, y0).0, [255, 255, 255], "box top at {x}");
    }
    // The label darkens a band in the top-left corner and writes on it.
    let (labelled, _) = run_with("label", &[])?;
    let corner = |img: &image::RgbImage| {
        (0..40)
            .map(|x| img.get_pixel(x, 10).0[1] as u32)
            .sum::<u32>()
    };
    assert_ne!(corner(&labelled), corner(&plain));
    Ok(())
}

#[test]
fn metadata_validates_against_its_schema() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (out, meta) = (dir.path().join("o.mp4"), dir.path().join("m.jsonl"));
    let clip = sample("bikes.mp4");
    for (extra, name) in [(vec![], "top1"), (vec!["--top-k", "2", "--box"], "top2")] {
        let meta = dir.path().join(format!("{name}.jsonl"));
        let mut args = vec!["--metadata", meta.to_str().unwrap(), "--max-frames", "12"];
        args.extend(extra);
        let o = explain(
            clip.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &args,
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
        let r = std::process::Command::new(python())
            .args(["-c", "import json, sys, jsonschema\nschema = json.load(open(sys.argv[1]))\nfor line in open(sys.argv[2]):\n    jsonschema.validate(json.loads(line), schema)\n"])
            .arg(root().join("docs/metadata.schema.json"))
            .arg(&meta)
            .output()?;
        assert!(
            r.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    let _ = meta;
    Ok(())
}

/// Each frame's map (`cam.data`) from a run's metadata.
fn cam_maps(lines: &[serde_json::Value]) -> Vec<Vec<f64>> {
    lines
        .iter()
        .map(|l| {
            l["cam"]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Mean absolute difference between successive maps, over a run's metadata.
fn flicker(lines: &[serde_json::Value]) -> f64 {
    let maps = cam_maps(lines);
    let diffs: Vec<f64> = maps
        .windows(2)
        .map(|w| {
            w[0].iter()
                .zip(&w[1])
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / w[0].len() as f64
        })
        .collect();
    diffs.iter().sum::<f64>() / diffs.len() as f64
}

#[test]
fn smoothing_halves_flicker_and_keeps_the_peak_on_the_object() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let run_meta = |input: &Path, name: &str, extra: &[&str]| -> Result<Vec<serde_json::Value>> {
        let meta = dir.path().join(format!("{name}.jsonl"));
        let mut args = vec!["--metadata", meta.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = explain(
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &args,
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
        metadata(&meta)
    };
    let bikes = sample("bikes.mp4");
    let raw = flicker(&run_meta(&bikes, "raw", &[])?);
    let smooth = flicker(&run_meta(&bikes, "smooth", &["--smooth", "0.5"])?);
    eprintln!("flicker on bikes: {raw:.4} unsmoothed, {smooth:.4} at S = 0.5");
    assert!(
        smooth <= raw / 2.0,
        "flicker {raw:.4} → {smooth:.4}: not halved"
    );

    // A cat slides across a plain background; the peak must be on her as often as without
    // smoothing.
    let (a, b) = pointing(dir.path(), "slide", None)?;
    assert!(a > 0.5, "the unsmoothed peak is off the cat too often: {a}");
    assert!(b >= a, "smoothing moved the peak off the cat: {b} < {a}");
    Ok(())
}

/// Run `tests/moving_object.py --motion motion [--frames n]` and explain the clip (class 285,
/// Egyptian cat) without and with `--smooth 0.5`: the share of frames whose map peak lies in
/// the cat's box, each way.
fn pointing(dir: &Path, motion: &str, frames: Option<u32>) -> Result<(f64, f64)> {
    let clip = dir.join(format!(
        "{motion}{}.mp4",
        frames.map_or(String::new(), |n| n.to_string())
    ));
    let mut cmd = std::process::Command::new(python());
    cmd.arg(root().join("tests/moving_object.py")).args([
        "--out",
        clip.to_str().unwrap(),
        "--motion",
        motion,
    ]);
    if let Some(n) = frames {
        cmd.args(["--frames", &n.to_string()]);
    }
    let boxes = cmd.output()?;
    assert!(
        boxes.status.success(),
        "{}",
        String::from_utf8_lossy(&boxes.stderr)
    );
    let boxes: Vec<serde_json::Value> = String::from_utf8(boxes.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let share = |extra: &[&str]| -> Result<f64> {
        let meta = dir.join(format!("{motion}-{}.jsonl", extra.len()));
        let mut args = vec!["--metadata", meta.to_str().unwrap(), "--class", "285"];
        args.extend_from_slice(extra);
        let o = explain(
            clip.to_str().unwrap(),
            dir.join("o.mp4").to_str().unwrap(),
            model().to_str().unwrap(),
            &args,
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
        let lines = metadata(&meta)?;
        assert_eq!(lines.len(), boxes.len());
        let inside = lines
            .iter()
            .zip(&boxes)
            .filter(|(l, b)| {
                let (x, y) = (
                    l["peak"]["x"].as_i64().unwrap(),
                    l["peak"]["y"].as_i64().unwrap(),
                );
                let b = |k: &str| b[k].as_i64().unwrap();
                b("x0") <= x && x < b("x1") && b("y0") <= y && y < b("y1")
            })
            .count();
        Ok(inside as f64 / boxes.len() as f64)
    };
    Ok((share(&[])?, share(&["--smooth", "0.5"])?))
}

/// Smoothing follows motion: on clips made from real photos (a cat crossing a gravel photo
/// in 2 s and in 1 s, the same with the camera panning, a cat that stops and starts), the
/// smoothed map points at the cat at least as often as the unsmoothed one, and at least 95%
/// of the time where the unsmoothed one does.
#[test]
fn smoothing_follows_moving_objects() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (motion, frames) in [
        ("cross", None),
        ("cross", Some(30)),
        ("pan", None),
        ("stopstart", None),
    ] {
        let (raw, smooth) = pointing(dir.path(), motion, frames)?;
        let name = format!(
            "{motion}{}",
            frames.map_or(String::new(), |n| format!(" in {n} frames"))
        );
        eprintln!("pointing on {name}: {raw:.3} unsmoothed, {smooth:.3} at --smooth 0.5");
        assert!(
            smooth >= raw,
            "{name}: smoothing points at the cat less often: {smooth:.3} < {raw:.3}"
        );
        if raw >= 0.95 {
            assert!(smooth >= 0.95, "{name}: {smooth:.3} < 0.95");
        }
    }
    Ok(())
}

/// Where nothing moves, smoothing is the plain moving average, as before it followed motion:
/// each smoothed map is 0.5 · the last smoothed map + 0.5 · this frame's own.
#[test]
fn a_still_scene_smooths_as_a_plain_average() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("still.mp4");
    let st = std::process::Command::new(python())
        .arg(root().join("tests/moving_object.py"))
        .args(["--out", clip.to_str().unwrap(), "--motion", "still"])
        .stdout(std::process::Stdio::null())
        .status()?;
    assert!(st.success());
    let maps = |extra: &[&str]| -> Result<Vec<Vec<f64>>> {
        let meta = dir.path().join(format!("still-{}.jsonl", extra.len()));
        let mut args = vec!["--metadata", meta.to_str().unwrap(), "--class", "285"];
        args.extend_from_slice(extra);
        let o = explain(
            clip.to_str().unwrap(),
            dir.path().join("o.mp4").to_str().unwrap(),
            model().to_str().unwrap(),
            &args,
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
        Ok(cam_maps(&metadata(&meta)?))
    };
    let (raw, smooth) = (maps(&[])?, maps(&["--smooth", "0.5"])?);
    assert_eq!(raw.len(), 30);
    let mut want = raw[0].clone();
    for (i, (r, s)) in raw.iter().zip(&smooth).enumerate() {
        if i > 0 {
            want = want.iter().zip(r).map(|(m, c)| 0.5 * m + 0.5 * c).collect();
        }
        let worst = want
            .iter()
            .zip(s)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4,
            "frame {i}: the smoothed map is {worst} off the plain average"
        );
    }
    Ok(())
}

#[test]
fn bad_explanation_options_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let clip = sample("bikes.mp4");
    for (extra, code, needle) in [
        (&["--top-k", "0"][..], 2, "--top-k 0 is out of range"),
        (&["--top-k", "21"], 2, "--top-k 21 is out of range"),
        (
            &["--top-k", "2", "--show-rank", "3"],
            2,
            "--show-rank 3 is out of range",
        ),
        (&["--top-k", "2", "--class", "3"], 2, "drop --class"),
        (&["--colormap", "hot"], 2, "unknown --colormap `hot`"),
        (
            &["--threshold", "1.5"],
            2,
            "--threshold 1.5 is out of range",
        ),
        (&["--smooth", "1"], 2, "--smooth 1 is out of range"),
        (
            &["--class", "no such thing"],
            2,
            "is not a class of this model",
        ),
    ] {
        let o = explain(
            clip.to_str().unwrap(),
            out.to_str().unwrap(),
            fixture().to_str().unwrap(),
            extra,
        )?;
        assert_fails(&o, code, needle);
        assert!(!out.exists());
    }
    Ok(())
}
