//! Counters shared by the stages (atomics only: nothing here blocks) and the progress display.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::Progress;

#[derive(Debug)]
pub struct Stats {
    created: Instant,
    /// When the first frame arrived: throughput counts from here, not from model loading.
    first_frame: OnceLock<Instant>,
    /// Frames the source gave (explained or dropped).
    pub received: AtomicU64,
    /// When the last one came, in nanoseconds since `created`.
    last_frame: AtomicU64,
    /// Frames a live source gave that were dropped because the model was behind.
    pub dropped: AtomicU64,
    /// Times a dropped live feed was reconnected.
    pub reconnects: AtomicU64,
    /// Latency from the appsink to the appsrc: the whole run and the window since the last
    /// stats line.
    latency: Mutex<(Histogram, Histogram)>,
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
            received: AtomicU64::new(0),
            last_frame: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            total: AtomicU64::new(0),
            latency: Mutex::new((Histogram::default(), Histogram::default())),
        }
    }
}

impl Stats {
    /// Record that frames started flowing (only the first call counts).
    pub fn frames_started(&self) {
        let _ = self.first_frame.set(Instant::now());
    }

    /// Count a frame from the source.
    pub fn frame_received(&self) {
        self.received.fetch_add(1, Relaxed);
        self.last_frame
            .store(self.created.elapsed().as_nanos() as u64, Relaxed);
    }

    /// Time since the source last gave a frame (since creation while none has).
    pub fn since_last_frame(&self) -> Duration {
        self.created
            .elapsed()
            .saturating_sub(Duration::from_nanos(self.last_frame.load(Relaxed)))
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

    /// Record one frame's time from the appsink to the appsrc.
    pub fn record_latency(&self, d: Duration) {
        if let Ok(mut l) = self.latency.lock() {
            l.0.add(d);
            l.1.add(d);
        }
    }

    /// Latency (p50, p95) over the whole run.
    pub fn latency_total(&self) -> Option<(Duration, Duration)> {
        let l = self.latency.lock().ok()?;
        Some((l.0.quantile(0.5)?, l.0.quantile(0.95)?))
    }

    /// Latency (p50, p95) since the last call, starting a new window.
    fn latency_window(&self) -> Option<(Duration, Duration)> {
        let mut l = self.latency.lock().ok()?;
        let q = Some((l.1.quantile(0.5)?, l.1.quantile(0.95)?));
        l.1 = Histogram::default();
        q
    }
}

/// Latencies in 1 ms buckets up to 10 s (later ones count as 10 s): fixed memory, however long
/// the run.
#[derive(Debug)]
struct Histogram {
    counts: Vec<u64>,
    n: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; Self::BUCKETS],
            n: 0,
        }
    }
}

impl Histogram {
    const BUCKETS: usize = 10_001;

    fn add(&mut self, d: Duration) {
        let ms = (d.as_millis() as usize).min(Self::BUCKETS - 1);
        self.counts[ms] += 1;
        self.n += 1;
    }

    /// The smallest bucket at or below which a fraction `q` of the samples lie.
    fn quantile(&self, q: f64) -> Option<Duration> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (ms, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_millis(ms as u64));
            }
        }
        None
    }
}

/// `in=… out=… dropped=… reconnects=… fps=… latency_p50=…ms latency_p95=…ms`: the counters a
/// stats line shows, fps over `secs`.
fn stats_fields(
    stats: &Stats,
    out: u64,
    secs: f64,
    latency: Option<(Duration, Duration)>,
) -> String {
    let (p50, p95) = match latency {
        Some((a, b)) => (a.as_millis().to_string(), b.as_millis().to_string()),
        None => ("-".into(), "-".into()),
    };
    format!(
        "in={} out={} dropped={} reconnects={} fps={:.1} latency_p50={p50}ms latency_p95={p95}ms",
        stats.received.load(Relaxed),
        stats.written.load(Relaxed),
        stats.dropped.load(Relaxed),
        stats.reconnects.load(Relaxed),
        out as f64 / secs.max(1e-9),
    )
}

/// A bar on a terminal, a plain line every few seconds otherwise, or nothing.
pub struct Reporter {
    bar: Option<ProgressBar>,
    lines: bool,
    last_line: Instant,
    /// `--stats`: the period, when the last line was printed and the frames written then.
    stats_every: Option<Duration>,
    last_stats: (Instant, u64),
}

impl Reporter {
    pub fn new(mode: Progress, stats_every: Option<Duration>) -> Reporter {
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
            stats_every,
            last_stats: (Instant::now(), 0),
        }
    }

    fn print(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
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
        if let Some(every) = self.stats_every {
            let (since, before) = self.last_stats;
            if stats.started() && since.elapsed() >= every {
                let line = format!(
                    "stats: t={:.1}s {}",
                    stats.elapsed().as_secs_f64(),
                    stats_fields(
                        stats,
                        done - before.min(done),
                        since.elapsed().as_secs_f64(),
                        stats.latency_window()
                    )
                );
                self.print(&line);
                self.last_stats = (Instant::now(), done);
            }
        }
    }

    /// Clear the bar; with `--stats`, print the whole-run line.
    pub fn finish(&mut self, stats: &Stats) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.stats_every.is_some() {
            let secs = stats.elapsed().as_secs_f64();
            eprintln!(
                "stats: total t={secs:.1}s {}",
                stats_fields(
                    stats,
                    stats.written.load(Relaxed),
                    secs,
                    stats.latency_total()
                )
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_known_latencies() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.add(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(h.quantile(0.95), Some(Duration::from_millis(95)));
        h.add(Duration::from_secs(60));
        assert_eq!(h.quantile(1.0), Some(Duration::from_millis(10_000)));
    }
}
