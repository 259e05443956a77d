//! Loads the split TorchScript model (`features`, `head`) and its JSON sidecar, picks the
//! device, and turns frames into normalized input tensors on that device. Only the worker
//! thread calls into it: every tensor made here lives and dies on that thread.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use tch::{CModule, Device, Kind, Tensor};

use crate::config::DeviceChoice;

/// What `scripts/export_model.py` writes beside the model.
#[derive(Debug, Clone, Deserialize)]
pub struct Sidecar {
    pub name: String,
    pub target_layer: String,
    /// Model input [height, width].
    pub input_size: [i64; 2],
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub classes: Vec<String>,
    /// [C, h, w] of the target layer's activations at `input_size`.
    pub feature_shape: [i64; 3],
    pub num_classes: i64,
}

pub struct Model {
    module: CModule,
    path: PathBuf,
    pub info: Sidecar,
    pub device: Device,
    mean: Tensor, // [1, 3, 1, 1]
    std: Tensor,  // [1, 3, 1, 1]
}

/// The sidecar that belongs to a model file: same name, `.json`.
pub fn sidecar_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}

pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => bail!(
            "--device cuda was asked for but no CUDA GPU is available (libtorch sees none); \
             use --device cpu or --device auto"
        ),
    }
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A libtorch error as the one line that says what went wrong; with `GRADCAM_DEBUG=1`, the
/// whole text (the TorchScript traceback, the C++ backtrace).
pub fn one_line(e: impl std::fmt::Display) -> String {
    if std::env::var_os("GRADCAM_DEBUG").is_some_and(|v| !v.is_empty()) {
        return e.to_string();
    }
    telling_line(e)
}

/// libtorch errors carry a C++ backtrace after the first line; the first line is the message.
fn first_line(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown libtorch error")
        .to_owned()
}

/// The line of a libtorch error that says what went wrong: a TorchScript failure starts with a
/// generic line and a traceback, and ends with the actual `RuntimeError: …`.
fn telling_line(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let last_error = s
        .lines()
        .map(str::trim)
        .rfind(|l| l.contains("Error: "))
        .map(|l| l.split_once("Error: ").map_or(l, |(_, m)| m).to_owned());
    last_error.unwrap_or_else(|| first_line(s))
}

impl Model {
    pub fn load(path: &Path, device: Device) -> Result<Model> {
        if !path.exists() {
            bail!(
                "model {} does not exist; run `make models` (or scripts/export_model.py) to export it",
                path.display()
            );
        }
        let side = sidecar_path(path);
        let text = std::fs::read_to_string(&side).with_context(|| {
            format!(
                "reading the model's sidecar {} (scripts/export_model.py writes it beside the model)",
                side.display()
            )
        })?;
        let info: Sidecar = serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "model sidecar {} is invalid: {e}; re-export the model",
                side.display()
            )
        })?;
        if info.classes.len() as i64 != info.num_classes {
            bail!(
                "model sidecar {} lists {} class names for {} classes; re-export the model",
                side.display(),
                info.classes.len(),
                info.num_classes
            );
        }
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            anyhow!(
                "cannot load model {}: not a TorchScript file libtorch can read ({}); export one with scripts/export_model.py",
                path.display(),
                first_line(e)
            )
        })?;
        module.set_eval();
        let mean = Tensor::from_slice(&info.mean)
            .to_device(device)
            .view([1, 3, 1, 1]);
        let std = Tensor::from_slice(&info.std)
            .to_device(device)
            .view([1, 3, 1, 1]);
        let model = Model {
            module,
            path: path.to_owned(),
            info,
            device,
            mean,
            std,
        };
        model.check()?;
        Ok(model)
    }

    /// Run both methods once on a blank input: proves the interface and warms libtorch up.
    fn check(&self) -> Result<()> {
        let [h, w] = self.info.input_size;
        let x = Tensor::zeros([1, 3, h, w], (Kind::Float, self.device));
        let a = tch::no_grad(|| self.features(&x))?;
        let want = self.info.feature_shape;
        if a.size() != [1, want[0], want[1], want[2]] {
            bail!(
                "model {}: `features` gives {:?}, the sidecar says [1, {}, {}, {}]; re-export the model",
                self.path.display(),
                a.size(),
                want[0],
                want[1],
                want[2]
            );
        }
        // The head runs as Grad-CAM runs it: on a leaf that needs gradients.
        let leaf = a.detach().set_requires_grad(true);
        let logits = self.module.method_ts("head", &[&leaf]).map_err(|e| {
            anyhow!(
                "model {}: `head` does not accept what `features` gives ({:?}): {}; re-export the model with scripts/export_model.py",
                self.path.display(),
                a.size(),
                telling_line(format!("{e:#}"))
            )
        })?;
        if logits.size() != [1, self.info.num_classes] {
            bail!(
                "model {}: `head` gives {:?}, expected [1, {}]; re-export the model",
                self.path.display(),
                logits.size(),
                self.info.num_classes
            );
        }
        Ok(())
    }

    fn call(&self, method: &str, x: &Tensor) -> Result<Tensor> {
        self.module.method_ts(method, &[x]).map_err(|e| {
            let msg = first_line(&e);
            if msg.contains(&format!("'{method}'")) || msg.contains("not defined") {
                anyhow!(
                    "model {} has no `{method}` method; gradcam-stream needs a split model with `features` and `head`: export it with scripts/export_model.py",
                    self.path.display()
                )
            } else {
                anyhow!(
                    "model {}: `{method}` failed: {}",
                    self.path.display(),
                    one_line(e)
                )
            }
        })
    }

    /// Target-layer activations: [B, 3, H, W] → [B, C, h, w].
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.call("features", x)
    }

    /// Logits from activations: [B, C, h, w] → [B, K].
    pub fn head(&self, a: &Tensor) -> Result<Tensor> {
        self.call("head", a)
    }

    /// Frames [B, 3, H, W] (float, 0..255, on the device) → the model's input [B, 3, h, w]:
    /// resized (bilinear, antialiased, the whole frame squeezed to the input size so the map
    /// covers every pixel) and normalized. Float in, float out: see `engine` for why.
    pub fn preprocess(&self, rgb: &Tensor) -> Result<Tensor> {
        let [h, w] = self.info.input_size;
        let size = rgb.size();
        let &[_, 3, fh, fw] = size.as_slice() else {
            bail!("frames must be [B, 3, H, W], got {size:?}");
        };
        let x = if (fh, fw) == (h, w) {
            rgb.shallow_clone()
        } else {
            rgb.f_internal_upsample_bilinear2d_aa([h, w], false, None, None)?
        };
        Ok(((x / 255.0 - &self.mean) / &self.std).f_contiguous()?)
    }
}
