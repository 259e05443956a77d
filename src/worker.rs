//! The one thread that owns the model and every tensor: it gathers decoded frames into
//! dynamic batches, has the engine explain each, and hands the plain results on, a batch at a
//! time. On a GPU it gathers and queues batch N+1 while batch N computes. It never touches
//! GStreamer; it stops when its input channel closes and is drained.

use std::mem::take;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::engine::{Engine, ModelInfo, Pending, Settings};
use crate::frame::{Explained, Frame};
use crate::model;
use crate::stats::{Stage, Stats};

/// What the worker hands on, in order: a batch's explained frames, and the streams whose
/// last frame has now been handed on (their input ended and their queue is drained).
#[derive(Debug, Default)]
pub struct Delivery {
    pub explained: Vec<Explained>,
    pub ended: Vec<usize>,
    /// Live frames dropped since the last delivery for waiting past their bound (their
    /// streams, one entry a frame): never explained, counted by the receiver.
    pub expired: Vec<usize>,
    /// Frames decoded from damaged data, passed on unexplained (`--on-damaged mark`), in their
    /// streams' order; the receiver puts each among `explained` by its index.
    pub damaged: Vec<Frame>,
}

/// A stream's queue, as it is handed to a running worker: the stream's id (`Frame::stream` of
/// its frames) and the receiving end of its frames.
pub type Queue = (usize, Receiver<Frame>);

/// Start the worker, taking frames from one queue per stream (`queues[i]` carries stream
/// `i`'s frames). The model is loaded on the worker thread before this returns, so a bad
/// model or device is reported here, before any pipeline starts.
pub fn spawn(
    settings: Settings,
    queues: Vec<Receiver<Frame>>,
    results: Sender<Delivery>,
    stats: Arc<Stats>,
) -> Result<(ModelInfo, JoinHandle<Result<()>>)> {
    let (open, streams) = crossbeam_channel::unbounded::<Queue>();
    for q in queues.into_iter().enumerate() {
        open.send(q).expect("the receiver is here");
    }
    drop(open); // no stream comes later: the worker ends when these have
    spawn_open(settings, streams, results, stats)
}

/// Start the worker with streams that come and go: each queue sent on `streams` joins the
/// batches (its id must be new), and leaves once it is closed and drained, with its state
/// (smoothing) dropped. The worker ends once `streams` is closed and every stream has ended.
/// This is how the GStreamer element drives it: a new stream after each flush or EOS.
pub fn spawn_open(
    settings: Settings,
    streams: Receiver<Queue>,
    results: Sender<Delivery>,
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
            let mut batcher = Batcher::new(
                Vec::new(),
                settings.batch_size,
                settings.max_wait,
                stats.clone(),
            );
            batcher.streams = Some(streams);
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

/// The frames of the next batch, as they arrive from the streams' queues: a fair take, one
/// frame from each stream in turn (the first stream asked turns with each batch), so a busy
/// stream never starves a quiet one. A batch holds frames of one size; within it each
/// stream's frames lie together, in their order.
struct Batcher {
    /// Each stream's queue, by stream id; None once it is closed and drained (or for an id
    /// that never came).
    queues: Vec<Option<Receiver<Frame>>>,
    /// Where streams that join later come from; None once it is closed (or there is none).
    streams: Option<Receiver<Queue>>,
    /// A stream's frame of another size than the batch's: it starts a later batch.
    carry: Vec<Option<Frame>>,
    /// Streams whose end has been handed on (or is in `ended`).
    over: Vec<bool>,
    size: usize,
    max_wait: Duration,
    /// The batch being gathered, and when its first frame was taken.
    next: Vec<Frame>,
    started: Instant,
    /// Streams that ended since the last batch was taken: they leave with it.
    ended: Vec<usize>,
    /// The stream asked first in the next pass.
    cursor: usize,
    /// Streams of the frames dropped past their bound (`Frame::expires`) since the last look.
    expired: Vec<usize>,
    stats: Arc<Stats>,
}

impl Batcher {
    fn new(
        queues: Vec<Receiver<Frame>>,
        size: usize,
        max_wait: Duration,
        stats: Arc<Stats>,
    ) -> Batcher {
        let n = queues.len();
        Batcher {
            queues: queues.into_iter().map(Some).collect(),
            streams: None,
            carry: (0..n).map(|_| None).collect(),
            over: vec![false; n],
            size,
            max_wait,
            next: Vec::with_capacity(size),
            started: Instant::now(),
            ended: Vec::new(),
            cursor: 0,
            expired: Vec::new(),
            stats,
        }
    }

    /// Every stream has ended and nothing is left to hand on, and no other can join.
    fn closed(&self) -> bool {
        self.streams.is_none() && self.over.iter().all(|&o| o)
    }

    /// Take in the streams that joined since the last look.
    fn accept(&mut self) {
        let Some(streams) = &self.streams else {
            return;
        };
        loop {
            match streams.try_recv() {
                Ok((id, queue)) => {
                    if id >= self.queues.len() {
                        self.queues.resize_with(id + 1, || None);
                        self.carry.resize_with(id + 1, || None);
                        self.over.resize(id + 1, true);
                    }
                    self.queues[id] = Some(queue);
                    self.over[id] = false;
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.streams = None;
                    return;
                }
            }
        }
    }

    fn full(&self) -> bool {
        self.next.len() >= self.size
    }

    /// Whether `f` fits the batch (its first frame sets the size).
    fn fits(&self, f: &Frame) -> bool {
        self.next
            .first()
            .is_none_or(|first| (first.width, first.height) == (f.width, f.height))
    }

    fn add(&mut self, f: Frame) {
        if self.next.is_empty() {
            self.started = Instant::now();
        }
        self.next.push(f);
    }

    /// One frame of stream `s` into the batch, if it has one that fits; whether it gave one.
    fn take_from(&mut self, s: usize) -> bool {
        if let Some(f) = self.carry[s].take() {
            if self.fits(&f) {
                self.add(f);
                return true;
            }
            self.carry[s] = Some(f);
            return false;
        }
        let Some(q) = &self.queues[s] else {
            return false;
        };
        let now = Instant::now();
        let mut next = q.try_recv();
        // A live frame that waited past its bound goes: the stream's next one may be fresh.
        while let Ok(f) = &next {
            if f.expires.is_none_or(|e| e >= now) {
                break;
            }
            self.expired.push(s);
            next = q.try_recv();
        }
        match next {
            Ok(f) => {
                self.stats.record_queue_wait(f.arrived.elapsed());
                if self.fits(&f) {
                    self.add(f);
                    true
                } else {
                    self.carry[s] = Some(f);
                    false
                }
            }
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Disconnected) => {
                self.queues[s] = None;
                self.end_if_drained(s);
                false
            }
        }
    }

    fn end_if_drained(&mut self, s: usize) {
        if self.queues[s].is_none() && self.carry[s].is_none() && !self.over[s] {
            self.over[s] = true;
            self.ended.push(s);
        }
    }

    /// Take what is queued now, without waiting, a frame from each stream in turn; false when
    /// the batch can take no more.
    fn take_queued(&mut self) -> bool {
        self.accept();
        let n = self.queues.len();
        loop {
            let mut gave = false;
            for k in 0..n {
                if self.full() {
                    return false;
                }
                gave |= self.take_from((self.cursor + k) % n);
            }
            if !gave {
                break;
            }
        }
        // A stream holding a frame of another size: this batch is as full as it gets.
        !self.full() && self.carry.iter().all(Option::is_none)
    }

    /// Wait up to `limit` (forever: None) until some stream's queue has a frame or closes, or
    /// a stream joins.
    fn wait_any(&mut self, limit: Option<Duration>) {
        let open: Vec<&Receiver<Frame>> = self.queues.iter().flatten().collect();
        if open.is_empty() && self.streams.is_none() {
            return;
        }
        let mut sel = crossbeam_channel::Select::new();
        for q in &open {
            sel.recv(q);
        }
        if let Some(streams) = &self.streams {
            sel.recv(streams);
        }
        match limit {
            Some(d) => {
                let _ = sel.ready_timeout(d);
            }
            None => {
                sel.ready();
            }
        }
    }

    /// Take this batch's frames out, sorted by stream (each stream's frames together, in
    /// order), with the streams that ended meanwhile; the next batch asks another stream first.
    fn take_batch(&mut self) -> (Vec<Frame>, Vec<usize>) {
        let mut frames = std::mem::take(&mut self.next);
        frames.sort_by_key(|f| f.stream); // stable: each stream keeps its order
        if !self.queues.is_empty() {
            self.cursor = (self.cursor + 1) % self.queues.len();
        }
        (frames, std::mem::take(&mut self.ended))
    }

    /// Complete the batch: wait for its first frame, then take what arrives until it is full
    /// or `max_wait` has passed since the first. None once every stream has ended and been
    /// handed on.
    fn complete(&mut self) -> Option<(Vec<Frame>, Vec<usize>)> {
        while self.next.is_empty() {
            self.take_queued();
            if !self.next.is_empty() || !self.ended.is_empty() {
                break;
            }
            if self.closed() {
                return None;
            }
            self.wait_any(None);
        }
        if !self.next.is_empty() {
            let deadline = self.started + self.max_wait;
            while self.take_queued() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || self.inputs_closed() {
                    break;
                }
                self.wait_any(Some(left));
            }
        }
        Some(self.take_batch())
    }

    /// No queue is open: the batch is as full as it gets now. (A stream that joins later
    /// starts the next batch: a stream's end, the element's EOS, sends what it left at once.)
    fn inputs_closed(&self) -> bool {
        self.queues.iter().all(Option::is_none)
    }
}

/// How often the worker looks whether the batch on the device is done while it gathers the
/// next one.
const POLL: Duration = Duration::from_millis(1);

fn count_copies(stats: &Stats, c: crate::engine::Copies) {
    stats.add_copies(c.host, c.to_device, c.from_device);
}

/// The worker's loop state: the engine, the batcher, where results go.
struct Loop<'a> {
    engine: Engine,
    batcher: Batcher,
    results: &'a Sender<Delivery>,
    stats: &'a Stats,
}

/// Whether the loop goes on: false once the output stage is gone (it reports its own error).
type GoOn = bool;

/// A batch queued on the device, with the streams that end after it and the damaged frames
/// taken with it (passed on unexplained beside its results).
type OnDevice = (Pending, Vec<usize>, Vec<Frame>);

/// The frames of `batch` to explain, and those decoded from damaged data that are only marked
/// (`--on-damaged mark`).
fn set_damaged_aside(batch: Vec<Frame>) -> (Vec<Frame>, Vec<Frame>) {
    batch
        .into_iter()
        .partition(|f| f.damaged != Some(crate::settings::named::OnDamaged::Mark))
}

impl Loop<'_> {
    /// Queue a batch on the device; both halves of a batch count as the model's busy time,
    /// and their failures are one line.
    fn submit(&mut self, batch: Vec<Frame>) -> Result<Pending> {
        let what = format!("explaining a batch of {} frames", batch.len());
        self.stats.record_batch(batch.len());
        let (busy, copies) = (Instant::now(), self.engine.copies());
        let engine = &mut self.engine;
        let queued = guarded(&what, || engine.submit(batch))?;
        self.stats.add_busy(Stage::Model, busy.elapsed());
        count_copies(self.stats, self.engine.copies().since(copies));
        Ok(queued)
    }

    /// Hand on a batch's results (if any), the streams that end after it, its damaged frames
    /// and the streams of the frames dropped past their bound since the last delivery.
    fn deliver(
        &mut self,
        p: Option<Pending>,
        ended: Vec<usize>,
        damaged: Vec<Frame>,
    ) -> Result<GoOn> {
        let expired = take(&mut self.batcher.expired);
        let explained = match p {
            Some(p) => {
                let what = format!("explaining a batch of {} frames", p.len());
                let (busy, copies) = (Instant::now(), self.engine.copies());
                let engine = &mut self.engine;
                let done = guarded(&what, || engine.finish(p))?;
                self.stats.add_busy(Stage::Model, busy.elapsed());
                count_copies(self.stats, self.engine.copies().since(copies));
                if self.engine.device().is_cuda() {
                    if let Some(m) = crate::engine::device_memory_in_use() {
                        self.stats.set_device_memory(m);
                    }
                }
                done
            }
            None => Vec::new(),
        };
        for &s in &ended {
            self.engine.forget(s);
        }
        Ok(self
            .results
            .send(Delivery {
                explained,
                ended,
                expired,
                damaged,
            })
            .is_ok())
    }

    /// The device works on `p`: gather the next batch meanwhile, and queue it as soon as it
    /// is full or the device is free. What is still on the device afterwards.
    fn overlap(&mut self, (p, ended, damaged): OnDevice) -> Result<(GoOn, Option<OnDevice>)> {
        let room = self.batcher.take_queued();
        let closed = self.batcher.inputs_closed();
        if (!room || closed) && !self.batcher.next.is_empty() {
            let (next, next_ended) = self.batcher.take_batch();
            let (next, next_damaged) = set_damaged_aside(next);
            if next.is_empty() {
                // Only marked frames: nothing for the device; they follow this batch's results.
                let go_on = self.deliver(Some(p), ended, damaged)?;
                return Ok((go_on && self.deliver(None, next_ended, next_damaged)?, None));
            }
            let next = self.submit(next)?;
            Ok((
                self.deliver(Some(p), ended, damaged)?,
                Some((next, next_ended, next_damaged)),
            ))
        } else if p.done() || closed {
            Ok((self.deliver(Some(p), ended, damaged)?, None))
        } else {
            self.batcher.wait_any(Some(POLL));
            Ok((true, Some((p, ended, damaged))))
        }
    }
}

fn run(engine: Engine, batcher: Batcher, results: &Sender<Delivery>, stats: &Stats) -> Result<()> {
    let mut w = Loop {
        engine,
        batcher,
        results,
        stats,
    };
    let mut pending: Option<OnDevice> = None;
    loop {
        if let Some(on_device) = pending.take() {
            let (go_on, still) = w.overlap(on_device)?;
            if !go_on {
                return Ok(());
            }
            pending = still;
            continue;
        }
        let Some((batch, ended)) = w.batcher.complete() else {
            return Ok(());
        };
        let (batch, damaged) = set_damaged_aside(batch);
        let go_on = if batch.is_empty() {
            w.deliver(None, ended, damaged)?
        } else {
            let queued = w.submit(batch)?;
            if w.engine.pipelined() {
                pending = Some((queued, ended, damaged));
                true
            } else {
                w.deliver(Some(queued), ended, damaged)?
            }
        };
        if !go_on {
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
        let mut b = Batcher::new(
            vec![rx],
            3,
            Duration::from_millis(10),
            Arc::new(Stats::default()),
        );
        let mut sizes = Vec::new();
        while let Some((batch, _)) = b.complete() {
            if !batch.is_empty() {
                sizes.push(batch.iter().map(|f| (f.index, f.width)).collect::<Vec<_>>());
            }
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

#[cfg(test)]
mod fairness {
    use super::*;

    fn frame(stream: usize, i: u64) -> Frame {
        let mut f = Frame::from_rgb(i, 2, 2, &[0; 12]);
        f.stream = stream;
        f
    }

    #[test]
    fn a_busy_stream_does_not_starve_the_others_and_ends_leave_after_their_frames() {
        // Stream 0 has 8 frames waiting, streams 1 and 2 one each; batches of 4.
        let (queues, senders): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| {
                let (tx, rx) = crossbeam_channel::unbounded();
                (rx, tx)
            })
            .unzip();
        for i in 0..8 {
            senders[0].send(frame(0, i)).unwrap();
        }
        senders[1].send(frame(1, 0)).unwrap();
        senders[2].send(frame(2, 0)).unwrap();
        let mut senders = senders.into_iter();
        let s0 = senders.next().unwrap();
        drop(senders); // streams 1 and 2 end after their one frame
        let mut b = Batcher::new(
            queues,
            4,
            Duration::from_millis(5),
            Arc::new(Stats::default()),
        );
        let (first, ended) = b.complete().unwrap();
        let got: Vec<_> = first.iter().map(|f| (f.stream, f.index)).collect();
        assert_eq!(
            got,
            vec![(0, 0), (0, 1), (1, 0), (2, 0)],
            "one each, then round again"
        );
        assert!(ended.is_empty(), "{ended:?}");
        drop(s0);
        let mut rest = Vec::new();
        let mut ends = Vec::new();
        while let Some((batch, ended)) = b.complete() {
            rest.extend(batch.iter().map(|f| f.index));
            ends.extend(ended);
        }
        assert_eq!(rest, (2..8).collect::<Vec<_>>());
        ends.sort();
        assert_eq!(ends, vec![0, 1, 2]);
    }

    #[test]
    fn frames_past_their_bound_are_dropped_and_counted_by_stream() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let now = Instant::now();
        // Two stale frames, a fresh one, a stale one, and one without a bound (a file's).
        for (i, expires) in [
            Some(now - Duration::from_millis(5)),
            Some(now - Duration::from_millis(1)),
            Some(now + Duration::from_secs(60)),
            Some(now - Duration::from_millis(1)),
            None,
        ]
        .into_iter()
        .enumerate()
        {
            let mut f = frame(1, i as u64);
            f.expires = expires;
            tx.send(f).unwrap();
        }
        drop(tx);
        let (_unused, none) = crossbeam_channel::unbounded();
        let mut b = Batcher::new(
            vec![none, rx],
            8,
            Duration::from_millis(5),
            Arc::new(Stats::default()),
        );
        let mut got = Vec::new();
        while let Some((batch, _)) = b.complete() {
            got.extend(batch.iter().map(|f| f.index));
            if got.len() == 2 {
                break;
            }
        }
        assert_eq!(got, vec![2, 4], "the fresh frame and the unbounded one");
        assert_eq!(b.expired, vec![1, 1, 1], "three of stream 1's frames");
    }

    #[test]
    fn streams_join_while_it_runs_and_it_ends_once_none_can() {
        let (open, streams) = crossbeam_channel::unbounded::<Queue>();
        let mut b = Batcher::new(
            Vec::new(),
            4,
            Duration::from_millis(5),
            Arc::new(Stats::default()),
        );
        b.streams = Some(streams);
        // A stream with id 3 joins with two frames and ends; then a second one, id 4.
        for id in [3, 4] {
            let (tx, rx) = crossbeam_channel::unbounded();
            tx.send(frame(id, 0)).unwrap();
            tx.send(frame(id, 1)).unwrap();
            open.send((id, rx)).unwrap();
            let mut got = Vec::new();
            let mut ends = Vec::new();
            drop(tx);
            while ends.is_empty() {
                let (batch, ended) = b.complete().expect("open");
                got.extend(batch.iter().map(|f| (f.stream, f.index)));
                ends.extend(ended);
            }
            assert_eq!(got, vec![(id, 0), (id, 1)]);
            assert_eq!(ends, vec![id]);
        }
        assert!(!b.closed(), "another stream may still join");
        drop(open);
        assert!(
            b.complete().is_none(),
            "no stream is left and none can join"
        );
    }
}
