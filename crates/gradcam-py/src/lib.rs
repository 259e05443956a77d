//! `gradcam_stream._native`: the gradcam-stream pipeline in the Python process. `explain`
//! takes the command line's flags (the Python wrapper makes them from keywords, so the names,
//! defaults, ranges and checks are the program's own), starts the run on a thread of its own,
//! and returns a `Run` that yields each frame's result as it is drawn.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use gradcam_stream::app::tap::{Class, Explanation, Losses, Tap, Totals};
use gradcam_stream::cli::Args;
use gradcam_stream::config::{Config, UsageError};
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_tch::PyTensor;
use tch::Tensor;

/// Results waiting for Python: a few batches, so a slow reader slows the run.
const WAITING: usize = 32;

/// A run in progress: iterate it for each frame's result.
#[pyclass(module = "gradcam_stream._native")]
struct Run {
    results: Option<Receiver<Explanation>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    /// Results handed to Python so far.
    seen: u64,
    /// The run's totals, once it has ended.
    totals: Arc<Mutex<Option<Totals>>>,
    live: Arc<OnceLock<Arc<gradcam_stream::stats::Stats>>>,
}

#[pymethods]
impl Run {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Frame> {
        let Some(rx) = self.results.clone() else {
            return Err(PyStopIteration::new_err(()));
        };
        loop {
            match py.allow_threads(|| rx.recv_timeout(Duration::from_millis(100))) {
                Ok(e) => {
                    self.seen += 1;
                    return Ok(Frame(e));
                }
                Err(RecvTimeoutError::Timeout) => {
                    // The notebook's stop button and Ctrl-C reach Python here.
                    if let Err(e) = py.check_signals() {
                        if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                            self.stop(py)?;
                            return Err(PyStopIteration::new_err(()));
                        }
                        return Err(e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish(py)?;
                    return Err(PyStopIteration::new_err(()));
                }
            }
        }
    }

    /// Stop the run as Ctrl-C does: the frames in flight are explained and written, every
    /// output is finalized; results not read yet are dropped.
    fn stop(&mut self, py: Python<'_>) -> PyResult<()> {
        gradcam_stream::shutdown::request();
        // Keep reading until the run ends, so it is never held up by a full queue.
        if let Some(rx) = self.results.take() {
            py.allow_threads(|| for _ in rx.iter() {});
        }
        self.finish(py)
    }

    /// Whether the run has ended.
    #[getter]
    fn done(&self) -> bool {
        self.thread.is_none()
    }

    /// The results handed over so far.
    #[getter]
    fn seen(&self) -> u64 {
        self.seen
    }

    /// The frames the inputs are expected to give (files whose length is known), or None.
    #[getter]
    fn expected(&self) -> Option<u64> {
        let total = self.live.get()?.total.load(Ordering::Relaxed);
        (total > 0).then_some(total)
    }

    /// The totals the program prints at the end (`done: …`), as a dict: frames, seconds, fps,
    /// device, model, precision, layout, batch_size, dropped, undecoded, reconnects, and
    /// streams (each stream's name, frames and losses). None until the run has ended.
    fn summary(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        let totals = self
            .totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(t) = totals else {
            return Ok(None);
        };
        let losses = |d: &Bound<'_, PyDict>, l: &Losses| -> PyResult<()> {
            d.set_item("dropped", l.dropped)?;
            d.set_item("undecoded", l.undecoded)?;
            d.set_item("reconnects", l.reconnects)
        };
        let d = PyDict::new(py);
        d.set_item("frames", t.frames)?;
        d.set_item("seconds", t.seconds)?;
        d.set_item("fps", t.fps)?;
        d.set_item("device", &t.device)?;
        d.set_item("model", &t.model)?;
        d.set_item("precision", &t.precision)?;
        d.set_item("layout", &t.layout)?;
        d.set_item("batch_size", t.batch_size)?;
        losses(&d, &t.losses)?;
        let streams = t
            .streams
            .iter()
            .map(|(name, frames, l)| {
                let s = PyDict::new(py);
                s.set_item("name", name)?;
                s.set_item("frames", frames)?;
                losses(&s, l)?;
                Ok(s)
            })
            .collect::<PyResult<Vec<_>>>()?;
        d.set_item("streams", streams)?;
        Ok(Some(d.into_any().unbind()))
    }
}

impl Run {
    /// Wait for the run's thread; its failure becomes a Python exception.
    fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        self.results = None;
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let joined = py.allow_threads(|| thread.join());
        gradcam_stream::shutdown::reset();
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let line = gradcam_stream::redact::line(&format!("{e:#}"));
                Err(if e.is::<UsageError>() {
                    PyValueError::new_err(line)
                } else {
                    PyRuntimeError::new_err(line)
                })
            }
            Err(_) => Err(PyRuntimeError::new_err("the run's thread panicked")),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // A run dropped unread still finishes its outputs.
        if let Some(thread) = self.thread.take() {
            gradcam_stream::shutdown::request();
            self.results = None; // the render thread stops handing results over
            let _ = thread.join();
            gradcam_stream::shutdown::reset();
        }
    }
}

/// One frame's result.
#[pyclass(module = "gradcam_stream._native", name = "Result")]
struct Frame(Explanation);

fn class(c: &Class) -> (i64, String, f32) {
    (c.id, c.label.clone(), c.prob)
}

#[pymethods]
impl Frame {
    /// The stream's place among the inputs.
    #[getter]
    fn stream(&self) -> usize {
        self.0.stream
    }

    /// The stream's name (`NAME=` of the input, or its place).
    #[getter]
    fn name(&self) -> String {
        self.0.name.clone()
    }

    /// The frame's position in its stream, from 0.
    #[getter]
    fn index(&self) -> u64 {
        self.0.index
    }

    /// Presentation time in seconds (None where the source gave none).
    #[getter]
    fn pts(&self) -> Option<f64> {
        self.0.pts
    }

    /// The class the map explains: (class_id, label, probability).
    #[getter]
    fn target(&self) -> (i64, String, f32) {
        class(&self.0.target)
    }

    /// The most likely classes, best first: [(class_id, label, probability), …].
    #[getter]
    fn top(&self) -> Vec<(i64, String, f32)> {
        self.0.top.iter().map(class).collect()
    }

    /// The map: a float32 tensor [h, w] in 0..1, at the model's feature size, on the device
    /// the model ran on. A classifier's is the engine's own tensor (a view of its batch's
    /// results, not a copy); a detector's is made on the host.
    #[getter]
    fn cam(&self) -> PyResult<PyTensor> {
        if let Some(t) = &*self.0.cam_tensor.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(PyTensor(t.shallow_clone()));
        }
        let m = &self.0.cam;
        let t = Tensor::f_from_slice(&m.data)
            .and_then(|t| t.f_view([m.h as i64, m.w as i64]))
            .map_err(pyo3_tch::wrap_tch_err)?;
        Ok(PyTensor(t))
    }

    /// A detector's boxes, best first: dicts of track, class, label-free score and bbox
    /// (x1, y1, x2, y2 in frame pixels). Empty for a classifier.
    #[getter]
    fn boxes(&self, py: Python<'_>) -> PyResult<Vec<PyObject>> {
        self.0
            .boxes
            .iter()
            .map(|b| {
                let d = pyo3::types::PyDict::new(py);
                d.set_item("track", b.track)?;
                d.set_item("class_id", b.class)?;
                d.set_item("score", b.score)?;
                d.set_item("bbox", b.bbox.to_vec())?;
                Ok(d.into_any().unbind())
            })
            .collect()
    }

    /// The frame as shown, a uint8 tensor [H, W, 3] (with `frames=True`; else None).
    #[getter]
    fn image(&self) -> PyResult<Option<PyTensor>> {
        let Some(i) = &self.0.image else {
            return Ok(None);
        };
        let t = Tensor::f_from_slice(&i.rgb)
            .and_then(|t| t.f_view([i.height as i64, i.width as i64, 3]))
            .map_err(pyo3_tch::wrap_tch_err)?;
        Ok(Some(PyTensor(t)))
    }

    fn __repr__(&self) -> String {
        let t = &self.0.target;
        format!(
            "Result(stream={}, index={}, pts={:?}, target=({}, {:?}, {:.3}))",
            self.0.stream, self.0.index, self.0.pts, t.id, t.label, t.prob
        )
    }
}

/// Start a run from the program's own flags (`["--input", "clip.mp4", "--output", "null"]`).
/// A flag it does not know raises KeyError with the program's one line (and its suggestion);
/// a bad value raises ValueError; nothing has started then.
#[pyfunction]
#[pyo3(signature = (flags, frames = false))]
fn explain(flags: Vec<String>, frames: bool) -> PyResult<Run> {
    let argv = std::iter::once("gradcam-stream".to_owned()).chain(flags);
    let args = Args::try_parse_from(argv).map_err(|e| {
        let line = gradcam_stream::cli::one_line(&e.render().to_string());
        match e.kind() {
            clap::error::ErrorKind::UnknownArgument => PyKeyError::new_err(line),
            _ => PyValueError::new_err(line),
        }
    })?;
    let cfg = Config::from_args(args).map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
    let (tx, rx) = crossbeam_channel::bounded(WAITING);
    let totals = Arc::new(Mutex::new(None));
    let live = Arc::new(OnceLock::new());
    let tap = Tap {
        results: tx,
        frames,
        totals: totals.clone(),
        live: live.clone(),
    };
    gradcam_stream::shutdown::reset();
    let thread = std::thread::Builder::new()
        .name("gradcam-run".into())
        .spawn(move || gradcam_stream::app::run_with(cfg, Some(tap)))
        .map_err(|e| PyRuntimeError::new_err(format!("starting the run: {e}")))?;
    Ok(Run {
        results: Some(rx),
        thread: Some(thread),
        seen: 0,
        totals,
        live,
    })
}

/// Every long flag of the program, without its dashes (`batch-size`): the keywords.
#[pyfunction]
fn flag_names() -> Vec<String> {
    use clap::CommandFactory;
    Args::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect()
}

/// Every long flag of the program as (name, value name or None for a switch, help with its
/// declared default, declared range or None, allowed values): the options reference's rows
/// (`gradcam_stream::options`, the same the book's options page is made from), which
/// `help(gradcam_stream.explain)` is made from.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn flag_help() -> Vec<(String, Option<String>, String, Option<String>, Vec<String>)> {
    gradcam_stream::options::rows()
        .into_iter()
        .map(|r| {
            let help = match &r.default {
                Some(d) => format!("{} [default: {d}]", r.help),
                None => r.help,
            };
            (r.long, r.value, help, r.range, r.allowed)
        })
        .collect()
}

/// The torch version this extension was built against (its libtorch).
#[pyfunction]
fn torch_version() -> &'static str {
    env!("GRADCAM_TORCH_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Run>()?;
    m.add_class::<Frame>()?;
    m.add_function(wrap_pyfunction!(explain, m)?)?;
    m.add_function(wrap_pyfunction!(torch_version, m)?)?;
    m.add_function(wrap_pyfunction!(flag_names, m)?)?;
    m.add_function(wrap_pyfunction!(flag_help, m)?)?;
    Ok(())
}
