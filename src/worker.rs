//! The one thread that owns the model and every tensor: it gathers decoded frames into
//! dynamic batches, has the engine explain each, and hands the plain results on, a batch at a
//! time. On a GPU it gathers and queues batch N+1 while batch N computes. It never touches
//! GStreamer; it stops when its input channel closes and is drained.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::engine::{Engine, ModelInfo, Pending, Settings};
use crate::frame::{Explained, Frame};
use crate::model;
use crate::stats::{Stage, Stats};

/// Start the worker. The model is loaded on the worker thread before this returns, so a bad
/// model or device is reported here, before any pipeline starts.
pub fn spawn(
    settings: Settings,
    frames: Receiver<Frame>,
    results: Sender<Vec<Explained>>,
    stats: Arc<Stats>,
) -> Result<(ModelInfo, JoinHandle<Result<()>>)> {
    quiet_worker_panics();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<ModelInfo>>(1);
    let handle = std::thread::Builder::new()
        .name(WORKER.into())
        .spawn(move || -> Result<()> {
            let engine = match guarded("loading the model", || Engine::new(&settings)) {
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
            let batcher = Batcher {
                frames,
                size: settings.batch_size,
                max_wait: settings.max_wait,
                next: Vec::with_capacity(settings.batch_size),
                started: Instant::now(),
                carry: None,
                closed: false,
                stats: stats.clone(),
            };
            run(engine, batcher, &results, &stats)
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

const WORKER: &str = "gradcam-worker";

/// tch turns a libtorch failure in an infallible call into a panic whose text holds a C++
/// backtrace. On the worker thread the panic is caught and reported as one line (see
/// `guarded`), so the default hook's print is kept for `GRADCAM_DEBUG=1` and other threads.
fn quiet_worker_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let worker = std::thread::current().name() == Some(WORKER);
            let debug = std::env::var_os("GRADCAM_DEBUG").is_some_and(|v| !v.is_empty());
            if !worker || debug {
                default(info);
            }
        }));
    });
}

/// `f`, with its libtorch errors and panics turned into one line that says `what` failed.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(match e.downcast_ref::<tch::TchError>() {
            Some(t) => anyhow!("libtorch failed {what}: {}", model::one_line(t)),
            None if what.starts_with("explaining") => e.context(what.to_owned()),
            None => e,
        }),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(anyhow!("libtorch failed {what}: {}", panic_line(text)))
        }
    }
}

/// The telling line of a panic's text. tch panics with `called Result::unwrap() on an Err
/// value: Torch("…")`, the libtorch message escaped inside.
fn panic_line(text: &str) -> String {
    match text.split_once("Torch(\"") {
        Some((_, inner)) => {
            let inner = inner.trim_end_matches("\")");
            let unescaped = inner
                .replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\'", "'");
            model::one_line(unescaped)
        }
        None => model::one_line(text),
    }
}

/// The frames of the next batch, as they arrive.
struct Batcher {
    frames: Receiver<Frame>,
    size: usize,
    max_wait: Duration,
    /// The batch being gathered, and when its first frame was taken.
    next: Vec<Frame>,
    started: Instant,
    /// A frame of another size than the batch's: it starts the batch after.
    carry: Option<Frame>,
    /// The channel is closed and drained.
    closed: bool,
    stats: Arc<Stats>,
}

impl Batcher {
    /// A frame taken from the queue: its time there is counted, and it joins the batch.
    fn take(&mut self, f: Frame) -> bool {
        self.stats.record_queue_wait(f.arrived.elapsed());
        self.push(f)
    }

    /// Add `f` to the batch unless its size differs from the batch's (then it waits in
    /// `carry`); false when the batch can take no more.
    fn push(&mut self, f: Frame) -> bool {
        if let Some(first) = self.next.first() {
            if (first.width, first.height) != (f.width, f.height) {
                self.carry = Some(f);
                return false;
            }
        } else {
            self.started = Instant::now();
        }
        self.next.push(f);
        self.next.len() < self.size
    }

    /// Take what is queued now, without waiting; false when the batch can take no more.
    fn take_queued(&mut self) -> bool {
        if let Some(f) = self.carry.take() {
            if !self.push(f) {
                return false;
            }
        }
        while self.carry.is_none() && self.next.len() < self.size {
            match self.frames.try_recv() {
                Ok(f) => {
                    if !self.take(f) {
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    return false;
                }
            }
        }
        self.carry.is_none() && self.next.len() < self.size
    }

    /// Wait up to `limit` for one more frame; false when the batch can take no more.
    fn wait_one(&mut self, limit: Duration) -> bool {
        match self.frames.recv_timeout(limit) {
            Ok(f) => self.take(f),
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                false
            }
        }
    }

    /// Complete the batch: block for its first frame, then take what arrives until it is
    /// full or `max_wait` has passed since the first. None once the input is closed and
    /// drained.
    fn complete(&mut self) -> Option<Vec<Frame>> {
        if self.next.is_empty() && self.carry.is_none() {
            match self.frames.recv() {
                Ok(f) => {
                    self.take(f);
                }
                Err(_) => {
                    self.closed = true;
                    return None;
                }
            }
        }
        let deadline = self.started + self.max_wait;
        while self.take_queued() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.wait_one(left) {
                break;
            }
        }
        Some(std::mem::take(&mut self.next))
    }
}

/// How often the worker looks whether the batch on the device is done while it gathers the
/// next one.
const POLL: Duration = Duration::from_millis(1);

fn run(
    mut engine: Engine,
    mut batcher: Batcher,
    results: &Sender<Vec<Explained>>,
    stats: &Stats,
) -> Result<()> {
    let mut pending: Option<Pending> = None;
    // Both halves of a batch count as the model's busy time; their failures are one line.
    let submit = |engine: &mut Engine, batch: Vec<Frame>| -> Result<Pending> {
        let what = format!("explaining a batch of {} frames", batch.len());
        let busy = Instant::now();
        let queued = guarded(&what, || engine.submit(batch))?;
        stats.add_busy(Stage::Model, busy.elapsed());
        Ok(queued)
    };
    let deliver = |engine: &mut Engine, p: Pending| -> Result<bool> {
        let what = format!("explaining a batch of {} frames", p.len());
        let busy = Instant::now();
        let done = guarded(&what, || engine.finish(p))?;
        stats.add_busy(Stage::Model, busy.elapsed());
        if engine.device().is_cuda() {
            if let Some(m) = crate::engine::device_memory_in_use() {
                stats.set_device_memory(m);
            }
        }
        // The output stage is gone: it reports its own error.
        Ok(results.send(done).is_ok())
    };
    loop {
        if let Some(p) = pending.take() {
            // The device works on `p`: gather the next batch meanwhile, and queue it as soon
            // as it is full or the device is free.
            let full = !batcher.take_queued() || batcher.closed;
            if full && !batcher.next.is_empty() {
                let next = std::mem::take(&mut batcher.next);
                pending = Some(submit(&mut engine, next)?);
                if !deliver(&mut engine, p)? {
                    return Ok(());
                }
            } else if p.done() || batcher.closed {
                if !deliver(&mut engine, p)? {
                    return Ok(());
                }
            } else {
                batcher.wait_one(POLL);
                pending = Some(p);
            }
            continue;
        }
        let Some(batch) = batcher.complete() else {
            return Ok(());
        };
        let queued = submit(&mut engine, batch)?;
        if engine.pipelined() {
            pending = Some(queued);
        } else if !deliver(&mut engine, queued)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tch_panic_becomes_its_telling_line() {
        let text = "called `Result::unwrap()` on an `Err` value: Torch(\"shape '[1, -1]' is invalid for input of size 8\\nException raised from infer_size_impl at /pytorch/aten/src/ATen/InferSize.h:94 (most recent call first):\\nframe #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x98\")";
        assert_eq!(
            panic_line(text),
            "shape '[1, -1]' is invalid for input of size 8"
        );
        let e = guarded("in a test", || -> Result<()> { panic!("{text}") }).unwrap_err();
        assert_eq!(
            e.to_string(),
            "libtorch failed in a test: shape '[1, -1]' is invalid for input of size 8"
        );
    }

    fn frame(i: u64, w: u32) -> Frame {
        Frame::from_rgb(i, w, 2, &vec![0; w as usize * 2 * 3])
    }

    #[test]
    fn batches_fill_up_to_the_size_and_split_where_the_frame_size_changes() {
        let (tx, rx) = crossbeam_channel::unbounded();
        for (i, w) in [4, 4, 4, 4, 4, 6, 6].into_iter().enumerate() {
            tx.send(frame(i as u64, w)).unwrap();
        }
        drop(tx);
        let mut b = Batcher {
            frames: rx,
            size: 3,
            max_wait: Duration::from_millis(10),
            next: Vec::new(),
            started: Instant::now(),
            carry: None,
            closed: false,
            stats: Arc::new(Stats::default()),
        };
        let mut sizes = Vec::new();
        while let Some(batch) = b.complete() {
            sizes.push(batch.iter().map(|f| (f.index, f.width)).collect::<Vec<_>>());
        }
        assert_eq!(
            sizes,
            vec![
                vec![(0, 4), (1, 4), (2, 4)],
                vec![(3, 4), (4, 4)],
                vec![(5, 6), (6, 6)],
            ]
        );
    }
}
