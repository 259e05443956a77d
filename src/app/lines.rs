//! The channels and counters between a run's stages, and what the pipeline is told of each
//! stream (its pace, its window of a file).

use std::sync::Arc;

use crossbeam_channel::Sender;

use super::outlets::{branches, segment_hook, Outlets};
use crate::config::{Config, Orientation, Output, Realtime, Stream};
use crate::frame::EncodedTap;
use crate::frame::Frame;
use crate::pipeline;
use crate::pipeline::sound::Track;
use crate::stats::Stats;
use crate::web::hub::Hub;

/// The channels and counters between the stages: each stream's queue to the worker and its
/// channel from the renderer, its counters, and the whole run's.
pub(super) struct Lines {
    pub(super) all: Arc<Stats>,
    pub(super) stats: Vec<Arc<Stats>>,
    pub(super) queues: Vec<(Sender<Frame>, crossbeam_channel::Receiver<Frame>)>,
    pub(super) rendered: Vec<(Sender<Frame>, crossbeam_channel::Receiver<Frame>)>,
}

impl Lines {
    pub(super) fn new(cfg: &Config) -> Self {
        let streams = &cfg.streams;
        Lines {
            all: Arc::new(Stats::default()),
            stats: streams.iter().map(|_| Arc::new(Stats::default())).collect(),
            queues: streams
                .iter()
                .map(|s| crossbeam_channel::bounded::<Frame>(s.queue_capacity))
                .collect(),
            rendered: streams
                .iter()
                .map(|_| crossbeam_channel::bounded::<Frame>(cfg.run.batch_size * 2))
                .collect(),
        }
    }

    /// What the pipeline needs of each stream, the channels moved into it.
    pub(super) fn into_run<'a>(
        self,
        cfg: &'a Config,
        outlets: &'a [Outlets],
        tracks: &[Option<Track>],
        codec: pipeline::sink::Codec,
        hub: Option<&Arc<Hub>>,
    ) -> pipeline::Run<'a> {
        let streams = cfg
            .streams
            .iter()
            .zip(outlets)
            .zip(tracks)
            .map(|((s, o), t)| (s, o, *t))
            .zip(self.queues)
            .zip(self.rendered)
            .zip(self.stats)
            .enumerate()
            .map(
                |(i, ((((s, o, sound), (frames, oldest)), (_, rendered)), stats))| {
                    pipeline::StreamRun {
                        name: &s.name,
                        input: &s.input,
                        shown: &s.shown,
                        rtsp: s.rtsp,
                        overload: s.overload,
                        max_latency: s.max_latency,
                        branches: branches(
                            s,
                            o,
                            hub.map(|h| h.channels[i].clone() as Arc<dyn EncodedTap>),
                        ),
                        frames,
                        oldest,
                        rendered,
                        stats,
                        paced: paced(cfg, s),
                        window: window(cfg, s),
                        prepare: pipeline::source::Prepare {
                            deinterlace: cfg.run.deinterlace == crate::config::Deinterlace::Auto,
                            upright: cfg.run.orientation == Orientation::Auto,
                            key_frames_when_behind: s.key_frames_when_behind,
                        },
                        segments: hub.map(|h| segment_hook(h, s, i)),
                        sound,
                    }
                },
            )
            .collect();
        pipeline::Run {
            streams,
            codec,
            limits: pipeline::Limits {
                max_frames: cfg.run.max_frames,
                // A file's --duration is a part of it (its window); a live one's, the run's.
                duration: cfg
                    .duration
                    .filter(|_| cfg.streams.iter().any(|s| s.input.is_live())),
            },
        }
    }
}

/// Whether a file input is paced at its own frame rate: `--realtime`, or by default when a
/// person watches it (a window, RTSP, the web view).
pub(super) fn paced(cfg: &Config, s: &Stream) -> bool {
    if s.input.is_live() {
        return false; // a live source paces itself
    }
    match cfg.run.realtime {
        Realtime::On => true,
        Realtime::Off => false,
        Realtime::Auto => {
            cfg.web.is_some()
                || s.outputs
                    .iter()
                    .any(|o| matches!(o, Output::Display | Output::Rtsp { .. }))
        }
    }
}

/// A file input's `--start` and `--duration` as the part of it to explain.
pub(super) fn window(cfg: &Config, s: &Stream) -> Option<pipeline::source::Window> {
    if s.input.is_live() || (cfg.start.is_none() && cfg.duration.is_none()) {
        return None;
    }
    let start = cfg.start.unwrap_or_default();
    let end = cfg.duration.map(|d| (start + d).as_nanos() as u64);
    Some(pipeline::source::Window::new(start.as_nanos() as u64, end))
}
