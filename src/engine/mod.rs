//! The device side of the worker, a batch at a time: upload the frames, run the model and the
//! CAM, smooth, blend the heatmap over the frames, and bring the results back in one copy
//! each (the blended frames, and a small table of maps and scores). `submit` queues a batch's
//! work and, on a GPU, returns before the device has done it; `finish` waits for that batch
//! only and unpacks plain data. So the worker gathers and queues batch N+1 while batch N
//! computes. Every tensor is made and dropped on the thread that owns the `Engine`.
//!
//! One code path for every device. Frames are uploaded as they come (uint8 RGBx) and the first
//! op after the upload converts them to float; no op after it runs on uint8 until the blended
//! frames are converted back. CPU and CUDA kernels take different dtypes (antialiased uint8
//! resizing exists on the CPU only), and a test on the CPU cannot see such a gap.

pub mod blend;
mod boxes;
pub mod cpu_autocast;
mod cuda;
mod settings;
pub mod smooth;
mod table;
pub mod threads;
pub mod tune;
mod upload;

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use tch::{Device, Kind, Tensor};

use crate::cam;
use crate::frame::{Explained, Frame};
use crate::model::{self, Acts, Model};
use crate::settings::named::{Layout as Memory, Precision};
use crate::usage::UsageError;

pub use boxes::{BoxSettings, PRE_NMS};
pub use cuda::memory_in_use as device_memory_in_use;
use settings::{
    box_settings, configure_libtorch, device_blend, fit_to_kind, per_stream, PerStream,
};
pub use settings::{class_by_name, BlendAt, Settings, StreamSettings};
use table::Layout;
use upload::{buckets_for, copy_frames, in_layout, pad_rows, to_float, Staging};

/// How many of the most likely classes each result carries.
pub const TOP: i64 = 5;

/// Whole frames copied so far, by where the bytes went: each count is one frame's pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copies {
    /// By the CPU, from one host buffer to another (into the batch's upload buffer, out of
    /// the blended batch into the frame).
    pub host: u64,
    /// Host to device (a GPU's upload).
    pub to_device: u64,
    /// Device to host (a GPU's blended frames).
    pub from_device: u64,
}

impl Copies {
    /// The copies made since `earlier`.
    pub fn since(self, earlier: Copies) -> Copies {
        Copies {
            host: self.host - earlier.host,
            to_device: self.to_device - earlier.to_device,
            from_device: self.from_device - earlier.from_device,
        }
    }
}

/// How a run of one stream's frames picks the class each map explains.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Choice {
    Fixed(i64),
    /// The top-1 of the probabilities' moving average, held (smoothing).
    Held,
    Top1,
}

/// Frames `start..start + len` of a batch, all of `stream`. A batch is cut into such runs so
/// each stream's state (smoothing) sees its own frames in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    stream: usize,
    start: i64,
    len: i64,
}

fn runs_of(frames: &[Frame]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if r.stream == f.stream => r.len += 1,
            _ => runs.push(Run {
                stream: f.stream,
                start: i as i64,
                len: 1,
            }),
        }
    }
    runs
}

/// What the rest of the program may know about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    /// The method the maps are made with (`auto` resolved against the model's kind).
    pub method: cam::Method,
    pub detector: bool,
    pub device: String,
    pub classes: Vec<String>,
    pub input_size: [i64; 2],
    pub feature_shape: [i64; 3],
    /// The arithmetic and layout the model runs in (never `Auto`).
    pub precision: Precision,
    pub layout: Memory,
    /// The same, and how they were decided: `fp32 channels-last (the faster, timed now …)`.
    pub runs_in: String,
}

impl ModelInfo {
    /// The line a run starts with, once the model is ready: `start: efficientnet-lite0 on cpu
    /// in fp32 channels-last (the faster, timed now on a batch of 8: …)`.
    pub fn start_line(&self) -> String {
        format!(
            "start: {} on {} in {}",
            self.name, self.device, self.runs_in
        )
    }
}

/// A batch whose work is queued on the device: `Engine::finish` turns it into results.
pub struct Pending {
    /// A detector's batch, explained whole at submission (its selection needs the host).
    boxed: Option<Vec<Explained>>,
    frames: Vec<Frame>,
    /// [B, N] float on the host: each frame's map, target, scores (see `Layout`).
    table: Tensor,
    /// The table as the engine made it, on the device, where maps are kept as tensors.
    kept: Option<Tensor>,
    layout: Layout,
    /// [n, H, W, 4] uint8 on the host, when the blend ran on the device: the blended frames
    /// of the batch's rows `blended` (the frames drawn on), in order.
    pixels: Option<Tensor>,
    blended: Vec<usize>,
    /// Done once the copies to the host are (GPU only).
    marker: Option<cuda::Marker>,
}

impl Pending {
    /// Whether the device has done this batch (always, off a GPU).
    pub fn done(&self) -> bool {
        self.marker.as_ref().is_none_or(cuda::Marker::done)
    }

    pub fn len(&self) -> usize {
        self.boxed.as_ref().map_or(self.frames.len(), Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The model plus what explaining needs; lives on the worker thread only.
pub struct Engine {
    model: Model,
    /// Each stream's class and smoothing; `defaults` for a stream not listed.
    defaults: PerStream,
    streams: Vec<PerStream>,
    method: cam::Method,
    top_k: usize,
    show_rank: usize,
    /// Resolved: never `Auto` (see `tune`).
    precision: Precision,
    layout: Memory,
    /// How the precision and layout were decided.
    decided: tune::Decided,
    /// Each smoothed stream's state, made at its first frame.
    smoothing: HashMap<usize, smooth::Smoothing>,
    blend: Option<blend::Blend>,
    /// Batch sizes the model is run at, smallest first: a batch is padded to the next one, so
    /// the device sees a few fixed shapes, each planned once at load. Empty: exact sizes (on a
    /// CPU, where padding would cost real work and nothing is planned per shape).
    buckets: Vec<i64>,
    staging: Staging,
    /// Copies back run asynchronously and are waited for per batch (a GPU with libcudart).
    pipelined: bool,
    /// Settings::keep_maps.
    keep_maps: bool,
    /// libtorch's CPU threads sized to the cores other processes leave free (a CPU run at
    /// the default `--threads 0`).
    governor: Option<threads::Governor>,
    copies: Copies,
    /// A detector's selection rules (None: a classifier).
    boxes: Option<BoxSettings>,
    /// Each stream's tracks (a detector's), made at its first frame.
    trackers: HashMap<usize, crate::track::Tracker>,
    /// A detector's backward passes so far (one per box rank of each batch with boxes).
    backward_passes: u64,
}

impl Engine {
    /// Load the model on the device asked for and check the explanation settings against it.
    pub fn new(s: &Settings) -> Result<Engine> {
        let device = model::resolve_device(s.device)?;
        let mut info = Model::sidecar(&s.model)?;
        fit_to_kind(s, &mut info)?;
        let method = s.method.unwrap_or(if info.is_detector() {
            cam::Method::Odam
        } else {
            cam::Method::GradCam
        });
        let candidates = tune::candidates(s, device, &info)?;
        let (precision, layout) = candidates[0];
        configure_libtorch(s.threads, device)?;
        let model = Model::load(&s.model, info, device)?;
        let n = model.info.num_classes;
        let (defaults, streams) = per_stream(s, &model.info)?;
        if s.top_k as i64 > n {
            return Err(UsageError(format!(
                "--top-k {} is out of range: model {} has {n} classes",
                s.top_k, model.info.name
            ))
            .into());
        }
        let blend = device_blend(s, device, &model.info)?;
        let boxes = box_settings(s, &model.info);
        let mut engine = Engine {
            model,
            defaults,
            streams,
            method,
            top_k: s.top_k,
            show_rank: s.show_rank,
            precision,
            layout,
            decided: tune::Decided::Given,
            smoothing: HashMap::new(),
            blend,
            buckets: if device.is_cuda() {
                buckets_for(s.batch_size)
            } else {
                Vec::new()
            },
            staging: Staging::default(),
            pipelined: s.pipelined.unwrap_or(device.is_cuda() && cuda::available()),
            keep_maps: s.keep_maps,
            governor: (s.threads == 0 && !device.is_cuda())
                .then(threads::Governor::new)
                .flatten(),
            copies: Copies::default(),
            boxes,
            trackers: HashMap::new(),
            backward_passes: 0,
        };
        engine.decided = engine.tune(s, &candidates)?;
        engine.warm_up()?;
        Ok(engine)
    }

    pub fn info(&self) -> ModelInfo {
        let i = &self.model.info;
        ModelInfo {
            name: i.name.clone(),
            method: self.method,
            detector: i.is_detector(),
            device: model::device_name(self.model.device),
            classes: i.classes.clone(),
            input_size: i.input_size,
            feature_shape: i.feature_shape,
            precision: self.precision,
            layout: self.layout,
            runs_in: tune::describe((self.precision, self.layout), &self.decided),
        }
    }

    pub fn device(&self) -> Device {
        self.model.device
    }

    /// Whether `submit` returns before the device is done (so the worker can overlap batches).
    pub fn pipelined(&self) -> bool {
        self.pipelined
    }

    /// The arithmetic the model runs in (`Auto` resolved).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The layout batches enter the model in (`Auto` resolved).
    pub fn layout(&self) -> Memory {
        self.layout
    }

    /// Whether the results come back blended (else the render stage blends on the host).
    pub fn blends(&self) -> bool {
        self.blend.is_some()
    }

    /// The whole frames copied since the engine was made.
    pub fn copies(&self) -> Copies {
        self.copies
    }

    /// A detector's backward passes since the engine was made (a frame without a box needs
    /// none; a batch needs one per box rank).
    pub fn backward_passes(&self) -> u64 {
        self.backward_passes
    }

    /// The same engine explaining with another method (benchmarks, tests).
    pub fn with_method(mut self, method: cam::Method) -> Engine {
        self.method = method;
        self
    }

    /// Run each bucket's batch shape once through the whole explanation, so cuDNN plans
    /// nothing while frames wait.
    fn warm_up(&self) -> Result<()> {
        let [h, w] = self.model.info.input_size;
        for &n in &self.buckets {
            let dev = self.device();
            let x = in_layout([n, 3, h, w], self.layout, |s| {
                Tensor::f_zeros(s, (Kind::Float, dev))
            })?;
            self.pass(&x)?;
        }
        Ok(())
    }

    /// One model input `x` [n, 3, h, w] through the whole explanation (forward, backward,
    /// CAM), waiting for the device: the warm-up's and the tuning's unit of work.
    fn pass(&self, x: &Tensor) -> Result<()> {
        if self.boxes.is_some() {
            self.warm_boxes(x)?;
        } else {
            let acts = self.features(x)?;
            let head = |a: &Tensor| self.head(a, &acts.carry);
            cam::compute(self.method, &acts.map, head, cam::Target::Rank(0))?;
        }
        if let Device::Cuda(i) = self.device() {
            tch::Cuda::synchronize(i as i64);
        }
        Ok(())
    }

    /// The target layer's activations, as float whatever the precision: map [n, C, h, w]
    /// and the tensors carried to the head. fp16 runs under CUDA autocast, bf16 under CPU
    /// autocast.
    fn features(&self, x: &Tensor) -> Result<Acts> {
        let run = || self.model.features(x);
        let Acts { map, carry } = tch::no_grad(|| match self.precision {
            Precision::Fp16 => tch::autocast(true, run),
            Precision::Bf16 => cpu_autocast::bf16(run),
            Precision::Fp32 | Precision::Auto => run(),
        })?;
        let float = |t: Tensor| t.f_to_kind(Kind::Float);
        Ok(Acts {
            map: float(map)?,
            carry: carry.into_iter().map(float).collect::<Result<_, _>>()?,
        })
    }

    /// Logits from (float) activations: [n, K] float. Under CUDA autocast with fp16; in
    /// float32 otherwise (with bf16 too: the gradient the CAM weighs is taken in float).
    fn head(&self, a: &Tensor, carry: &[Tensor]) -> Result<Tensor> {
        let run = || self.model.head(a, carry);
        let logits = match self.precision {
            Precision::Fp16 => tch::autocast(true, run),
            _ => run(),
        }?;
        Ok(logits.f_to_kind(Kind::Float)?)
    }

    /// Frames [b, 3, H, W] (float, 0..255) → the target layer's activations (map [n, C, h, w])
    /// of the batch padded to its bucket (n ≥ b; the rows past b are padding).
    fn activations(&self, rgb: &Tensor) -> Result<Acts> {
        let x = self.model.preprocess(rgb)?; // [b, 3, h', w']
        self.features(&pad_rows(&x, self.bucket(rgb.size()[0]))?)
    }

    /// The batch size the model runs a batch of `b` at.
    fn bucket(&self, b: i64) -> i64 {
        self.buckets.iter().copied().find(|&n| n >= b).unwrap_or(b)
    }

    /// The frames as one uint8 tensor on the device, [B, H, W, 4]: one copy from (pinned)
    /// host memory, queued without waiting on a GPU.
    fn upload(&mut self, frames: &[Frame]) -> Result<Tensor> {
        let (w, h) = (frames[0].width, frames[0].height);
        let n = (w as usize) * (h as usize) * Frame::CHANNELS;
        for f in frames {
            if (f.width, f.height) != (w, h) {
                bail!(
                    "frame {} is {}x{}, the batch is {w}x{h}; a batch holds frames of one size",
                    f.index,
                    f.width,
                    f.height
                );
            }
            if f.pixels.len() != n {
                bail!(
                    "frame {} holds {} bytes, not RGBx {w}x{h}",
                    f.index,
                    f.pixels.len()
                );
            }
        }
        let b = frames.len() as i64;
        let size = [b, h as i64, w as i64, 4];
        let device = self.device();
        let host = if device.is_cuda() {
            // One pair of buffers per frame size, room for the largest batch.
            let rows = self.buckets.last().copied().unwrap_or(b).max(b);
            let mut full = size;
            full[0] = rows;
            self.staging.take(&full, device)?.f_narrow(0, 0, b)?
        } else {
            Tensor::f_empty(size, (Kind::Uint8, Device::Cpu))?
        };
        // SAFETY: `host` is a contiguous uint8 tensor of b·n bytes, alive for this scope, that
        // nothing else reads or writes now: the batch that last used this pinned buffer was
        // finished (its copies done) before the buffer came round again.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(host.data_ptr() as *mut u8, frames.len() * n) };
        copy_frames(
            dst.chunks_exact_mut(n)
                .zip(frames.iter().map(|f| f.pixels.as_slice())),
        );
        self.copies.host += b as u64;
        if device.is_cuda() {
            self.copies.to_device += b as u64;
        }
        Ok(host.f_to_device_(device, Kind::Uint8, true, false)?)
    }

    /// `t` brought to the host. On a GPU the copy is queued, into pinned memory from libtorch's
    /// caching host allocator (`to` does that for a non-blocking copy to the CPU), and is
    /// done once the batch's marker is (see `Pending::marker`).
    fn copy_back(&self, t: &Tensor) -> Result<Tensor> {
        if !self.device().is_cuda() {
            return Ok(t.shallow_clone());
        }
        let queued = self.pipelined && cuda::available();
        Ok(t.f_to_device_(Device::Cpu, t.kind(), queued, false)?)
    }

    fn per_stream(&self, stream: usize) -> PerStream {
        self.streams.get(stream).copied().unwrap_or(self.defaults)
    }

    fn choice(&self, stream: usize) -> Choice {
        let p = self.per_stream(stream);
        match (p.class, p.smooth > 0.0) {
            (Some(c), _) => Choice::Fixed(c),
            (None, true) => Choice::Held,
            (None, false) => Choice::Top1,
        }
    }

    /// The smoothing state of `stream`, made at its first frame.
    fn smoothing_of(&mut self, stream: usize) -> Result<&mut smooth::Smoothing> {
        let s = self.per_stream(stream).smooth;
        let device = self.device();
        if let std::collections::hash_map::Entry::Vacant(e) = self.smoothing.entry(stream) {
            let [_, h, w] = self.model.info.feature_shape;
            e.insert(smooth::Smoothing::new(s, [h, w], device)?);
        }
        Ok(self.smoothing.get_mut(&stream).expect("just made"))
    }

    /// Drop what is kept for `stream` (its smoothing): it has ended, and a stream that comes
    /// later has another id.
    pub fn forget(&mut self, stream: usize) {
        self.smoothing.remove(&stream);
        self.trackers.remove(&stream);
    }

    /// For each run of a smoothed stream, which of its frames start afresh (a cut or the
    /// stream's first frame): [len] bool; None for the other runs.
    fn fresh(&mut self, rgb: &Tensor, runs: &[Run]) -> Result<Vec<Option<Tensor>>> {
        let Some(first) = runs.iter().find(|r| self.per_stream(r.stream).smooth > 0.0) else {
            return Ok(runs.iter().map(|_| None).collect());
        };
        let thumbs = self.smoothing_of(first.stream)?.thumbnails(rgb)?;
        let mut fresh = Vec::with_capacity(runs.len());
        for r in runs {
            fresh.push(if self.per_stream(r.stream).smooth > 0.0 {
                let t = thumbs.narrow(r.start, r.len)?;
                Some(self.smoothing_of(r.stream)?.cuts(&t)?)
            } else {
                None
            });
        }
        Ok(fresh)
    }

    /// The targets explained: ranks 1 to K, or one class per frame as its stream asks (a fixed
    /// class, the top-1, or with smoothing the top-1 of the probabilities' moving average),
    /// frame by frame in stream order.
    fn targets(
        &mut self,
        acts: &Acts,
        runs: &[Run],
        fresh: &[Option<Tensor>],
    ) -> Result<Vec<cam::Target>> {
        if self.top_k > 1 {
            return Ok((0..self.top_k).map(cam::Target::Rank).collect());
        }
        let choices: Vec<Choice> = runs.iter().map(|r| self.choice(r.stream)).collect();
        if let Some(&Choice::Fixed(c)) = choices.first() {
            if choices.iter().all(|&x| x == Choice::Fixed(c)) {
                return Ok(vec![cam::Target::Class(c)]);
            }
        }
        if choices.iter().all(|&x| x == Choice::Top1) {
            return Ok(vec![cam::Target::Rank(0)]);
        }
        let b: i64 = runs.iter().map(|r| r.len).sum();
        let logits = tch::no_grad(|| self.head(&acts.map, &acts.carry))?.f_narrow(0, 0, b)?;
        let probs = logits.f_softmax(1, Kind::Float)?; // [b, K]
        let mut chosen = Vec::with_capacity(runs.len());
        for ((r, choice), fresh) in runs.iter().zip(&choices).zip(fresh) {
            let p = probs.f_narrow(0, r.start, r.len)?;
            chosen.push(match (choice, fresh) {
                (Choice::Fixed(c), _) => Tensor::f_full([r.len], *c, (Kind::Int64, self.device()))?,
                (Choice::Held, Some(fresh)) => self.smoothing_of(r.stream)?.classes(&p, fresh)?,
                _ => p.f_argmax(1, false)?,
            });
        }
        let chosen = Tensor::f_cat(&chosen, 0)?; // [b]
        Ok(vec![cam::Target::PerFrame(pad_rows(
            &chosen,
            acts.map.size()[0],
        )?)])
    }

    /// Smooth the maps [b, h, w] of `classes` [b], run by run, each with its stream's state.
    fn smooth_maps(
        &mut self,
        maps: Tensor,
        classes: &Tensor,
        runs: &[Run],
        fresh: &[Option<Tensor>],
    ) -> Result<Tensor> {
        if fresh.iter().all(Option::is_none) {
            return Ok(maps);
        }
        let mut out = Vec::with_capacity(runs.len());
        for (r, fresh) in runs.iter().zip(fresh) {
            let m = maps.f_narrow(0, r.start, r.len)?;
            out.push(match fresh {
                Some(fresh) => {
                    let c = classes.f_narrow(0, r.start, r.len)?;
                    self.smoothing_of(r.stream)?.maps(&m, &c, fresh)?
                }
                None => m,
            });
        }
        Ok(Tensor::f_cat(&out, 0)?)
    }

    /// Index into `targets()` of the map the video shows.
    fn shown(&self) -> usize {
        if self.top_k > 1 {
            self.show_rank - 1
        } else {
            0
        }
    }

    /// Queue a batch's explanation on the device. On a GPU this returns before the device
    /// has done the work; `finish` waits for it. The frames may come from several streams;
    /// each stream's frames are taken in its order.
    pub fn submit(&mut self, frames: Vec<Frame>) -> Result<Pending> {
        if frames.is_empty() {
            bail!("an empty batch");
        }
        if self.boxes.is_some() {
            return self.submit_boxes(frames);
        }
        let started = Instant::now();
        let b = frames.len() as i64;
        let runs = runs_of(&frames);
        // The only ops on uint8 after the upload: the conversion to float (for the model and
        // the blend) and the copy of the padding byte into the blended frames.
        let dev = self.upload(&frames)?; // [b, H, W, 4] uint8
        let rgb = to_float(&dev, self.layout)?; // [b, 3, H, W], 0..255
        let acts = self.activations(&rgb)?; // map [n, C, h, w]
        let fresh = self.fresh(&rgb, &runs)?;
        let targets = self.targets(&acts, &runs, &fresh)?;
        let ranked = targets
            .into_iter()
            .map(|t| cam::compute(self.method, &acts.map, |a| self.head(a, &acts.carry), t))
            .collect::<Result<Vec<_>>>()?;
        let shown = &ranked[self.shown()];
        let classes = shown.targets.f_narrow(0, 0, b)?; // [b]
        let maps = shown.maps.f_narrow(0, 0, b)?; // [b, h, w]
        let maps = self.smooth_maps(maps, &classes, &runs, &fresh)?;
        let (table, layout) = self.results_table(&ranked, &classes, &maps, b)?;
        let (blended, pixels) = self.blend_drawn(&frames, &rgb, &dev, &maps)?;
        let kept = self.keep_maps.then(|| table.shallow_clone());
        let table = self.copy_back(&table)?;
        let pixels = pixels.map(|p| self.copy_back(&p)).transpose()?;
        if self.device().is_cuda() {
            self.copies.from_device += blended.len() as u64;
        }
        let marker = self.end_marker()?;
        self.staging.turn += 1;
        if let Some(g) = &mut self.governor {
            g.record(frames.len(), started.elapsed());
        }
        Ok(Pending {
            boxed: None,
            frames,
            table,
            kept,
            layout,
            pixels,
            blended,
            marker,
        })
    }

    /// A detector's batch: explained at once (its boxes are selected on the host).
    fn submit_boxes(&mut self, frames: Vec<Frame>) -> Result<Pending> {
        let started = Instant::now();
        let n = frames.len();
        let done = self.explain_boxes(frames)?;
        if let Some(g) = &mut self.governor {
            g.record(n, started.elapsed());
        }
        Ok(Pending {
            boxed: Some(done),
            frames: Vec::new(),
            table: Tensor::new(),
            kept: None,
            layout: Layout {
                h: 0,
                w: 0,
                k: 0,
                ranked: 0,
            },
            pixels: None,
            blended: Vec::new(),
            marker: None,
        })
    }

    /// A classifier batch's results as one table on the device, a row a frame: the shown map,
    /// its class and probability, the top classes and their probabilities, then each ranked
    /// target's class and map (with `--top-k` above 1).
    fn results_table(
        &self,
        ranked: &[cam::CamBatch],
        classes: &Tensor,
        maps: &Tensor,
        b: i64,
    ) -> Result<(Tensor, Layout)> {
        let (h, w) = (maps.size()[1], maps.size()[2]);
        let shown = &ranked[self.shown()];
        let probs = shown.logits.f_narrow(0, 0, b)?.f_softmax(1, Kind::Float)?; // [b, K]
        let k = TOP.max(self.top_k as i64).min(probs.size()[1]);
        let (top_p, top_i) = probs.f_topk(k, 1, true, true)?; // [b, k] each
        let target_p = probs.f_gather(1, &classes.f_unsqueeze(1)?, false)?; // [b, 1]
        let float = |t: &Tensor| t.f_to_kind(Kind::Float);
        let mut columns = vec![
            maps.f_reshape([b, h * w])?,
            float(&classes.f_unsqueeze(1)?)?,
            target_p,
            top_p,
            float(&top_i)?, // class ids are exact in float below 2^24
        ];
        let ranked_n = if ranked.len() > 1 { ranked.len() } else { 0 };
        for r in ranked.iter().take(ranked_n) {
            columns.push(float(&r.targets.f_narrow(0, 0, b)?.f_unsqueeze(1)?)?);
            columns.push(r.maps.f_narrow(0, 0, b)?.f_reshape([b, h * w])?);
        }
        let layout = Layout {
            h: h as usize,
            w: w as usize,
            k: k as usize,
            ranked: ranked_n,
        };
        Ok((Tensor::f_cat(&columns, 1)?, layout)) // [b, N]
    }

    /// The frames drawn on (a stream that keeps its results only has none blended and none
    /// brought back) and their blended pixels on the device, [n, H, W, 4] uint8.
    fn blend_drawn(
        &self,
        frames: &[Frame],
        rgb: &Tensor,
        dev: &Tensor,
        maps: &Tensor,
    ) -> Result<(Vec<usize>, Option<Tensor>)> {
        let Some(blend) = &self.blend else {
            return Ok((Vec::new(), None));
        };
        let blended: Vec<usize> = (0..frames.len())
            .filter(|&i| self.per_stream(frames[i].stream).draw)
            .collect();
        if blended.is_empty() {
            return Ok((blended, None));
        }
        // The model's input in float (a view, [b, H, W, 3]), the padding byte as it came and
        // the maps, of the rows drawn on.
        let (rgb, pad) = (rgb.f_permute([0, 2, 3, 1])?, dev.f_narrow(3, 3, 1)?);
        let at = if blended.len() < frames.len() {
            let at: Vec<i64> = blended.iter().map(|&i| i as i64).collect();
            Some(Tensor::f_from_slice(&at)?.f_to(self.device())?)
        } else {
            None
        };
        let rows = |t: &Tensor| -> Result<Tensor> {
            Ok(match &at {
                Some(at) => t.f_index_select(0, at)?,
                None => t.shallow_clone(),
            })
        };
        let pixels = blend.apply(&rows(&rgb)?, &rows(&pad)?, &rows(maps)?)?;
        Ok((blended, Some(pixels)))
    }

    /// A mark of the batch's end on the GPU's stream, where batches are pipelined.
    fn end_marker(&self) -> Result<Option<cuda::Marker>> {
        if !(self.pipelined && self.device().is_cuda()) {
            return Ok(None);
        }
        cuda::Marker::record()
            .map(Some)
            .ok_or_else(|| anyhow!("the GPU refused to mark a batch's end (CUDA runtime error)"))
    }

    /// Wait for a submitted batch and unpack it into plain results, in frame order.
    pub fn finish(&mut self, p: Pending) -> Result<Vec<Explained>> {
        if let Some(mut done) = p.boxed {
            for e in &mut done {
                self.track(e);
            }
            return Ok(done);
        }
        if let Some(m) = &p.marker {
            m.wait().map_err(|e| anyhow!(e))?;
        }
        let Pending {
            boxed: _,
            mut frames,
            table,
            kept,
            layout: l,
            pixels,
            blended,
            marker: _,
        } = p;
        let b = frames.len();
        let data = Vec::<f32>::try_from(table.f_flatten(0, -1)?)?;
        let stride = l.width();
        anyhow::ensure!(data.len() == b * stride, "result table of the wrong size");
        let drawn = match &pixels {
            Some(px) => self.take_blended(&mut frames, px, &blended)?,
            None => vec![false; b],
        };
        frames
            .into_iter()
            .zip(data.chunks_exact(stride))
            .zip(drawn)
            .enumerate()
            .map(|(i, ((frame, row), drawn))| {
                let on_device = kept.as_ref().map(|t| t.f_get(i as i64)).transpose()?;
                l.explained(row, frame, drawn, on_device)
            })
            .collect()
    }

    /// Copy the blended pixels (rows of the frames at `blended`, on the host) into those
    /// frames; which frames were drawn on.
    fn take_blended(
        &mut self,
        frames: &mut [Frame],
        px: &Tensor,
        blended: &[usize],
    ) -> Result<Vec<bool>> {
        let (n, rows) = (frames[0].pixels.len(), blended.len());
        anyhow::ensure!(
            px.kind() == Kind::Uint8 && px.is_contiguous() && px.numel() == rows * n,
            "blended frames of the wrong shape"
        );
        // SAFETY: `px` is a contiguous uint8 host tensor of rows·n bytes, alive for this
        // scope, whose copy from the device is done (the marker was waited for).
        let src = unsafe { std::slice::from_raw_parts(px.data_ptr() as *const u8, rows * n) };
        let mut drawn = vec![false; frames.len()];
        for &i in blended {
            drawn[i] = true;
        }
        copy_frames(
            frames
                .iter_mut()
                .zip(&drawn)
                .filter(|(_, &d)| d)
                .map(|(f, _)| f.pixels.as_mut_slice())
                .zip(src.chunks_exact(n)),
        );
        self.copies.host += rows as u64;
        Ok(drawn)
    }

    /// A batch explained from start to end (tests, still images, benchmarks).
    pub fn explain(&mut self, frames: Vec<Frame>) -> Result<Vec<Explained>> {
        let p = self.submit(frames)?;
        self.finish(p)
    }

    /// Forward only, no gradients, on the same path (upload, preprocess, padding, precision),
    /// waiting for the logits: the speed limit the explanation is measured against.
    pub fn forward_only(&mut self, frames: &[Frame]) -> Result<Vec<f32>> {
        let b = frames.len() as i64;
        let dev = self.upload(frames)?;
        let rgb = to_float(&dev, self.layout)?;
        if self.boxes.is_some() {
            return self.forward_boxes(&rgb, b);
        }
        let acts = self.activations(&rgb)?;
        let logits = tch::no_grad(|| self.head(&acts.map, &acts.carry))?.f_narrow(0, 0, b)?;
        self.staging.turn += 1;
        Ok(Vec::<f32>::try_from(
            logits.f_to_device(Device::Cpu)?.f_flatten(0, -1)?,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_and_the_batch_size() {
        assert_eq!(buckets_for(8), vec![1, 2, 4, 8]);
        assert_eq!(buckets_for(12), vec![1, 2, 4, 8, 12]);
        assert_eq!(buckets_for(1), vec![1]);
    }

    #[test]
    fn padding_appends_zero_rows() -> Result<()> {
        let t = Tensor::from_slice(&[1f32, 2., 3., 4.]).view([2, 2]);
        let p = pad_rows(&t, 4)?;
        assert_eq!(p.size(), vec![4, 2]);
        assert_eq!(
            Vec::<f32>::try_from(p.flatten(0, -1))?,
            vec![1., 2., 3., 4., 0., 0., 0., 0.]
        );
        assert_eq!(pad_rows(&t, 2)?.size(), vec![2, 2]);
        Ok(())
    }
}
