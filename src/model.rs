//! Loads the split TorchScript model (`features`, `head`) and its JSON sidecar, picks the
//! device, and turns frames into normalized input tensors on that device. Only the worker
//! thread calls into it: every tensor made here lives and dies on that thread.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::settings::named::DeviceChoice;

/// What `scripts/export_model.py` writes beside the model.
#[derive(Debug, Clone, Deserialize)]
pub struct Sidecar {
    pub name: String,
    pub target_layer: String,
    /// Model input [height, width].
    pub input_size: [i64; 2],
    /// The order of the model's input channels; `mean` and `std` are in that order.
    #[serde(default)]
    pub channels: Channels,
    /// Per channel, of pixels scaled to [0, 1]: the input is (x / 255 - mean) / std.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub classes: Vec<String>,
    /// [C, h, w] of the target layer's activations at `input_size`.
    pub feature_shape: [i64; 3],
    pub num_classes: i64,
    /// How many tensors `features` returns after the map, for `head` (0: it returns the map alone).
    #[serde(default)]
    pub carry: usize,
    /// What the target layer gives and how it became a map (`… as it is`, `tokens …`, `…
    /// channels-last, permuted …`); absent in sidecars older than the transformers.
    #[serde(default)]
    pub layer_output: Option<String>,
    /// A classifier (the default) or a detector (see `crates/gradcam-py/python/gradcam_stream/detectors.py` for its contract).
    #[serde(default)]
    pub kind: ModelKind,
    /// A detector's: how many of `features`' tensors are levels to explain (the rest are
    /// carried to the head), and their names.
    #[serde(default = "one")]
    pub levels: usize,
    #[serde(default)]
    pub level_names: Vec<String>,
    /// A detector's: what turns a candidate's score into its probability.
    #[serde(default)]
    pub score_activation: Activation,
    /// A detector's: the input size must be a multiple of this (0: `input_size` is the only one).
    #[serde(default)]
    pub stride: i64,
    /// A detector's defaults for `--score-threshold` and `--nms-iou` (its own decoding's).
    #[serde(default)]
    pub score_threshold: Option<f32>,
    #[serde(default)]
    pub nms_iou: Option<f32>,
}

fn one() -> usize {
    1
}

/// What a model's outputs are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    #[default]
    Classifier,
    Detector,
}

/// A detector candidate's score → probability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Sigmoid,
    /// The score is a log-probability (a softmax's, taken in the graph).
    Exp,
}

impl Activation {
    pub fn apply(self, t: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Sigmoid => t.f_sigmoid()?,
            Activation::Exp => t.f_exp()?,
        })
    }
}

/// A detector's candidates for a batch: what `head` gives.
pub struct Candidates {
    /// [B, K, 4] x1, y1, x2, y2 in input pixels.
    pub boxes: Tensor,
    /// [B, K] before the activation: what each box's gradient is taken of.
    pub scores: Tensor,
    /// [B, K] class ids (any numeric kind).
    pub classes: Tensor,
    /// [B, K] the level each came from; None for a one-level detector.
    pub levels: Option<Tensor>,
}

/// A model's input channel order: PyTorch models take RGB; Keras's caffe-style models (VGG,
/// ResNet) take BGR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    #[default]
    Rgb,
    Bgr,
}

/// The target layer's output as every method sees it, and what the head needs besides.
pub struct Acts {
    /// [B, C, h, w]: a conv layer's output, or a transformer's patch tokens laid on their grid.
    pub map: Tensor,
    /// Tensors computed before the target layer and used after it (a transformer's residual
    /// stream and class token, a skip connection's input), given back to `head` as they are.
    /// Gradients never flow into them: Grad-CAM's gradient is the one through the layer's output.
    pub carry: Vec<Tensor>,
}

/// A detector's levels to explain and what its head takes besides.
pub struct Levels {
    pub levels: Vec<Tensor>,
    pub carry: Vec<Tensor>,
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

/// What kind of value a TorchScript method gave, for an error message.
fn ivalue_kind(v: &IValue) -> String {
    match v {
        IValue::Tensor(t) => format!("a tensor {:?}", t.size()),
        IValue::Tuple(v) => format!("a tuple of {}", v.len()),
        IValue::GenericList(_) | IValue::TensorList(_) => "a list".into(),
        IValue::GenericDict(_) => "a dict".into(),
        IValue::None => "None".into(),
        _ => "a scalar".into(),
    }
}

impl Sidecar {
    /// The sidecar of the model at `path`, checked.
    pub fn read(path: &Path) -> Result<Sidecar> {
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
        if info.kind == ModelKind::Detector && info.levels == 0 {
            bail!(
                "model sidecar {} says the detector explains 0 levels; re-export the model",
                side.display()
            );
        }
        if info.classes.len() as i64 != info.num_classes {
            bail!(
                "model sidecar {} lists {} class names for {} classes; re-export the model",
                side.display(),
                info.classes.len(),
                info.num_classes
            );
        }
        Ok(info)
    }

    /// Whether the target layer's output is a plain convolutional map (a CNN's, as it is):
    /// the maps whose bf16 parity with pytorch-grad-cam is established. A transformer's token
    /// grid, where bf16's rounding moved XGradCAM's map on a ViT, is not.
    pub fn plain_map(&self) -> bool {
        self.layer_output
            .as_deref()
            .is_none_or(|l| l.ends_with("as it is"))
    }

    pub fn is_detector(&self) -> bool {
        self.kind == ModelKind::Detector
    }

    /// A detector's input size [h, w] for `--detector-size` (None: the sidecar's): a multiple
    /// of the model's stride, or the one size a fixed-size model takes.
    pub fn detector_size(&self, asked: Option<[i64; 2]>) -> Result<[i64; 2]> {
        let Some([h, w]) = asked else {
            return Ok(self.input_size);
        };
        let [dh, dw] = self.input_size;
        let usage = |m: String| -> Result<[i64; 2]> { Err(crate::usage::UsageError(m).into()) };
        if self.stride == 0 && [h, w] != self.input_size {
            return usage(format!(
                "--detector-size {w}x{h}: model {} takes {dw}x{dh} only (its anchors are made for that size); leave --detector-size out",
                self.name
            ));
        }
        let s = self.stride.max(1);
        if h % s != 0 || w % s != 0 || h < s || w < s {
            let round = |v: i64| ((v + s / 2) / s).max(1) * s;
            return usage(format!(
                "--detector-size {w}x{h}: model {} needs multiples of {s}; use {}x{}",
                self.name,
                round(w),
                round(h)
            ));
        }
        Ok([h, w])
    }
}

impl Model {
    /// The sidecar of the model at `path`, which must exist: what `load` needs besides the file,
    /// and what decides the run's settings before libtorch is configured.
    pub fn sidecar(path: &Path) -> Result<Sidecar> {
        if !path.exists() {
            bail!(
                "model {} does not exist; run `make models` (or scripts/export_model.py) to export it",
                path.display()
            );
        }
        Sidecar::read(path)
    }

    /// The model at `path` on `device`, described by its sidecar `info` (`Model::sidecar`).
    pub fn load(path: &Path, info: Sidecar, device: Device) -> Result<Model> {
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
        if self.info.is_detector() {
            return self.check_detector();
        }
        let [h, w] = self.info.input_size;
        let x = Tensor::zeros([1, 3, h, w], (Kind::Float, self.device));
        let acts = tch::no_grad(|| self.features(&x))?;
        if acts.carry.len() != self.info.carry {
            bail!(
                "model {}: `features` gives the map and {} more tensors, the sidecar says {}; re-export the model",
                self.path.display(),
                acts.carry.len(),
                self.info.carry
            );
        }
        let a = &acts.map;
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
        let logits = match self.invoke("head", &leaf, &acts.carry) {
            Ok(v) => self.scores(v)?,
            Err(e) => bail!(
                "model {}: `head` does not accept what `features` gives ({:?}): {}; re-export the model with scripts/export_model.py",
                self.path.display(),
                a.size(),
                telling_line(format!("{e:#}"))
            ),
        };
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

    /// A detector's interface, on a blank input at its input size: the levels it says, and a
    /// head that gives candidates (checked in `candidates`) whose scores take a gradient.
    fn check_detector(&self) -> Result<()> {
        let [h, w] = self.info.input_size;
        let x = Tensor::zeros([1, 3, h, w], (Kind::Float, self.device));
        let parts = tch::no_grad(|| self.levels(&x))?;
        if parts.carry.len() != self.info.carry {
            bail!(
                "model {}: `features` gives {} levels and {} more tensors, the sidecar says {} more; re-export the model",
                self.path.display(),
                parts.levels.len(),
                parts.carry.len(),
                self.info.carry
            );
        }
        for (i, l) in parts.levels.iter().enumerate() {
            if l.dim() != 4 {
                bail!(
                    "model {}: level {i} of `features` is {:?}, not [B, C, h, w]; re-export the model",
                    self.path.display(),
                    l.size()
                );
            }
        }
        let leaves: Vec<Tensor> = parts
            .levels
            .iter()
            .map(|l| l.detach().set_requires_grad(true))
            .collect();
        let c = self.candidates(&leaves, &parts.carry)?;
        if !c.scores.requires_grad() {
            bail!(
                "model {}: the detector's scores do not depend on its levels (no gradient reaches them); re-export the model",
                self.path.display()
            );
        }
        Ok(())
    }

    /// `method`(x, *carry), as TorchScript answers.
    fn invoke(&self, method: &str, x: &Tensor, carry: &[Tensor]) -> Result<IValue, tch::TchError> {
        let mut inputs = vec![IValue::Tensor(x.shallow_clone())];
        inputs.extend(carry.iter().map(|t| IValue::Tensor(t.shallow_clone())));
        self.module.method_is(method, &inputs)
    }

    fn call(&self, method: &str, x: &Tensor, carry: &[Tensor]) -> Result<IValue> {
        self.invoke(method, x, carry)
            .map_err(|e| self.method_error(method, e))
    }

    fn method_error(&self, method: &str, e: tch::TchError) -> anyhow::Error {
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
    }

    /// What `features` gives, each tensor in its order.
    fn parts(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let bad = |what: String| {
            anyhow!(
                "model {}: `features` gives {what}, not a tensor or a tuple of tensors; re-export the model with scripts/export_model.py",
                self.path.display()
            )
        };
        match self.call("features", x, &[])? {
            IValue::Tensor(map) => Ok(vec![map]),
            IValue::Tuple(parts) if !parts.is_empty() => parts
                .into_iter()
                .map(|p| match p {
                    IValue::Tensor(t) => Ok(t),
                    other => Err(bad(format!("a tuple holding {}", ivalue_kind(&other)))),
                })
                .collect(),
            other => Err(bad(ivalue_kind(&other))),
        }
    }

    /// Target-layer activations: [B, 3, H, W] → the map [B, C, h, w] and the tensors carried
    /// past the layer.
    pub fn features(&self, x: &Tensor) -> Result<Acts> {
        let mut parts = self.parts(x)?.into_iter();
        let map = parts.next().expect("parts gives at least one tensor");
        Ok(Acts {
            map,
            carry: parts.collect(),
        })
    }

    /// A detector's levels to explain ([B, C_l, h_l, w_l] each) and the tensors carried to its
    /// head: [B, 3, H, W] → `Levels`.
    pub fn levels(&self, x: &Tensor) -> Result<Levels> {
        let mut parts = self.parts(x)?;
        let n = self.info.levels;
        if parts.len() < n {
            bail!(
                "model {}: `features` gives {} tensors, the sidecar says {n} levels; re-export the model",
                self.path.display(),
                parts.len()
            );
        }
        let carry = parts.split_off(n);
        Ok(Levels {
            levels: parts,
            carry,
        })
    }

    /// A detector's candidates from its levels (and carried tensors).
    pub fn candidates(&self, levels: &[Tensor], carry: &[Tensor]) -> Result<Candidates> {
        let inputs: Vec<IValue> = levels
            .iter()
            .chain(carry)
            .map(|t| IValue::Tensor(t.shallow_clone()))
            .collect();
        let out = self
            .module
            .method_is("head", &inputs)
            .map_err(|e| self.method_error("head", e))?;
        let broken = |what: String| {
            anyhow!(
                "model {}: the detector's `head` gives {what}; it must give (boxes [B,K,4], scores [B,K], classes [B,K]{}); re-export the model with scripts/export_model.py --detector",
                self.path.display(),
                if self.info.levels > 1 { ", levels [B,K]" } else { "" }
            )
        };
        let IValue::Tuple(parts) = out else {
            return Err(broken(ivalue_kind(&out)));
        };
        let want = if self.info.levels > 1 { 4 } else { 3 };
        if parts.len() != want && parts.len() != 4 {
            return Err(broken(format!("a tuple of {}", parts.len())));
        }
        let mut t = Vec::with_capacity(4);
        for p in parts {
            match p {
                IValue::Tensor(x) => t.push(x),
                other => return Err(broken(format!("a tuple holding {}", ivalue_kind(&other)))),
            }
        }
        let (b, k) = match t[1].size().as_slice() {
            &[b, k] => (b, k),
            other => return Err(broken(format!("scores {other:?}"))),
        };
        if t[0].size() != [b, k, 4] {
            return Err(broken(format!(
                "boxes {:?} beside scores [{b}, {k}]",
                t[0].size()
            )));
        }
        for (i, name) in [(2, "classes"), (3, "levels")] {
            if let Some(x) = t.get(i) {
                if x.size() != [b, k] {
                    return Err(broken(format!(
                        "{name} {:?} beside scores [{b}, {k}]",
                        x.size()
                    )));
                }
            }
        }
        let levels = (t.len() == 4 && self.info.levels > 1).then(|| t.remove(3));
        let classes = t.remove(2);
        let scores = t.remove(1);
        let boxes = t.remove(0);
        Ok(Candidates {
            boxes,
            scores,
            classes,
            levels,
        })
    }

    /// Logits from activations: [B, C, h, w] (and the carried tensors) → [B, K].
    pub fn head(&self, a: &Tensor, carry: &[Tensor]) -> Result<Tensor> {
        self.scores(self.call("head", a, carry)?)
    }

    /// What `head` gave, as the tensor of scores it must be.
    fn scores(&self, v: IValue) -> Result<Tensor> {
        match v {
            IValue::Tensor(t) => Ok(t),
            other => bail!(
                "model {}: `head` gives {}, not a tensor of scores; re-export the model with scripts/export_model.py",
                self.path.display(),
                ivalue_kind(&other)
            ),
        }
    }

    /// Frames [B, 3, H, W] (float, 0..255, on the device) → the model's input [B, 3, h, w]:
    /// resized (bilinear, antialiased, the whole frame squeezed to the input size so the map
    /// covers every pixel), its channels in the model's order, and normalized.
    /// Float in, float out: see `engine` for why.
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
        let x = match self.info.channels {
            Channels::Rgb => x,
            Channels::Bgr => x.f_flip([1])?,
        };
        let x = (x / 255.0 - &self.mean) / &self.std;
        // A channels-last batch stays so (the elementwise ops keep their input's layout);
        // anything else is made contiguous.
        if is_channels_last(&x) {
            Ok(x)
        } else {
            Ok(x.f_contiguous()?)
        }
    }
}

/// Whether `t` [N, C, H, W] lies channels-last in memory (its channels innermost).
pub fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    size.len() == 4 && stride[1] == 1 && stride[3] == size[1] && stride[2] == size[1] * size[3]
}
