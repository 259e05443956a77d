//! The `gradcam` element's subclass. A plain element with one sink and one source pad (not a
//! BaseTransform: it holds frames to batch them).
//!
//! - The sink pad's streaming thread turns each buffer into a `Frame` (RGBx; BGR orders are
//!   swapped on the way in and out), notes it in `order`, and sends it to the gradcam-stream
//!   worker (`worker::spawn_open`), which batches up to `batch-size` frames or `max-wait-ms`
//!   and explains them with the engine. Serialized events wait in `order` behind the frames
//!   that came before them.
//! - The source pad's task takes the worker's results, draws them with the program's renderer
//!   (heatmap, box, label), and pushes each frame on with its timestamps, flags and metas
//!   (less any `GstVideoMeta`: the output is tightly packed), a
//!   `GstVideoRegionOfInterestMeta`, and with `post-messages` an element message.
//! - Each run of frames is a worker stream: EOS closes it (the worker explains the partial
//!   batch at once), a flush drops it, and the next buffer opens a new one. The engine keeps
//!   smoothing per stream, so a flush (a seek) starts smoothing afresh.
//! - Settings are read at NULL→READY, where the model is loaded and every value is checked;
//!   a bad one fails that state change with an error naming the property.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use gradcam_stream::frame::Frame;
use gradcam_stream::pipeline::source::frame_from_buffer;
use gradcam_stream::render::{Drawn, Renderer};
use gradcam_stream::stats::Stats;
use gradcam_stream::worker::{self, Delivery, Queue};
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer::subclass::prelude::*;
use gstreamer_video as gst_video;

use super::properties::{self, BadProperty, Settings};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "gradcam",
        gst::DebugColorFlags::empty(),
        Some("Grad-CAM explanations of video frames"),
    )
});

/// The formats in and out (the same on both sides; videoconvert does the rest).
const FORMATS: [gst_video::VideoFormat; 4] = [
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
];

/// The ROI meta's type and its parameter structures' names.
pub const ROI_TYPE: &str = "gradcam";
pub const PARAMS: &str = "gradcam";
/// The parameters of a detector's box region: class-id, label, score, track-id, level.
pub const DETECTION: &str = "detection";
pub const MAP: &str = "gradcam-map";

/// What goes out, in order: a frame (once its result is back) or a serialized event.
enum Item {
    Frame {
        stream: usize,
        index: u64,
        /// The input buffer less its memory: timestamps, flags, offsets and metas.
        shell: gst::Buffer,
        format: gst_video::VideoFormat,
        arrived: Instant,
    },
    Event(gst::Event),
}

/// The sink side's stream: the worker queue the frames go to.
struct Input {
    /// The current stream (None: the next buffer opens one).
    queue: Option<(usize, Sender<Frame>, Receiver<Frame>)>,
    next_stream: usize,
    next_index: u64,
    info: Option<gst_video::VideoInfo>,
}

/// What lives from NULL→READY to READY→NULL: the worker and the renderer.
struct Running {
    worker: JoinHandle<anyhow::Result<()>>,
    open: Sender<Queue>,
    delivered: Receiver<Delivery>,
    renderer: Renderer,
    method: &'static str,
    post_messages: bool,
    capacity: usize,
    /// The latency the element adds: the longest wait for a batch to fill.
    max_wait: gst::ClockTime,
}

pub struct GradCam {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    running: Mutex<Option<Running>>,
    input: Mutex<Input>,
    order: Mutex<VecDeque<Item>>,
    /// Wakes the source task when an event was queued with no frame to wait for.
    wake: (Sender<()>, Receiver<()>),
    /// The last flow return downstream, handed back to upstream by the chain function.
    flow: Mutex<Result<gst::FlowSuccess, gst::FlowError>>,
    flushing: AtomicBool,
    /// Whether upstream is live (from the last latency query).
    live: AtomicBool,
    /// The latency reported now, in ns, above `max_wait`: grows with the longest hold seen.
    held: AtomicU64,
}

/// How long the source task waits for results before it looks at its state again.
const TICK: Duration = Duration::from_millis(20);

impl GradCam {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- sink side -------------------------------------------------------------------------

    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let flow = *Self::lock(&self.flow);
        flow?;
        let (capacity, open) = match &*Self::lock(&self.running) {
            Some(r) => (r.capacity, r.open.clone()),
            None => return Err(gst::FlowError::Flushing),
        };
        let mut input = Self::lock(&self.input);
        let Some(info) = input.info.clone() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("a buffer came before its caps")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        if input.queue.is_none() {
            let id = input.next_stream;
            input.next_stream += 1;
            let (tx, rx) = crossbeam_channel::bounded::<Frame>(capacity);
            if open.send((id, rx.clone())).is_err() {
                gst::element_imp_error!(self, gst::CoreError::Failed, ("the worker is gone"));
                return Err(gst::FlowError::Error);
            }
            input.queue = Some((id, tx, rx));
        }
        let (stream, tx) = match &input.queue {
            Some((id, tx, _)) => (*id, tx.clone()),
            None => unreachable!("opened above"),
        };
        let index = input.next_index;
        input.next_index += 1;
        drop(input);
        let Some(frame) = to_frame(&buffer, &info, stream, index) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "buffer {} cannot be read as {:?} {}x{}",
                    index,
                    info.format(),
                    info.width(),
                    info.height()
                )
            );
            return Err(gst::FlowError::Error);
        };
        let arrived = frame.arrived;
        let shell = buffer
            .copy_region(
                gst::BufferCopyFlags::FLAGS
                    | gst::BufferCopyFlags::TIMESTAMPS
                    | gst::BufferCopyFlags::META,
                // The whole buffer (else its duration and end offset are not copied); without
                // the MEMORY flag no byte is.
                ..,
            )
            .map_err(|_| gst::FlowError::Error)?;
        drop(buffer);
        Self::lock(&self.order).push_back(Item::Frame {
            stream,
            index,
            shell,
            format: info.format(),
            arrived,
        });
        self.send(&tx, frame)?;
        *Self::lock(&self.flow)
    }

    /// Wait for room in the worker's queue (back pressure), unless a flush comes.
    fn send(&self, tx: &Sender<Frame>, mut frame: Frame) -> Result<(), gst::FlowError> {
        loop {
            match tx.send_timeout(frame, TICK) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(f)) => {
                    if self.flushing.load(Ordering::SeqCst) {
                        return Err(gst::FlowError::Flushing);
                    }
                    frame = f;
                }
                Err(SendTimeoutError::Disconnected(_)) => return Err(gst::FlowError::Flushing),
            }
        }
    }

    /// Close the current stream: the worker explains what it has of it at once.
    fn close_stream(&self, drop_queued: bool) {
        let mut input = Self::lock(&self.input);
        if let Some((_, tx, rx)) = input.queue.take() {
            drop(tx);
            if drop_queued {
                while rx.try_recv().is_ok() {}
            }
        }
        input.next_index = 0;
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "event {:?}", event.type_());
        match event.view() {
            EventView::FlushStart(_) => {
                self.flushing.store(true, Ordering::SeqCst);
                *Self::lock(&self.flow) = Err(gst::FlowError::Flushing);
                let forwarded = self.srcpad.push_event(event);
                let _ = self.srcpad.pause_task();
                self.close_stream(true);
                Self::lock(&self.order).clear();
                forwarded
            }
            EventView::FlushStop(_) => {
                self.flushing.store(false, Ordering::SeqCst);
                *Self::lock(&self.flow) = Ok(gst::FlowSuccess::Ok);
                let forwarded = self.srcpad.push_event(event);
                self.start_task();
                forwarded
            }
            EventView::Caps(c) => match gst_video::VideoInfo::from_caps(c.caps()) {
                Ok(info) => {
                    Self::lock(&self.input).info = Some(info);
                    self.queue_event(event);
                    true
                }
                Err(_) => false,
            },
            EventView::Eos(_) => {
                self.queue_event(event);
                self.close_stream(false);
                true
            }
            _ if event.is_serialized() => {
                self.queue_event(event);
                true
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// A serialized event goes out after the frames before it.
    fn queue_event(&self, event: gst::Event) {
        Self::lock(&self.order).push_back(Item::Event(event));
        let _ = self.wake.0.try_send(());
    }

    // ---- source side -----------------------------------------------------------------------

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if query.type_() == gst::QueryType::Latency {
            if !self.sinkpad.peer_query(query) {
                return false;
            }
            if let gst::QueryViewMut::Latency(q) = query.view_mut() {
                let (live, min, max) = q.result();
                self.live.store(live, Ordering::Relaxed);
                let ours = self.latency();
                q.set(live, min + ours, max.map(|m| m + ours));
            }
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    /// The latency this element adds: a batch's longest wait to fill, plus the longest time a
    /// frame has been held beyond it so far (rounded up to 10 ms).
    fn latency(&self) -> gst::ClockTime {
        let wait = Self::lock(&self.running)
            .as_ref()
            .map_or(gst::ClockTime::ZERO, |r| r.max_wait);
        wait + gst::ClockTime::from_nseconds(self.held.load(Ordering::Relaxed))
    }

    /// A frame was held `held` from its arrival to its push: in a live pipeline, when that is
    /// more than the latency reported, report more (and tell the pipeline to ask again).
    fn note_held(&self, held: Duration) {
        if !self.live.load(Ordering::Relaxed) {
            return;
        }
        let wait = Self::lock(&self.running)
            .as_ref()
            .map_or(Duration::ZERO, |r| {
                Duration::from_nanos(r.max_wait.nseconds())
            });
        let beyond = held.saturating_sub(wait).as_nanos() as u64;
        if beyond > self.held.load(Ordering::Relaxed) {
            let step = 10_000_000u64;
            let rounded = (beyond + beyond / 4).div_ceil(step) * step;
            self.held.store(rounded, Ordering::Relaxed);
            gst::debug!(CAT, imp = self, "latency now {}", self.latency());
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    fn start_task(&self) {
        let weak = self.obj().downgrade();
        let started = self.srcpad.start_task(move || {
            let Some(element) = weak.upgrade() else {
                return;
            };
            element.imp().output_step();
        });
        if let Err(e) = started {
            gst::element_imp_error!(
                self,
                gst::CoreError::Failed,
                ("cannot start the output task: {}", e)
            );
        }
    }

    /// One turn of the source task: push what is ready, wait a little for results.
    fn output_step(&self) {
        // The task holds the pad's stream lock each turn: a pad being deactivated (or a flush)
        // waits for it, so stop turning.
        if self.flushing.load(Ordering::SeqCst) {
            let _ = self.srcpad.pause_task();
            return;
        }
        self.push_leading_events();
        let delivered = match &*Self::lock(&self.running) {
            Some(r) => r.delivered.clone(),
            None => {
                let _ = self.srcpad.pause_task();
                return;
            }
        };
        let mut sel = crossbeam_channel::Select::new();
        let results = sel.recv(&delivered);
        let woken = sel.recv(&self.wake.1);
        let op = match sel.select_timeout(TICK) {
            Ok(op) => op,
            Err(_) => return,
        };
        match op.index() {
            i if i == results => match op.recv(&delivered) {
                Ok(d) => self.output(d),
                Err(_) => self.worker_gone(),
            },
            i if i == woken => {
                let _ = op.recv(&self.wake.1);
            }
            _ => {}
        }
    }

    /// Push the events at the front of `order` (those no frame waits before).
    fn push_leading_events(&self) {
        loop {
            let event = {
                let mut order = Self::lock(&self.order);
                match order.front() {
                    Some(Item::Event(_)) => match order.pop_front() {
                        Some(Item::Event(e)) => e,
                        _ => unreachable!("looked at the front"),
                    },
                    _ => return,
                }
            };
            let eos = event.type_() == gst::EventType::Eos;
            if !self.srcpad.push_event(event) && eos {
                gst::debug!(CAT, imp = self, "downstream refused EOS");
            }
            if eos {
                *Self::lock(&self.flow) = Err(gst::FlowError::Eos);
            }
        }
    }

    /// A batch's results: draw them and push each frame after the events before it.
    fn output(&self, delivery: Delivery) {
        if delivery.explained.is_empty() {
            return;
        }
        let drawn = {
            let mut running = Self::lock(&self.running);
            let Some(r) = running.as_mut() else { return };
            match r.renderer.render_drawn(delivery.explained) {
                Ok(d) => d,
                Err(e) => {
                    drop(running);
                    self.fail(&format!("{e:#}"));
                    return;
                }
            }
        };
        for d in drawn {
            self.push_leading_events();
            let item = {
                let mut order = Self::lock(&self.order);
                match order.front() {
                    Some(Item::Frame { stream, index, .. })
                        if (*stream, *index) == (d.frame.stream, d.frame.index) =>
                    {
                        order.pop_front()
                    }
                    // A frame of a stream that was flushed: nothing waits for it.
                    _ => None,
                }
            };
            let Some(Item::Frame {
                shell,
                format,
                arrived,
                ..
            }) = item
            else {
                continue;
            };
            let buffer = match self.finished_buffer(d, shell, format) {
                Ok(b) => b,
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            };
            // Held from arrival to now, not counting downstream's own time.
            self.note_held(arrived.elapsed());
            let result = self.srcpad.push(buffer);
            match result {
                Ok(_) => {}
                Err(gst::FlowError::Flushing) => {
                    *Self::lock(&self.flow) = Err(gst::FlowError::Flushing);
                    return;
                }
                Err(e) => {
                    *Self::lock(&self.flow) = Err(e);
                    if matches!(e, gst::FlowError::NotLinked | gst::FlowError::Eos) {
                        return;
                    }
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        ("pushing a frame downstream failed: {:?}", e)
                    );
                    let _ = self.srcpad.pause_task();
                    return;
                }
            }
        }
        self.push_leading_events();
    }

    /// The output buffer of a drawn frame: its pixels (in the input's channel order), the
    /// input's timestamps, flags and metas, the ROI meta; and the element message.
    fn finished_buffer(
        &self,
        d: Drawn,
        shell: gst::Buffer,
        format: gst_video::VideoFormat,
    ) -> Result<gst::Buffer, String> {
        let (post, method, label) = {
            let running = Self::lock(&self.running);
            let r = running.as_ref().ok_or("stopped")?;
            (
                r.post_messages,
                r.method,
                r.renderer.class_name(d.target.class),
            )
        };
        let Drawn {
            mut frame,
            cam,
            target,
            located,
            boxes,
            ..
        } = d;
        let names: Vec<String> = {
            let running = Self::lock(&self.running);
            let r = running.as_ref().ok_or("stopped")?;
            boxes
                .iter()
                .map(|b| r.renderer.class_name(b.class))
                .collect()
        };
        if blue_first(format) {
            swap_red_blue(&mut frame.pixels);
        }
        let (w, h, index) = (frame.width, frame.height, frame.index);
        let rect = match located.bbox {
            Some(b) => (b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0),
            None => (0, 0, w, h),
        };
        let params = gst::Structure::builder(PARAMS)
            .field("class-id", target.class as i32)
            .field("label", label.as_str())
            .field("probability", f64::from(target.prob))
            .field("method", method)
            .field("localized", located.bbox.is_some())
            .field("peak-x", located.peak.0)
            .field("peak-y", located.peak.1)
            .build();
        let map = map_structure(&cam);
        let mut buffer = shell;
        {
            let b = buffer.make_mut();
            // The output is tightly packed: an input VideoMeta's strides would be wrong.
            while let Some(m) = b.meta_mut::<gst_video::VideoMeta>() {
                m.remove()
                    .map_err(|_| "cannot drop the input's video meta")?;
            }
            b.append_memory(gst::Memory::from_mut_slice(frame.pixels));
            let mut roi = gst_video::VideoRegionOfInterestMeta::add(b, ROI_TYPE, rect);
            roi.add_param(params.clone());
            roi.add_param(map.clone());
            add_box_metas(b, &boxes, &names, (w, h));
        }
        if post {
            let mut s = params;
            s.set("x", rect.0);
            s.set("y", rect.1);
            s.set("width", rect.2);
            s.set("height", rect.3);
            if let Some(pts) = buffer.pts() {
                s.set("timestamp", pts);
            }
            s.set("frame", index);
            s.set("map", map);
            let _ = self
                .obj()
                .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
        }
        Ok(buffer)
    }

    /// The worker ended while running: its error, as the element's.
    fn worker_gone(&self) {
        let taken = Self::lock(&self.running).take();
        let message = match taken.map(|r| {
            drop(r.delivered);
            drop(r.open);
            r.worker.join()
        }) {
            Some(Ok(Err(e))) => format!("{e:#}"),
            Some(Err(_)) => "the worker thread panicked".to_owned(),
            _ => "the worker stopped".to_owned(),
        };
        self.fail(&message);
    }

    fn fail(&self, message: &str) {
        *Self::lock(&self.flow) = Err(gst::FlowError::Error);
        gst::element_imp_error!(self, gst::LibraryError::Failed, ("{}", message));
        let _ = self.srcpad.pause_task();
    }

    // ---- state -----------------------------------------------------------------------------

    /// Check the settings and load the model (NULL→READY).
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = Self::lock(&self.settings).clone();
        let as_error = |b: BadProperty| gst::error_msg!(gst::LibraryError::Settings, ("{}", b));
        let (settings, look) = s.resolve().map_err(as_error)?;
        let (delivered_tx, delivered) = crossbeam_channel::bounded::<Delivery>(2);
        let (open, streams) = crossbeam_channel::unbounded::<Queue>();
        let batch = settings.batch_size;
        let (info, worker) =
            worker::spawn_open(settings, streams, delivered_tx, Arc::new(Stats::default()))
                .map_err(|e| as_error(properties::flag_error(&format!("{e:#}"))))?;
        let method = info.method.name();
        let renderer = Renderer::new(look, &info, &[])
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("{:#}", e)))?;
        gst::info!(CAT, imp = self, "{}", info.start_line());
        *Self::lock(&self.running) = Some(Running {
            worker,
            open,
            delivered,
            renderer,
            method,
            post_messages: s.post_messages,
            // Two batches wait at most: the worker gathers one while it explains the other.
            capacity: 2 * batch,
            max_wait: gst::ClockTime::from_mseconds(s.run.max_wait_ms),
        });
        self.held.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Stop the worker (READY→NULL).
    fn stop(&self) {
        self.close_stream(true);
        if let Some(r) = Self::lock(&self.running).take() {
            drop(r.open);
            drop(r.delivered);
            let _ = r.worker.join();
        }
    }
}

/// Whether `format` (one of ours) stores blue first.
fn blue_first(format: gst_video::VideoFormat) -> bool {
    matches!(
        format,
        gst_video::VideoFormat::Bgrx | gst_video::VideoFormat::Bgra
    )
}

/// Swap the first and third byte of each pixel (RGBx ↔ BGRx).
fn swap_red_blue(pixels: &mut [u8]) {
    for px in pixels.chunks_exact_mut(4) {
        px.swap(0, 2);
    }
}

/// A buffer of `info`'s format as a packed RGBx frame (the fourth byte kept: alpha stays).
fn to_frame(
    buffer: &gst::BufferRef,
    info: &gst_video::VideoInfo,
    stream: usize,
    index: u64,
) -> Option<Frame> {
    let mut frame = frame_from_buffer(buffer, info, stream, index)?;
    if blue_first(info.format()) {
        swap_red_blue(&mut frame.pixels);
    }
    Some(frame)
}

#[glib::object_subclass]
impl ObjectSubclass for GradCam {
    const NAME: &'static str = "GstGradCam";
    type Type = super::GradCam;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").expect("sink template");
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|_pad, parent, buffer| {
                GradCam::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(buffer),
                )
            })
            .event_function(|pad, parent, event| {
                GradCam::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            // Caps queries go to the other side's peer, within our formats: the same caps
            // out as in.
            .flags(gst::PadFlags::PROXY_CAPS)
            .build();
        let templ = klass.pad_template("src").expect("src template");
        let srcpad = gst::Pad::builder_from_template(&templ)
            .query_function(|pad, parent, query| {
                GradCam::catch_panic_pad_function(parent, || false, |imp| imp.src_query(pad, query))
            })
            .flags(gst::PadFlags::PROXY_CAPS)
            .build();
        GradCam {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            running: Mutex::new(None),
            input: Mutex::new(Input {
                queue: None,
                next_stream: 0,
                next_index: 0,
                info: None,
            }),
            order: Mutex::new(VecDeque::new()),
            wake: crossbeam_channel::bounded(1),
            flow: Mutex::new(Ok(gst::FlowSuccess::Ok)),
            flushing: AtomicBool::new(false),
            live: AtomicBool::new(false),
            held: AtomicU64::new(0),
        }
    }
}

impl ObjectImpl for GradCam {
    /// One entry per property, a table rather than a story: its length is the number of
    /// properties (the defaults and ranges come from the program's declarations).
    /// Generated from the program's declared settings (`properties.rs`).
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(properties::specs);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = Self::lock(&self.settings);
        s.set(pspec.name(), value);
        if pspec.name() == "post-messages" {
            if let Some(r) = Self::lock(&self.running).as_mut() {
                r.post_messages = s.post_messages;
            }
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        Self::lock(&self.settings)
            .get(pspec.name())
            .unwrap_or_else(|| pspec.default_value().clone())
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).expect("a new pad");
        obj.add_pad(&self.srcpad).expect("a new pad");
    }
}

impl GstObjectImpl for GradCam {}

impl ElementImpl for GradCam {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Grad-CAM",
                "Filter/Analyzer/Video",
                "Explains what a vision model sees in each frame: a Grad-CAM heatmap drawn over the \
                 frame, the class as a label, the result as a GstVideoRegionOfInterestMeta",
                "gradcam-stream developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS)
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("src template"),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("sink template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::debug!(CAT, imp = self, "{:?}", transition);
        match transition {
            gst::StateChange::NullToReady => {
                if let Err(e) = self.start() {
                    self.post_error_message(e);
                    return Err(gst::StateChangeError);
                }
            }
            gst::StateChange::PausedToReady => {
                // Downstream is already in READY (a bin changes its sinks first), so a push
                // in progress returns at once and the task stops.
                self.flushing.store(true, Ordering::SeqCst);
                let _ = self.srcpad.stop_task();
            }
            gst::StateChange::ReadyToPaused => {
                self.flushing.store(false, Ordering::SeqCst);
                *Self::lock(&self.flow) = Ok(gst::FlowSuccess::Ok);
                Self::lock(&self.order).clear();
                let mut input = Self::lock(&self.input);
                input.info = None;
                input.next_index = 0;
            }
            _ => {}
        }
        let success = self.parent_change_state(transition)?;
        match transition {
            gst::StateChange::ReadyToPaused => self.start_task(),
            gst::StateChange::PausedToReady => {
                self.close_stream(true);
                Self::lock(&self.order).clear();
            }
            gst::StateChange::ReadyToNull => self.stop(),
            _ => {}
        }
        Ok(success)
    }
}

/// The frame's map as a structure: its width, height and values row by row in [0, 1].
fn map_structure(cam: &gradcam_stream::frame::CamMap) -> gst::Structure {
    let values: Vec<f64> = cam.data.iter().map(|&v| f64::from(v)).collect();
    gst::Structure::builder(MAP)
        .field("width", cam.w as u32)
        .field("height", cam.h as u32)
        .field("values", gst::Array::new(values))
        .build()
}

/// A detector's boxes: one region each, typed by its class's name, with its class, score and
/// track (what trackers and analytics consumers downstream read).
fn add_box_metas(
    b: &mut gst::BufferRef,
    boxes: &[gradcam_stream::frame::Detection],
    names: &[String],
    (w, h): (u32, u32),
) {
    for (d, name) in boxes.iter().zip(names) {
        let (x0, y0, x1, y1) =
            gradcam_stream::detections::pixels_of(&d.bbox, w as usize, h as usize);
        let rect = (x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32);
        let mut roi = gst_video::VideoRegionOfInterestMeta::add(b, name, rect);
        roi.set_id(d.track as i32);
        roi.add_param(
            gst::Structure::builder(DETECTION)
                .field("class-id", d.class as i32)
                .field("label", name.as_str())
                .field("score", f64::from(d.score))
                .field("track-id", d.track)
                .field("level", d.level as u32)
                .build(),
        );
    }
}
