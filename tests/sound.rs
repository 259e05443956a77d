//! Sound, with clips made here by ffmpeg: a tone kept as it is and as long as the video, a
//! tone that starts at each white flash still starting there (a whole file, a part of one, and a
//! camera's recording: examples/rtsp_serve serving the clip as a camera does), an RTSP output's
//! second stream, a codec a container cannot carry re-encoded, and `--no-audio`.

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use common::*;

/// One frame at 25 fps: how far apart sound and picture may be.
const FRAME: f64 = 0.040;

/// A clip of ffmpeg's `video` and `audio` sources: H.264 with a key frame every 2 s, AAC.
fn lavfi_clip(video: &str, audio: &str, path: &Path) -> Result<()> {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        video,
        "-f",
        "lavfi",
        "-i",
        audio,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "50",
        "-c:a",
        "aac",
        path.to_str().unwrap(),
    ])
}

/// A clip of `secs` seconds at 25 fps, 320x240, with a 440 Hz tone.
fn tone_clip(path: &Path, secs: u32) -> Result<()> {
    lavfi_clip(
        &format!("testsrc=size=320x240:rate=25:duration={secs}"),
        &format!("sine=frequency=440:sample_rate=48000:duration={secs}"),
        path,
    )
}

/// Ten seconds of black with a white flash of two frames every 2 s (at 1.2, 3.2, …), and a tone
/// that sounds from each flash for 0.4 s.
fn flash_clip(path: &Path) -> Result<()> {
    lavfi_clip(
        "color=c=black:s=320x240:r=25:d=10,drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='between(mod(t,2),1.2,1.279)'",
        "sine=f=1000:sample_rate=48000:d=10,volume=volume=0:enable='lt(mod(t,2),1.2)+gt(mod(t,2),1.6)'",
        path,
    )
}

/// A stream of a file as its packets say: codec, first time, end, and the widest gap between
/// one packet's end and the next one's start.
#[derive(Debug)]
struct Track {
    codec: String,
    start: f64,
    end: f64,
    gap: f64,
}

/// The file's `kind` stream (`a` or `v`), None when it has none.
fn track(path: &Path, kind: &str) -> Result<Option<Track>> {
    let codec = ffprobe(
        &[
            "-select_streams",
            kind,
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ],
        path,
    )?;
    let Some(codec) = codec.lines().next().map(str::to_owned) else {
        return Ok(None);
    };
    let packets = ffprobe(
        &[
            "-select_streams",
            kind,
            "-show_entries",
            "packet=pts_time,duration_time",
            "-of",
            "csv=p=0",
        ],
        path,
    )?;
    let mut times: Vec<(f64, f64)> = packets
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    anyhow::ensure!(!times.is_empty(), "{}: no {kind} packets", path.display());
    let gap = times
        .windows(2)
        .map(|w| w[1].0 - (w[0].0 + w[0].1))
        .fold(0.0, f64::max);
    let last = times[times.len() - 1];
    Ok(Some(Track {
        codec,
        start: times[0].0,
        end: last.0 + last.1,
        gap,
    }))
}

/// The hashes of the sound's packets, as stored (no decoding).
fn packet_hashes(path: &Path) -> Result<Vec<String>> {
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-c", "copy", "-f", "framemd5", "-"])
        .output()?;
    anyhow::ensure!(o.status.success(), "framemd5: {}", stderr(&o));
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_owned()))
        .collect())
}

/// When each white flash starts (a frame brighter than halfway between the darkest and the
/// brightest, after one that is not: a recording that starts in a flash has not seen it start).
fn flashes(path: &Path) -> Result<Vec<f64>> {
    let text = ffprobe(
        &[
            "-f",
            "lavfi",
            "-show_entries",
            "frame=pts_time:frame_tags=lavfi.signalstats.YAVG",
            "-of",
            "csv=p=0",
            "-i",
        ],
        Path::new(&format!("movie={},signalstats", path.display())),
    )?;
    let ys: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let (t, y) = l.split_once(',')?;
            Some((t.parse().ok()?, y.parse().ok()?))
        })
        .collect();
    let lo = ys.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    let hi = ys.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let mid = (lo + hi) / 2.0;
    Ok(ys
        .iter()
        .enumerate()
        .filter(|(i, (_, y))| *y > mid && *i > 0 && ys[i - 1].1 <= mid)
        .map(|(_, (t, _))| *t)
        .collect())
}

/// When each tone starts: the first loud sample after 0.1 s of quiet, from the sound decoded
/// at 48 kHz, on the file's timeline.
fn onsets(path: &Path) -> Result<Vec<f64>> {
    let start: f64 = ffprobe(
        &[
            "-select_streams",
            "a",
            "-show_entries",
            "stream=start_time",
            "-of",
            "csv=p=0",
        ],
        path,
    )?
    .trim()
    .parse()
    .context("the sound's start time")?;
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:a", "-ac", "1", "-ar", "48000", "-f", "s16le", "-",
        ])
        .output()?;
    anyhow::ensure!(o.status.success(), "decoding: {}", stderr(&o));
    let loud: Vec<bool> = o
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]).unsigned_abs() > 2000)
        .collect();
    let quiet = 4800;
    let mut found = Vec::new();
    let mut i = 0;
    while i < loud.len() {
        if loud[i] && !loud[i.saturating_sub(quiet)..i].iter().any(|l| *l) {
            found.push(start + i as f64 / 48000.0);
            i += quiet;
        } else {
            i += 1;
        }
    }
    Ok(found)
}

/// How far each flash's tone starts from it (the flash, the tone's start minus the flash's).
fn lags(path: &Path) -> Result<Vec<(f64, f64)>> {
    let tones = onsets(path)?;
    Ok(flashes(path)?
        .into_iter()
        .filter_map(|f| {
            let t = tones.iter().copied().find(|t| (t - f).abs() < 0.5)?;
            Some((f, t - f))
        })
        .collect())
}

/// Every flash of `out` has its tone as far from it as in the input (`lag`), within `within`;
/// at least `n` flashes are seen.
fn in_step(out: &Path, lag: f64, n: usize, within: f64) -> Result<()> {
    let got = lags(out)?;
    println!("{}: flash, tone - flash: {got:.3?}", out.display());
    anyhow::ensure!(got.len() >= n, "{n} flashes with tones expected: {got:?}");
    for (f, l) in &got {
        anyhow::ensure!(
            (l - lag).abs() <= within,
            "{}: the tone at the flash at {f:.3} s starts {l:.3} s from it (the input: {lag:.3} s)",
            out.display()
        );
    }
    Ok(())
}

#[test]
fn a_files_sound_is_kept_as_it_is_and_as_long_as_the_video() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("tone.mp4");
    tone_clip(&input, 4)?;
    let source = packet_hashes(&input)?;
    for name in ["out.mp4", "out.mkv"] {
        let out = dir.path().join(name);
        let o = explain(
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &[],
        )?;
        anyhow::ensure!(o.status.success(), "{}", stderr(&o));
        let video = track(&out, "v")?.context("no video")?;
        let sound = track(&out, "a")?.context("the sound was lost")?;
        println!("{name}: video {video:?}, sound {sound:?}");
        assert_eq!(sound.codec, "aac", "{name}");
        assert!((sound.start - video.start).abs() <= FRAME, "{name}: starts");
        assert!((sound.end - video.end).abs() <= FRAME, "{name}: ends");
        // (Matroska keeps milliseconds.)
        assert!(sound.gap < 0.002, "{name}: a gap of {} s", sound.gap);
        // Passed through: the same packets, byte for byte (but the encoder's priming packet,
        // which lies before 0, and at most one at the end).
        let kept = packet_hashes(&out)?;
        assert!(
            kept.len() + 2 >= source.len(),
            "{} of {}",
            kept.len(),
            source.len()
        );
        assert!(
            kept.iter().all(|h| source.contains(h)),
            "{name}: re-encoded"
        );
    }
    let silent = dir.path().join("silent.mp4");
    let o = explain(
        input.to_str().unwrap(),
        silent.to_str().unwrap(),
        model().to_str().unwrap(),
        &["--no-audio"],
    )?;
    anyhow::ensure!(o.status.success(), "{}", stderr(&o));
    assert!(track(&silent, "a")?.is_none(), "--no-audio kept the sound");
    assert!(track(&silent, "v")?.is_some());
    Ok(())
}

#[test]
fn a_tone_that_starts_at_a_flash_still_starts_there() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("flash.mp4");
    flash_clip(&input)?;
    let given = lags(&input)?;
    assert_eq!(given.len(), 5, "{given:?}");
    // The encoder's own placing of the tone (a frame of 1024 samples) is the reference.
    let lag = given.iter().map(|g| g.1).sum::<f64>() / given.len() as f64;
    let whole = dir.path().join("whole.mp4");
    let part = dir.path().join("part.mp4");
    for (out, extra) in [
        (&whole, &[][..]),
        // From between two key frames (at 2 s and 4 s).
        (&part, &["--start", "3.1", "--duration", "4"][..]),
    ] {
        let o = explain(
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            extra,
        )?;
        anyhow::ensure!(o.status.success(), "{}", stderr(&o));
    }
    in_step(&whole, lag, 5, FRAME)?;
    // The part's flashes are at 3.2 and 5.2 in the input, and its first frame the one at
    // 3.12: at 0.08 and 2.08.
    in_step(&part, lag, 2, FRAME)?;
    let at: Vec<f64> = lags(&part)?.iter().map(|l| l.0).collect();
    assert!(
        (at[0] - 0.08).abs() < 0.001 && (at[1] - 2.08).abs() < 0.001,
        "{at:?}"
    );
    Ok(())
}

#[test]
fn a_cameras_sound_goes_into_its_recording_in_step() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("flash.mp4");
    flash_clip(&input)?;
    let lag = lags(&input)?.iter().map(|g| g.1).sum::<f64>() / 5.0;
    // A camera: the clip served as it is stored, looping, its sound a second RTSP stream.
    let camera = Running::rtsp_cameras(0, "/cam", input.to_str().unwrap(), &["--loop"])?;
    let url = camera.url()?;
    let rec = dir.path().join("rec.mp4");
    let o = explain(
        &url,
        rec.to_str().unwrap(),
        model().to_str().unwrap(),
        &["--duration", "14", "--stats", "1"],
    )?;
    anyhow::ensure!(o.status.success(), "{}", stderr(&o));
    drop(camera);
    let video = track(&rec, "v")?.context("no video")?;
    let sound = track(&rec, "a")?.context("the recording has no sound")?;
    println!("recording: video {video:?}, sound {sound:?}");
    assert_eq!(sound.codec, "aac");
    assert!((sound.start - video.start).abs() <= FRAME, "starts");
    // At the stop, what the jitter buffer still holds (its 200 ms latency) may be cut from
    // either stream.
    assert!((sound.end - video.end).abs() <= 0.2 + FRAME, "ends");
    // Frames the model cannot keep up with are dropped; the sound never is.
    let dropped = stats_lines(&stderr(&o))
        .last()
        .and_then(|s| s.get("dropped").cloned())
        .unwrap_or_default();
    println!(
        "frames dropped in the recording: {dropped}; widest gap in its sound: {:.3} s",
        sound.gap
    );
    assert!(sound.gap < 0.002, "a gap of {} s in the sound", sound.gap);
    // Across the loop's seam too (the clip is 10 s). The two streams line up by the camera's
    // RTCP sender reports, which come within its first seconds; from then on a flash's tone is
    // where it is in the clip, within a frame. Before them, by when each stream's first packet
    // came (here up to 70 ms off).
    let got = lags(&rec)?;
    println!("{}: flash, tone - flash: {got:.3?}", rec.display());
    let (early, settled): (Vec<_>, Vec<_>) = got.iter().partition(|(f, _)| *f < SETTLED);
    anyhow::ensure!(
        settled.len() >= 3,
        "3 flashes after {SETTLED} s expected: {got:?}"
    );
    for (f, l) in settled {
        anyhow::ensure!(
            (l - lag).abs() <= FRAME,
            "the tone at the flash at {f:.3} s starts {l:.3} s from it (the clip: {lag:.3} s)"
        );
    }
    for (f, l) in early {
        anyhow::ensure!(
            (l - lag).abs() <= 3.0 * FRAME,
            "before the reports, the flash at {f:.3} s: {l:.3} s (the clip: {lag:.3} s)"
        );
    }
    Ok(())
}

/// When a camera's streams are lined up by its RTCP reports (the server's first ones come
/// within about 4 s of playing), in the recording's time.
const SETTLED: f64 = 6.0;

#[test]
fn an_rtsp_output_carries_the_sound_as_a_second_stream() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("tone.mp4");
    tone_clip(&input, 20)?;
    let port = free_port()?;
    let url = format!("rtsp://127.0.0.1:{port}/out");
    let server = Running::explain(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        &url,
        "--model",
        model().to_str().unwrap(),
        "--progress",
        "none",
    ])?;
    server.url()?;
    // What a player gets: both streams, decodable.
    let got = dir.path().join("got.mkv");
    ffmpeg(&[
        "-rtsp_transport",
        "tcp",
        "-i",
        &url,
        "-t",
        "4",
        "-c",
        "copy",
        got.to_str().unwrap(),
    ])?;
    let video = track(&got, "v")?.context("no video")?;
    let sound = track(&got, "a")?.context("the RTSP output has no sound")?;
    println!("over RTSP: video {video:?}, sound {sound:?}");
    assert_eq!(
        (video.codec.as_str(), sound.codec.as_str()),
        ("h264", "aac")
    );
    assert!(sound.end - sound.start > 3.0, "{sound:?}");
    Ok(())
}

#[test]
fn sound_a_container_cannot_carry_is_re_encoded_to_aac() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tone = dir.path().join("tone.mp4");
    tone_clip(&tone, 3)?;
    // G.711 (a CCTV camera's) in Matroska, and PCM.
    let (alaw, pcm) = (dir.path().join("alaw.mkv"), dir.path().join("pcm.mkv"));
    let t = tone.to_str().unwrap();
    ffmpeg(&[
        "-i",
        t,
        "-c:v",
        "copy",
        "-c:a",
        "pcm_alaw",
        "-ar",
        "8000",
        "-ac",
        "1",
        alaw.to_str().unwrap(),
    ])?;
    ffmpeg(&[
        "-i",
        t,
        "-c:v",
        "copy",
        "-c:a",
        "pcm_s16le",
        pcm.to_str().unwrap(),
    ])?;
    for (input, out, codec) in [
        (&alaw, "alaw.mp4", "aac"),
        (&alaw, "alaw.mkv", "pcm_alaw"),
        (&pcm, "pcm.mp4", "aac"),
        (&pcm, "pcm.mkv", "aac"),
    ] {
        let out = dir.path().join("out").join(out);
        std::fs::create_dir_all(out.parent().unwrap())?;
        let o = explain(
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            model().to_str().unwrap(),
            &[],
        )?;
        anyhow::ensure!(o.status.success(), "{}: {}", out.display(), stderr(&o));
        let video = track(&out, "v")?.context("no video")?;
        let sound = track(&out, "a")?.context("the sound was lost")?;
        println!("{}: {sound:?}", out.display());
        assert_eq!(sound.codec, codec, "{}", out.display());
        assert!((sound.start - video.start).abs() <= FRAME);
        assert!(
            (sound.end - video.end).abs() <= FRAME,
            "{sound:?} {video:?}"
        );
    }
    Ok(())
}
