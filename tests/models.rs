//! Any model: scripts/export_model.py splits torchvision classifiers (random weights here) and
//! a user's own nn.Module at a layer with torch.fx, and gradcam-stream explains with each.

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use common::*;

fn export(dir: &Path, name: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(python())
        .current_dir(root().join("tests"))
        .arg(root().join("scripts/export_model.py"))
        .args(["--out", dir.join(format!("{name}.pt")).to_str().unwrap()])
        .args(args)
        .output()?)
}

#[test]
fn torchvision_and_user_models_export_and_explain() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("in.mp4");
    make_clip(&clip, 160, 120, (25, 1), 6)?;
    for (name, args, classes) in [
        (
            "resnet18",
            &["--arch", "resnet18", "--weights", "random"][..],
            1000,
        ),
        (
            "mobilenet",
            &["--arch", "mobilenet_v3_large", "--weights", "random"],
            1000,
        ),
        (
            "regnet",
            &[
                "--arch",
                "regnet_y_400mf",
                "--weights",
                "random",
                "--layer",
                "trunk_output.block4",
            ],
            1000,
        ),
        ("toy", &["--module", "toy_model:make", "--layer", "body"], 7),
    ] {
        let e = export(dir.path(), name, args)?;
        assert!(
            e.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&e.stderr)
        );
        let sidecar: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            dir.path().join(format!("{name}.json")),
        )?)?;
        assert_eq!(sidecar["num_classes"], classes, "{name}");
        let (out, meta) = (
            dir.path().join(format!("{name}.mp4")),
            dir.path().join(format!("{name}.jsonl")),
        );
        let model = dir.path().join(format!("{name}.pt"));
        let o = explain(
            clip.to_str().unwrap(),
            out.to_str().unwrap(),
            model.to_str().unwrap(),
            &[
                "--metadata",
                meta.to_str().unwrap(),
                "--method",
                "gradcam++",
            ],
        )?;
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let lines = metadata(&meta)?;
        assert_eq!(lines.len(), 6, "{name}");
        assert!(
            lines
                .iter()
                .all(|l| (l["class"].as_i64().unwrap()) < classes),
            "{name}"
        );
    }
    Ok(())
}

#[test]
fn weights_from_a_local_pth() -> Result<()> {
    // A state dict saved the way users have them; the export loads it rather than random weights.
    let dir = tempfile::tempdir()?;
    let pth = dir.path().join("r18.pth");
    let st = Command::new(python())
        .args([
            "-c",
            "import sys, torch, torchvision; torch.manual_seed(3); torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])",
        ])
        .arg(&pth)
        .status()?;
    assert!(st.success());
    let e = export(
        dir.path(),
        "r18",
        &["--arch", "resnet18", "--weights", pth.to_str().unwrap()],
    )?;
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let sidecar = std::fs::read_to_string(dir.path().join("r18.json"))?;
    assert!(sidecar.contains("resnet18 (r18.pth weights)"), "{sidecar}");
    let e = export(
        dir.path(),
        "x",
        &["--arch", "resnet18", "--weights", "/no/such.pth"],
    )?;
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("cannot read --weights /no/such.pth"));
    Ok(())
}

#[test]
fn bad_layers_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let e = export(
        dir.path(),
        "x",
        &[
            "--arch",
            "resnet18",
            "--weights",
            "random",
            "--layer",
            "layer9",
        ],
    )?;
    assert_eq!(e.status.code(), Some(1));
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        err.contains("--layer 'layer9' is not a layer of this model; valid layers: conv1,"),
        "{err}"
    );
    assert!(
        err.contains("layer4") && err.trim().lines().count() == 1,
        "{err}"
    );
    // Inside a residual block, the skip connection crosses the cut: the head cannot be split off.
    let e = export(
        dir.path(),
        "x",
        &[
            "--arch",
            "resnet18",
            "--weights",
            "random",
            "--layer",
            "layer4.0.conv1",
        ],
    )?;
    let err = String::from_utf8_lossy(&e.stderr);
    assert_eq!(e.status.code(), Some(1), "{err}");
    assert!(err.contains("a skip connection crosses the layer"), "{err}");
    let e = export(
        dir.path(),
        "x",
        &["--arch", "resnet9000", "--weights", "random"],
    )?;
    assert!(String::from_utf8_lossy(&e.stderr).contains("is not a torchvision classifier"));
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
    Ok(())
}
