//! Where each stream's explained frames (and sound) go: its output branches, its RTSP mounts,
//! its sound track, its recordings' hooks into the web view.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use crate::config::{Config, Input, Output, Stream};
use crate::frame::EncodedTap;
use crate::outfile::OutFile;
use crate::pipeline::sound::{self, Track};
use crate::pipeline::{self, rtsp, sink::Branch};
use crate::web::{self, hub::Hub};

/// Where one stream's explained frames are written: its files (whole-or-nothing, or in place
/// for a live recording), segment patterns and RTSP mounts.
pub(super) struct Outlets {
    pub(super) files: Vec<(OutFile, crate::config::Container, bool)>,
    pub(super) mounts: Vec<Arc<rtsp::Feeds>>,
    pub(super) names: Vec<String>,
}

/// Each stream's sound track, where it has one and an output carries it (files, segments,
/// rtsp://), found for all streams at once.
pub(super) fn sound_tracks(cfg: &Config) -> Vec<Option<Track>> {
    let wanted = |s: &Stream| {
        s.audio
            && s.outputs.iter().any(|o| {
                matches!(
                    o,
                    Output::Video { .. } | Output::Segments { .. } | Output::Rtsp { .. }
                )
            })
    };
    std::thread::scope(|scope| {
        let probes: Vec<_> = cfg
            .streams
            .iter()
            .map(|s| {
                scope.spawn(move || {
                    let uri = match &s.input {
                        Input::Video { uri, .. } | Input::Rtsp { uri } if wanted(s) => uri,
                        _ => return None,
                    };
                    let track = sound::probe(uri, SOUND_PROBE);
                    if track.is_none() && matches!(s.input, Input::Rtsp { .. }) {
                        eprintln!(
                            "{}",
                            crate::redact::line(&format!(
                                "rtsp: {}: no sound found within {} s; its outputs carry its video only",
                                s.shown,
                                SOUND_PROBE.as_secs()
                            ))
                        );
                    }
                    track
                })
            })
            .collect();
        probes
            .into_iter()
            .map(|p| p.join().ok().flatten())
            .collect()
    })
}

/// How long finding a stream's sound may take.
pub(super) const SOUND_PROBE: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) fn outlets(s: &Stream, feeds: Vec<Arc<rtsp::Feeds>>) -> Result<Outlets> {
    let mut files = Vec::new();
    let mut names = Vec::new();
    for o in &s.outputs {
        match o {
            Output::Video { path, container } => {
                let live = s.input.is_live();
                let out = if live {
                    OutFile::in_place(path)?
                } else {
                    OutFile::create(path)?.0
                };
                names.push(path.display().to_string());
                files.push((out, *container, live));
            }
            Output::Segments { pattern, .. } => {
                let dir = pattern
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if !dir.is_dir() {
                    anyhow::bail!(
                        "cannot write segments {}: {} is not a directory; choose a path in an existing, writable directory",
                        pattern.display(),
                        dir.display()
                    );
                }
                names.push(pattern.display().to_string());
            }
            Output::Rtsp { .. } => names.push("rtsp".into()),
            Output::Display => names.push("display".into()),
            Output::Null => names.push("null".into()),
            Output::Image(_) | Output::Pictures(_) => {}
        }
    }
    Ok(Outlets {
        files,
        mounts: feeds,
        names,
    })
}

/// The stream's output branches: one each for its files, segments, window and null, and one
/// live encoder shared by all its RTSP mounts and the web view (`web`).
pub(super) fn branches<'a>(
    s: &'a Stream,
    o: &'a Outlets,
    web: Option<Arc<dyn EncodedTap>>,
) -> Vec<Branch<'a>> {
    let mut f = o.files.iter();
    let mut out: Vec<Branch> = s
        .outputs
        .iter()
        .filter_map(|out| match out {
            Output::Video { .. } => {
                let (file, container, live) = f.next().expect("one file per file output");
                Some(Branch::File(file.partial_path(), *container, *live))
            }
            Output::Segments {
                pattern,
                container,
                every,
            } => Some(Branch::Segments(
                pattern,
                *container,
                every.as_nanos() as u64,
            )),
            Output::Rtsp { .. } => None,
            Output::Display => Some(Branch::Display),
            Output::Null | Output::Image(_) | Output::Pictures(_) => Some(Branch::Null),
        })
        .collect();
    let mut taps: Vec<Arc<dyn EncodedTap>> = o
        .mounts
        .iter()
        .map(|m| m.clone() as Arc<dyn EncodedTap>)
        .collect();
    taps.extend(web);
    if !taps.is_empty() {
        out.push(Branch::Live(taps));
    }
    out
}

/// Each segment a stream's splitmuxsink opens, onto the recordings page.
pub(super) fn segment_hook(hub: &Arc<Hub>, s: &Stream, index: usize) -> pipeline::SegmentOpened {
    let (hub, stream) = (hub.clone(), s.name.clone());
    Arc::new(move |path, running_time| {
        hub.recordings.add(web::hub::Recording {
            stream: stream.clone(),
            index,
            path,
            started: std::time::SystemTime::now(),
            begins_at: running_time as f64 / 1e9,
        })
    })
}

/// The live recordings (written in place, playable while they grow) on the recordings page.
pub(super) fn record_live_files(cfg: &Config, outlets: &[Outlets], hub: &Hub) {
    for (index, (s, o)) in cfg.streams.iter().zip(outlets).enumerate() {
        for (file, _, live) in &o.files {
            if *live {
                hub.recordings.add(web::hub::Recording {
                    stream: s.name.clone(),
                    index,
                    path: file.dest().to_owned(),
                    started: std::time::SystemTime::now(),
                    begins_at: 0.0,
                });
            }
        }
    }
}
