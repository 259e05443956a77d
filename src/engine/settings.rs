//! What the engine is asked (`Settings`, `StreamSettings`), resolved and checked against the
//! model and the machine before anything runs: the device and precision, the settings that
//! belong to one kind of model, a class by id or name, each stream's settings, the blend's
//! place, a detector's selection rules, and libtorch's process-wide setup.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use tch::Device;

use super::{blend, cpu_autocast, BoxSettings};
use crate::cam;
use crate::colormap::Colormap;
use crate::model;
use crate::settings::named::{DeviceChoice, Layout as Memory, Precision};
use crate::settings::{ClassSpec, ClassValue, Run};
use crate::usage::UsageError;

/// Where the heatmap is blended over the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlendAt {
    /// On the model's device when it is a GPU; on the host (the render stage, in parallel per
    /// frame) on a CPU, where the fixed-point host blend is the faster.
    Auto,
    Device,
    Host,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub model: PathBuf,
    pub device: DeviceChoice,
    pub precision: Precision,
    pub layout: Memory,
    pub batch_size: usize,
    pub max_wait: Duration,
    pub class: Option<ClassSpec>,
    /// None: the model's kind decides (Grad-CAM for a classifier, ODAM for a detector).
    pub method: Option<cam::Method>,
    /// A detector's: the most boxes explained per frame, and the score threshold and NMS IoU
    /// (None: the model's own defaults from its sidecar).
    pub boxes: usize,
    pub score_threshold: Option<f32>,
    pub nms_iou: Option<f32>,
    /// A detector's input size [h, w] (None: the sidecar's).
    pub detector_size: Option<[i64; 2]>,
    /// Explain the K most likely classes of each frame (1: the top-1 only).
    pub top_k: usize,
    /// Which of them the video shows (1-based).
    pub show_rank: usize,
    /// Temporal smoothing S, 0 is off (see `smooth`).
    pub smooth: f32,
    /// libtorch intra-op threads; 0: libtorch's choice on a CPU, one on a GPU (the device does
    /// the work there; more would only spin cores the codecs need).
    pub threads: usize,
    pub colormap: Colormap,
    pub alpha: f32,
    pub threshold: f32,
    pub blend: BlendAt,
    /// Whether the worker queues batch N+1 before it takes batch N's results. None: where
    /// the device runs asynchronously (a GPU, with the CUDA runtime's events); tests force it.
    pub pipelined: Option<bool>,
    /// Per stream (by `Frame::stream`): its class and smoothing, where they differ from
    /// `class` and `smooth` (a stream past the end takes those).
    pub streams: Vec<StreamSettings>,
    /// Keep each frame's shown map as the engine's tensor too (`Explained::cam_tensor`), for a
    /// caller that takes results as tensors (the Python package).
    pub keep_maps: bool,
}

/// What may differ between the streams that share the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    pub class: Option<ClassSpec>,
    pub smooth: f32,
    /// Whether its frames are shown (a file, a window, RTSP, the web view). False where its
    /// outputs keep its results only (`--output null`, with `--metadata`): no heatmap is
    /// blended onto its frames, and on a GPU none of them is brought back from the device.
    pub draw: bool,
}

impl Default for StreamSettings {
    fn default() -> StreamSettings {
        StreamSettings {
            class: None,
            smooth: 0.0,
            draw: true,
        }
    }
}

/// A stream's settings, resolved against the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PerStream {
    pub(super) class: Option<i64>,
    pub(super) smooth: f32,
    pub(super) draw: bool,
}

impl Settings {
    /// The declared defaults (`settings.rs`) for `model`: tests, benchmarks and the element
    /// start here.
    pub fn new(model: PathBuf) -> Settings {
        let run = Run {
            model,
            ..Run::default()
        };
        Settings::try_from(&run).expect("the declared defaults are valid")
    }

    /// A stream's settings, checked against the run's: the one place the rules between a
    /// class and the run's other settings live, for every front end (the program's streams and
    /// the element's one).
    pub fn stream(
        &self,
        class: Option<ClassValue>,
        smooth: f32,
        draw: bool,
    ) -> Result<StreamSettings, UsageError> {
        let class = class.map(ClassSpec::from_value);
        if let Some(ClassSpec::Id(c)) = class {
            if c < 0 {
                return Err(UsageError(format!(
                    "--class {c} is negative; use a class id from 0 to (number of classes - 1) or a class name"
                )));
            }
        }
        if self.top_k > 1 && class.is_some() {
            return Err(UsageError(
                "--top-k explains each frame's most likely classes; drop --class, or --top-k"
                    .into(),
            ));
        }
        Ok(StreamSettings {
            class,
            smooth,
            draw,
        })
    }
}

impl TryFrom<&Run> for Settings {
    type Error = UsageError;

    /// The run-wide settings as the engine takes them, every rule between them checked here,
    /// once, for every front end (the program, the element, Python): the declared ranges, then
    /// what only two settings together can say.
    fn try_from(run: &Run) -> Result<Settings, UsageError> {
        run.check_ranges().map_err(UsageError)?;
        if run.show_rank > run.top_k {
            return Err(UsageError(format!(
                "--show-rank {} is out of range; use 1 to --top-k ({})",
                run.show_rank, run.top_k
            )));
        }
        for (flag, v) in [
            ("score-threshold", run.score_threshold),
            ("nms-iou", run.nms_iou),
        ] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(UsageError(format!(
                    "--{flag} {v} is out of range; use 0 to 1"
                )));
            }
        }
        let detector_size = match &run.detector_size {
            Some(v) => Some(
                crate::endpoint::parse_size(v)
                    .map(|(w, h)| [h as i64, w as i64])
                    .ok_or_else(|| {
                        UsageError(format!(
                            "--detector-size {v}: use WIDTHxHEIGHT in multiples of the detector's stride, e.g. 640x384"
                        ))
                    })?,
            ),
            None => None,
        };
        Ok(Settings {
            model: run.model.clone(),
            device: run.device,
            precision: run.precision,
            layout: run.layout,
            batch_size: run.batch_size,
            max_wait: Duration::from_millis(run.max_wait_ms),
            class: None,
            method: cam::Method::chosen(run.method),
            boxes: run.boxes,
            score_threshold: run.score_threshold,
            nms_iou: run.nms_iou,
            detector_size,
            top_k: run.top_k,
            show_rank: run.show_rank,
            smooth: crate::settings::PerStream::default().smooth,
            threads: run.threads,
            colormap: run.colormap,
            alpha: run.alpha,
            threshold: run.threshold,
            blend: BlendAt::Auto,
            pipelined: None,
            streams: Vec::new(),
            keep_maps: false,
        })
    }
}

/// The id of the class called `name` (case-insensitive); an unknown name lists close ones.
pub fn class_by_name(name: &str, classes: &[String]) -> Result<i64> {
    let want = name.trim().to_lowercase();
    if let Some(i) = classes.iter().position(|c| c.to_lowercase() == want) {
        return Ok(i as i64);
    }
    let mut near: Vec<(usize, usize)> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = c.to_lowercase();
            let d = if c.contains(&want) || want.contains(&c) {
                0
            } else {
                strsim::levenshtein(&want, &c)
            };
            (d, i)
        })
        .collect();
    near.sort();
    let close: Vec<String> = near
        .iter()
        .take_while(|(d, _)| *d <= want.len().max(3) / 2)
        .take(5)
        .map(|&(_, i)| format!("{} ({i})", classes[i]))
        .collect();
    let hint = if close.is_empty() {
        "give a class id, or a name from the model's sidecar .json".to_owned()
    } else {
        format!("close matches: {}", close.join(", "))
    };
    Err(UsageError(format!(
        "--class `{name}` is not a class of this model; {hint}"
    ))
    .into())
}

/// The settings that belong to one kind of model, checked against the model's kind; a
/// detector's input size resolved.
pub(super) fn fit_to_kind(s: &Settings, info: &mut model::Sidecar) -> Result<()> {
    if info.is_detector() {
        info.input_size = info.detector_size(s.detector_size)?;
        if s.top_k > 1 {
            return Err(UsageError(format!(
                "--top-k is for classifiers; model {} is a detector: every box is explained (up to --boxes, now {})",
                info.name, s.boxes
            ))
            .into());
        }
    } else if s.detector_size.is_some() {
        return Err(UsageError(format!(
            "--detector-size is for detectors; model {} is a classifier (its input is {}x{})",
            info.name, info.input_size[1], info.input_size[0]
        ))
        .into());
    }
    Ok(())
}

/// The blend on the model's device, where it is drawn there (a detector's maps are drawn box
/// by box on the host, by render).
pub(super) fn device_blend(
    s: &Settings,
    device: Device,
    info: &model::Sidecar,
) -> Result<Option<blend::Blend>> {
    let on_device = match s.blend {
        BlendAt::Auto => device.is_cuda(),
        BlendAt::Device => true,
        BlendAt::Host => false,
    };
    (on_device && !info.is_detector())
        .then(|| blend::Blend::new(s.colormap, s.alpha, s.threshold, device))
        .transpose()
}

/// A detector's selection rules: the flags, else the model's sidecar, else 0.5.
pub(super) fn box_settings(s: &Settings, info: &model::Sidecar) -> Option<BoxSettings> {
    info.is_detector().then(|| BoxSettings {
        rules: crate::select::Rules {
            threshold: s.score_threshold.or(info.score_threshold).unwrap_or(0.5),
            iou: s.nms_iou.or(info.nms_iou).unwrap_or(0.5),
            cap: s.boxes,
        },
    })
}

/// What `precision` means on `device`: auto is bf16 on a CPU that has bf16 instructions (for a
/// convolutional map: see `Engine::new`) and fp32 elsewhere (fp16 on a GPU stays a choice: its
/// maps differ more); fp16 needs a GPU, bf16 such a CPU.
pub(super) fn resolve_precision(precision: Precision, device: Device) -> Result<Precision> {
    let usage = |m: &str| -> Result<Precision> { Err(UsageError(m.to_owned()).into()) };
    match precision {
        Precision::Auto if !device.is_cuda() && cpu_autocast::supported() => {
            if cpu_autocast::available() {
                Ok(Precision::Bf16)
            } else {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| eprintln!("bf16 is not available in this libtorch: using fp32"));
                Ok(Precision::Fp32)
            }
        }
        Precision::Auto => Ok(Precision::Fp32),
        Precision::Fp16 if !device.is_cuda() => usage(
            "--precision fp16 runs on a CUDA GPU only, and the model runs on the CPU here; use --precision fp32 (or a machine with a GPU and --device cuda)",
        ),
        Precision::Bf16 if device.is_cuda() => usage(
            "--precision bf16 is for CPUs with bf16 instructions; on a GPU use --precision fp16 (or fp32)",
        ),
        Precision::Bf16 if !cpu_autocast::supported() => usage(
            "--precision bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX-BF16); use --precision fp32 or auto",
        ),
        Precision::Bf16 if !cpu_autocast::available() => usage(
            "--precision bf16: this libtorch has no CPU autocast (its calls were not found); use --precision fp32 or auto",
        ),
        p => Ok(p),
    }
}

/// libtorch's process-wide settings for a run on `device`.
pub(super) fn configure_libtorch(threads: usize, device: Device) -> Result<()> {
    match (threads, device.is_cuda()) {
        (0, false) => {}
        (0, true) => tch::set_num_threads(1),
        (n, _) => tch::set_num_threads(n as i32),
    }
    if device.is_cuda() {
        // The model sees a few fixed batch shapes (the buckets), each warmed up below: let
        // cuDNN time its algorithms for each once.
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok(())
}

/// libtorch's graph executor for a model run in `precision`.
pub(super) fn executor_for(precision: Precision) -> Result<()> {
    // TorchScript's profiling executor specializes the graph on the shapes it sees and
    // re-specializes (on a GPU: compiles fused kernels) when a batch of another size comes;
    // the frozen model runs as well unspecialized in float32 (the same on the CPU, in the
    // bench). But autocast reaches a TorchScript graph only through the executor: without it
    // the graph ran in float32 under autocast (the fp16 engine was 4% faster than fp32 on an
    // H200, bf16 on a CPU no faster at all), so the reduced precisions keep it.
    let reduced = matches!(precision, Precision::Fp16 | Precision::Bf16);
    tch::jit::f_set_graph_executor_optimize(reduced)?;
    Ok(())
}

/// The run's class and smoothing, and each stream's, the classes checked against the model.
pub(super) fn per_stream(
    s: &Settings,
    info: &model::Sidecar,
) -> Result<(PerStream, Vec<PerStream>)> {
    let n = info.num_classes;
    let class = |spec: &Option<ClassSpec>| -> Result<Option<i64>> {
        Ok(match spec {
            None => None,
            Some(ClassSpec::Id(c)) if *c >= n => {
                return Err(UsageError(format!(
                    "--class {c} is out of range: model {} has {n} classes (0 to {})",
                    info.name,
                    n - 1
                ))
                .into())
            }
            Some(ClassSpec::Id(c)) => Some(*c),
            Some(ClassSpec::Name(name)) => Some(class_by_name(name, &info.classes)?),
        })
    };
    let defaults = PerStream {
        class: class(&s.class)?,
        smooth: s.smooth,
        draw: true,
    };
    let streams = s
        .streams
        .iter()
        .map(|st| {
            Ok(PerStream {
                class: class(&st.class)?,
                smooth: st.smooth,
                draw: st.draw,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((defaults, streams))
}
