//! Any model: scripts/export_model.py splits torchvision classifiers (random weights here) and
//! a user's own nn.Module at a layer with torch.fx, and gradcam-stream explains with each.

mod common;

use anyhow::Result;
use common::*;

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
        // Inside a residual block: the skip connection's input is carried past the cut.
        (
            "resblock",
            &[
                "--arch",
                "resnet18",
                "--weights",
                "random",
                "--layer",
                "layer4.0.conv1",
            ],
            1000,
        ),
        // Transformers, at their default layer: the last block's first norm.
        ("vit", &["--arch", "vit_b_16", "--weights", "random"], 1000),
        ("swin", &["--arch", "swin_t", "--weights", "random"], 1000),
        (
            "deit",
            &["--module", "toy_model:deit", "--layer", "blocks.1.norm1"],
            5,
        ),
    ] {
        let e = export_model(dir.path(), name, args)?;
        assert!(
            e.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&e.stderr)
        );
        let sidecar: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            dir.path().join(format!("{name}.json")),
        )?)?;
        assert_eq!(sidecar["num_classes"], classes, "{name}");
        let want = match name {
            "vit" => Some((
                "encoder.layers.encoder_layer_11.ln_1",
                [768, 14, 14],
                "tokens [B, 197, 768]: 1 leading token left out, 14x14 patch tokens laid on their grid",
            )),
            "swin" => Some((
                "features.7.1.norm1",
                [768, 7, 7],
                "[B, 7, 7, 768] channels-last, permuted to [B, C, h, w]",
            )),
            "deit" => Some((
                "blocks.1.norm1",
                [64, 14, 14],
                "tokens [B, 198, 64]: 2 leading tokens left out, 14x14 patch tokens laid on their grid",
            )),
            _ => None,
        };
        if let Some((layer, shape, output)) = want {
            assert_eq!(sidecar["target_layer"], layer, "{name}");
            assert_eq!(sidecar["feature_shape"], serde_json::json!(shape), "{name}");
            assert_eq!(sidecar["layer_output"], output, "{name}");
        }
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
    random_state_dict("resnet18", &pth)?;
    let e = export_model(
        dir.path(),
        "r18",
        &["--arch", "resnet18", "--weights", pth.to_str().unwrap()],
    )?;
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let sidecar = std::fs::read_to_string(dir.path().join("r18.json"))?;
    assert!(sidecar.contains("resnet18 (r18.pth weights)"), "{sidecar}");
    let e = export_model(
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
    let e = export_model(
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
    // Each in one line, exit status 1, nothing written: a layer after the spatial map, a ViT
    // layer whose patch tokens the score ignores, a forward torch.fx cannot trace, a factory
    // that fails, weights that are not a state dict.
    let pickled = dir.path().join("whole.pth");
    let st = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, torch, torchvision; torch.save(torchvision.models.resnet18(), sys.argv[1])",
        ])
        .arg(&pickled)
        .status()?;
    assert!(st.success());
    for (args, needle) in [
        (
            &["--arch", "resnet18", "--weights", "random", "--layer", "fc"][..],
            "--layer 'fc' gives a 2-D output [2, 1000], not a spatial map",
        ),
        (
            &[
                "--arch",
                "vit_b_16",
                "--weights",
                "random",
                "--layer",
                "encoder.ln",
            ],
            "the scores do not depend on the map of --layer 'encoder.ln'",
        ),
        (
            &["--module", "toy_model:branchy", "--layer", "body"],
            "torch.fx cannot trace the model",
        ),
        (
            &["--module", "toy_model:mixer", "--layer", "norm"],
            "--layer 'norm' gives 110 tokens, which do not form a patch grid of the 224x224 input",
        ),
        (
            &["--module", "toy_model:pinned", "--layer", "body"],
            "the traced model fixes a device in `aten::zeros_like`",
        ),
        (
            &["--module", "toy_model:broken", "--layer", "body"],
            "cannot build --module toy_model:broken: no module named 'mylayers'",
        ),
        (
            &["--arch", "resnet18", "--weights", pickled.to_str().unwrap()],
            "cannot read --weights",
        ),
    ] {
        let e = export_model(dir.path(), "x", args)?;
        let err = String::from_utf8_lossy(&e.stderr);
        assert_eq!(e.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    std::fs::remove_file(&pickled)?;
    let e = export_model(
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
