//! Keras models: scripts/export_model.py --keras runs a Keras 3 classifier on Keras's PyTorch
//! backend and writes the same split TorchScript and sidecar as for PyTorch models; the maps
//! gradcam-stream draws with it match a Grad-CAM computed on the Keras model itself.

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use common::*;

/// tests/keras_models.py: seeded random-weight Keras models in `dir`, those `names` (all when
/// none are named). Kept (see common::kept) under the script, the virtualenv and the names.
fn keras_models(dir: &Path, names: &[&str]) -> Result<()> {
    let script = root().join("tests/keras_models.py");
    let mut key = Key::python();
    key.file(&script);
    key.args(names);
    let o = kept("keras", key, dir, |into| {
        Ok(Command::new(python())
            .arg(&script)
            .arg(into)
            .args(names)
            .output()?)
    })?;
    anyhow::ensure!(
        o.status.success(),
        "tests/keras_models.py failed: {}",
        stderr(&o)
    );
    Ok(())
}

#[test]
fn keras_models_match_a_keras_side_grad_cam() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    keras_models(d, &[])?;
    let raw = d.join("frames.rgbx");
    // One start of the reference script checks every model (and that no graph names a device).
    let mut reference = Command::new(python());
    reference.arg(root().join("tests/keras_gradcam.py")).args([
        "--raw",
        raw.to_str().unwrap(),
        "--size",
        "640x272",
    ]);
    raw_frames(&sample("bikes.mp4"), &raw)?;
    // (file, export flags, keras.applications module whose preprocess_input the reference uses,
    //  the channel order and target layer the sidecar should record)
    for (file, extra, family, channels, layer) in [
        (
            "resnet50.keras",
            &[][..],
            "resnet50",
            "bgr",
            "conv5_block3_out",
        ),
        ("mobilenetv2.keras", &[], "mobilenet_v2", "rgb", "out_relu"),
        (
            "efficientnetb0.keras",
            &[],
            "efficientnet",
            "rgb",
            "top_activation",
        ),
        (
            "tiny.h5",
            &["--preprocess", "none"],
            "none",
            "rgb",
            "last_conv",
        ),
    ] {
        let name = file.split('.').next().unwrap();
        let keras = d.join(file);
        let mut args = vec!["--keras", keras.to_str().unwrap()];
        args.extend_from_slice(extra);
        let e = export_model(d, name, &args)?;
        assert!(e.status.success(), "{file}: {}", stderr(&e));
        let sidecar: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join(format!("{name}.json")))?)?;
        assert_eq!(sidecar["channels"], channels, "{file}");
        assert_eq!(sidecar["target_layer"], layer, "{file}");
        assert_eq!(sidecar["scores"], "before the final softmax", "{file}");
        let model = d.join(format!("{name}.pt"));
        let meta = d.join(format!("{name}.jsonl"));
        let o = explain(
            sample("bikes.mp4").to_str().unwrap(),
            d.join(format!("{name}.mp4")).to_str().unwrap(),
            model.to_str().unwrap(),
            &["--metadata", meta.to_str().unwrap(), "--max-frames", "8"],
        )?;
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        reference.arg("--check").args([
            keras.to_str().unwrap(),
            family,
            model.to_str().unwrap(),
            meta.to_str().unwrap(),
        ]);
    }
    reference_check(&mut reference, "the Keras models")
}

#[test]
fn keras_errors_are_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    keras_models(d, &["tiny", "headless", "notkeras"])?;
    let garbage = d.join("garbage.keras");
    std::fs::write(&garbage, "not a model")?;
    // A zip archive, as a .keras file is, that holds no Keras model.
    let notkeras = d.join("notkeras.keras");
    let tiny = d.join("tiny.h5");
    let (tiny, headless, garbage) = (
        tiny.to_str().unwrap(),
        d.join("headless.keras"),
        garbage.to_str().unwrap(),
    );
    let none = ["--preprocess", "none"];
    for (args, needle) in [
        (
            vec!["--keras", garbage],
            "is neither a .keras file (a zip archive) nor an .h5 file (HDF5)",
        ),
        (vec!["--keras", "/no/such.keras"], "--keras /no/such.keras: no such file"),
        (
            vec!["--keras", notkeras.to_str().unwrap()],
            "cannot load --keras",
        ),
        (
            vec!["--keras", tiny, none[0], none[1], "--layer", "conv9"],
            "--layer 'conv9' is not a layer of tiny; layers with a spatial output: conv2d, max_pooling2d, last_conv",
        ),
        (
            vec!["--keras", tiny, none[0], none[1], "--layer", "dense"],
            "--layer 'dense' gives (None, 4), not a spatial map",
        ),
        (
            vec!["--keras", headless.to_str().unwrap(), none[0], none[1]],
            "is not a classifier: its output is (None, 62, 62, 8)",
        ),
        (vec!["--keras", tiny], "cannot tell how tiny expects its pixels; give --preprocess"),
    ] {
        let e = export_model(d, "x", &args)?;
        let err = stderr(&e);
        assert_eq!(e.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert!(!d.join("x.pt").exists() && !d.join("x.json").exists());
    Ok(())
}
