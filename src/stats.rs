//! Counters shared by the stages (atomics, and one short lock for latency: nothing here
//! blocks a stage) and the progress display.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// Encoded frames of a live feed left undecoded while it was behind (only its key frames
    /// decoded until it recovered): frames that would have been dropped, not decoded first.
    pub undecoded: AtomicU64,
    /// Times a dropped live feed was reconnected.
    pub reconnects: AtomicU64,
    /// RTP packets of a live feed lost on the way (gaps in their sequence numbers).
    pub packets_lost: AtomicU64,
    /// Its packets received and lost over the last minute.
    loss: Mutex<LossWindow>,
    /// Frames decoded from data with a gap (a lost packet, up to the next whole key frame).
    pub damaged: AtomicU64,
    /// Times the camera was asked for a key frame after a loss (an RTCP PLI).
    pub key_frame_requests: AtomicU64,
    /// Latency from the appsink to the appsrc: the whole run and the window since the last
    /// stats line.
    latency: Mutex<(Histogram, Histogram)>,
    /// Frames written to the output.
    pub written: AtomicU64,
    /// Expected number of frames (0 while unknown).
    pub total: AtomicU64,
    /// Video encoders in the stream's output pipeline (however many viewers it has).
    pub encoders: AtomicU64,
    /// Nanoseconds each stage spent busy (for the source: waiting for room in the queue).
    busy: [AtomicU64; Stage::ALL.len()],
    /// Time frames waited in the queue for the worker, in nanoseconds, and how many.
    queue_wait: AtomicU64,
    queue_taken: AtomicU64,
    /// Device memory in use, in bytes (0: not on a GPU).
    device_memory: AtomicU64,
    /// Whole frames the model's side copied: host to host, host to device, device to host.
    frame_copies: [AtomicU64; 3],
    /// How many batches of each size the model ran (index: the size).
    batches: Mutex<Vec<u64>>,
    /// Where the stream stands (per-stream stats; the whole run's stays `Starting`).
    health: Mutex<Health>,
    /// A detector's boxes found so far, by class name.
    detections: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// A stream's counters and the whole run's, counted together: the one place where a frame
/// received, dropped or written, a latency and a reconnect are counted, so the two never
/// disagree.
#[derive(Debug, Clone)]
pub struct Tally {
    pub stream: Arc<Stats>,
    pub all: Arc<Stats>,
}

impl Tally {
    /// A frame came from the source; the first one also starts the clocks and sets the
    /// expected count (0 while unknown).
    pub fn received(&self, first: Option<u64>) {
        self.stream.frame_received();
        self.all.frame_received();
        if let Some(expected) = first {
            self.stream.frames_started();
            self.all.frames_started();
            self.stream.total.store(expected, Relaxed);
            self.all.total.fetch_add(expected, Relaxed);
        }
    }

    /// A live frame was dropped because the model was behind.
    pub fn dropped(&self) {
        self.stream.dropped.fetch_add(1, Relaxed);
        self.all.dropped.fetch_add(1, Relaxed);
    }

    /// A live stream behind its bound skipped an encoded frame without decoding it.
    pub fn undecoded(&self) {
        self.stream.undecoded.fetch_add(1, Relaxed);
        self.all.undecoded.fetch_add(1, Relaxed);
    }

    /// An RTP packet of the feed came, `lost` packets after the one before it were lost.
    pub fn rtp_packet(&self, lost: u64) {
        for s in [&self.stream, &self.all] {
            s.packets_lost.fetch_add(lost, Relaxed);
            if let Ok(mut w) = s.loss.lock() {
                w.add(s.created.elapsed().as_secs(), lost);
            }
        }
    }

    /// A frame was decoded from damaged data.
    pub fn damaged(&self) {
        self.stream.damaged.fetch_add(1, Relaxed);
        self.all.damaged.fetch_add(1, Relaxed);
    }

    /// The camera was asked for a key frame after a loss.
    pub fn key_frame_request(&self) {
        self.stream.key_frame_requests.fetch_add(1, Relaxed);
        self.all.key_frame_requests.fetch_add(1, Relaxed);
    }

    /// A frame reached its outputs, `latency` after the appsink had it.
    pub fn written(&self, latency: Duration) {
        self.stream.record_latency(latency);
        self.all.record_latency(latency);
        self.stream.written.fetch_add(1, Relaxed);
        self.all.written.fetch_add(1, Relaxed);
    }

    /// A lost feed gives frames again.
    pub fn reconnected(&self) {
        self.stream.reconnects.fetch_add(1, Relaxed);
        self.all.reconnects.fetch_add(1, Relaxed);
    }
}

/// Packets received and lost, a bucket a second over the last minute.
#[derive(Debug)]
struct LossWindow {
    /// (second since the stats began, packets received, packets lost), by second modulo 60.
    buckets: [(u64, u64, u64); 60],
}

impl Default for LossWindow {
    fn default() -> Self {
        LossWindow {
            buckets: [(0, 0, 0); 60],
        }
    }
}

impl LossWindow {
    fn add(&mut self, second: u64, lost: u64) {
        let b = &mut self.buckets[(second % 60) as usize];
        if b.0 != second {
            *b = (second, 0, 0);
        }
        b.1 += 1;
        b.2 += lost;
    }

    /// The share lost over the last `span` seconds (up to the minute kept), in percent.
    fn percent(&self, now: u64, span: u64) -> Option<f64> {
        let (got, lost) = self
            .buckets
            .iter()
            .filter(|b| b.0 + span.min(60) > now && b.0 <= now)
            .fold((0, 0), |(g, l), b| (g + b.1, l + b.2));
        (got + lost > 0).then(|| 100.0 * lost as f64 / (got + lost) as f64)
    }
}

/// Where a stream stands, for `/healthz` and the `up` metric.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Health {
    /// Opening its input; no frame yet.
    #[default]
    Starting,
    /// Frames flowing.
    Up,
    /// Its feed was lost; `tries` reconnect tries so far, of `max` (0: forever).
    Reconnecting { tries: u32, max: u32, why: String },
    /// Its input ended and its outputs are finished.
    Ended,
    /// Given up: the reason.
    Failed(String),
}

impl Health {
    /// Whether frames flow now.
    pub fn up(&self) -> bool {
        matches!(self, Health::Up)
    }

    /// Whether the stream is down for good (beyond its reconnect budget, or failed).
    pub fn down(&self) -> Option<String> {
        match self {
            Health::Failed(why) => Some(why.clone()),
            Health::Reconnecting { tries, max, why } if *max > 0 && tries >= max => {
                Some(format!("{why}; {tries} of {max} reconnect tries spent"))
            }
            _ => None,
        }
    }
}

/// The stages a frame passes, for `--stats`' account of where the time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The source (decoding to the appsink): counted is the time it *waited* for room in the
    /// queue; its share busy is the rest.
    SourceWait,
    /// The worker: upload, model, CAM, smoothing (and on a GPU the blend), copies back.
    Model,
    /// The render stage: the host blend (on a CPU), box, label, metadata.
    Overlay,
    /// The output: pushing into the appsrc, which waits while the encoder is behind.
    Output,
}

impl Stage {
    const ALL: [Stage; 4] = [
        Stage::SourceWait,
        Stage::Model,
        Stage::Overlay,
        Stage::Output,
    ];
}

/// The counters behind one stats line, to take differences between lines.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    busy: [u64; Stage::ALL.len()],
    queue_wait: u64,
    queue_taken: u64,
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
            undecoded: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            packets_lost: AtomicU64::new(0),
            loss: Mutex::default(),
            damaged: AtomicU64::new(0),
            key_frame_requests: AtomicU64::new(0),
            total: AtomicU64::new(0),
            encoders: AtomicU64::new(0),
            latency: Mutex::new((Histogram::default(), Histogram::default())),
            busy: Default::default(),
            queue_wait: AtomicU64::new(0),
            queue_taken: AtomicU64::new(0),
            device_memory: AtomicU64::new(0),
            batches: Mutex::new(Vec::new()),
            frame_copies: Default::default(),
            health: Mutex::new(Health::Starting),
            detections: Mutex::default(),
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

    /// The share of an RTP feed's packets lost over the last minute, in percent (None: no
    /// packets in that time, or not an RTP feed).
    pub fn loss_percent(&self) -> Option<f64> {
        self.loss_percent_over(60)
    }

    /// The same over the last `seconds` (at most 60).
    pub fn loss_percent_over(&self, seconds: u64) -> Option<f64> {
        let w = self.loss.lock().ok()?;
        w.percent(self.created.elapsed().as_secs(), seconds)
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

    /// Count `d` of work (or, for the source, of waiting) in `stage`.
    pub fn add_busy(&self, stage: Stage, d: Duration) {
        self.busy[stage as usize].fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// A frame left the queue after waiting `d` there.
    pub fn record_queue_wait(&self, d: Duration) {
        self.queue_wait.fetch_add(d.as_nanos() as u64, Relaxed);
        self.queue_taken.fetch_add(1, Relaxed);
    }

    pub fn set_device_memory(&self, bytes: u64) {
        self.device_memory.store(bytes, Relaxed);
    }

    pub fn device_memory(&self) -> u64 {
        self.device_memory.load(Relaxed)
    }

    /// Count whole frames copied by the model's side: host to host, to the device and back.
    pub fn add_copies(&self, host: u64, to_device: u64, from_device: u64) {
        for (c, n) in self.frame_copies.iter().zip([host, to_device, from_device]) {
            c.fetch_add(n, Relaxed);
        }
    }

    /// Whole-frame copies per frame explained (host, to the device, back), over the run.
    pub fn copies_per_frame(&self) -> Option<[f64; 3]> {
        let explained: u64 = self
            .batch_sizes()
            .iter()
            .enumerate()
            .map(|(n, &count)| n as u64 * count)
            .sum();
        (explained > 0).then(|| {
            std::array::from_fn(|i| self.frame_copies[i].load(Relaxed) as f64 / explained as f64)
        })
    }

    /// The model ran a batch of `n` frames.
    pub fn record_batch(&self, n: usize) {
        if let Ok(mut b) = self.batches.lock() {
            if b.len() <= n {
                b.resize(n + 1, 0);
            }
            b[n] += 1;
        }
    }

    /// How many batches of each size ran (index: the size).
    pub fn batch_sizes(&self) -> Vec<u64> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Seconds the model has been busy.
    pub fn model_seconds(&self) -> f64 {
        self.busy[Stage::Model as usize].load(Relaxed) as f64 / 1e9
    }

    pub fn set_health(&self, h: Health) {
        if let Ok(mut s) = self.health.lock() {
            *s = h;
        }
    }

    pub fn health(&self) -> Health {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// A detector found a box of `class` (its name).
    pub fn detected(&self, class: &str) {
        if let Ok(mut d) = self.detections.lock() {
            *d.entry(class.to_owned()).or_default() += 1;
        }
    }

    /// The boxes found so far, by class name (in name order).
    pub fn detections(&self) -> Vec<(String, u64)> {
        self.detections
            .lock()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// The latency histogram over the whole run: (upper bound in seconds, frames above the
    /// previous bound and at or below this one) for each of `bounds` (rising; the last takes
    /// all that is left), the sum in seconds and the count.
    pub fn latency_buckets(&self, bounds: &[f64]) -> (Vec<(f64, u64)>, f64, u64) {
        let Ok(l) = self.latency.lock() else {
            return (Vec::new(), 0.0, 0);
        };
        let h = &l.0;
        let mut out = Vec::with_capacity(bounds.len());
        let (mut from, mut counted) = (0u64, 0u64);
        for (i, &b) in bounds.iter().enumerate() {
            let n = if i + 1 == bounds.len() {
                h.n() - counted
            } else {
                let upto = (b * 1000.0).floor() as u64;
                let n = h.count_between(from, upto);
                from = upto + 1;
                n
            };
            counted += n;
            out.push((b, n));
        }
        (out, h.sum_ns as f64 / 1e9, h.n())
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            busy: std::array::from_fn(|i| self.busy[i].load(Relaxed)),
            queue_wait: self.queue_wait.load(Relaxed),
            queue_taken: self.queue_taken.load(Relaxed),
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

/// Latencies in milliseconds, in an HDR histogram (exact to 2 s, within 0.1% beyond, up to an
/// hour; later ones count as an hour): fixed memory, however long the run.
#[derive(Debug)]
struct Histogram {
    ms: hdrhistogram::Histogram<u64>,
    sum_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            ms: hdrhistogram::Histogram::new_with_bounds(1, Self::MAX_MS, 3)
                .expect("valid histogram bounds"),
            sum_ns: 0,
        }
    }
}

impl Histogram {
    const MAX_MS: u64 = 3_600_000;

    fn add(&mut self, d: Duration) {
        self.ms
            .saturating_record((d.as_millis() as u64).min(Self::MAX_MS));
        self.sum_ns += d.as_nanos() as u64;
    }

    fn n(&self) -> u64 {
        self.ms.len()
    }

    /// The value at or below which a fraction `q` of the samples lie.
    fn quantile(&self, q: f64) -> Option<Duration> {
        (self.n() > 0).then(|| Duration::from_millis(self.ms.value_at_quantile(q)))
    }

    /// Samples of `lo` to `hi` milliseconds, both included.
    fn count_between(&self, lo: u64, hi: u64) -> u64 {
        if lo > hi {
            return 0;
        }
        self.ms.count_between(lo, hi)
    }
}

/// `in=… out=… dropped=… reconnects=… [packets_lost=… damaged=…] fps=… latency_p50=…ms latency_p95=…ms busy: source=…%
/// model=…% overlay=…% output=…% queue_wait=…ms [gpu_mem=…MiB]`: the counters a stats line
/// shows, fps and shares over the `secs` between `from` and `to`.
fn stats_fields(
    stats: &Stats,
    out: u64,
    secs: f64,
    latency: Option<(Duration, Duration)>,
    (from, to): (Snapshot, Snapshot),
) -> String {
    let (p50, p95) = match latency {
        Some((a, b)) => (a.as_millis().to_string(), b.as_millis().to_string()),
        None => ("-".into(), "-".into()),
    };
    let share = |stage: Stage| {
        let ns = to.busy[stage as usize].saturating_sub(from.busy[stage as usize]);
        (ns as f64 / 1e9 / secs.max(1e-9) * 100.0).min(100.0)
    };
    let taken = to.queue_taken.saturating_sub(from.queue_taken);
    let queue_ms = match taken {
        0 => "-".to_owned(),
        n => format!(
            "{:.0}",
            to.queue_wait.saturating_sub(from.queue_wait) as f64 / 1e6 / n as f64
        ),
    };
    let memory = match stats.device_memory.load(Relaxed) {
        0 => String::new(),
        b => format!(" gpu_mem={}MiB", b >> 20),
    };
    // A lossy RTP feed's: packets lost on the way, frames decoded from damaged data.
    let (lost, damaged) = (
        stats.packets_lost.load(Relaxed),
        stats.damaged.load(Relaxed),
    );
    let lossy = match lost + damaged {
        0 => String::new(),
        _ => format!(" packets_lost={lost} damaged={damaged}"),
    };
    format!(
        "in={} out={} dropped={} reconnects={}{lossy} fps={:.1} latency_p50={p50}ms latency_p95={p95}ms \
         busy: source={:.0}% model={:.0}% overlay={:.0}% output={:.0}% queue_wait={queue_ms}ms{memory}",
        stats.received.load(Relaxed),
        stats.written.load(Relaxed),
        stats.dropped.load(Relaxed),
        stats.reconnects.load(Relaxed),
        out as f64 / secs.max(1e-9),
        100.0 - share(Stage::SourceWait),
        share(Stage::Model),
        share(Stage::Overlay),
        share(Stage::Output),
    )
}

/// A bar on a terminal, a plain line every few seconds otherwise, or nothing.
pub struct Reporter {
    bar: Option<ProgressBar>,
    lines: bool,
    last_line: Instant,
    /// `--stats`: the period, when the last line was printed, the frames written then and
    /// the stage counters.
    stats_every: Option<Duration>,
    last_stats: (Instant, u64, Snapshot),
    /// The stage counters when frames started flowing (the whole-run line counts from there).
    first: Option<Snapshot>,
    /// ` precision=fp32 layout=channels-last`: what the model runs in, for the total line.
    runs_in: String,
    /// The model's start line, said once the first frame is out (so a run that fails before
    /// says its error alone).
    start: Option<String>,
}

impl Reporter {
    /// The model: its start line, and its arithmetic and layout for the `--stats` total line.
    pub fn model(mut self, info: &crate::engine::ModelInfo) -> Reporter {
        use crate::settings::named::Named;
        self.runs_in = format!(
            " precision={} layout={}",
            info.precision.name(),
            info.layout.name()
        );
        self.start = Some(info.start_line());
        self
    }

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
            last_stats: (Instant::now(), 0, Snapshot::default()),
            first: None,
            runs_in: String::new(),
            start: None,
        }
    }

    /// The model's start line, once, when `written` says the first frame is out.
    fn say_start(&mut self, written: u64) {
        if written > 0 {
            if let Some(start) = self.start.take() {
                self.print(&start);
            }
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
        self.say_start(done);
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
            if stats.started() && self.first.is_none() {
                // Count from the first frame, as fps does.
                self.first = Some(stats.snapshot());
                self.last_stats = (Instant::now(), 0, stats.snapshot());
            }
            let (since, before, then) = self.last_stats;
            if stats.started() && since.elapsed() >= every {
                let now = stats.snapshot();
                let line = format!(
                    "stats: t={:.1}s {}",
                    stats.elapsed().as_secs_f64(),
                    stats_fields(
                        stats,
                        done - before.min(done),
                        since.elapsed().as_secs_f64(),
                        stats.latency_window(),
                        (then, now),
                    )
                );
                self.print(&line);
                self.last_stats = (Instant::now(), done, now);
            }
        }
    }

    /// Clear the bar; with `--stats`, print the whole-run line.
    pub fn finish(&mut self, stats: &Stats) {
        self.say_start(stats.written.load(Relaxed));
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.stats_every.is_some() {
            let secs = stats.elapsed().as_secs_f64();
            let copies = match stats.copies_per_frame() {
                Some([host, to, from]) => {
                    format!(
                        " copies_per_frame: host={host:.2} to_device={to:.2} from_device={from:.2}"
                    )
                }
                None => String::new(),
            };
            eprintln!(
                "stats: total t={secs:.1}s {}{copies}{}",
                stats_fields(
                    stats,
                    stats.written.load(Relaxed),
                    secs,
                    stats.latency_total(),
                    (self.first.unwrap_or_default(), stats.snapshot()),
                ),
                self.runs_in
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_share_covers_the_last_minute_only() {
        let mut w = LossWindow::default();
        assert_eq!(w.percent(0, 60), None);
        // Second 0: 99 packets came, one after a gap of 1; second 30: 50 came whole.
        for i in 0..99 {
            w.add(0, u64::from(i == 50));
        }
        for _ in 0..50 {
            w.add(30, 0);
        }
        assert_eq!(w.percent(30, 60), Some(100.0 / 150.0));
        assert_eq!(w.percent(30, 10), Some(0.0));
        // A minute on, second 0 has left the window; second 70 reuses its bucket.
        assert_eq!(w.percent(65, 60), Some(0.0));
        w.add(70, 3);
        assert_eq!(w.percent(70, 60), Some(100.0 * 3.0 / 54.0));
        assert_eq!(w.percent(200, 60), None);
    }

    #[test]
    fn quantiles_of_known_latencies() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.add(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(h.quantile(0.95), Some(Duration::from_millis(95)));
        // Beyond 2 s, within 0.1% (the 1 ms buckets this replaced stopped at 10 s).
        h.add(Duration::from_secs(60));
        let top = h.quantile(1.0).expect("a sample").as_millis();
        assert!((60_000..=60_060).contains(&top), "{top}");
        assert_eq!(h.count_between(1, 50), 50);
    }
}
