//! A run's results handed to the code that started it, as they are drawn: the Python
//! package's iterator reads them. The channel is bounded, so a slow reader slows the run as a
//! slow output does (a file waits; a live source drops frames, counted).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use crate::frame::{CamMap, Detection};
use crate::render::{Drawn, Renderer};
use crate::stats::Stats;

/// One class of a frame's result: id, name, probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub id: i64,
    pub label: String,
    pub prob: f32,
}

/// One frame's result.
#[derive(Debug)]
pub struct Explanation {
    /// The stream's place among the inputs, and its name.
    pub stream: usize,
    pub name: String,
    pub index: u64,
    /// Presentation time in seconds (None where the source gave none).
    pub pts: Option<f64>,
    /// The class the map explains, and the most likely ones, best first.
    pub target: Class,
    pub top: Vec<Class>,
    /// The map, 0..1, at the model's feature size.
    pub cam: CamMap,
    /// The same map as the engine's tensor on its device (a classifier's; None for a
    /// detector's, whose maps are made on the host). Behind a lock: a result may be read from
    /// any thread (Python's objects are), and a libtorch tensor handle is not to be shared
    /// unguarded.
    pub cam_tensor: Mutex<Option<tch::Tensor>>,
    /// A detector's boxes (empty for a classifier).
    pub boxes: Vec<Detection>,
    /// The frame as shown (heatmap drawn where the stream draws), RGB, when asked for.
    pub image: Option<Image>,
}

/// Tightly packed RGB pixels.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// Where a run sends its results, whether each carries its frame, and where its totals go
/// once it has ended.
#[derive(Clone)]
pub struct Tap {
    pub results: Sender<Explanation>,
    pub frames: bool,
    pub totals: Arc<Mutex<Option<Totals>>>,
    /// The run's counters over every stream, once its streams are set up (for a progress bar:
    /// frames written, and the frames a file is expected to give).
    pub live: Arc<std::sync::OnceLock<Arc<Stats>>>,
}

/// A run's totals, as its `done:` lines say them.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Frames explained and written, over every stream.
    pub frames: u64,
    /// From the first frame to the end, and frames a second over that time.
    pub seconds: f64,
    pub fps: f64,
    pub device: String,
    pub model: String,
    /// What the model ran in (`fp32`, `bf16`, …) and its memory layout.
    pub precision: String,
    pub layout: String,
    pub batch_size: usize,
    pub losses: Losses,
    /// Per stream: its name, frames and losses.
    pub streams: Vec<(String, u64, Losses)>,
}

/// Frames a run lost: dropped while the model was behind a live source, left undecoded (key
/// frames only while behind), and the reconnections of its sources; an RTP feed's packets
/// lost on the way, the frames decoded from damaged data, and the key frames asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Losses {
    pub dropped: u64,
    pub undecoded: u64,
    pub reconnects: u64,
    pub packets_lost: u64,
    pub damaged: u64,
    pub key_frame_requests: u64,
}

impl Losses {
    pub(super) fn of(s: &Stats) -> Losses {
        Losses {
            dropped: s.dropped.load(Relaxed),
            undecoded: s.undecoded.load(Relaxed),
            reconnects: s.reconnects.load(Relaxed),
            packets_lost: s.packets_lost.load(Relaxed),
            damaged: s.damaged.load(Relaxed),
            key_frame_requests: s.key_frame_requests.load(Relaxed),
        }
    }
}

impl Totals {
    /// The totals of a run that has ended: `all` over every stream, `streams` each (by name).
    pub(super) fn of(
        info: &crate::engine::ModelInfo,
        batch_size: usize,
        all: &Stats,
        streams: &[(String, Arc<Stats>)],
    ) -> Totals {
        use crate::settings::named::Named;
        Totals {
            frames: all.written.load(Relaxed),
            seconds: all.elapsed().as_secs_f64(),
            fps: all.fps(),
            device: info.device.clone(),
            model: info.name.clone(),
            precision: info.precision.name().to_owned(),
            layout: info.layout.name().to_owned(),
            batch_size,
            losses: Losses::of(all),
            streams: streams
                .iter()
                .map(|(name, s)| (name.clone(), s.written.load(Relaxed), Losses::of(s)))
                .collect(),
        }
    }
}

impl Tap {
    /// Hand `d` on; false once the reader has gone (the run goes on without it).
    pub(super) fn send(&self, renderer: &Renderer, names: &[String], d: &Drawn) -> bool {
        let class = |c: &crate::frame::ClassScore| Class {
            id: c.class,
            label: renderer.class_name(c.class),
            prob: c.prob,
        };
        let f = &d.frame;
        let e = Explanation {
            stream: f.stream,
            name: names.get(f.stream).cloned().unwrap_or_default(),
            index: f.index,
            pts: f.pts.map(|p| p as f64 / 1e9),
            target: class(&d.target),
            top: d.top.iter().map(class).collect(),
            cam: d.cam.clone(),
            cam_tensor: Mutex::new(d.cam_tensor.as_ref().map(|t| t.0.shallow_clone())),
            boxes: d.boxes.clone(),
            image: self.frames.then(|| Image {
                width: f.width,
                height: f.height,
                rgb: f.to_rgb(),
            }),
        };
        self.results.send(e).is_ok()
    }
}
