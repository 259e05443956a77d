//! Helpers for the integration tests: run the built binary, make clips with GStreamer, and
//! decode outputs back to check what was written.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

/// A check this machine cannot make. Says `skipped: WHY` on the test run's own output (written
/// past libtest's capture, so `make test` shows it beside the test's `ok`), or fails where the
/// environment variable GRADCAM_REQUIRE (a comma list: `cuda`, `bf16`, …) promises `need`.
pub fn skip(need: &str, why: &str) -> Result<()> {
    use std::io::Write;
    let required = std::env::var("GRADCAM_REQUIRE").unwrap_or_default();
    if required.split(',').any(|r| r.trim() == need) {
        bail!("GRADCAM_REQUIRE={required} promises {need}, yet: {why}");
    }
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
    Ok(())
}

/// The repository's root (the workspace's: these helpers serve the element's crate too).
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("Cargo.lock").exists())
        .unwrap_or(&here)
        .to_path_buf()
}

/// The build's output folder (`target/release` or `target/debug`): where this test runs from.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>
    exe.parent()
        .and_then(Path::parent)
        .expect("a test runs from target/<profile>/deps")
        .to_path_buf()
}

/// The program: cargo's for the program's own tests; for the element's, the one the same
/// `cargo test --workspace` built beside them.
pub fn program() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_gradcam-stream") {
        return PathBuf::from(p);
    }
    let p = build_dir().join("gradcam-stream");
    assert!(
        p.exists(),
        "no {}: run the tests with `cargo test --workspace` (which builds the program)",
        p.display()
    );
    p
}

pub fn model() -> PathBuf {
    root().join("models/efficientnet_lite0.pt")
}

pub fn fixture() -> PathBuf {
    root().join("models/fixture.pt")
}

pub fn sample(name: &str) -> PathBuf {
    root().join("samples").join(name)
}

pub fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// The decoded frames, exactly as our pipeline gets them (uridecodebin → videoconvert → RGBx).
pub fn raw_frames(video: &Path, raw: &Path) -> Result<()> {
    let st = Command::new("gst-launch-1.0")
        .args([
            "-q",
            "uridecodebin",
            &format!("uri=file://{}", video.display()),
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=RGBx",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", raw.display()))
        .status()?;
    anyhow::ensure!(st.success(), "gst-launch failed");
    Ok(())
}

/// Run a reference check (tests/golden_gradcam.py, tests/keras_gradcam.py), print its report
/// and fail with it, headed by `what`, unless the check passed.
pub fn reference_check(cmd: &mut Command, what: &str) -> Result<()> {
    let r = cmd
        .output()
        .with_context(|| format!("running the reference check for {what}"))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    eprintln!("{report}");
    assert!(r.status.success(), "{what}: {report}");
    Ok(())
}

/// scripts/export_model.py `args` into `dir`/`name`.pt (run in tests/, where the
/// `--module` test models live). Kept (see [`kept`]) under the script, the Python package it
/// fronts, the virtualenv, the name and the arguments (a file's by its name and content, a
/// `--module`'s by its source).
pub fn export_model(dir: &Path, name: &str, args: &[&str]) -> Result<Output> {
    let mut key = Key::python();
    key.file(&root().join("scripts/export_model.py"));
    key.files_in(
        &root().join("crates/gradcam-py/python/gradcam_stream"),
        "py",
    );
    key.text(name);
    key.args(args);
    for pair in args.windows(2).filter(|p| p[0] == "--module") {
        let module = pair[1].split(':').next().unwrap_or_default();
        key.file(
            &root()
                .join("tests")
                .join(format!("{}.py", module.replace('.', "/"))),
        );
    }
    kept("export", key, dir, |into| {
        Command::new(python())
            .current_dir(root().join("tests"))
            .arg(root().join("scripts/export_model.py"))
            .args(["--out", into.join(format!("{name}.pt")).to_str().unwrap()])
            .args(args)
            .output()
            .context("running scripts/export_model.py")
    })
}

/// A torchvision classifier's random weights saved as a state dict, the way users keep
/// theirs. A classifier initialised to zeros (a ViT's) gets small random weights: its maps
/// would all be flat. Kept (see [`kept`]) under the script, the virtualenv, the architecture
/// and the file name.
pub fn random_state_dict(arch: &str, path: &Path) -> Result<()> {
    let script = "import sys, torch, torchvision\n\
             torch.manual_seed(3)\n\
             m = torchvision.models.get_model(sys.argv[1])\n\
             for l in m.modules():\n\
             \x20   if isinstance(l, torch.nn.Linear) and not l.weight.detach().any():\n\
             \x20       torch.nn.init.normal_(l.weight, std=0.02)\n\
             torch.save(m.state_dict(), sys.argv[2])";
    let (dir, file) = (
        path.parent().context("a state dict's folder")?,
        path.file_name().context("a state dict's file name")?,
    );
    let mut key = Key::python();
    key.text(script);
    key.text(arch);
    key.text(&file.to_string_lossy());
    let o = kept("weights", key, dir, |into| {
        Command::new(python())
            .args(["-c", script, arch])
            .arg(into.join(file))
            .output()
            .context("running python")
    })?;
    anyhow::ensure!(
        o.status.success(),
        "saving random weights for {arch}: {}",
        stderr(&o)
    );
    Ok(())
}

/// What a kept product depends on, hashed (MD5: a cache key, not a signature).
pub struct Key(md5::Md5);

impl Key {
    /// A key that starts with the Python environment: the interpreter's virtualenv and every
    /// package in it, by name and version.
    pub fn python() -> Key {
        use md5::Digest as _;
        let mut key = Key(md5::Md5::new());
        let venv = root().join(".venv");
        key.file(&venv.join("pyvenv.cfg"));
        let lib = venv.join("lib");
        for python in sorted_entries(&lib) {
            for package in sorted_entries(&python.join("site-packages")) {
                key.text(&package.file_name().unwrap_or_default().to_string_lossy());
            }
        }
        key
    }

    pub fn text(&mut self, s: &str) {
        use md5::Digest as _;
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
    }

    /// A file's content (or that there is none).
    pub fn file(&mut self, path: &Path) {
        use md5::Digest as _;
        match std::fs::read(path) {
            Ok(bytes) => {
                self.text("file");
                self.0.update((bytes.len() as u64).to_le_bytes());
                self.0.update(&bytes);
            }
            Err(_) => self.text("no file"),
        }
    }

    /// Every file in `dir` (not below) whose name ends with `.ext`, by name and content.
    pub fn files_in(&mut self, dir: &Path, ext: &str) {
        for f in sorted_entries(dir) {
            if f.extension().is_some_and(|e| e == ext) {
                self.text(&f.file_name().unwrap_or_default().to_string_lossy());
                self.file(&f);
            }
        }
    }

    /// Command-line arguments: a file by its name and content (its folder is a test's
    /// temporary one), anything else as written.
    pub fn args(&mut self, args: &[&str]) {
        for a in args {
            let p = Path::new(a);
            match p.file_name() {
                Some(name) if p.is_file() => {
                    self.text(&name.to_string_lossy());
                    self.file(p);
                }
                _ => self.text(a),
            }
        }
    }

    fn hex(self) -> String {
        use md5::Digest as _;
        format!("{:x}", self.0.finalize())
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// What a test makes with Python that depends only on what `key` hashed (an export, seeded
/// random weights, Keras models): `make(into)` writes its files into a folder and returns
/// how it ended; those files land in `dest`. A success, or a deliberate one-line failure
/// (`error: …` on stderr, exit 1), is kept in `target/test-cache/WHAT-KEY/` with the process's
/// output, so a later run with the same key copies the files and returns the same output
/// without running Python. `GRADCAM_TEST_CACHE=off` makes everything afresh. Entries unused
/// for a week are removed when one is added.
pub fn kept(
    what: &str,
    key: Key,
    dest: &Path,
    make: impl FnOnce(&Path) -> Result<Output>,
) -> Result<Output> {
    use std::os::unix::process::ExitStatusExt;
    let cache = root().join("target/test-cache");
    let entry = cache.join(format!("{what}-{}", key.hex()));
    let off = std::env::var("GRADCAM_TEST_CACHE").is_ok_and(|v| v == "off");
    if !off && entry.join(".status").exists() {
        let code: i32 = std::fs::read_to_string(entry.join(".status"))?
            .trim()
            .parse()?;
        copy_files(&entry, dest)?;
        std::fs::write(entry.join(".used"), "")?;
        return Ok(Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: std::fs::read(entry.join(".stdout"))?,
            stderr: std::fs::read(entry.join(".stderr"))?,
        });
    }
    if off {
        return make(dest);
    }
    static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = cache.join(format!(".making-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let o = make(&staging);
    let keep = o.as_ref().is_ok_and(|o| {
        o.status.code() == Some(0)
            || (o.status.code() == Some(1)
                && String::from_utf8_lossy(&o.stderr).starts_with("error: "))
    });
    let copied = copy_files(&staging, dest);
    if let (true, Ok(o)) = (keep, &o) {
        std::fs::write(staging.join(".stdout"), &o.stdout)?;
        std::fs::write(staging.join(".stderr"), &o.stderr)?;
        std::fs::write(staging.join(".used"), "")?;
        std::fs::write(
            staging.join(".status"),
            o.status.code().unwrap_or(1).to_string(),
        )?;
        prune(&cache);
        // Another test process may have kept the same entry first: then this copy goes.
        if std::fs::rename(&staging, &entry).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    } else {
        let _ = std::fs::remove_dir_all(&staging);
    }
    copied?;
    o
}

/// Copy the files of `from` (not its dot files) into `to`.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for f in sorted_entries(from) {
        let name = f.file_name().unwrap_or_default();
        if f.is_file() && !name.to_string_lossy().starts_with('.') {
            std::fs::copy(&f, to.join(name))
                .with_context(|| format!("copying {} into {}", f.display(), to.display()))?;
        }
    }
    Ok(())
}

/// Remove the test cache's entries unused for a week, and what a killed run left half made.
fn prune(cache: &Path) {
    let older = |p: &Path, limit: Duration| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > limit)
    };
    for e in sorted_entries(cache) {
        let half_made = e
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .starts_with('.');
        let unused = if half_made {
            older(&e, Duration::from_secs(24 * 3600))
        } else {
            older(&e.join(".used"), Duration::from_secs(7 * 24 * 3600))
        };
        if unused {
            let _ = std::fs::remove_dir_all(&e);
        }
    }
}

/// Run gradcam-stream with `args`; progress off so stderr holds only messages.
pub fn run(args: &[&str]) -> Result<Output> {
    Command::new(program())
        .args(args)
        .args(["--progress", "none"])
        .output()
        .context("running gradcam-stream")
}

/// Run gradcam-stream on `input` into `output` with `model`, plus `extra` flags.
pub fn explain(input: &str, output: &str, model: &str, extra: &[&str]) -> Result<Output> {
    let mut args = vec!["--input", input, "--output", output, "--model", model];
    args.extend_from_slice(extra);
    run(&args)
}

/// ffmpeg with these arguments (overwriting, quiet), which must succeed.
pub fn ffmpeg(args: &[&str]) -> Result<()> {
    let o = Command::new("ffmpeg")
        .args(["-y", "-v", "error"])
        .args(args)
        .output()
        .context("running ffmpeg")?;
    anyhow::ensure!(o.status.success(), "ffmpeg {args:?}: {}", stderr(&o));
    Ok(())
}

/// A camera's stream for the farm (examples/rtsp_serve): 4 s of ffmpeg's `pattern` (`testsrc=
/// size=160x120:rate=10`), H.264 with a key frame every `gop` frames, as cameras send it.
pub fn camera_clip(path: &Path, pattern: &str, gop: u32) -> Result<()> {
    let gop = gop.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        pattern,
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        &gop,
        "-pix_fmt",
        "yuv420p",
        path.to_str().context("a UTF-8 path")?,
    ])
}

/// Frames explained per stream, from a run's `done: stream NAME: N frames …` lines.
pub fn explained_per_stream(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.starts_with("done: stream "))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse().ok())
        .collect()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert a failed run: the status, one line on stderr containing `needle`, no panic.
pub fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "status for: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "`{needle}` not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Files in `dir`, to check that a failed run left nothing behind.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Encode `n` frames of videotestsrc at `w`x`h` and `rate` into an MP4 at `path`.
pub fn make_clip(path: &Path, w: u32, h: u32, rate: (i32, i32), n: u32) -> Result<()> {
    gst::init()?;
    // x264 encodes 4:2:0 only at even sizes; odd ones need 4:4:4.
    let format = if w.is_multiple_of(2) && h.is_multiple_of(2) {
        "I420"
    } else {
        "Y444"
    };
    let desc = format!(
        "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,format={format},width={w},height={h},framerate={}/{} \
         ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location=\"{}\"",
        rate.0,
        rate.1,
        path.display()
    );
    run_to_eos(
        &gst::parse::launch(&desc)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("not a pipeline"))?,
    )
}

fn run_to_eos(p: &gst::Pipeline) -> Result<()> {
    p.set_state(gst::State::Playing)?;
    let bus = p.bus().context("bus")?;
    let r = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(60)) else {
            break Err(anyhow!("timed out"));
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => break Err(anyhow!("{} ({:?})", e.error(), e.debug())),
            _ => {}
        }
    };
    p.set_state(gst::State::Null)?;
    r
}

/// What a decoded video holds.
#[derive(Debug, PartialEq)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
    pub rate: (i32, i32),
    pub pts: Vec<u64>,
    /// Mean RGB of each frame's pixels, for coarse content checks.
    pub frames_rgb: Vec<Vec<u8>>,
}

/// Decode a video file completely with GStreamer; `keep` frames' RGB pixels are kept.
pub fn probe(path: &Path, keep: usize) -> Result<Probe> {
    gst::init()?;
    let uri = format!("file://{}", std::fs::canonicalize(path)?.display());
    let desc = format!(
        "uridecodebin uri=\"{uri}\" ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false"
    );
    let p = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = p
        .by_name("sink")
        .context("sink")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow!("appsink"))?;
    p.set_state(gst::State::Playing)?;
    let mut out = Probe {
        width: 0,
        height: 0,
        rate: (0, 1),
        pts: vec![],
        frames_rgb: vec![],
    };
    loop {
        let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(60)) else {
            break;
        };
        let info = gst_video::VideoInfo::from_caps(s.caps().context("caps")?)?;
        out.width = info.width();
        out.height = info.height();
        out.rate = (info.fps().numer(), info.fps().denom());
        let buf = s.buffer().context("buffer")?;
        out.pts.push(buf.pts().context("pts")?.nseconds());
        if out.frames_rgb.len() < keep {
            let f = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info)?;
            let stride = f.plane_stride()[0] as usize;
            let data = f.plane_data(0)?;
            let mut rgb = Vec::new();
            for y in 0..info.height() as usize {
                rgb.extend_from_slice(&data[y * stride..y * stride + info.width() as usize * 3]);
            }
            out.frames_rgb.push(rgb);
        }
    }
    let bus = p.bus().context("bus")?;
    let err = bus.pop_filtered(&[gst::MessageType::Error]);
    p.set_state(gst::State::Null)?;
    if let Some(m) = err {
        if let gst::MessageView::Error(e) = m.view() {
            bail!("decoding {}: {}", path.display(), e.error());
        }
    }
    Ok(out)
}

/// What ffprobe prints for `args` on `target` (a file or a URL), its chatter quiet; an error
/// naming ffprobe's complaint unless it succeeds.
pub fn ffprobe(args: &[&str], target: impl AsRef<std::ffi::OsStr>) -> Result<String> {
    let target = target.as_ref();
    let o = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(target)
        .output()
        .context("running ffprobe")?;
    anyhow::ensure!(
        o.status.success(),
        "ffprobe {args:?} {}: {}",
        target.to_string_lossy(),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Each video packet's pts in seconds as ffprobe reads `target`, after `args` (how to read a
/// live URL, say).
pub fn packet_times(args: &[&str], target: impl AsRef<std::ffi::OsStr>) -> Result<Vec<f64>> {
    let mut all = args.to_vec();
    all.extend(["-select_streams", "v:0", "-show_entries", "packet=pts_time"]);
    all.extend(["-of", "csv=p=0"]);
    Ok(ffprobe(&all, target)?
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect())
}

/// Frame timestamps (ns) as ffprobe, an independent reader that honours MP4 edit lists, sees them.
pub fn ffprobe_pts(path: &Path) -> Result<Vec<u64>> {
    let args = ["-select_streams", "v:0", "-show_entries", "frame=pts_time"];
    ffprobe(&[&args[..], &["-of", "csv=p=0"]].concat(), path)?
        .lines()
        .filter_map(|l| l.split(',').next().map(str::trim).filter(|t| !t.is_empty()))
        .map(|l| {
            let t: f64 = l.parse().with_context(|| format!("bad pts {l}"))?;
            Ok((t * 1e9).round() as u64)
        })
        .collect()
}

/// Read a JSON-lines metadata file.
pub fn metadata(path: &Path) -> Result<Vec<serde_json::Value>> {
    std::fs::read_to_string(path)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad line {l}")))
        .collect()
}

/// A gradcam-stream (or helper) process whose stderr and stdout lines are collected as they
/// come, so a test can wait for a line while it runs.
pub struct Running {
    pub child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start(program: &Path, args: &[&str]) -> Result<Running> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Running::spawn(cmd)
    }

    /// `cmd` (with its own environment, say) started, its output collected.
    pub fn spawn(mut cmd: Command) -> Result<Running> {
        use std::io::BufRead;
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        let mut readers = Vec::new();
        for stream in [out, err] {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(|l| l.ok())
                {
                    let mut l = lines.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            }));
        }
        Ok(Running {
            child,
            lines,
            readers,
        })
    }

    /// gradcam-stream with these flags.
    pub fn explain(args: &[&str]) -> Result<Running> {
        Running::start(&program(), args)
    }

    /// The RTSP test server (examples/rtsp_serve.rs, built by `cargo test`).
    pub fn rtsp_server(port: u16, path: &str, source: &str) -> Result<Running> {
        Running::rtsp_cameras(port, path, source, &[])
    }

    /// The same with more of its flags (`--loop`, `--cameras N`).
    pub fn rtsp_cameras(port: u16, path: &str, source: &str, extra: &[&str]) -> Result<Running> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().and_then(Path::parent).context("target dir")?;
        let server = dir.join("examples/rtsp_serve");
        let port = port.to_string();
        Running::start(&server, &[&[port.as_str(), path, source], extra].concat())
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().clone()
    }

    /// Wait until a line containing `needle` appears; returns that line.
    pub fn wait_for(&self, needle: &str, limit: std::time::Duration) -> Result<String> {
        let start = std::time::Instant::now();
        loop {
            if let Some(l) = self.output().lines().find(|l| l.contains(needle)) {
                return Ok(l.to_owned());
            }
            if start.elapsed() > limit {
                bail!(
                    "no `{needle}` within {limit:?}; output so far:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The URL after `serving: `.
    pub fn url(&self) -> Result<String> {
        let l = self.wait_for("serving: ", std::time::Duration::from_secs(30))?;
        Ok(l.split("serving: ").nth(1).unwrap().trim().to_owned())
    }

    /// Wait for exit, at most `limit` (then kill); returns the status code and all output.
    pub fn wait(mut self, limit: std::time::Duration) -> Result<(Option<i32>, String)> {
        let start = std::time::Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                // The pipes close with the process: the readers have everything once they end.
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return Ok((st.code(), self.output()));
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                bail!("still running after {limit:?}:\n{}", self.output());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) -> Result<()> {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(st.success(), "kill {sig} failed");
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The `key=value` fields of every `stats:` line (not the total), in order.
pub fn stats_lines(output: &str) -> Vec<std::collections::HashMap<String, String>> {
    output
        .lines()
        .filter(|l| l.starts_with("stats: t="))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// Receive `n` decoded frames from an RTSP URL with GStreamer's rtspsrc; returns their sizes.
pub fn rtsp_frames(url: &str, n: usize) -> Result<Vec<(u32, u32)>> {
    gst::init()?;
    let p = gst::parse::launch(&format!(
        "rtspsrc location={url} protocols=tcp latency=100 ! decodebin ! videoconvert ! appsink name=s sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = p
        .by_name("s")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("appsink")?;
    p.set_state(gst::State::Playing)?;
    let mut sizes = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sizes.len() < n && std::time::Instant::now() < deadline {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
            let info = gst_video::VideoInfo::from_caps(s.caps().context("caps")?)?;
            sizes.push((info.width(), info.height()));
        }
    }
    p.set_state(gst::State::Null)?;
    Ok(sizes)
}

/// Save a scikit-image sample photo (`chelsea`, `coffee`, `astronaut`) as PNG in `dir`
/// (kept: see [`kept`]).
pub fn photo(name: &str, dir: &Path) -> Result<PathBuf> {
    let file = format!("{name}.png");
    let script =
        format!("import sys; from skimage import data, io; io.imsave(sys.argv[1], data.{name}())");
    let mut key = Key::python();
    key.text(&script);
    let o = kept("photo", key, dir, |into| {
        Command::new(python())
            .args(["-c", &script])
            .arg(into.join(&file))
            .output()
            .context("running python")
    })?;
    anyhow::ensure!(
        o.status.success(),
        "scikit-image could not write {name}: {}",
        stderr(&o)
    );
    Ok(dir.join(file))
}

/// GET `url` (`http://host:port/path`) over a plain TCP connection: the status and the body.
pub fn http_get(url: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").context("an http:// URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("an HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("a status code")?;
    Ok((status, body.to_owned()))
}

/// The status code an RTSP server answers a DESCRIBE of `url` with, given no credentials.
pub fn rtsp_describe_status(url: &str) -> Result<u16> {
    Ok(rtsp_describe(url, None)?.0)
}

/// A DESCRIBE of `url` with an optional `Authorization` value: the status code and the
/// `WWW-Authenticate` values of the answer.
pub fn rtsp_describe(url: &str, authorization: Option<&str>) -> Result<(u16, Vec<String>)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("rtsp://").context("an rtsp:// URL")?;
    let host = rest.split('/').next().unwrap_or(rest);
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n{auth}\r\n"
    )?;
    // The head of the answer (an SDP body may follow; it is not needed).
    let mut text = String::new();
    let mut buf = [0u8; 2048];
    while !text.contains("\r\n\r\n") {
        let n = s.read(&mut buf)?;
        anyhow::ensure!(n > 0, "the RTSP server closed before answering: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an RTSP answer: {text}"))?;
    let challenges = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.trim().to_owned())
        .collect();
    Ok((code, challenges))
}

/// The metrics URL a run prints (`metrics: http://…/metrics …`).
pub fn metrics_url(run: &Running) -> Result<String> {
    let l = run.wait_for("metrics: ", std::time::Duration::from_secs(30))?;
    let url = l.split_whitespace().nth(1).context("a URL")?;
    Ok(url.trim_end_matches("/metrics").to_owned())
}

/// The samples of a /metrics scrape by (metric, stream label).
pub fn scrape(base: &str) -> Result<HashMap<(String, String), f64>> {
    let (code, body) = http_get(&format!("{base}/metrics"))?;
    anyhow::ensure!(code == 200, "/metrics answered {code}: {body}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))?;
    let mut out = HashMap::new();
    for s in parsed.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.last().map(|b| b.count).unwrap_or(0.0),
            _ => continue,
        };
        let stream = s.labels.get("stream").unwrap_or("").to_owned();
        out.insert((s.metric, stream), v);
    }
    Ok(out)
}

pub fn get(m: &HashMap<(String, String), f64>, metric: &str, stream: &str) -> f64 {
    m.get(&(metric.to_owned(), stream.to_owned()))
        .copied()
        .unwrap_or(f64::NAN)
}

/// Poll `f` every 100 ms until it holds, at most `limit`.
pub fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if f().unwrap_or(false) {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
