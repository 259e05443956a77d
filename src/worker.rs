//! The one thread that owns the model and every tensor: it gathers decoded frames into
//! dynamic batches, computes Grad-CAM for each batch, and hands plain-data results on.
//! It never touches GStreamer; it stops when its input channel closes and is drained.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tch::{Kind, Tensor};

use crate::cam;
use crate::config::DeviceChoice;
use crate::frame::{CamMap, ClassScore, Explained, Frame};
use crate::model::{self, Model};

/// How many of the most likely classes each result carries.
pub const TOP: i64 = 5;

#[derive(Debug, Clone)]
pub struct Settings {
    pub model: PathBuf,
    pub device: DeviceChoice,
    pub batch_size: usize,
    pub max_wait: Duration,
    pub class: Option<i64>,
    pub method: cam::Method,
    /// libtorch intra-op threads; 0 keeps libtorch's choice.
    pub threads: usize,
}

/// What the rest of the program may know about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub device: String,
    pub classes: Vec<String>,
    pub input_size: [i64; 2],
    pub feature_shape: [i64; 3],
}

/// Start the worker. The model is loaded on the worker thread before this returns, so a bad
/// model or device is reported here, before any pipeline starts.
pub fn spawn(
    settings: Settings,
    frames: Receiver<Frame>,
    results: Sender<Explained>,
) -> Result<(ModelInfo, JoinHandle<Result<()>>)> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<ModelInfo>>(1);
    let handle = std::thread::Builder::new()
        .name("gradcam-worker".into())
        .spawn(move || -> Result<()> {
            let loaded = load(&settings);
            let engine = match loaded {
                Ok(engine) => {
                    let _ = ready_tx.send(Ok(engine.info()));
                    engine
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            drop(ready_tx);
            engine.run(&frames, &results)
        })
        .context("starting the worker thread")?;
    match ready_rx.recv() {
        Ok(Ok(info)) => Ok((info, handle)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(match handle.join() {
            Ok(Err(e)) => e,
            _ => anyhow!("the worker thread died while loading the model"),
        }),
    }
}

fn load(s: &Settings) -> Result<Engine> {
    if s.threads > 0 {
        tch::set_num_threads(s.threads as i32);
    }
    let device = model::resolve_device(s.device)?;
    let model = Model::load(&s.model, device)?;
    if let Some(c) = s.class {
        let n = model.info.num_classes;
        if c >= n {
            return Err(crate::config::UsageError(format!(
                "--class {c} is out of range: model {} has {n} classes (0 to {})",
                model.info.name,
                n - 1
            ))
            .into());
        }
    }
    Ok(Engine {
        model,
        batch_size: s.batch_size,
        max_wait: s.max_wait,
        class: s.class,
        method: s.method,
    })
}

/// The model plus the batching policy; lives on the worker thread only.
pub struct Engine {
    pub model: Model,
    batch_size: usize,
    max_wait: Duration,
    class: Option<i64>,
    method: cam::Method,
}

impl Engine {
    /// An engine used directly on the calling thread (benchmarks, still images in tests).
    pub fn new(s: &Settings) -> Result<Engine> {
        load(s)
    }

    pub fn info(&self) -> ModelInfo {
        let i = &self.model.info;
        ModelInfo {
            name: i.name.clone(),
            device: model::device_name(self.model.device),
            classes: i.classes.clone(),
            input_size: i.input_size,
            feature_shape: i.feature_shape,
        }
    }

    fn run(&self, frames: &Receiver<Frame>, results: &Sender<Explained>) -> Result<()> {
        while let Some(batch) = self.next_batch(frames) {
            let explained = self.explain(batch)?;
            for e in explained {
                if results.send(e).is_err() {
                    return Ok(()); // the output stage is gone: it reports its own error
                }
            }
        }
        Ok(())
    }

    /// Block for the first frame, then take what arrives within `max_wait`, up to `batch_size`.
    /// None once the channel is closed and empty.
    fn next_batch(&self, frames: &Receiver<Frame>) -> Option<Vec<Frame>> {
        let first = frames.recv().ok()?;
        let deadline = Instant::now() + self.max_wait;
        let mut batch = Vec::with_capacity(self.batch_size);
        batch.push(first);
        while batch.len() < self.batch_size {
            // Take what is already queued without waiting, then wait out the deadline.
            match frames.try_recv() {
                Ok(f) => {
                    batch.push(f);
                    continue;
                }
                Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            match frames.recv_deadline(deadline) {
                Ok(f) => batch.push(f),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        Some(batch)
    }

    /// Forward pass without autograd up to the target layer; the method's gradients (if any)
    /// through the head only.
    pub fn cams(&self, frames: &[Frame]) -> Result<cam::CamBatch> {
        let x = self.model.preprocess(frames)?; // [B, 3, H, W]
        let acts = tch::no_grad(|| self.model.features(&x))?; // [B, C, h, w]
        cam::compute(self.method, &acts, |a| self.model.head(a), self.class)
    }

    /// The same engine explaining with another method (benchmarks, tests).
    pub fn with_method(mut self, method: cam::Method) -> Engine {
        self.method = method;
        self
    }

    /// Forward only, no gradients: the speed limit Grad-CAM is measured against.
    pub fn forward_only(&self, frames: &[Frame]) -> Result<Tensor> {
        tch::no_grad(|| {
            let x = self.model.preprocess(frames)?;
            let a = self.model.features(&x)?;
            self.model.head(&a)
        })
    }

    /// Grad-CAM for a batch, brought back to plain data.
    pub fn explain(&self, frames: Vec<Frame>) -> Result<Vec<Explained>> {
        let out = self.cams(&frames)?;
        let b = frames.len();
        let probs = out.logits.softmax(1, Kind::Float); // [B, K]
        let k = TOP.min(probs.size()[1]);
        let (top_p, top_i) = probs.topk(k, 1, true, true); // [B, k] each
        let target_p = probs.gather(1, &out.targets.unsqueeze(1), false); // [B, 1]
        let maps = out.maps.to_device(tch::Device::Cpu).contiguous(); // [B, h, w]
        let (h, w) = (maps.size()[1] as usize, maps.size()[2] as usize);
        let maps = Vec::<f32>::try_from(maps.flatten(0, -1))?;
        let top_p = Vec::<f32>::try_from(top_p.to_device(tch::Device::Cpu).flatten(0, -1))?;
        let top_i = Vec::<i64>::try_from(top_i.to_device(tch::Device::Cpu).flatten(0, -1))?;
        let targets = Vec::<i64>::try_from(out.targets.to_device(tch::Device::Cpu))?;
        let target_p = Vec::<f32>::try_from(target_p.to_device(tch::Device::Cpu).flatten(0, -1))?;
        assert_eq!(maps.len(), b * h * w);
        let k = k as usize;
        Ok(frames
            .into_iter()
            .enumerate()
            .map(|(i, frame)| Explained {
                frame,
                cam: CamMap {
                    h,
                    w,
                    data: maps[i * h * w..(i + 1) * h * w].to_vec(),
                },
                target: ClassScore {
                    class: targets[i],
                    prob: target_p[i],
                },
                top: (0..k)
                    .map(|j| ClassScore {
                        class: top_i[i * k + j],
                        prob: top_p[i * k + j],
                    })
                    .collect(),
            })
            .collect())
    }
}
