//! Our maps against the reference implementation (PyPI grad-cam, pytorch-grad-cam) on the
//! same frames, model and target layer, method by method: per-frame correlation ≥ 0.98.

mod common;

use std::path::Path;

use anyhow::Result;
use common::*;

/// One run of ours to check: the method, how many of the clip's frames (all when `None`) and
/// more flags.
type Run<'a> = (&'a str, Option<u32>, &'a [&'a str]);

/// Explain bikes.mp4 once per run with the bundled model and compare each with the reference,
/// pytorch-grad-cam on the exported model.
fn check(runs: &[Run], raw: &Path, dir: &Path) -> Result<()> {
    check_model(&model(), &[], runs, raw, dir)
}

/// The same with `model`, and `reference` flags for tests/golden_gradcam.py (`--arch A
/// --weights W`, `--module M`: pytorch-grad-cam on that eager model instead). Every run of the
/// model is checked by one start of the reference script.
fn check_model(
    model: &Path,
    reference: &[&str],
    runs: &[Run],
    raw: &Path,
    dir: &Path,
) -> Result<()> {
    let name = model.file_stem().unwrap().to_string_lossy();
    let video = sample("bikes.mp4");
    let mut cmd = std::process::Command::new(python());
    cmd.current_dir(root().join("tests"));
    cmd.arg(root().join("tests/golden_gradcam.py")).args([
        "--raw",
        raw.to_str().unwrap(),
        "--size",
        "640x272",
        "--model",
        model.to_str().unwrap(),
        "--min-corr",
        "0.98",
    ]);
    for &(method, frames, more) in runs {
        let tag = format!("{name}{method}{}", more.join(""));
        let out = dir.join(format!("{tag}.mp4"));
        let meta = dir.join(format!("{tag}.jsonl"));
        let mut extra = vec!["--metadata", meta.to_str().unwrap(), "--method", method];
        extra.extend_from_slice(more);
        let n = frames.map(|n| n.to_string());
        if let Some(n) = &n {
            extra.extend(["--max-frames", n]);
        }
        let o = explain(
            video.to_str().unwrap(),
            out.to_str().unwrap(),
            model.to_str().unwrap(),
            &extra,
        )?;
        assert!(o.status.success(), "{tag}: {}", stderr(&o));
        let whole = if frames.is_some() { "prefix" } else { "all" };
        cmd.arg("--check")
            .args([method, meta.to_str().unwrap(), whole]);
    }
    cmd.args(reference);
    reference_check(&mut cmd, &name)
}

/// Every method but Grad-CAM on the first `n` frames.
fn other_methods(n: u32) -> Vec<Run<'static>> {
    ["gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"]
        .into_iter()
        .map(|m| (m, Some(n), &[][..]))
        .collect()
}

#[test]
fn maps_match_pytorch_grad_cam_on_bikes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("frames.rgbx");
    raw_frames(&sample("bikes.mp4"), &raw)?;
    // Grad-CAM on the whole clip; every other method on its first 48 frames.
    let mut runs = vec![("gradcam", None, &[][..])];
    runs.extend(other_methods(48));
    check(&runs, &raw, dir.path())
}

/// Vision transformers against pytorch-grad-cam on the eager model (random weights), hooked at
/// the same layer with its documented reshape transform: ViT and a DeiT drop their leading
/// tokens and lay the rest on the patch grid, Swin moves its channels first.
#[test]
fn transformers_match_pytorch_grad_cam_with_its_reshape_transform() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("frames.rgbx");
    raw_frames(&sample("bikes.mp4"), &raw)?;
    let deit = ["--module", "toy_model:deit"];
    for arch in ["vit_b_16", "swin_t", "deit"] {
        let pth = dir.path().join(format!("{arch}.pth"));
        let pth = pth.to_str().unwrap();
        let (export, reference) = if arch == "deit" {
            (
                vec![deit[0], deit[1], "--layer", "blocks.1.norm1"],
                deit.to_vec(),
            )
        } else {
            random_state_dict(arch, Path::new(pth))?;
            (
                vec!["--arch", arch, "--weights", pth],
                vec!["--arch", arch, "--weights", pth],
            )
        };
        let e = export_model(dir.path(), arch, &export)?;
        assert!(e.status.success(), "{arch}: {}", stderr(&e));
        let model = dir.path().join(format!("{arch}.pt"));
        let mut runs = vec![("gradcam", Some(16), &[][..])];
        runs.extend(other_methods(8));
        check_model(&model, &reference, &runs, &raw, dir.path())?;
    }
    Ok(())
}

/// The default precision and layout (auto: whichever the start timed fastest) are checked
/// above; here each fixed choice this CPU offers: fp32 contiguous, fp32 channels-last, and bf16
/// where the CPU has bf16 instructions (auto may not have picked it).
#[test]
fn each_fixed_precision_and_layout_matches_pytorch_grad_cam() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("frames.rgbx");
    raw_frames(&sample("bikes.mp4"), &raw)?;
    let fixed = [
        &["--precision", "fp32", "--layout", "contiguous"][..],
        &["--precision", "fp32", "--layout", "channels-last"],
    ];
    check(
        &fixed.map(|flags| ("gradcam", Some(48), flags)),
        &raw,
        dir.path(),
    )?;
    if !gradcam_stream::engine::cpu_autocast::supported() {
        return skip(
            "bf16",
            "bf16 against pytorch-grad-cam (this CPU has no bf16 instructions; fp32 in both layouts checked)",
        );
    }
    let flags = ["--precision", "bf16", "--layout", "channels-last"];
    check(&[("gradcam", Some(48), &flags)], &raw, dir.path())
}

#[test]
fn fp16_maps_match_pytorch_grad_cam_on_a_gpu() -> Result<()> {
    // fp16 runs under CUDA autocast, on a GPU only; the reference stays fp32 on the CPU.
    if !tch::Cuda::is_available() {
        return skip(
            "cuda",
            "no CUDA: fp16 and fp32 on a GPU are checked on a machine that has one",
        );
    }
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("frames.rgbx");
    raw_frames(&sample("bikes.mp4"), &raw)?;
    let fp16 = ["--device", "cuda", "--precision", "fp16"];
    // fp32 on the GPU too: the same code path as the CPU's.
    let runs = [
        ("gradcam", None, &fp16[..]),
        ("gradcam++", Some(48), &fp16),
        ("gradcam", Some(48), &["--device", "cuda"]),
    ];
    check(&runs, &raw, dir.path())
}
