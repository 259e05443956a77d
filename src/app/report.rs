//! The end of a run: each stream's ending and the summary lines.

use std::sync::atomic::Ordering::Relaxed;

use anyhow::Result;

use super::outlets::Outlets;
use crate::config::{Config, Stream};
use crate::engine::ModelInfo;
use crate::stats::Stats;

/// How one stream of a run ended, with what it wrote.
pub(super) struct StreamEnd<'a> {
    pub(super) stream: &'a Stream,
    pub(super) outlets: Outlets,
    pub(super) outcome: Result<()>,
    pub(super) stats: &'a Stats,
    pub(super) metadata: Option<crate::outfile::LineFile>,
}

/// Each stream's outputs kept when it succeeded (or, for a live recording, whatever
/// happened), removed when it wrote nothing or its file input failed; then the summary, and
/// the run's error if any stream failed.
pub(super) fn report(
    cfg: &Config,
    info: &ModelInfo,
    all: &Stats,
    ends: Vec<StreamEnd>,
) -> Result<()> {
    let several = ends.len() > 1;
    let mut failures = Vec::new();
    for end in ends {
        let (s, written) = (end.stream, end.stats.written.load(Relaxed));
        let keep = written > 0 && (end.outcome.is_ok() || s.input.is_live());
        for (file, _, _) in end.outlets.files {
            if keep {
                file.commit()?;
            } else {
                file.discard();
            }
        }
        if let Some(m) = end.metadata.filter(|_| keep) {
            m.commit()?;
        }
        match end.outcome {
            Err(e) if !several => return Err(e),
            Err(e) => failures.push(format!("{} ({e:#})", s.name)),
            Ok(()) if written == 0 && !several => {
                anyhow::bail!("the input gave no video frames; nothing was written")
            }
            Ok(()) if written == 0 => failures.push(format!("{} (no video frames)", s.name)),
            Ok(()) => {}
        }
        if several {
            eprintln!(
                "{}",
                crate::redact::line(&format!(
                    "done: stream {}: {written} frames{} from {} → {}",
                    s.name,
                    losses(end.stats),
                    s.shown,
                    end.outlets.names.join(", ")
                ))
            );
        } else {
            summary(cfg, info, all, &end.outlets.names);
        }
    }
    if several {
        let streams = format!("{} streams", cfg.streams.len());
        summary(cfg, info, all, &[streams]);
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "{} of {} streams failed: {}",
            failures.len(),
            cfg.streams.len(),
            failures.join("; ")
        );
    }
    Ok(())
}

/// `, 3 dropped (model behind the source), 1 reconnect`, or nothing.
pub(super) fn losses(stats: &Stats) -> String {
    let super::tap::Losses {
        dropped,
        undecoded,
        reconnects,
        packets_lost,
        damaged,
        key_frame_requests,
    } = super::tap::Losses::of(stats);
    let mut out = String::new();
    if dropped > 0 {
        out.push_str(&format!(", {dropped} dropped (model behind the source)"));
    }
    if undecoded > 0 {
        out.push_str(&format!(
            ", {undecoded} left undecoded (key frames only while behind)"
        ));
    }
    if reconnects > 0 {
        let s = if reconnects == 1 { "" } else { "s" };
        out.push_str(&format!(", {reconnects} reconnect{s}"));
    }
    if packets_lost + damaged > 0 {
        out.push_str(&format!(
            ", {packets_lost} RTP packets lost, {damaged} frames decoded from damaged data, \
             {key_frame_requests} key frames asked for"
        ));
    }
    out
}

pub(super) fn summary(cfg: &Config, info: &ModelInfo, all: &Stats, dests: &[String]) {
    let written = all.written.load(Relaxed);
    let secs = all.elapsed().as_secs_f64();
    eprintln!(
        "done: {written} frames in {secs:.1} s ({:.1} fps) on {} with {}, batch size {}{} → {}",
        written as f64 / secs.max(1e-9),
        info.device,
        info.name,
        cfg.run.batch_size,
        losses(all),
        dests.join(", ")
    );
}
