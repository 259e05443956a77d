//! Bad input: one line naming the problem and the fix, a non-zero status, no panic, and no
//! output (not even a partial one) left behind.

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn missing_input() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let o = run(&["--input", "/no/such/clip.mp4", "--output", s(&out)])?;
    assert_fails(&o, 2, "input /no/such/clip.mp4 does not exist");
    assert!(files_in(dir.path()).is_empty());
    Ok(())
}

#[test]
fn missing_arguments_and_unknown_values() -> Result<()> {
    let o = run(&["--output", "x.mp4"])?;
    assert_fails(&o, 2, "no input given");
    let o = run(&["--input", s(&sample("bikes.mp4")), "--output", "x.avi"])?;
    assert_fails(&o, 2, "use .mp4 or .mkv");
    let o = run(&["--input", "rtmp://example/x", "--output", "x.mp4"])?;
    assert_fails(&o, 2, "unsupported input scheme");
    let bikes = sample("bikes.mp4");
    let bikes = s(&bikes);
    for (output, needle) in [
        (
            "srt://0.0.0.0:9000",
            "unsupported output `srt://0.0.0.0:9000`",
        ),
        ("rtsp://:8554/x", "use rtsp://HOST:PORT/PATH"),
        ("rtsp://0.0.0.0:99999/x", "use rtsp://HOST:PORT/PATH"),
    ] {
        let o = run(&["--input", bikes, "--output", output])?;
        assert_fails(&o, 2, needle);
    }
    let o = run(&["--input", bikes, "--output", "a.mp4", "--output", "a.mp4"])?;
    assert_fails(&o, 2, "given twice");
    let o = run(&[
        "--input",
        bikes,
        "--output",
        "a.mp4",
        "--input-size",
        "640x480",
    ])?;
    assert_fails(&o, 2, "apply to webcams and test:// sources");
    let o = run(&[
        "--input",
        "test://",
        "--output",
        "a.mp4",
        "--input-size",
        "640",
    ])?;
    assert_fails(&o, 2, "use WIDTHxHEIGHT");
    let o = run(&[
        "--input",
        "rtsp://h/x",
        "--output",
        "a.mp4",
        "--rtsp-transport",
        "sctp",
    ])?;
    assert_fails(&o, 2, "use auto, tcp or udp");
    let o = run(&[
        "--input", bikes, "--output", "a.mp4", "--method", "scorecam",
    ])?;
    assert_fails(&o, 2, "unknown --method `scorecam`; use gradcam, gradcam++");
    Ok(())
}

#[test]
fn a_file_that_is_not_video() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("notes.mp4");
    std::fs::write(
        &input,
        "these are not the frames you are looking for\n".repeat(100),
    )?;
    let out = dir.path().join("o.mp4");
    let o = explain(s(&input), s(&out), s(&fixture()), &[])?;
    assert_fails(&o, 1, "not a video GStreamer can decode");
    assert_eq!(files_in(dir.path()), vec!["notes.mp4"]);
    Ok(())
}

#[test]
fn a_truncated_mp4() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let whole = dir.path().join("whole.mp4");
    make_clip(&whole, 160, 120, (25, 1), 50)?;
    let bytes = std::fs::read(&whole)?;
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2])?;
    std::fs::remove_file(&whole)?;
    let out = dir.path().join("o.mp4");
    let meta = dir.path().join("o.jsonl");
    let o = explain(s(&cut), s(&out), s(&fixture()), &["--metadata", s(&meta)])?;
    assert_fails(&o, 1, "damaged or truncated");
    assert_eq!(files_in(dir.path()), vec!["cut.mp4"]);
    Ok(())
}

#[test]
fn an_unreadable_model() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("bad.pt");
    std::fs::write(&model, b"not a zip archive")?;
    std::fs::copy(
        fixture().with_extension("json"),
        dir.path().join("bad.json"),
    )?;
    let out = dir.path().join("o.mp4");
    let o = explain(s(&sample("bikes.mp4")), s(&out), s(&model), &[])?;
    assert_fails(&o, 1, "not a TorchScript file");
    assert!(!out.exists());

    let o = explain(
        s(&sample("bikes.mp4")),
        s(&out),
        s(&dir.path().join("none.pt")),
        &[],
    )?;
    assert_fails(&o, 1, "does not exist; run `make models`");

    std::fs::copy(fixture(), dir.path().join("nosidecar.pt"))?;
    let o = explain(
        s(&sample("bikes.mp4")),
        s(&out),
        s(&dir.path().join("nosidecar.pt")),
        &[],
    )?;
    assert_fails(&o, 1, "sidecar");
    assert!(!out.exists());
    Ok(())
}

#[test]
fn a_model_without_features_and_head() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("plain.pt");
    // A whole-network TorchScript, as torch.jit.trace gives by default.
    let status = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, torch\n\
             m = torch.jit.trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval(), torch.rand(1, 3, 32, 32))\n\
             m.save(sys.argv[1])",
            s(&model),
        ])
        .status()?;
    assert!(status.success());
    std::fs::copy(
        fixture().with_extension("json"),
        dir.path().join("plain.json"),
    )?;
    let out = dir.path().join("o.mp4");
    let o = explain(s(&sample("bikes.mp4")), s(&out), s(&model), &[])?;
    assert_fails(&o, 1, "has no `features` method");
    assert!(!out.exists());
    Ok(())
}

#[test]
fn a_head_that_does_not_accept_the_features() -> Result<()> {
    // features give 8 channels, the head pools and expects 16.
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("bad.pt");
    let st = std::process::Command::new(python())
        .arg(root().join("tests/broken_model.py"))
        .args(["bad-head", s(&model)])
        .status()?;
    assert!(st.success());
    let out = dir.path().join("o.mp4");
    let o = explain(s(&sample("bikes.mp4")), s(&out), s(&model), &[])?;
    assert_fails(&o, 1, "`head` does not accept what `features` gives ([1, 8, 8, 8]): mat1 and mat2 shapes cannot be multiplied");
    assert!(!out.exists());
    Ok(())
}

#[test]
fn a_libtorch_error_while_explaining_is_one_line() -> Result<()> {
    // The model loads (its check runs one frame) and fails in libtorch on the first batch of
    // more than one: the batch timed at start for --layout auto (4 frames), or the first batch
    // of frames (8) where the choice was remembered.
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("batch_of_one.pt");
    let st = std::process::Command::new(python())
        .arg(root().join("tests/broken_model.py"))
        .args(["batch-of-one", s(&model)])
        .status()?;
    assert!(st.success());
    let out = dir.path().join("o.mp4");
    let o = explain(s(&sample("bikes.mp4")), s(&out), s(&model), &[])?;
    assert_fails(&o, 1, "explaining a batch of ");
    let err = stderr(&o);
    assert!(
        err.contains("`features` failed: shape '[1, 8, 8, 8]' is invalid for input of size "),
        "{err}"
    );
    assert!(!out.exists());
    // GRADCAM_DEBUG=1 shows the whole libtorch report.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
        .args(["--input", s(&sample("bikes.mp4")), "--output", s(&out)])
        .args(["--model", s(&model), "--progress", "none"])
        .env("GRADCAM_DEBUG", "1")
        .output()?;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).lines().count() > 3, "{}", stderr(&o));
    assert!(!out.exists());
    Ok(())
}

#[test]
fn fp16_and_nvenc_where_there_are_none() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    if !tch::Cuda::is_available() {
        let o = explain(
            s(&sample("bikes.mp4")),
            s(&out),
            s(&fixture()),
            &["--precision", "fp16"],
        )?;
        assert_fails(&o, 2, "--precision fp16 runs on a CUDA GPU only");
    }
    gstreamer::init()?;
    if gstreamer::ElementFactory::find("nvh264enc").is_none() {
        let o = explain(
            s(&sample("bikes.mp4")),
            s(&out),
            s(&fixture()),
            &["--encoder", "nvenc"],
        )?;
        assert_fails(&o, 1, "--encoder nvenc: this machine has no NVENC encoder");
    }
    assert!(files_in(dir.path()).is_empty());
    Ok(())
}

#[test]
fn class_out_of_range() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let o = explain(
        s(&sample("bikes.mp4")),
        s(&out),
        s(&fixture()),
        &["--class", "10"],
    )?;
    assert_fails(
        &o,
        2,
        "--class 10 is out of range: model fixture has 10 classes (0 to 9)",
    );
    let o = run(&[
        "--input",
        s(&sample("bikes.mp4")),
        "--output",
        s(&out),
        "--class",
        "-3",
    ])?;
    assert_fails(&o, 2, "negative");
    assert!(files_in(dir.path()).is_empty());
    Ok(())
}

#[test]
fn an_output_that_cannot_be_written() -> Result<()> {
    let o = explain(
        s(&sample("bikes.mp4")),
        "/no/such/dir/o.mp4",
        s(&fixture()),
        &[],
    )?;
    assert_fails(&o, 1, "cannot write output /no/such/dir/o.mp4");
    let dir = tempfile::tempdir()?;
    let o = explain(
        s(&sample("bikes.mp4")),
        s(&dir.path().join("o.mp4")),
        s(&fixture()),
        &["--metadata", "/no/such/dir/m.jsonl"],
    )?;
    assert_fails(&o, 1, "cannot write output /no/such/dir/m.jsonl");
    assert!(files_in(dir.path()).is_empty());
    Ok(())
}

#[test]
fn cuda_without_a_gpu() -> Result<()> {
    if tch::Cuda::is_available() {
        return skip(
            "cpu-only",
            "a CUDA GPU is present: the error cannot occur here",
        );
    }
    let dir = tempfile::tempdir()?;
    let o = run(&[
        "--input",
        s(&sample("bikes.mp4")),
        "--output",
        s(&dir.path().join("o.mp4")),
        "--device",
        "cuda",
    ])?;
    assert_fails(&o, 1, "no CUDA GPU is available");
    assert!(files_in(dir.path()).is_empty());
    Ok(())
}

#[test]
fn an_image_that_is_not_an_image() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("cat.jpg");
    std::fs::write(&input, "meow")?;
    let o = explain(
        s(&input),
        s(&dir.path().join("cat_cam.png")),
        s(&fixture()),
        &[],
    )?;
    assert_fails(&o, 1, "cannot read image");
    assert_eq!(files_in(dir.path()), vec!["cat.jpg"]);
    let o = run(&[
        "--input",
        s(&sample("bikes.mp4")),
        "--output",
        s(&dir.path().join("x.png")),
    ])?;
    assert_fails(&o, 2, "use .mp4 or .mkv");
    Ok(())
}

#[test]
fn bf16_needs_a_cpu_that_has_it() -> Result<()> {
    if tch::Cuda::is_available() || gradcam_stream::engine::cpu_autocast::supported() {
        return skip("no-bf16", "this machine runs bf16 (its CPU has bf16 instructions, or a GPU is present), so the error cannot occur here");
    }
    let dir = tempfile::tempdir()?;
    let o = run(&[
        "--input",
        s(&sample("bikes.mp4")),
        "--output",
        s(&dir.path().join("o.mp4")),
        "--precision",
        "bf16",
    ])?;
    assert_fails(&o, 2, "--precision bf16: this CPU has no bf16 instructions");
    assert!(files_in(dir.path()).is_empty());
    Ok(())
}

/// Every flag that takes a value, given empty, negative, huge, NaN, infinite, non-ASCII and
/// path-like values: each run ends with status 0 (the value is a valid one) or 2 with one
/// `error:` line (clap's own refusals add its usage hint below it), never a panic, an abort or
/// a backtrace (`--queue-capacity 999999999999` once aborted trying to allocate 128 TB).
#[test]
fn every_flag_refuses_bad_values_in_one_line() -> Result<()> {
    let help = run(&["--help"])?;
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-i, ")
                .or(l.strip_prefix("-o, "))
                .unwrap_or(l);
            let l = l.strip_prefix("-c, ").unwrap_or(l);
            let (flag, rest) = l.split_once(' ')?;
            (flag.starts_with("--") && rest.starts_with('<')).then_some(flag)
        })
        // The run's own input and output, and a config file (its own test), stay fixed; a
        // missing model is a failure to run (status 1, one line: tests/models.rs).
        .filter(|f| !["--input", "--output", "--config", "--model", "--progress"].contains(f))
        .collect();
    assert!(flags.len() > 30, "{flags:?} from {help}");
    let dir = tempfile::tempdir()?;
    let values = ["", "-1", "999999999999", "NaN", "inf", "ünï", "../../x/y"];
    let tries: Vec<(&str, &str)> = flags.iter().flat_map(|f| values.map(|v| (*f, v))).collect();
    // Most tries end while parsing, so a start costs mostly loading libtorch from disk: four at
    // a time keep both cores busy while others wait on the disk. Each worker has its own
    // directory for what the valid values write.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let bad = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (next, bad, tries) = (&next, &bad, &tries);
                let here = dir.path().join(format!("w{w}"));
                scope.spawn(move || -> Result<()> {
                    std::fs::create_dir(&here)?;
                    while let Some(&(flag, v)) =
                        tries.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        if let Some(why) = refuses_in_one_line(&here, flag, v)? {
                            bad.lock().unwrap().push(why);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a worker panicked")?;
        }
        Ok(())
    })?;
    let bad = bad.into_inner().unwrap();
    assert!(bad.is_empty(), "{} bad:\n{}", bad.len(), bad.join("\n"));
    Ok(())
}

/// One try of `every_flag_refuses_bad_values_in_one_line`: what was wrong with the run given
/// `flag`=`v`, or `None` when it ended with status 0 or 2 and one `error:` line.
fn refuses_in_one_line(dir: &Path, flag: &str, v: &str) -> Result<Option<String>> {
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam-stream"))
        .current_dir(dir)
        .args([
            "--input",
            "test://ball?size=64x48&fps=15",
            "--output",
            "null",
        ])
        .args([
            "--model",
            s(&fixture()),
            "--max-frames",
            "2",
            "--progress",
            "none",
        ])
        .arg(format!("{flag}={v}"))
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    let said: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.starts_with("  tip:"))
        .collect();
    let fine = match o.status.code() {
        Some(0) => !err.contains("panicked"),
        Some(2) => said.len() == 1 && said[0].starts_with("error: "),
        _ => false,
    };
    Ok((!fine).then(|| format!("{flag}={v}: {:?} {err}", o.status.code())))
}
