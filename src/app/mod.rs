//! The run: wires the stages together for one or more video streams, or a still image, and
//! reports the summary. Stages meet only through channels of plain values (`Frame`,
//! `Delivery`); every stream has its own queue to the one worker and its own output.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};

use crate::config::{Config, Input, Orientation, Output};
use crate::engine::{self, ModelInfo};
use crate::pipeline;
use crate::render::Look;
use crate::stats::{Reporter, Stats};
use crate::web::hub::Hub;
use crate::worker;

mod image;
mod lines;
mod outlets;
mod render;
mod report;
mod servers;
pub mod tap;

use image::run_image;
use lines::Lines;
use outlets::{outlets, record_live_files, sound_tracks};
use render::spawn_renderer;
use report::{report, StreamEnd};
use servers::{serve_http, start_servers};
pub use tap::Tap;

pub fn run(cfg: Config) -> Result<()> {
    run_with(cfg, None)
}

/// `run`, each frame's result also handed to `tap` (video inputs only: the Python package).
pub fn run_with(cfg: Config, tap: Option<Tap>) -> Result<()> {
    let mut settings = cfg.engine.clone();
    // Results handed over as tensors keep the engine's own maps (no copy per frame).
    settings.keep_maps = tap.is_some();
    if let Some(shard) = cfg.shard {
        let names: Vec<&str> = cfg.streams.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "shard {shard}: {} of the {} streams configured{}",
            names.len(),
            cfg.configured,
            if names.is_empty() {
                "; idle, serving /healthz and /metrics until the shard count changes".into()
            } else {
                format!(": {}", names.join(", "))
            }
        );
        if names.is_empty() {
            return idle(&cfg);
        }
    }
    let s = &cfg.streams[0];
    if tap.is_some() && (cfg.is_image() || matches!(s.input, Input::Folder(_))) {
        return Err(crate::config::usage(format!(
            "{} is a still image or a folder of them; results are handed over for video inputs (files, cameras, RTSP) only",
            s.shown
        )));
    }
    if let (Input::Folder(dir), [Output::Pictures(pattern)]) = (&s.input, s.outputs.as_slice()) {
        let job = crate::folder::Job {
            dir,
            pattern,
            metadata: s.metadata.as_deref(),
            upright: cfg.run.orientation == Orientation::Auto,
            look: Look::from(&cfg.run),
        };
        crate::folder::run(job, settings, cfg.run.batch_size)
    } else if cfg.is_image() {
        run_image(&cfg, settings)
    } else {
        run_video(&cfg, settings, tap)
    }
}

/// `--start` names a point inside every file input (a usage error otherwise, naming the
/// file's length), and only file inputs.
fn check_start(cfg: &Config) -> Result<()> {
    let Some(start) = cfg.start.filter(|s| !s.is_zero()) else {
        return Ok(());
    };
    for s in &cfg.streams {
        let Input::Video { uri, .. } = &s.input else {
            return Err(crate::config::usage(format!(
                "--start applies to file inputs, and {} is live; drop --start",
                s.shown
            )));
        };
        if let Some(d) = pipeline::source::media_duration(uri).filter(|d| start >= *d) {
            return Err(crate::config::usage(format!(
                "--start {:.1} s is beyond the end of {} (its duration is {:.1} s); give a start before it",
                start.as_secs_f64(),
                s.shown,
                d.as_secs_f64()
            )));
        }
    }
    Ok(())
}

/// A shard that holds none of the streams: healthy, serving `/healthz` and `/metrics` (with
/// `--metrics` or `--web`) until it is stopped, so a StatefulSet scaled past its cameras
/// stays ready for a new count.
fn idle(cfg: &Config) -> Result<()> {
    let lines = Lines::new(cfg);
    let hub = cfg.web.as_ref().map(|_| Arc::new(Hub::new(&[])));
    let _http = serve_http(cfg, &lines, hub)?;
    while !crate::shutdown::requested() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("done: this shard held no streams");
    Ok(())
}

/// A video run, as the pipeline's story: open the outputs, then the channels between the
/// stages, the metrics, the worker and the renderer; run the streams; drain; report.
fn run_video(cfg: &Config, settings: engine::Settings, tap: Option<Tap>) -> Result<()> {
    pipeline::init()?;
    check_start(cfg)?;
    let codec = pipeline::sink::resolve_encoder(cfg.run.encoder)?;
    // Servers start first, so a port in use fails before the model loads; files are reserved
    // next, so an unwritable path does too.
    let tracks = sound_tracks(cfg);
    let (servers, mounts) = start_servers(cfg, &tracks)?;
    let outlets = cfg
        .streams
        .iter()
        .zip(mounts)
        .map(|(s, feeds)| outlets(s, feeds))
        .collect::<Result<Vec<_>>>()?;
    let lines = Lines::new(cfg);
    let hub = cfg.web.as_ref().map(|_| {
        let names: Vec<&str> = cfg.streams.iter().map(|s| s.name.as_str()).collect();
        Arc::new(Hub::new(&names))
    });
    let _http = serve_http(cfg, &lines, hub.clone())?;
    // Two batches in flight between the worker and the output, as between source and worker.
    let (delivered_tx, delivered_rx) = crossbeam_channel::bounded::<worker::Delivery>(2);
    let (info, worker) = worker::spawn(
        settings,
        lines.queues.iter().map(|(_, rx)| rx.clone()).collect(),
        delivered_tx,
        lines.all.clone(),
    )?;
    let tap_totals = tap.as_ref().map(|t| t.totals.clone());
    if let Some(t) = &tap {
        let _ = t.live.set(lines.all.clone());
    }
    let render_thread = spawn_renderer(cfg, &info, &lines, delivered_rx, hub.clone(), tap)?;
    if let Some(hub) = &hub {
        record_live_files(cfg, &outlets, hub);
    }

    let mut reporter = Reporter::new(cfg.run.progress, cfg.stats_every).model(&info);
    let all = lines.all.clone();
    let stats = lines.stats.clone();
    let piped = pipeline::run_video(
        lines.into_run(cfg, &outlets, &tracks, codec, hub.as_ref()),
        all.clone(),
        &mut reporter,
    );
    reporter.finish(&all);
    drop(servers);
    // Drain: the worker ends once every queue is closed, the renderer once the worker has.
    let worked = worker
        .join()
        .map_err(|_| anyhow!("the worker thread panicked"))?;
    let rendered = render_thread
        .join()
        .map_err(|_| anyhow!("the render thread panicked"))?;
    if let Some(tap) = &tap_totals {
        hand_totals(tap, cfg, &info, &all, &stats);
    }
    let outcomes = piped?;
    worked?;
    let metadata = rendered?.into_metadata();
    let ends = cfg
        .streams
        .iter()
        .zip(outlets)
        .zip(outcomes)
        .zip(&stats)
        .zip(metadata)
        .map(|((((s, o), outcome), st), meta)| StreamEnd {
            stream: s,
            outlets: o,
            outcome,
            stats: st,
            metadata: meta,
        })
        .collect();
    report(cfg, &info, &all, ends)
}

/// The run's totals, for the Python package's `summary()`.
fn hand_totals(
    tap: &Mutex<Option<tap::Totals>>,
    cfg: &Config,
    info: &ModelInfo,
    all: &Arc<Stats>,
    stats: &[Arc<Stats>],
) {
    let named: Vec<(String, Arc<Stats>)> = cfg
        .streams
        .iter()
        .map(|s| s.name.clone())
        .zip(stats.iter().cloned())
        .collect();
    let totals = tap::Totals::of(info, cfg.run.batch_size, all, &named);
    *tap.lock().unwrap_or_else(|e| e.into_inner()) = Some(totals);
}
