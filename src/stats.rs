//! Counters shared by the stages (atomics only: nothing here blocks) and the progress display.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::Progress;

#[derive(Debug)]
pub struct Stats {
    created: Instant,
    /// When the first frame arrived: throughput counts from here, not from model loading.
    first_frame: OnceLock<Instant>,
    /// Frames a live source gave that were dropped because the model was behind.
    pub dropped: AtomicU64,
    /// Frames written to the output.
    pub written: AtomicU64,
    /// Expected number of frames (0 while unknown).
    pub total: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            created: Instant::now(),
            first_frame: OnceLock::new(),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// Record that frames started flowing (only the first call counts).
    pub fn frames_started(&self) {
        let _ = self.first_frame.set(Instant::now());
    }

    /// Whether frames have started flowing.
    pub fn started(&self) -> bool {
        self.first_frame.get().is_some()
    }

    /// Time since the first frame arrived (since creation while none has).
    pub fn elapsed(&self) -> Duration {
        self.first_frame.get().unwrap_or(&self.created).elapsed()
    }

    pub fn fps(&self) -> f64 {
        self.written.load(Relaxed) as f64 / self.elapsed().as_secs_f64().max(1e-9)
    }
}

/// A bar on a terminal, a plain line every few seconds otherwise, or nothing.
pub struct Reporter {
    bar: Option<ProgressBar>,
    lines: bool,
    last_line: Instant,
}

impl Reporter {
    pub fn new(mode: Progress) -> Reporter {
        let tty = std::io::stderr().is_terminal();
        let (bar, lines) = match mode {
            Progress::None => (false, false),
            Progress::Bar => (true, false),
            Progress::Lines => (false, true),
            Progress::Auto => (tty, !tty),
        };
        let bar = bar.then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{bar:32} {pos}/{len} frames  {msg}  ETA {eta}")
                    .expect("static template"),
            );
            b
        });
        Reporter {
            bar,
            lines,
            last_line: Instant::now(),
        }
    }

    pub fn update(&mut self, stats: &Stats) {
        let done = stats.written.load(Relaxed);
        let total = stats.total.load(Relaxed);
        if let Some(b) = &self.bar {
            if total > 0 {
                b.set_length(total.max(done));
            }
            b.set_position(done);
            b.set_message(format!("{:.1} fps", stats.fps()));
        }
        if self.lines && self.last_line.elapsed() >= Duration::from_secs(2) {
            self.last_line = Instant::now();
            let of = if total > 0 {
                format!("/{total}")
            } else {
                String::new()
            };
            eprintln!("progress: {done}{of} frames, {:.1} fps", stats.fps());
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
