//! The render thread: the worker's results drawn onto each stream's frames, handed to its
//! output, and told to the web view.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use crossbeam_channel::Sender;

use super::lines::Lines;
use crate::config::Config;
use crate::engine::ModelInfo;
use crate::frame::Frame;
use crate::render::{Look, Renderer};
use crate::stats::Stage;
use crate::web::{self, hub::Hub};
use crate::worker;

/// The render thread: each delivered batch drawn and handed to its streams' outputs; a
/// stream whose output stopped (it reports why) is skipped, the others go on.
pub(super) fn spawn_renderer(
    cfg: &Config,
    info: &ModelInfo,
    lines: &Lines,
    delivered: crossbeam_channel::Receiver<worker::Delivery>,
    hub: Option<Arc<Hub>>,
    mut tap: Option<super::Tap>,
) -> Result<std::thread::JoinHandle<Result<Renderer>>> {
    let names: Vec<String> = cfg.streams.iter().map(|s| s.name.clone()).collect();
    let metadata: Vec<(&str, Option<&Path>)> = cfg
        .streams
        .iter()
        .map(|s| (s.name.as_str(), s.metadata.as_deref()))
        .collect();
    let draws = cfg.streams.iter().map(|s| s.explain.draw).collect();
    let mut renderer = Renderer::new(Look::from(&cfg.run), info, &metadata)?.drawing(draws);
    if let Some(hub) = &hub {
        hub.recordings.set_metadata(renderer.metadata_paths());
    }
    let render_stats = lines.all.clone();
    let tallies: Vec<crate::stats::Tally> = lines
        .stats
        .iter()
        .map(|s| crate::stats::Tally {
            stream: s.clone(),
            all: lines.all.clone(),
        })
        .collect();
    let mut senders: Vec<Option<Sender<Frame>>> = lines
        .rendered
        .iter()
        .map(|(tx, _)| Some(tx.clone()))
        .collect();
    std::thread::Builder::new()
        .name("gradcam-render".into())
        .spawn(move || -> Result<Renderer> {
            for delivery in delivered.iter() {
                let busy = Instant::now();
                // Frames decoded from damaged data go out unexplained, each in its place
                // among its stream's explained frames.
                let out = renderer.render_all(delivery.explained, delivery.damaged)?;
                render_stats.add_busy(Stage::Overlay, busy.elapsed());
                for o in out {
                    let d = match o {
                        Ok(d) => d,
                        Err(frame) => {
                            pass_on(&mut senders, frame);
                            continue;
                        }
                    };
                    for b in &d.boxes {
                        tallies[d.frame.stream]
                            .stream
                            .detected(&renderer.class_name(b.class));
                    }
                    if let Some(hub) = &hub {
                        hub.channels[d.frame.stream].verdict(verdict(&renderer, &d));
                    }
                    if tap.as_ref().is_some_and(|t| !t.send(&renderer, &names, &d)) {
                        tap = None; // the reader has gone
                    }
                    pass_on(&mut senders, d.frame);
                }
                for s in delivery.ended {
                    senders[s] = None; // its output sees the end and finishes
                }
                for s in delivery.expired {
                    tallies[s].dropped();
                }
            }
            Ok(renderer)
        })
        .context("starting the render thread")
}

/// Send `frame` to its stream's output; an output that has gone gets nothing more.
fn pass_on(senders: &mut [Option<Sender<Frame>>], frame: Frame) {
    let s = frame.stream;
    if senders[s]
        .as_ref()
        .is_some_and(|tx| tx.send(frame).is_err())
    {
        senders[s] = None;
    }
}

/// What the web view shows of a drawn frame.
pub(super) fn verdict(renderer: &Renderer, d: &crate::render::Drawn) -> web::hub::Verdict {
    let f = &d.frame;
    web::hub::Verdict {
        t: f.pts.unwrap_or(0) as f64 / 1e9,
        cap: web::hub::epoch_ms(f.arrived),
        frame: f.index,
        class: d.target.class,
        label: renderer.class_name(d.target.class),
        prob: d.target.prob,
        top: d
            .top
            .iter()
            .map(|c| (renderer.class_name(c.class), c.prob))
            .collect(),
        peak: d.located.peak,
        width: f.width,
        height: f.height,
        boxes: renderer.is_detector().then(|| {
            d.boxes
                .iter()
                .map(|b| web::hub::BoxVerdict {
                    id: b.track,
                    label: renderer.class_name(b.class),
                    score: b.score,
                    bbox: b.bbox,
                })
                .collect()
        }),
    }
}
