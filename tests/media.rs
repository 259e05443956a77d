//! Real-world media, made here with ffmpeg and Pillow: a phone clip with a rotation tag, photos
//! stored sideways with an EXIF orientation, an interlaced clip, a segment of a file, and the
//! images people have (16-bit, greyscale, transparent, CMYK, broken).

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use common::*;

fn py(code: &str, args: &[&Path]) -> Result<()> {
    let o = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()?;
    anyhow::ensure!(o.status.success(), "python: {}", stderr(&o));
    Ok(())
}

/// A frame's class and the map's peak (x, y).
type Verdict = (i64, f64, f64);

#[test]
fn a_phone_clip_with_a_rotation_tag_is_explained_upright() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (base, tagged, upright) = (
        d.join("base.mp4"),
        d.join("tagged.mp4"),
        d.join("upright.mp4"),
    );
    // Stored landscape with a rotation tag (a display matrix: shown turned a quarter
    // counter-clockwise), as phones store portrait clips; and the same picture turned as the
    // tag says, with no tag.
    let (b, t, u) = (
        base.to_str().unwrap(),
        tagged.to_str().unwrap(),
        upright.to_str().unwrap(),
    );
    let cat = photo("chelsea", d)?;
    ffmpeg(&[
        "-loop",
        "1",
        "-i",
        cat.to_str().unwrap(),
        "-t",
        "2",
        "-r",
        "25",
        "-vf",
        "scale=320:240,format=yuv420p",
        "-c:v",
        "libx264",
        b,
    ])?;
    ffmpeg(&["-i", b, "-c", "copy", "-metadata:s:v:0", "rotate=90", t])?;
    ffmpeg(&["-i", b, "-vf", "transpose=cclock", "-c:v", "libx264", u])?;
    let run = |input: &Path, name: &str, extra: &[&str]| -> Result<(Probe, Vec<Verdict>)> {
        let (out, meta) = (
            d.join(format!("{name}.mp4")),
            d.join(format!("{name}.jsonl")),
        );
        let o = explain(
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &[&["--metadata", meta.to_str().unwrap()], extra].concat(),
        )?;
        anyhow::ensure!(o.status.success(), "{}", stderr(&o));
        let lines = metadata(&meta)?
            .iter()
            .map(|l| {
                let f = |k: &str| l["peak"][k].as_f64().unwrap_or(-1.0);
                (l["class"].as_i64().unwrap_or(-1), f("x"), f("y"))
            })
            .collect();
        Ok((probe(&out, 0)?, lines))
    };
    let (turned, turned_classes) = run(&tagged, "turned", &[])?;
    let (reference, reference_classes) = run(&upright, "reference", &[])?;
    assert_eq!(
        (turned.width, turned.height),
        (240, 320),
        "the output is upright"
    );
    assert_eq!((reference.width, reference.height), (240, 320));
    // The same class, and the map's peak in the same place of the upright frame.
    let same = |a: &[Verdict], b: &[Verdict]| {
        a.iter()
            .zip(b)
            .filter(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() <= 24.0 && (x.2 - y.2).abs() <= 32.0)
            .count()
    };
    let n = reference_classes.len();
    let agree = same(&turned_classes, &reference_classes);
    println!(
        "tagged clip: {agree} of {n} frames explained as the upright picture is (class and peak)"
    );
    assert!(agree * 10 >= n * 9);
    let (stored, stored_lines) = run(&tagged, "stored", &["--orientation", "none"])?;
    assert_eq!(
        (stored.width, stored.height),
        (320, 240),
        "--orientation none"
    );
    assert!(
        same(&stored_lines, &reference_classes) * 2 < n,
        "the sideways picture explains differently"
    );
    Ok(())
}

#[test]
fn photos_stored_sideways_are_explained_upright() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let cat = photo("chelsea", d)?;
    let top = |input: &Path, out: &str| -> Result<(String, (u32, u32))> {
        let out = d.join(out);
        let o = explain(
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &[],
        )?;
        anyhow::ensure!(o.status.success(), "{}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let first = text.lines().nth(1).context("a top class")?.to_owned();
        let img = image::open(&out)?;
        Ok((first, (img.width(), img.height())))
    };
    let (want, size) = top(&cat, "upright.png")?;
    // EXIF 6: stored turned a quarter counter-clockwise, shown turned clockwise; 8 the other way.
    for (tag, angle) in [(6, 90), (8, -90)] {
        let jpg = d.join(format!("exif{tag}.jpg"));
        py(
            &format!(
                "import sys; from PIL import Image; im = Image.open(sys.argv[1]).convert('RGB').rotate({angle}, expand=True); \
                 ex = Image.Exif(); ex[0x0112] = {tag}; im.save(sys.argv[2], quality=95, exif=ex)"
            ),
            &[&cat, &jpg],
        )?;
        let (got, got_size) = top(&jpg, &format!("exif{tag}.png"))?;
        println!("EXIF {tag}: {got}");
        assert_eq!(got_size, size, "EXIF {tag}: the output is upright");
        let class = |l: &str| l.split_whitespace().nth(1).map(str::to_owned);
        assert_eq!(class(&got), class(&want), "EXIF {tag}: {got} vs {want}");
    }
    Ok(())
}

/// idet's counts of interlaced (TFF + BFF) and all frames, of `path`: its single-frame
/// detection (the multi-frame one carries its first frames' verdict over a few more).
fn combed(path: &Path) -> Result<(u64, u64)> {
    let o = Command::new("ffmpeg")
        .args(["-v", "info", "-nostats", "-i"])
        .arg(path)
        .args(["-vf", "idet", "-f", "null", "-"])
        .output()?;
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("Single frame detection"))
        .with_context(|| format!("no idet line: {err}"))?;
    let n = |key: &str| -> u64 {
        line.split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let interlaced = n("TFF:") + n("BFF:");
    Ok((
        interlaced,
        interlaced + n("Progressive:") + n("Undetermined:"),
    ))
}

#[test]
fn an_interlaced_clip_is_deinterlaced_and_flagged_progressive() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let clip = d.join("interlaced.mp4");
    // Two fields from successive 50 Hz pictures in each frame, coded and flagged interlaced.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=50",
        "-t",
        "4",
        "-vf",
        "tinterlace=mode=merge,setfield=tff",
        "-c:v",
        "libx264",
        "-flags",
        "+ilme+ildct",
        "-x264opts",
        "tff=1",
        clip.to_str().unwrap(),
    ])?;
    let (ic, it) = combed(&clip)?;
    assert!(ic * 2 > it, "the input is combed: {ic} of {it}");
    let out = d.join("out.mp4");
    let run = |out: &Path, extra: &[&str]| -> Result<()> {
        let o = explain(
            clip.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &[&["--alpha", "0", "--no-label"], extra].concat(),
        )?;
        anyhow::ensure!(o.status.success(), "{}", stderr(&o));
        Ok(())
    };
    run(&out, &[])?;
    let (oc, ot) = combed(&out)?;
    println!("combed frames: input {ic} of {it}, output {oc} of {ot}");
    assert!(oc * 20 <= ot, "output combed: {oc} of {ot}");
    let args = [
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=field_order",
    ];
    let order = ffprobe(&[&args[..], &["-of", "csv=p=0"]].concat(), &out)?
        .trim()
        .to_owned();
    assert!(
        order == "progressive" || order.is_empty(),
        "flagged {order}"
    );
    assert_eq!(
        probe(&out, 0)?.pts.len(),
        probe(&clip, 0)?.pts.len(),
        "a frame for a frame"
    );
    let off = d.join("off.mp4");
    run(&off, &["--deinterlace", "off"])?;
    let (fc, ft) = combed(&off)?;
    println!("with --deinterlace off: {fc} of {ft} combed");
    assert!(fc * 2 > ft, "--deinterlace off leaves the combing");
    Ok(())
}

/// The mean absolute difference of two RGB frames.
fn mad(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn start_and_duration_explain_a_segment_frame_accurately() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (clip, start, length) in [
        ("bikes.mp4", "2.5", "3"),
        ("bigbuckbunny.mp4", "0:01.3", "00:00:02"),
    ] {
        let input = sample(clip);
        let whole = probe(&input, 200)?;
        let (s, l) = (common_time(start), common_time(length));
        // Times as a player shows them (ffprobe: an MP4's edit list applied; bikes.mp4's
        // first frame is stored at 0.08 s and shown at 0).
        let want: Vec<usize> = ffprobe_pts(&input)?
            .iter()
            .enumerate()
            .filter(|(_, &p)| p >= s && p < s + l)
            .map(|(i, _)| i)
            .collect();
        let out = dir.path().join(format!("part-{clip}"));
        let o = explain(
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &[
                "--start",
                start,
                "--duration",
                length,
                "--alpha",
                "0",
                "--no-label",
            ],
        )?;
        assert!(o.status.success(), "{}", stderr(&o));
        let part = probe(&out, 1)?;
        println!(
            "{clip} --start {start} --duration {length}: {} frames (want {}), first at {} ns",
            part.pts.len(),
            want.len(),
            part.pts[0]
        );
        assert_eq!(part.pts.len(), want.len(), "{clip}: frame count");
        assert_eq!(part.pts[0], 0, "{clip}: the output starts at 0");
        // The first frame is the input's first frame at or after the start, not its neighbour.
        let first = want[0];
        let d = |i: usize| mad(&part.frames_rgb[0], &whole.frames_rgb[i]);
        for other in [first - 1, first + 1] {
            assert!(
                d(first) < d(other),
                "{clip}: output frame 0 is closer to input frame {other} ({:.2}) than to {first} ({:.2})",
                d(other),
                d(first)
            );
        }
    }
    let o = explain(
        sample("bikes.mp4").to_str().unwrap(),
        dir.path().join("x.mp4").to_str().unwrap(),
        model().to_str().unwrap(),
        &["--start", "1:00"],
    )?;
    assert_fails(&o, 2, "beyond the end of");
    assert!(
        stderr(&o).contains("its duration is 10.0 s"),
        "{}",
        stderr(&o)
    );
    Ok(())
}

/// Nanoseconds of `90`, `0:01.3`, `00:00:02`.
fn common_time(s: &str) -> u64 {
    let mut total = 0.0;
    for part in s.split(':') {
        total = total * 60.0 + part.parse::<f64>().unwrap();
    }
    (total * 1e9).round() as u64
}

#[test]
fn images_people_have_are_explained_or_refused_in_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let cat = photo("chelsea", d)?;
    let make = |name: &str, code: &str| -> Result<std::path::PathBuf> {
        let p = d.join(name);
        py(
            &format!("import sys; from PIL import Image; import numpy as np; im = Image.open(sys.argv[1]).convert('RGB'); {code}"),
            &[&cat, &p],
        )?;
        Ok(p)
    };
    let cases = [
        make("grey16.png", "Image.fromarray((np.asarray(im.convert('L')).astype(np.uint16) * 257)).save(sys.argv[2])")?,
        make("grey.png", "im.convert('L').save(sys.argv[2])")?,
        make("alpha.png", "im.putalpha(200); im.save(sys.argv[2])")?,
        make("cmyk.jpg", "im.convert('CMYK').save(sys.argv[2], quality=95)")?,
    ];
    for input in &cases {
        let out = d.join(format!(
            "{}.out.png",
            input.file_name().unwrap().to_string_lossy()
        ));
        let o = explain(
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &[],
        )?;
        assert!(o.status.success(), "{}: {}", input.display(), stderr(&o));
        let img = image::open(&out)?;
        assert_eq!(
            (img.width(), img.height()),
            (451, 300),
            "{}",
            input.display()
        );
        println!(
            "{}: {}",
            input.file_name().unwrap().to_string_lossy(),
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .trim()
        );
    }
    // Not an image at all, and a PNG and a JPEG cut short: one line each, naming the file, no
    // output (the JPEG decoder alone would fill the missing half with grey).
    let png = d.join("cut.png");
    std::fs::write(&png, &std::fs::read(&cases[0])?[..500])?;
    let jpg = d.join("cut.jpg");
    let whole = std::fs::read(&cases[3])?;
    std::fs::write(&jpg, &whole[..whole.len() / 2])?;
    let junk = d.join("junk.jpg");
    std::fs::write(&junk, b"this is a text file, not a JPEG")?;
    for bad in [&png, &jpg, &junk] {
        let out = d.join("bad.out.png");
        let o = explain(
            bad.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &[],
        )?;
        assert_fails(&o, 1, "cannot read image");
        let name = bad.file_name().unwrap().to_string_lossy().into_owned();
        assert!(stderr(&o).contains(&name), "{}", stderr(&o));
        assert!(!out.exists(), "no partial output");
    }
    Ok(())
}

#[test]
fn a_folder_of_images_is_explained_by_one_process() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let photos = d.join("photos");
    std::fs::create_dir(&photos)?;
    for name in ["chelsea", "coffee", "astronaut"] {
        photo(name, &photos)?;
    }
    py(
        "import sys; from skimage import data; from PIL import Image; import numpy as np; \
         Image.fromarray(data.camera().astype(np.uint16) * 257).save(sys.argv[1] + '/camera16.png')",
        &[&photos],
    )?;
    std::fs::write(photos.join("broken.jpg"), b"this is not a JPEG")?;
    std::fs::write(photos.join("notes.txt"), b"not an image, not listed")?;
    let out = d.join("out");
    let meta = d.join("all.jsonl");
    let o = run(&[
        "--input",
        photos.to_str().unwrap(),
        "--output",
        &format!("{}/{{name}}.jpg", out.display()),
        "--metadata",
        meta.to_str().unwrap(),
        "--max-wait-ms",
        "10000",
    ])?;
    let err = stderr(&o);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    println!("{text}{err}");
    assert_eq!(o.status.code(), Some(1), "some failed: {err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("skipped: ")).count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("broken.jpg") && err.contains("1 of 5 images could not be read"),
        "{err}"
    );
    assert_eq!(text.lines().count(), 4, "a line per image: {text}");
    // Three sizes, one batch: each image is resized on the way in.
    assert!(err.contains("done: 4 images in 1 batch,"), "{err}");
    for (name, size) in [
        ("chelsea", (451, 300)),
        ("coffee", (600, 400)),
        ("astronaut", (512, 512)),
        ("camera16", (512, 512)),
    ] {
        let img = image::open(out.join(format!("{name}.jpg")))?;
        assert_eq!((img.width(), img.height()), size, "{name}");
    }
    let lines = metadata(&meta)?;
    assert_eq!(lines.len(), 4);
    assert!(lines
        .iter()
        .all(|l| l["file"].as_str().is_some_and(|f| f.ends_with(".png"))));
    // The same class for the cat as a run of its own.
    let single = d.join("cat.png");
    let o = explain(
        photos.join("chelsea.png").to_str().unwrap(),
        single.to_str().unwrap(),
        model().to_str().unwrap(),
        &[],
    )?;
    let own = String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .map(str::to_owned);
    let in_folder = text
        .lines()
        .find(|l| l.contains("chelsea"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_owned);
    assert_eq!(own, in_folder, "{text}");
    Ok(())
}
