//! What `/metrics` (Prometheus text format) and `/healthz` say, read at each scrape from the
//! counters the stages already keep (`Stats`): nothing here touches a stage. The server that
//! serves them is `web`'s.
//!
//! Per stream (label `stream`): frames in, out and dropped, reconnects, up (0/1), the
//! latency histogram, and a detector's boxes by class (label `class`). For the worker: batch sizes, queue depth, model time, device memory.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use crossbeam_channel::Receiver;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::frame::Frame;
use crate::stats::Stats;

/// Latency bucket bounds, in seconds: fine where live targets lie (p95 ≤ 150 ms), so a
/// quantile read from them is within 25 ms there.
const LATENCY: [f64; 20] = [
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.175,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];
/// Batch size bucket bounds.
const BATCH: [f64; 10] = [1., 2., 4., 8., 16., 32., 64., 128., 256., f64::INFINITY];

/// What a scrape reads: each stream's counters and queue, and the run's.
#[derive(Clone)]
pub struct Board {
    pub streams: Vec<(String, Arc<Stats>, Receiver<Frame>)>,
    pub all: Arc<Stats>,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Board({} streams)", self.streams.len())
    }
}

impl Board {
    /// 200 with `ok` while every stream is up, starting, reconnecting within its budget or
    /// ended; 503 with the first stream that is down for good.
    pub fn health(&self) -> (u16, String) {
        for (name, stats, _) in &self.streams {
            if let Some(why) = stats.health().down() {
                return (
                    503,
                    crate::redact::line(&format!("stream {name} is down: {why}")),
                );
            }
        }
        let up = self
            .streams
            .iter()
            .filter(|(_, s, _)| s.health().up())
            .count();
        (
            200,
            format!("ok: {up} of {} streams up", self.streams.len()),
        )
    }

    /// The text a scrape gets.
    pub fn render(&self) -> Result<String> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .map_err(|_| anyhow!("encoding the metrics"))?;
        Ok(out)
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (String, u64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (stream, v) in values {
        let labels = [("stream", stream)];
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge with a value per stream.
fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (String, i64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (stream, v) in values {
        let labels = [("stream", stream)];
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram(
    m: &mut prometheus_client::encoding::MetricEncoder,
    buckets: &[(f64, u64)],
    sum: f64,
    count: u64,
) -> std::fmt::Result {
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, buckets, None)
}

impl Collector for Board {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        self.encode_streams(&mut e)?;
        self.encode_run(&mut e)
    }
}

impl Board {
    /// The families with one series per stream.
    fn encode_streams(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        self.encode_stream_counts(e)?;
        self.encode_stream_states(e)
    }

    /// Each stream's counters: frames in, out, dropped, undecoded, reconnects, packets lost,
    /// frames damaged, detections.
    fn encode_stream_counts(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        let per =
            |f: fn(&Stats) -> u64| self.streams.iter().map(move |(n, s, _)| (n.clone(), f(s)));
        counter(
            e,
            "gradcam_stream_frames_in",
            "Frames the stream's source gave (explained or dropped)",
            per(|s| s.received.load(Relaxed)),
        )?;
        counter(
            e,
            "gradcam_stream_frames_out",
            "Explained frames written to the stream's outputs",
            per(|s| s.written.load(Relaxed)),
        )?;
        counter(
            e,
            "gradcam_stream_frames_dropped",
            "Live frames dropped because the model was behind",
            per(|s| s.dropped.load(Relaxed)),
        )?;
        counter(
            e,
            "gradcam_stream_frames_undecoded",
            "Encoded live frames left undecoded while the stream was behind (key frames only)",
            per(|s| s.undecoded.load(Relaxed)),
        )?;
        counter(
            e,
            "gradcam_stream_reconnects",
            "Times the stream's lost feed came back",
            per(|s| s.reconnects.load(Relaxed)),
        )?;
        counter(
            e,
            "gradcam_stream_rtp_packets_lost",
            "RTP packets of the stream's feed lost on the way (gaps in their sequence numbers)",
            per(|s| s.packets_lost.load(Relaxed)),
        )?;
        counter(
            e,
            "gradcam_stream_key_frame_requests",
            "Times the stream's camera was asked for a key frame after a loss (an RTCP PLI)",
            per(|s| s.key_frame_requests.load(Relaxed)),
        )?;
        counter(
            e,
            "gradcam_stream_frames_damaged",
            "Frames decoded from damaged data (a packet lost before them, up to the next whole key frame)",
            per(|s| s.damaged.load(Relaxed)),
        )?;
        {
            let mut m = e.encode_descriptor(
                "gradcam_stream_detections",
                "Boxes a detector found (each explained), by class",
                None,
                MetricType::Counter,
            )?;
            for (name, s, _) in &self.streams {
                for (class, n) in s.detections() {
                    let labels = [("stream", name.clone()), ("class", class)];
                    ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }

    /// Each stream's state: up, its latency, its encoders, its queue.
    fn encode_stream_states(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        gauge(
            e,
            "gradcam_stream_up",
            "1 while the stream's frames flow",
            self.streams
                .iter()
                .map(|(n, s, _)| (n.clone(), i64::from(s.health().up()))),
        )?;
        {
            let mut m = e.encode_descriptor(
                "gradcam_stream_latency_seconds",
                "Time from decoded frame to the output, per frame",
                None,
                MetricType::Histogram,
            )?;
            for (name, s, _) in &self.streams {
                let labels = [("stream", name.clone())];
                let (buckets, sum, count) = s.latency_buckets(&LATENCY);
                histogram(&mut m.encode_family(&labels)?, &buckets, sum, count)?;
            }
        }
        gauge(
            e,
            "gradcam_stream_encoders",
            "Video encoders in the stream's output (one for RTSP and the web, however many viewers)",
            self.streams
                .iter()
                .map(|(n, s, _)| (n.clone(), s.encoders.load(Relaxed) as i64)),
        )?;
        gauge(
            e,
            "gradcam_stream_queue_depth",
            "Frames waiting for the model, per stream",
            self.streams
                .iter()
                .map(|(n, _, q)| (n.clone(), q.len() as i64)),
        )
    }

    /// The whole run's families: the model's batches, its time and its device memory.
    fn encode_run(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        {
            let sizes = self.all.batch_sizes();
            let count: u64 = sizes.iter().sum();
            let sum: f64 = sizes
                .iter()
                .enumerate()
                .map(|(n, c)| n as f64 * *c as f64)
                .sum();
            // Each bucket's own count (the encoder sums them up into `le` buckets).
            let buckets: Vec<(f64, u64)> = BATCH
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    let above = if i == 0 { 0.0 } else { BATCH[i - 1] };
                    let n: u64 = sizes
                        .iter()
                        .enumerate()
                        .filter(|(n, _)| *n as f64 > above && *n as f64 <= b)
                        .map(|(_, c)| *c)
                        .sum();
                    (b, n)
                })
                .collect();
            let mut m = e.encode_descriptor(
                "gradcam_batch_size",
                "Frames in each batch the model ran",
                None,
                MetricType::Histogram,
            )?;
            histogram(&mut m, &buckets, sum, count)?;
        }
        {
            let m = e.encode_descriptor(
                "gradcam_model_seconds",
                "Time the worker spent on the model (upload, forward, CAM, copies back)",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(self.all.model_seconds()).encode(m)?;
        }
        {
            let m = e.encode_descriptor(
                "gradcam_device_memory_bytes",
                "GPU memory in use (0 on a CPU)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(self.all.device_memory() as i64).encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Health;
    use std::time::Duration;

    #[test]
    fn counters_and_health_read_the_stats() -> Result<()> {
        let a = Arc::new(Stats::default());
        let b = Arc::new(Stats::default());
        a.received.store(7, std::sync::atomic::Ordering::Relaxed);
        a.record_latency(Duration::from_millis(30));
        a.record_latency(Duration::from_millis(120));
        a.record_latency(Duration::from_secs(30));
        a.set_health(Health::Up);
        b.set_health(Health::Reconnecting {
            tries: 1,
            max: 0,
            why: "gone".into(),
        });
        let (_tx, rx) = crossbeam_channel::bounded::<Frame>(1);
        let all = Arc::new(Stats::default());
        all.record_batch(4);
        let board = Board {
            streams: vec![
                ("cam1".into(), a, rx.clone()),
                ("cam2".into(), b.clone(), rx),
            ],
            all,
        };
        let text = board.render()?;
        assert!(
            text.contains(r#"gradcam_stream_frames_in_total{stream="cam1"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gradcam_stream_up{stream="cam2"} 0"#),
            "{text}"
        );
        // Cumulative, as Prometheus reads them: 30 ms, 120 ms, 30 s.
        for (le, n) in [
            ("0.025", 0),
            ("0.05", 1),
            ("0.1", 1),
            ("0.125", 2),
            ("10", 2),
            ("+Inf", 3),
        ] {
            let want =
                format!(r#"gradcam_stream_latency_seconds_bucket{{stream="cam1",le="{le}"}} {n}"#);
            assert!(text.contains(&want), "{want} not in {text}");
        }
        assert!(
            text.contains(r#"gradcam_stream_latency_seconds_count{stream="cam1"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gradcam_batch_size_bucket{le="2"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gradcam_batch_size_bucket{le="4"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gradcam_batch_size_bucket{le="+Inf"} 1"#),
            "{text}"
        );
        assert!(text.contains("gradcam_batch_size_count 1"), "{text}");
        assert_eq!(
            board.health().0,
            200,
            "reconnecting for ever is within budget"
        );
        b.set_health(Health::Failed("cannot be opened".into()));
        let (code, line) = board.health();
        assert_eq!(code, 503);
        assert_eq!(line, "stream cam2 is down: cannot be opened");
        Ok(())
    }
}
