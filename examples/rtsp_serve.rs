//! A small RTSP server for trying gradcam-stream's RTSP input, and for its tests: a camera, or a
//! farm of them, at rtsp://127.0.0.1:PORT/PATH, in real time.
//!
//! ```text
//! cargo run --release --example rtsp_serve -- 8554 /clip samples/bikes.mp4
//! cargo run --release --example rtsp_serve -- 8554 /live test:ball:640x480:25
//! cargo run --release --example rtsp_serve -- 8554 /cam samples/bikes.mp4 --loop --cameras 64
//! ```
//! An H.264 file is served as it is stored, never re-encoded: parsed, payloaded, its sound (AAC,
//! MP3, Opus, G.711) as a second stream, so a camera costs almost nothing and one machine plays
//! many. Any other file, and a test pattern, is encoded once with x264. With `--cameras N` the
//! one source feeds N mounts, PATH0 … PATH{N-1}, each a camera of its own to a client; the CPU
//! this process uses is printed every 10 s (`farm: …`). A file is served once and then ends the
//! stream; `--loop` starts it over with timestamps that keep rising. `--offsets` gives each
//! camera a source of its own, camera k of N started k/N of the way into the file, so the
//! cameras show different moments (their parsing then costs N times as much). Port 0 picks a
//! free port; each URL is printed on stdout as `serving: URL`. `--drop P` makes a lossy
//! camera: each RTP packet of its video leaves with probability 1 - P (0 ≤ P < 1), drawn from a
//! seeded generator (`--seed N`, 1 by default) so a run loses the same packets each time;
//! `--drop-udp P` loses them on the UDP path only (a TCP client gets every packet).
//! `--burst MS:EVERY` loses every video packet for MS milliseconds once every EVERY
//! milliseconds (the first burst EVERY after the first packet): a loss burst to recover from.
//! `--key-int N` sets the key-frame interval of what is encoded here (15 frames by default).
//! A client's request for a key frame (an RTCP PLI) reaches the encoder of a test pattern or
//! a re-encoded file, which answers with one; a file served as stored has no encoder, so it
//! recovers at its own next key frame.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;

use gradcam_stream::frame::EncodedTap;
use gradcam_stream::pipeline::{self, rtsp::Server, sink, sound};

/// The parsed H.264 (one access unit a buffer, parameter sets before each key frame).
const AU: &str =
    "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au";

/// How a source is served: passed through, or encoded here.
fn encode(head: &str, key_int: u32) -> String {
    format!(
        "{head} ! videoconvert ! video/x-raw,format=I420 \
         ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max={key_int} ! {AU} \
         ! appsink name=video sync=true"
    )
}

/// What is in the file at `uri`: whether its video is H.264, and its sound.
fn discover(uri: &str) -> Result<(bool, Option<sound::Track>)> {
    let d = pbutils::Discoverer::new(gst::ClockTime::from_seconds(10))?;
    let info = d
        .discover_uri(uri)
        .with_context(|| format!("cannot read {uri}"))?;
    let h264 = info
        .video_streams()
        .first()
        .and_then(|v| v.caps())
        .and_then(|c| c.structure(0).map(|s| s.name() == "video/x-h264"))
        .context("the file has no video")?;
    Ok((h264, sound::probe(uri, Duration::from_secs(10))))
}

/// A file's H.264 and sound, parsed (no decoding) by parsebin, to the appsinks.
fn passthrough(pipeline: &gst::Pipeline, location: &str, with_sound: bool) -> Result<()> {
    let head = gst::parse::bin_from_description(
        &format!("filesrc location=\"{location}\" ! parsebin name=parse"),
        false,
    )?;
    pipeline.add(&head)?;
    let video =
        gst::parse::bin_from_description(&format!("{AU} ! appsink name=video sync=true"), true)?;
    let audio = gst::parse::bin_from_description("queue ! appsink name=sound sync=true", true)?;
    pipeline.add(&video)?;
    if with_sound {
        pipeline.add(&audio)?;
    }
    let parse = head.by_name("parse").context("parsebin")?;
    let (video, audio) = (video.downgrade(), audio.downgrade());
    let head_weak = head.downgrade();
    parse.connect_pad_added(move |_, pad| {
        let name = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
            .unwrap_or_default();
        let into = if name == "video/x-h264" {
            video.upgrade()
        } else if name.starts_with("audio/") && with_sound {
            audio.upgrade()
        } else {
            None
        };
        let (Some(into), Some(head)) = (into, head_weak.upgrade()) else {
            return;
        };
        let Some(sinkpad) = into.static_pad("sink").filter(|p| !p.is_linked()) else {
            return;
        };
        // The pad is parsebin's, inside the head bin: ghost it out.
        let Ok(ghost) = gst::GhostPad::with_target(pad) else {
            return;
        };
        let _ = ghost.set_active(true);
        if head.add_pad(&ghost).is_ok() {
            let _ = ghost.link(&sinkpad);
        }
    });
    Ok(())
}

/// The percentage of one core this process has used since `start`.
fn cpu_percent(start: Instant) -> f64 {
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    100.0 * (secs(r.ru_utime) + secs(r.ru_stime)) / start.elapsed().as_secs_f64().max(1e-3)
}

/// What `source` is added to `pipeline` as: a test pattern or a file, passed through where it
/// is H.264. Returns the sound track served beside the video.
fn add_source(
    pipeline: &gst::Pipeline,
    source: &str,
    key_int: u32,
) -> Result<Option<sound::Track>> {
    if let Some(spec) = source.strip_prefix("test:") {
        let [pattern, size, fps] = spec.split(':').collect::<Vec<_>>()[..] else {
            bail!("test source: test:PATTERN:WxH:FPS");
        };
        let (w, h) = size.split_once('x').context("WxH")?;
        let head = format!(
            "videotestsrc is-live=true pattern={pattern} ! video/x-raw,width={w},height={h},framerate={fps}/1"
        );
        pipeline.add(&gst::parse::bin_from_description(
            &encode(&head, key_int),
            false,
        )?)?;
        return Ok(None);
    }
    let abs = std::fs::canonicalize(source).with_context(|| format!("cannot open {source}"))?;
    let location = abs.display().to_string().replace('"', "\\\"");
    let (h264, track) = discover(&format!("file://{}", abs.display()))?;
    if h264 {
        passthrough(
            pipeline,
            &location,
            track.is_some_and(|t| t.codec.is_some()),
        )?;
        return Ok(track.filter(|t| t.codec.is_some()));
    }
    let head = format!("filesrc location=\"{location}\" ! decodebin");
    pipeline.add(&gst::parse::bin_from_description(
        &encode(&head, key_int),
        false,
    )?)?;
    Ok(None)
}

/// The flag's value removed from `rest`, parsed: `--drop 0.05`.
fn value_flag<T: std::str::FromStr>(rest: &mut Vec<&String>, flag: &str) -> Result<Option<T>> {
    let Some(i) = rest.iter().position(|a| *a == flag) else {
        return Ok(None);
    };
    let v = rest
        .get(i + 1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{flag}: a value after it"))?;
    rest.drain(i..i + 2);
    Ok(Some(v))
}

/// A seeded xorshift draw: whether the next packet goes through (dropped with probability `p`).
fn keeper(p: f64, seed: u64) -> impl Fn() -> bool + Send + Sync + 'static {
    let state = std::sync::Mutex::new(seed.max(1));
    move || {
        let mut x = state.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x >> 11) as f64 / (1u64 << 53) as f64 >= p
    }
}

/// Drop the buffers `keep` refuses at `pad` (RTCP packets always pass: bytes 1 of 200..=204).
fn drop_at(pad: &gst::Pad, keep: impl Fn() -> bool + Send + Sync + 'static) {
    let rtp = |b: &gst::BufferRef| {
        let mut head = [0u8; 2];
        b.copy_to_slice(0, &mut head).is_ok() && !(200..=204).contains(&head[1])
    };
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| match &mut info.data {
            Some(gst::PadProbeData::Buffer(b)) if rtp(b) && !keep() => gst::PadProbeReturn::Drop,
            Some(gst::PadProbeData::BufferList(list)) => {
                let list = list.make_mut();
                for i in (0..list.len()).rev() {
                    if list.get(i).is_some_and(rtp) && !keep() {
                        list.remove(i..i + 1);
                    }
                }
                gst::PadProbeReturn::Ok
            }
            _ => gst::PadProbeReturn::Ok,
        },
    );
}

/// A camera on a lossy link: each RTP packet of its video is dropped with probability `p`
/// (seeded): on every path (after the payloader, `pay0`), or with `udp_only` on the UDP path
/// alone (its udpsinks), TCP clients getting every packet.
fn lossy(factory: &gstreamer_rtsp_server::RTSPMediaFactory, p: f64, seed: u64, udp_only: bool) {
    use gstreamer_rtsp_server::prelude::*;
    factory.connect_media_configure(move |_, media| {
        let Some(bin) = media.element().downcast::<gst::Bin>().ok() else {
            return;
        };
        if !udp_only {
            if let Some(pad) = bin.by_name("pay0").and_then(|pay| pay.static_pad("src")) {
                drop_at(&pad, keeper(p, seed));
            }
            return;
        }
        // The media's streams join the pipeline around its element; its udpsinks are made
        // there once a client sets up UDP.
        let Some(pipeline) = bin.parent().and_then(|p| p.downcast::<gst::Bin>().ok()) else {
            return;
        };
        pipeline.connect_deep_element_added(move |_, _, e| {
            if e.factory().is_some_and(|f| f.name() == "multiudpsink") {
                if let Some(pad) = e.static_pad("sink") {
                    drop_at(&pad, keeper(p, seed));
                }
            }
        });
    });
}

/// Loss bursts: every video packet dropped for `ms` once every `every` ms, the first burst
/// `every` ms after the first packet (after the payloader, `pay0`: every path).
fn bursts(factory: &gstreamer_rtsp_server::RTSPMediaFactory, ms: u64, every: u64) {
    use gstreamer_rtsp_server::prelude::*;
    factory.connect_media_configure(move |_, media| {
        let Some(bin) = media.element().downcast::<gst::Bin>().ok() else {
            return;
        };
        if let Some(pad) = bin.by_name("pay0").and_then(|pay| pay.static_pad("src")) {
            let start = std::sync::OnceLock::new();
            drop_at(&pad, move || {
                let t = start.get_or_init(Instant::now).elapsed().as_millis() as u64;
                t < every || t % every >= ms
            });
        }
    });
}

/// The flag's value removed from `rest`: `--cameras N`.
fn count_flag(rest: &mut Vec<&String>, flag: &str) -> Result<Option<usize>> {
    let Some(i) = rest.iter().position(|a| *a == flag) else {
        return Ok(None);
    };
    let n = rest
        .get(i + 1)
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .with_context(|| format!("{flag} N: a count of at least 1"))?;
    rest.drain(i..i + 2);
    Ok(Some(n))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let looping = args.iter().any(|a| a == "--loop");
    let offsets = args.iter().any(|a| a == "--offsets");
    let mut rest: Vec<&String> = args
        .iter()
        .filter(|a| *a != "--loop" && *a != "--offsets")
        .collect();
    let cameras = count_flag(&mut rest, "--cameras")?.unwrap_or(1);
    let loss: f64 = value_flag(&mut rest, "--drop")?.unwrap_or(0.0);
    let udp_loss: f64 = value_flag(&mut rest, "--drop-udp")?.unwrap_or(0.0);
    let seed: u64 = value_flag(&mut rest, "--seed")?.unwrap_or(1);
    let key_int: u32 = value_flag(&mut rest, "--key-int")?.unwrap_or(15);
    let burst: Option<String> = value_flag(&mut rest, "--burst")?;
    let burst = match burst.as_deref().map(|b| b.split_once(':')) {
        None => None,
        Some(Some((ms, every))) => match (ms.parse::<u64>(), every.parse::<u64>()) {
            (Ok(ms), Ok(every)) if ms > 0 && ms < every => Some((ms, every)),
            _ => bail!("--burst MS:EVERY: milliseconds, MS below EVERY (120:3000)"),
        },
        Some(None) => bail!("--burst MS:EVERY: milliseconds, MS below EVERY (120:3000)"),
    };
    if !(0.0..1.0).contains(&loss) || !(0.0..1.0).contains(&udp_loss) {
        bail!("--drop and --drop-udp: a probability from 0 to below 1");
    }
    let [port, path, source] = rest.as_slice() else {
        bail!("usage: rtsp_serve PORT /PATH (FILE | test:PATTERN:WxH:FPS) [--loop] [--cameras N] [--offsets] [--drop P | --drop-udp P] [--seed N] [--burst MS:EVERY] [--key-int N]");
    };
    if offsets && source.starts_with("test:") {
        bail!("--offsets starts each camera at its own point of a file; a test pattern has none");
    }
    pipeline::init()?;
    // One source for every camera; with --offsets one a camera, each started further in.
    let mut pipes = Vec::new();
    let mut track = None;
    for _ in 0..if offsets { cameras } else { 1 } {
        let p = gst::Pipeline::new();
        track = add_source(&p, source, key_int)?;
        pipes.push(p);
    }

    let mut server = Server::open("127.0.0.1", port.parse().context("PORT")?, None, None)?;
    let mut taps: Vec<Arc<dyn EncodedTap>> = Vec::new();
    let mut urls = Vec::new();
    for n in 0..cameras {
        let mount = if cameras == 1 {
            path.to_string()
        } else {
            format!("{path}{n}")
        };
        let codec = track.and_then(|t| t.codec);
        taps.push(server.mount(&mount, codec)?);
        if loss > 0.0 || udp_loss > 0.0 {
            let factory = server.factory(&mount).context("the mount just made")?;
            match loss > 0.0 {
                true => lossy(&factory, loss, seed, false),
                false => lossy(&factory, udp_loss, seed, true),
            }
        }
        if let Some((ms, every)) = burst {
            let factory = server.factory(&mount).context("the mount just made")?;
            bursts(&factory, ms, every);
        }
        urls.push(format!("{}{mount}", server.base));
    }
    for (k, p) in pipes.iter().enumerate() {
        let appsink = |name: &str| {
            p.by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        };
        let mine: Vec<Arc<dyn EncodedTap>> = match offsets {
            true => vec![taps[k].clone()],
            false => taps.clone(),
        };
        sink::attach(&appsink("video").context("no video appsink")?, mine.clone());
        if let Some(s) = appsink("sound") {
            sink::attach_sound(&s, mine);
        }
    }
    let n = pipes.len() as u64;
    for (k, p) in pipes.iter().enumerate() {
        p.set_state(gst::State::Paused)?;
        let _ = p.state(gst::ClockTime::from_seconds(10));
        let length = p.query_duration::<gst::ClockTime>().unwrap_or_default();
        let at = length * k as u64 / n;
        if offsets {
            eprintln!("camera {k}: from {at:.1} of {length:.1}");
        }
        if looping && !source.starts_with("test:") {
            // A segment seek: each pass ends with SEGMENT_DONE, not EOS, and the next one's
            // running time goes on from there.
            p.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT, at)?;
        } else if k > 0 {
            p.seek_simple(gst::SeekFlags::FLUSH, at)?;
        }
    }
    for p in &pipes {
        p.set_state(gst::State::Playing)?;
    }
    for url in &urls {
        println!("serving: {url}");
    }
    serve(&pipes, cameras)?;
    for t in &taps {
        t.finish();
    }
    for p in &pipes {
        p.set_state(gst::State::Null)?;
    }
    drop(server);
    Ok(())
}

/// Run the sources until each has ended (never, looping), each pass of a looping one started
/// over; print the farm's CPU every 10 s.
fn serve(pipes: &[gst::Pipeline], cameras: usize) -> Result<()> {
    let start = Instant::now();
    let mut told = Instant::now();
    let buses: Vec<gst::Bus> = pipes
        .iter()
        .map(|p| p.bus().context("no bus"))
        .collect::<Result<_>>()?;
    let mut ended = vec![false; pipes.len()];
    while !ended.iter().all(|&e| e) {
        if cameras > 1 && told.elapsed() >= Duration::from_secs(10) {
            let cpu = cpu_percent(start);
            println!(
                "farm: {cameras} cameras, {cpu:.1}% of a core ({:.2}% each)",
                cpu / cameras as f64
            );
            told = Instant::now();
        }
        let wait = gst::ClockTime::from_mseconds(if pipes.len() == 1 { 500 } else { 20 });
        for (k, (p, bus)) in pipes.iter().zip(&buses).enumerate() {
            let Some(msg) = bus.timed_pop(if k == 0 { wait } else { gst::ClockTime::ZERO }) else {
                continue;
            };
            match msg.view() {
                gst::MessageView::SegmentDone(_) => {
                    p.seek_simple(gst::SeekFlags::SEGMENT, gst::ClockTime::ZERO)?;
                }
                gst::MessageView::Eos(_) => ended[k] = true,
                gst::MessageView::Error(e) => bail!("{}", e.error()),
                _ => {}
            }
        }
    }
    Ok(())
}
