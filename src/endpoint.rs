//! What an `--input` or `--output` names: the grammar of paths, URIs, `test://` sources,
//! webcams and RTSP addresses, and the [`Input`] and [`Output`] values they become. Checks
//! that a file exists or a device is a camera; never opens a stream.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::usage::usage;

/// What a server demands of its clients (`--rtsp-auth`, `--web-auth`: `USER:PASSWORD`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:***", self.user)
    }
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp", "tif", "tiff"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A still image read with the `image` crate.
    Image(PathBuf),
    /// A folder of still images, explained in batches by one process.
    Folder(PathBuf),
    /// Anything GStreamer's uridecodebin opens; `path` is set for local files.
    Video { uri: String, path: Option<PathBuf> },
    /// `test://[pattern][?size=WxH&fps=N]`: a live synthetic source (videotestsrc).
    Test {
        pattern: String,
        width: u32,
        height: u32,
        fps: u32,
    },
    /// A V4L2 camera (`/dev/videoN`), raw or MJPEG, in the mode asked for when one is.
    Webcam {
        device: PathBuf,
        size: Option<(u32, u32)>,
        fps: Option<u32>,
    },
    /// An RTSP feed (`rtsp://host[:port]/path`), reconnected when it drops.
    Rtsp { uri: String },
}

impl Input {
    /// A live source produces frames on its own clock, whether or not we keep up.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Input::Test { .. } | Input::Webcam { .. } | Input::Rtsp { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Mp4,
    Matroska,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Image(PathBuf),
    /// One picture per image of a folder input: `pattern` holds `{name}` (the image's file
    /// name without its extension) and the extension that says the format.
    Pictures(PathBuf),
    Video {
        path: PathBuf,
        container: Container,
    },
    /// A recording split by splitmuxsink into files of `--segment` length: `pattern` holds
    /// the number (`rec-%05d.mp4`).
    Segments {
        pattern: PathBuf,
        container: Container,
        every: Duration,
    },
    /// Serve the explained stream over RTSP at `rtsp://host:port/path` (port 0: a free one).
    Rtsp {
        host: String,
        port: u16,
        path: String,
    },
    /// A window on the desktop (autovideosink).
    Display,
    /// Discard the frames (for measuring).
    Null,
}

/// `rec.mp4` → `rec-%05d.mp4`; a path that already holds a `%…d` keeps it.
pub(crate) fn segment_pattern(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    if s.contains('%') {
        return path.to_owned();
    }
    let stem = path
        .file_stem()
        .map(|x| x.to_string_lossy())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|x| x.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-%05d.{ext}"))
}

fn extension(p: &Path) -> Option<String> {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

pub fn is_image_path(p: &Path) -> bool {
    extension(p).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

pub(crate) fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

pub(crate) fn parse_input(s: &str, size: Option<(u32, u32)>, fps: Option<u32>) -> Result<Input> {
    let input = if let Some((scheme, rest)) = s.split_once("://") {
        match scheme {
            "test" => parse_test(rest)?,
            "file" => local_input(PathBuf::from(rest))?,
            "v4l2" => webcam(Path::new(rest))?,
            "http" | "https" => Input::Video {
                uri: s.to_owned(),
                path: None,
            },
            "rtsp" | "rtsps" | "rtspt" | "rtspu" => {
                if rest.split('/').next().unwrap_or("").is_empty() {
                    bail!(usage(format!(
                        "{s}: no host; use rtsp://HOST[:PORT]/PATH"
                    )));
                }
                Input::Rtsp { uri: s.to_owned() }
            }
            _ => bail!(usage(format!(
                "unsupported input scheme `{scheme}://` in {s}; use a file path, file://, http(s)://, rtsp://, v4l2:// (or /dev/videoN) or test://"
            ))),
        }
    } else if s.starts_with("/dev/video") {
        webcam(Path::new(s))?
    } else {
        local_input(PathBuf::from(s))?
    };
    // A requested capture mode applies to sources that have modes.
    match input {
        Input::Webcam { device, .. } => Ok(Input::Webcam { device, size, fps }),
        Input::Test {
            pattern,
            width,
            height,
            fps: test_fps,
        } => {
            let (width, height) = size.unwrap_or((width, height));
            Ok(Input::Test {
                pattern,
                width,
                height,
                fps: fps.unwrap_or(test_fps),
            })
        }
        _ if size.is_some() || fps.is_some() => bail!(usage(format!(
            "--input-size and --input-fps apply to webcams and test:// sources, not to {s}"
        ))),
        other => Ok(other),
    }
}

/// A V4L2 device node that exists and is a character device.
fn webcam(device: &Path) -> Result<Input> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(device).map_err(|_| {
        usage(format!(
            "webcam {} does not exist; list the cameras with `v4l2-ctl --list-devices` or `ls /dev/video*`",
            device.display()
        ))
    })?;
    if !meta.file_type().is_char_device() {
        bail!(usage(format!(
            "{} is not a video device; give a camera node such as /dev/video0",
            device.display()
        )));
    }
    Ok(Input::Webcam {
        device: device.to_owned(),
        size: None,
        fps: None,
    })
}

/// `test://[pattern][?size=WxH&fps=N]`, e.g. `test://ball?size=640x480&fps=30`.
fn parse_test(rest: &str) -> Result<Input> {
    let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
    let pattern = if pattern.is_empty() { "smpte" } else { pattern };
    let (mut width, mut height, mut fps) = (640, 480, 30);
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let bad = || usage(format!("test:// option `{kv}`: use size=WxH and fps=N"));
        match kv.split_once('=').ok_or_else(bad)? {
            ("size", v) => {
                let (w, h) = v.split_once('x').ok_or_else(bad)?;
                width = w.parse().map_err(|_| bad())?;
                height = h.parse().map_err(|_| bad())?;
            }
            ("fps", v) => fps = v.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        }
    }
    if width == 0 || height == 0 || fps == 0 {
        bail!(usage(format!(
            "test://{rest}: size and fps must be positive"
        )));
    }
    Ok(Input::Test {
        pattern: pattern.to_owned(),
        width,
        height,
        fps,
    })
}

fn local_input(path: PathBuf) -> Result<Input> {
    if !path.exists() {
        bail!(usage(format!(
            "input {} does not exist; check the path",
            path.display()
        )));
    }
    if path.is_dir() {
        return Ok(Input::Folder(path));
    }
    if is_image_path(&path) {
        return Ok(Input::Image(path));
    }
    let abs = std::fs::canonicalize(&path)
        .with_context(|| format!("resolving input {}", path.display()))?;
    let uri = file_uri(&abs);
    Ok(Input::Video {
        uri,
        path: Some(path),
    })
}

/// `file://` URI with the characters GStreamer's URI parser rejects percent-encoded.
pub(crate) fn file_uri(abs: &Path) -> String {
    let mut uri = String::from("file://");
    for b in abs.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

pub(crate) fn parse_outputs(specs: &[String], input: &Input) -> Result<Vec<Output>> {
    let mut outputs: Vec<Output> = Vec::new();
    for spec in specs {
        let o = parse_output(spec, input)?;
        if outputs.contains(&o) {
            bail!(usage(format!("output {spec} is given twice")));
        }
        outputs.push(o);
    }
    if matches!(input, Input::Image(_)) && outputs.len() > 1 {
        bail!(usage("an image input has one output image"));
    }
    if matches!(input, Input::Folder(_)) && outputs.len() > 1 {
        bail!(usage(
            "a folder input has one output folder (out/ or out/{name}.jpg)"
        ));
    }
    if outputs.len() > 1 && outputs.contains(&Output::Null) {
        bail!(usage(
            "output null discards the frames; drop it when there are other outputs"
        ));
    }
    Ok(outputs)
}

/// A folder input's output: `out/` (each image to `out/NAME.png`) or a pattern such as
/// `out/{name}.jpg`.
fn pictures(spec: &str) -> Result<Output> {
    let pattern = if spec.contains("{name}") {
        PathBuf::from(spec)
    } else {
        Path::new(spec).join("{name}.png")
    };
    if !is_image_path(&pattern) {
        bail!(usage(format!(
            "output {spec}: a folder input writes images; give a folder (out/) or a pattern such as out/{{name}}.jpg"
        )));
    }
    Ok(Output::Pictures(pattern))
}

/// `rtsp://HOST[:PORT][/PATH]` for the server: port 8554 and path /gradcam when left out.
fn parse_rtsp_output(spec: &str) -> Result<Output> {
    let rest = &spec["rtsp://".len()..];
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let bad = || {
        usage(format!(
            "output {spec}: use rtsp://HOST:PORT/PATH, e.g. rtsp://0.0.0.0:8554/gradcam (port 0 picks a free one)"
        ))
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (authority, 8554),
    };
    if host.is_empty() {
        return Err(bad());
    }
    let path = match path.trim_end_matches('/') {
        "" => "/gradcam".to_owned(),
        p => p.to_owned(),
    };
    Ok(Output::Rtsp {
        host: host.to_owned(),
        port,
        path,
    })
}

fn parse_output(spec: &str, input: &Input) -> Result<Output> {
    let path = Path::new(spec);
    if let Input::Folder(_) = input {
        return pictures(spec);
    }
    if matches!(spec, "null" | "display") {
        if let Input::Image(_) = input {
            bail!(usage(format!(
                "output {spec} is for video inputs; give an image path"
            )));
        }
        if spec == "null" {
            return Ok(Output::Null);
        }
        let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        if !graphical {
            bail!(usage(
                "output display needs a graphical session and DISPLAY is not set; run it on a desktop or under xvfb-run, or write a file or rtsp:// instead"
            ));
        }
        return Ok(Output::Display);
    }
    if let Some((scheme, _)) = spec.split_once("://") {
        if scheme == "rtsp" && !matches!(input, Input::Image(_)) {
            return parse_rtsp_output(spec);
        }
        bail!(usage(format!(
            "unsupported output `{spec}`; use a .mp4 or .mkv file, rtsp://HOST:PORT/PATH, display or null"
        )));
    }
    let ext = extension(path).unwrap_or_default();
    match input {
        Input::Image(_) => {
            if !is_image_path(path) {
                bail!(usage(format!(
                    "output {} must be an image (.png, .jpg, …) for an image input",
                    path.display()
                )));
            }
            Ok(Output::Image(path.to_owned()))
        }
        _ => {
            let container = match ext.as_str() {
                "mp4" | "m4v" | "mov" => Container::Mp4,
                "mkv" => Container::Matroska,
                _ => bail!(usage(format!(
                    "output {}: unsupported extension; use .mp4 or .mkv, rtsp://HOST:PORT/PATH, display or null for a video input",
                    path.display()
                ))),
            };
            Ok(Output::Video {
                path: path.to_owned(),
                container,
            })
        }
    }
}

/// `30s`, `10m`, `1h`, `1500ms` or plain seconds (`90`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then(|| Duration::from_secs_f64(v * scale))
}

/// A point or a length of time as players write it: `90`, `2.5`, `1:30`, `00:01:30.5` (or
/// `30s`, `10m`); None unless it is a finite number of seconds, at least 0.
pub fn parse_time(s: &str) -> Option<Duration> {
    let s = s.trim();
    if !s.contains(':') {
        return match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Some(Duration::from_secs_f64(v)),
            Ok(_) => None,
            Err(_) => parse_duration(s),
        };
    }
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let (last, whole) = parts.split_last()?;
    let secs: f64 = last.parse().ok()?;
    if !(0.0..60.0).contains(&secs) {
        return None;
    }
    let mut total = secs;
    for (i, p) in whole.iter().rev().enumerate() {
        let n: u64 = p.parse().ok()?;
        if i == 0 && whole.len() == 2 && n >= 60 {
            return None; // minutes of HH:MM:SS
        }
        total += n as f64 * if i == 0 { 60.0 } else { 3600.0 };
    }
    Some(Duration::from_secs_f64(total))
}

/// `HOST:PORT` (or a bare port: loopback) for `--flag`; `example` shows a good one.
pub(crate) fn parse_addr(flag: &str, s: &str, example: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let spec = if s.parse::<u16>().is_ok() {
        format!("127.0.0.1:{s}")
    } else {
        s.to_owned()
    };
    spec.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            usage(format!(
                "{flag} {s}: use HOST:PORT, e.g. {example} (port 0 picks a free one)"
            ))
        })
}

pub(crate) fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr> {
    parse_addr("--metrics", s, "127.0.0.1:9464")
}

/// `--web`: where the view is served, and the credentials it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct WebView {
    pub addr: std::net::SocketAddr,
    pub auth: Option<Credentials>,
}

/// `--tls-cert` and `--tls-key`: PEM files for HTTPS and RTSPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `--rtsp-auth`, else `GRADCAM_RTSP_AUTH`; only where a stream serves RTSP.
pub(crate) fn rtsp_credentials(
    flag: Option<&str>,
    serves_rtsp: bool,
) -> Result<Option<Credentials>> {
    let creds = credentials(flag, "--rtsp-auth", "GRADCAM_RTSP_AUTH")?;
    if creds.is_some() && !serves_rtsp {
        bail!(usage(
            "--rtsp-auth protects an rtsp:// output, and there is none; add --output rtsp://HOST:PORT/PATH or drop --rtsp-auth"
        ));
    }
    Ok(creds)
}

/// Credentials from `flag`, else from the environment variable `env`.
fn credentials(flag: Option<&str>, name: &str, env: &str) -> Result<Option<Credentials>> {
    match flag {
        Some(c) => Ok(Some(parse_credentials(c, name)?)),
        None => match std::env::var(env) {
            Ok(c) if !c.is_empty() => Ok(Some(parse_credentials(&c, env)?)),
            _ => Ok(None),
        },
    }
}

/// `--web ADDR` with `--web-auth` (or GRADCAM_WEB_AUTH); credentials without a view are a
/// usage error.
pub(crate) fn web_view(addr: Option<&str>, auth: Option<&str>) -> Result<Option<WebView>> {
    let auth = credentials(auth, "--web-auth", "GRADCAM_WEB_AUTH")?;
    match addr {
        Some(a) => Ok(Some(WebView {
            addr: parse_addr("--web", a, "127.0.0.1:8080")?,
            auth,
        })),
        None if auth.is_some() => bail!(usage(
            "--web-auth protects the web view, and there is none; add --web ADDR or drop --web-auth"
        )),
        None => Ok(None),
    }
}

/// Both PEM files or neither, each readable; `serves` says whether anything would use them.
pub(crate) fn tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    serves: bool,
) -> Result<Option<Tls>> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return Ok(None),
        (Some(_), None) => bail!(usage(
            "--tls-cert needs --tls-key (the certificate's PEM private key)"
        )),
        (None, Some(_)) => bail!(usage("--tls-key needs --tls-cert (the PEM certificate)")),
    };
    for (flag, p) in [("--tls-cert", &cert), ("--tls-key", &key)] {
        if let Err(e) = std::fs::File::open(p) {
            bail!(usage(format!(
                "{flag} {}: {e}; give a readable PEM file",
                p.display()
            )));
        }
    }
    if !serves {
        bail!(usage(
            "--tls-cert secures --web and rtsp:// outputs, and there is neither; add one or drop --tls-cert/--tls-key"
        ));
    }
    Ok(Some(Tls { cert, key }))
}

pub(crate) fn parse_credentials(s: &str, what: &str) -> Result<Credentials> {
    match s.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            crate::redact::secret(password);
            Ok(Credentials {
                user: user.to_owned(),
                password: password.to_owned(),
            })
        }
        _ => bail!(usage(format!("{what}: use USER:PASSWORD, both non-empty"))),
    }
}

/// `out-{stream}.mp4` with the stream's name; without `{stream}`, an error where the value is
/// shared by several streams (they would all write one file).
pub(crate) fn with_name(name: &str, o: &str, what: &str, shared: bool) -> Result<String> {
    if o.contains("{stream}") {
        return Ok(o.replace("{stream}", name));
    }
    if shared && !matches!(o, "null" | "display") {
        bail!(usage(format!(
            "{what} {o}: with several inputs every {what} must contain {{stream}} (each stream's name), e.g. rec-{{stream}}.mp4 or rtsp://0.0.0.0:8554/{{stream}}"
        )));
    }
    Ok(o.to_owned())
}

pub(crate) fn metadata_path(name: &str, m: &Path, shared: bool) -> Result<std::path::PathBuf> {
    let m = std::path::PathBuf::from(with_name(name, &m.to_string_lossy(), "--metadata", shared)?);
    if m.extension().and_then(|e| e.to_str()) != Some("jsonl") {
        bail!(usage(format!(
            "--metadata {}: use a .jsonl file name",
            m.display()
        )));
    }
    Ok(m)
}

pub(crate) fn is_name(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `cam1=rtsp://…` → (`cam1`, `rtsp://…`): a prefix of name characters before the first `=`,
/// when what follows is not empty and the whole is not a file that exists.
pub(crate) fn split_name(spec: &str) -> Option<(String, String)> {
    let (name, rest) = spec.split_once('=')?;
    let plain = !name.is_empty() && is_name(name);
    (plain && !rest.is_empty() && !Path::new(spec).exists())
        .then(|| (name.to_owned(), rest.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_players_write_them() {
        let t = |s| parse_time(s).map(|d| d.as_secs_f64());
        assert_eq!(t("90"), Some(90.0));
        assert_eq!(t("2.5"), Some(2.5));
        assert_eq!(t("1:30"), Some(90.0));
        assert_eq!(t("00:01:30.5"), Some(90.5));
        assert_eq!(t("1:02:03"), Some(3723.0));
        assert_eq!(t("30s"), Some(30.0));
        assert_eq!(t("0"), Some(0.0));
        for bad in ["-1", "1:60", "1:75:00", "a:b", "1::2", "", "1:2:3:4"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
