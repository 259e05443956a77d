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
use crate::config::{ClassSpec, DeviceChoice, UsageError};
use crate::frame::{CamMap, ClassScore, Explained, Frame};
use crate::model::{self, Model};
use crate::smooth;

/// How many of the most likely classes each result carries.
pub const TOP: i64 = 5;
/// With smoothing, another class takes over once its averaged probability is this many times
/// the held class's.
const HOLD_MARGIN: f64 = 1.25;

#[derive(Debug, Clone)]
pub struct Settings {
    pub model: PathBuf,
    pub device: DeviceChoice,
    pub batch_size: usize,
    pub max_wait: Duration,
    pub class: Option<ClassSpec>,
    pub method: cam::Method,
    /// Explain the K most likely classes of each frame (1: the top-1 only).
    pub top_k: usize,
    /// Which of them the video shows (1-based).
    pub show_rank: usize,
    /// Temporal smoothing S, 0 is off. The top-1 target is then chosen on a moving average of
    /// the probabilities (factor S^(1/3): the class changes more slowly than the map), and
    /// held until another class's average beats it by a quarter, so it flips less. A scene cut
    /// starts the average afresh.
    pub smooth: f32,
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
    let n = model.info.num_classes;
    let class = match &s.class {
        None => None,
        Some(ClassSpec::Id(c)) if *c >= n => {
            return Err(UsageError(format!(
                "--class {c} is out of range: model {} has {n} classes (0 to {})",
                model.info.name,
                n - 1
            ))
            .into())
        }
        Some(ClassSpec::Id(c)) => Some(*c),
        Some(ClassSpec::Name(name)) => Some(class_by_name(name, &model.info.classes)?),
    };
    if s.top_k as i64 > n {
        return Err(UsageError(format!(
            "--top-k {} is out of range: model {} has {n} classes",
            s.top_k, model.info.name
        ))
        .into());
    }
    Ok(Engine {
        model,
        batch_size: s.batch_size,
        max_wait: s.max_wait,
        class,
        method: s.method,
        top_k: s.top_k,
        show_rank: s.show_rank,
        smooth: s.smooth,
        probs_ema: std::cell::RefCell::new(None),
    })
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
                edit_distance(&want, &c)
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

/// Levenshtein distance, on chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The model plus the batching policy; lives on the worker thread only.
pub struct Engine {
    pub model: Model,
    batch_size: usize,
    max_wait: Duration,
    class: Option<i64>,
    method: cam::Method,
    top_k: usize,
    show_rank: usize,
    smooth: f32,
    /// The moving average of the probabilities over the frames so far, and the class held
    /// (with smoothing).
    probs_ema: std::cell::RefCell<Option<(Tensor, i64, Vec<f32>)>>,
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

    /// The targets explained: the fixed class, ranks 1 to K, or with smoothing the top-1 of
    /// the moving average of the probabilities, frame by frame in stream order.
    fn targets(&self, frames: &[Frame], acts: &Tensor) -> Result<Vec<cam::Target>> {
        Ok(match self.class {
            Some(c) => vec![cam::Target::Class(c)],
            None if self.smooth > 0.0 && self.top_k == 1 => {
                let probs = tch::no_grad(|| self.model.head(acts))?.softmax(1, Kind::Float);
                let mut ema = self.probs_ema.borrow_mut();
                let s = f64::from(self.smooth).cbrt();
                let chosen = (0..probs.size()[0])
                    .map(|i| {
                        let p = probs.get(i);
                        let thumb = smooth::thumbnail(&frames[i as usize]);
                        let (e, held) = match ema.take() {
                            Some((e, held, last)) if !smooth::is_cut(&last, &thumb) => {
                                (e * s + p * (1.0 - s), Some(held))
                            }
                            _ => (p, None),
                        };
                        let best = e.argmax(0, false).int64_value(&[]);
                        let c = match held {
                            Some(h)
                                if e.double_value(&[best])
                                    <= HOLD_MARGIN * e.double_value(&[h]) =>
                            {
                                h
                            }
                            _ => best,
                        };
                        *ema = Some((e, c, thumb));
                        c
                    })
                    .collect();
                vec![cam::Target::PerFrame(chosen)]
            }
            None => (0..self.top_k).map(cam::Target::Rank).collect(),
        })
    }

    /// Index into `targets()` of the map the video shows.
    fn shown(&self) -> usize {
        if self.class.is_some() {
            0
        } else {
            self.show_rank - 1
        }
    }

    /// One forward pass to the target layer, then each target's map (a backward pass through
    /// the head each).
    fn ranked_cams(&self, frames: &[Frame]) -> Result<Vec<cam::CamBatch>> {
        let x = self.model.preprocess(frames)?; // [B, 3, H, W]
        let acts = tch::no_grad(|| self.model.features(&x))?; // [B, C, h, w]
        self.targets(frames, &acts)?
            .into_iter()
            .map(|t| cam::compute(self.method, &acts, |a| self.model.head(a), t))
            .collect()
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
        let ranked = self.ranked_cams(&frames)?;
        let shown = self.shown();
        let ranked_plain = if ranked.len() > 1 {
            ranked
                .iter()
                .map(|r| Self::plain_maps(r, frames.len()))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let out = &ranked[shown];
        let b = frames.len();
        let probs = out.logits.softmax(1, Kind::Float); // [B, K]
        let k = TOP.max(self.top_k as i64).min(probs.size()[1]);
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
                ranked: ranked_plain
                    .iter()
                    .map(|(classes, maps)| {
                        let class = classes[i];
                        let prob = top_i[i * k..(i + 1) * k]
                            .iter()
                            .position(|&c| c == class)
                            .map_or(0.0, |j| top_p[i * k + j]);
                        (ClassScore { class, prob }, maps[i].clone())
                    })
                    .collect(),
            })
            .collect())
    }

    /// A batch's targets and maps as plain data: (class per frame, map per frame).
    fn plain_maps(c: &cam::CamBatch, b: usize) -> Result<(Vec<i64>, Vec<CamMap>)> {
        let maps = c.maps.to_device(tch::Device::Cpu).contiguous();
        let (h, w) = (maps.size()[1] as usize, maps.size()[2] as usize);
        let data = Vec::<f32>::try_from(maps.flatten(0, -1))?;
        let classes = Vec::<i64>::try_from(c.targets.to_device(tch::Device::Cpu))?;
        let maps = (0..b)
            .map(|i| CamMap {
                h,
                w,
                data: data[i * h * w..(i + 1) * h * w].to_vec(),
            })
            .collect();
        Ok((classes, maps))
    }
}
