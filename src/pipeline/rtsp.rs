//! The RTSP server output: the explained stream is encoded once (H.264, `tune=zerolatency`)
//! in the output pipeline, and each encoded frame is handed to every media the server has
//! running. All clients of one mount share one media (`shared`), so a second viewer costs
//! no second encoder.
//!
//! ```text
//! output pipeline:  … x264enc ! h264parse ! appsink name=liveN ──Feeds::push──┐
//! server media:     ( appsrc name=src ! h264parse ! rtph264pay name=pay0 ) ◀──┘
//! ```
//! A media that starts mid-stream gets frames from the next keyframe on, and asks the encoder
//! for one at once; so does a client's request for a key frame (an RTCP PLI or FIR, which the
//! media's RTP session turns into an upstream force-key-unit event at its `appsrc`). Frames are stamped from their own timestamps (a live input's capture
//! times), offset once onto the media's clock, never from when they reach the server: a
//! batch's frames arrive together but leave as far apart as they were captured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

use super::sound::Codec;
use crate::config::{Credentials, Tls};
use crate::frame::{Encoded, EncodedTap};
use gstreamer_rtsp_server::gio;

/// The server's medias that want frames, fed from the stream's live encoder (and its sound,
/// where the mount carries it).
#[derive(Default)]
pub struct Feeds {
    medias: Mutex<Vec<Feed>>,
    caps: Mutex<Option<gst::Caps>>,
    keyframe_wanted: Arc<AtomicBool>,
    /// The mount's second stream, the sound, in this codec.
    sound: Option<Codec>,
    sound_caps: Mutex<Option<gst::Caps>>,
}

struct Feed {
    appsrc: gst_app::AppSrc,
    /// The media's sound appsrc, and the last timestamp it was given.
    sound: Option<gst_app::AppSrc>,
    last_sound: Option<u64>,
    /// Added to a frame's timestamp to place it on the media's clock, fixed by the first
    /// frame the media gets; None until then (delta frames before a key frame are skipped).
    offset: Option<i64>,
    last: Option<u64>,
}

/// How far behind its capture a frame leaves the server, beyond the first frame's own
/// latency: room for the batches' jitter, so frames leave as evenly as they were captured
/// (a frame that comes later still makes the delay grow; see `push`).
const SEND_DELAY: gst::ClockTime = gst::ClockTime::from_mseconds(100);

impl Feeds {
    fn add(&self, appsrc: gst_app::AppSrc, sound: Option<gst_app::AppSrc>) {
        if let Some(caps) = self.caps.lock().ok().and_then(|c| c.clone()) {
            appsrc.set_caps(Some(&caps));
        }
        // A client asking for a key frame (its PLI, through the media's RTP session, the
        // payloader and the parser) asks the encoder for one.
        if let Some(pad) = appsrc.static_pad("src") {
            let wanted = self.keyframe_wanted.clone();
            pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(e)) = &info.data {
                    if e.structure().is_some_and(|s| s.name() == "GstForceKeyUnit") {
                        wanted.store(true, Ordering::Relaxed);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        if let (Some(a), Some(caps)) = (&sound, self.sound_caps.lock().ok().and_then(|c| c.clone()))
        {
            a.set_caps(Some(&caps));
        }
        if let Ok(mut m) = self.medias.lock() {
            m.push(Feed {
                appsrc,
                sound,
                last_sound: None,
                offset: None,
                last: None,
            });
        }
        self.keyframe_wanted.store(true, Ordering::Relaxed);
    }

    fn caps_for(&self, f: &Encoded) -> gst::Caps {
        let caps = gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .field("width", f.width as i32)
            .field("height", f.height as i32)
            .build();
        if let Ok(mut c) = self.caps.lock() {
            if c.as_ref() != Some(&caps) {
                *c = Some(caps.clone());
            }
        }
        caps
    }
}

impl EncodedTap for Feeds {
    /// Hand one encoded frame to every media, stamped from the frame's own timestamp (its
    /// capture time, for a live input) so that the stream keeps the camera's spacing; a media
    /// that has gone (its clients left) is forgotten.
    fn push(&self, f: &Encoded) {
        let caps = self.caps_for(f);
        let Ok(mut medias) = self.medias.lock() else {
            return;
        };
        medias.retain_mut(|feed| {
            if feed.offset.is_none() {
                if !f.key {
                    return true;
                }
                let now = feed
                    .appsrc
                    .current_running_time()
                    .unwrap_or(gst::ClockTime::ZERO);
                feed.offset = Some((now + SEND_DELAY).nseconds() as i64 - f.pts as i64);
            }
            if feed.appsrc.caps().as_ref() != Some(&caps) {
                feed.appsrc.set_caps(Some(&caps));
            }
            let mut pts = (f.pts as i64 + feed.offset.unwrap_or(0)).max(0) as u64;
            // A frame later than the delay allows (a slow batch) would be late at the
            // server's sinks: the delay grows to hold it, once, and the spacing holds after.
            if let Some(now) = feed.appsrc.current_running_time() {
                if pts < now.nseconds() {
                    let grow = now.nseconds() + SEND_DELAY.nseconds() / 2 - pts;
                    feed.offset = feed.offset.map(|o| o + grow as i64);
                    pts += grow;
                }
            }
            let pts = feed.last.map_or(pts, |l| pts.max(l + 1));
            feed.last = Some(pts);
            let mut b = gst::Buffer::from_slice(f.data.to_vec());
            {
                let b = b.get_mut().expect("a new buffer is writable");
                b.set_pts(gst::ClockTime::from_nseconds(pts));
                b.set_duration(f.duration.map(gst::ClockTime::from_nseconds));
                if !f.key {
                    b.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
            }
            feed.appsrc.push_buffer(b).is_ok()
        });
    }

    fn take_keyframe_request(&self) -> bool {
        self.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    /// End of the stream for every media: clients see the stream end.
    fn finish(&self) {
        if let Ok(mut medias) = self.medias.lock() {
            for feed in medias.drain(..) {
                let _ = feed.appsrc.end_of_stream();
                if let Some(s) = feed.sound {
                    let _ = s.end_of_stream();
                }
            }
        }
    }

    fn wants_sound(&self) -> bool {
        self.sound.is_some()
    }

    /// The sound to every media that has had its first frame, on the frames' offset: it
    /// leaves in step with the video.
    fn push_sound(&self, sample: &gst::Sample) {
        let Some(buffer) = sample.buffer_owned() else {
            return;
        };
        let caps = sample.caps_owned();
        if let (Some(caps), Ok(mut c)) = (&caps, self.sound_caps.lock()) {
            if c.as_ref() != Some(caps) {
                *c = Some(caps.clone());
            }
        }
        // The running time, as the frames' (a looping source's timestamps start over).
        let Some(pts) = buffer.pts().map(|t| super::times::running_time(sample, t)) else {
            return;
        };
        let Ok(mut medias) = self.medias.lock() else {
            return;
        };
        for feed in medias.iter_mut() {
            let (Some(appsrc), Some(offset)) = (&feed.sound, feed.offset) else {
                continue;
            };
            let at = (pts as i64 + offset).max(0) as u64;
            if feed.last_sound.is_some_and(|l| at <= l) {
                continue;
            }
            feed.last_sound = Some(at);
            if let Some(caps) = &caps {
                if appsrc.caps().as_ref() != Some(caps) {
                    appsrc.set_caps(Some(caps));
                }
            }
            let mut b = buffer.copy();
            b.make_mut().set_pts(gst::ClockTime::from_nseconds(at));
            b.make_mut().set_dts(gst::ClockTime::NONE);
            let _ = appsrc.push_buffer(b);
        }
    }
}

pub struct Server {
    server: rtsp::RTSPServer,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    source: Option<glib::SourceId>,
    thread: Option<JoinHandle<()>>,
    /// Each mount's frames.
    mounts: Vec<Arc<Feeds>>,
    /// Clients must give the credentials.
    auth: bool,
    /// `rtsp://host:port` with the port actually bound.
    pub base: String,
    /// The first mount's feeds and URL (a server of one mount).
    pub feeds: Arc<Feeds>,
    pub url: String,
}

/// What the server's media does with the frames it is handed (and the sound, in `sound`).
fn media(sound: Option<Codec>) -> String {
    let video = "appsrc name=src is-live=true format=time do-timestamp=false \
         ! clocksync ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1";
    match sound {
        Some(c) => format!(
            "( {video} appsrc name=sound is-live=true format=time do-timestamp=false \
             ! clocksync ! {} name=pay1 pt=97 )",
            c.payloader()
        ),
        None => format!("( {video} )"),
    }
}

/// The role a client with the credentials has.
const ROLE: &str = "viewer";

/// Who may watch: with `credentials`, only clients that give them (Digest or Basic); with
/// `tls`, over RTSPS (with TLS alone, everyone is a viewer). None: no checks at all.
fn access(credentials: Option<&Credentials>, tls: Option<&Tls>) -> Result<Option<rtsp::RTSPAuth>> {
    if credentials.is_none() && tls.is_none() {
        return Ok(None);
    }
    let auth = rtsp::RTSPAuth::new();
    let mut token = rtsp::RTSPToken::builder()
        .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
        .build();
    match credentials {
        // Both schemes are offered: Digest keeps the password off the network where there is
        // no TLS; Basic serves the clients that know nothing else.
        Some(c) => {
            offer_digest_and_basic(&auth);
            auth.add_basic(
                rtsp::RTSPAuth::make_basic(&c.user, &c.password).as_str(),
                &token,
            );
            auth.add_digest(&c.user, &c.password, &token);
        }
        // TLS alone: everyone is a viewer.
        None => auth.set_default_token(Some(&mut token)),
    }
    if let Some(tls) = tls {
        let cert = gio::TlsCertificate::from_files(&tls.cert, &tls.key).map_err(|e| {
            anyhow!(
                "--tls-cert {} / --tls-key {}: {e}; give a PEM certificate and its PEM private key",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
        auth.set_tls_certificate(Some(&cert));
    }
    Ok(Some(auth))
}

/// Both schemes in the server's 401. The C API takes the methods as flags (BASIC | DIGEST);
/// the Rust binding's `RTSPAuthMethod` is a plain enum that cannot hold both, so the C call is
/// made directly.
fn offer_digest_and_basic(auth: &rtsp::RTSPAuth) {
    use glib::translate::ToGlibPtr;
    use rtsp::gst_rtsp::ffi::{GST_RTSP_AUTH_BASIC, GST_RTSP_AUTH_DIGEST};
    // SAFETY: a valid RTSPAuth for the call's length; the methods are the C enum's own values.
    unsafe {
        rtsp::ffi::gst_rtsp_auth_set_supported_methods(
            auth.to_glib_none().0,
            GST_RTSP_AUTH_BASIC | GST_RTSP_AUTH_DIGEST,
        );
    }
}

impl Server {
    /// Serve on `host:port` (port 0: any free port) at mount `path`, on a main loop of its own.
    pub fn start(host: &str, port: u16, path: &str) -> Result<Server> {
        let mut server = Server::open(host, port, None, None)?;
        let feeds = server.mount(path, None)?;
        server.feeds = feeds;
        server.url = format!("{}{path}", server.base);
        Ok(server)
    }

    /// Serve on `host:port` (port 0: any free port) with no mount yet; with `credentials`,
    /// only clients that give them (Digest or Basic) are let in (401 otherwise); with `tls`, over
    /// RTSPS (TLS from the first byte: `rtsps://`).
    pub fn open(
        host: &str,
        port: u16,
        credentials: Option<&Credentials>,
        tls: Option<&Tls>,
    ) -> Result<Server> {
        let server = rtsp::RTSPServer::new();
        server.set_address(host);
        server.set_service(&port.to_string());
        if let Some(auth) = access(credentials, tls)? {
            server.set_auth(Some(&auth));
        }

        // A client's DESCRIBE waits for its media's first key frame (up to a camera's key-frame
        // interval). On the server's one default thread the clients were answered one after
        // another: a farm of 12 cameras took 12 s to start the last, longer than a client
        // waits for frames. A thread a client (up to 64, then shared) answers them together.
        if let Some(pool) = server.thread_pool() {
            pool.set_max_threads(64);
        }
        let context = glib::MainContext::new();
        let source = server.attach(Some(&context)).map_err(|_| {
            let why = match std::net::TcpListener::bind((host, port)) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    format!("port {port} is already in use")
                }
                Err(e) => e.to_string(),
                Ok(_) => "the address cannot be bound".into(),
            };
            anyhow!(
                "cannot serve rtsp://{host}:{port}: {why}; pick another port (port 0 picks a free one)"
            )
        })?;
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let ml = main_loop.clone();
        let ctx = context.clone();
        let thread = std::thread::Builder::new()
            .name("gradcam-rtsp".into())
            .spawn(move || {
                let _ = ctx.with_thread_default(|| ml.run());
            })
            .context("starting the RTSP server thread")?;
        let scheme = if tls.is_some() { "rtsps" } else { "rtsp" };
        let base = format!("{scheme}://{host}:{}", server.bound_port());
        Ok(Server {
            server,
            context,
            main_loop,
            source: Some(source),
            thread: Some(thread),
            mounts: Vec::new(),
            auth: credentials.is_some() || tls.is_some(),
            base: base.clone(),
            feeds: Arc::new(Feeds::default()),
            url: base,
        })
    }

    /// Serve a stream at `path`: the returned feeds take its encoded frames, and its sound in
    /// `sound`'s codec as the mount's second stream.
    pub fn mount(&mut self, path: &str, sound: Option<Codec>) -> Result<Arc<Feeds>> {
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&media(sound));
        factory.set_shared(true);
        if self.auth {
            factory.add_role_from_structure(
                &gst::Structure::builder(ROLE)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }
        let feeds = Arc::new(Feeds {
            sound,
            ..Feeds::default()
        });
        let f = feeds.clone();
        factory.connect_media_configure(move |_, media| {
            let bin = media.element().downcast::<gst::Bin>().ok();
            let appsrc = |name| {
                bin.as_ref()
                    .and_then(|bin| bin.by_name_recurse_up(name))
                    .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            };
            if let Some(src) = appsrc("src") {
                f.add(src, appsrc("sound"));
            }
        });
        self.server
            .mount_points()
            .context("the RTSP server has no mount points")?
            .add_factory(path, factory);
        self.mounts.push(feeds.clone());
        Ok(feeds)
    }

    /// The media factory mounted at `path` (to watch or change each media it makes).
    pub fn factory(&self, path: &str) -> Option<rtsp::RTSPMediaFactory> {
        Some(self.server.mount_points()?.match_(path).0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.feeds.finish();
        for m in &self.mounts {
            m.finish();
        }
        if let Some(source) = self
            .source
            .take()
            .and_then(|id| self.context.find_source_by_id(&id))
        {
            source.destroy();
        }
        // Close the sessions so clients see the end rather than a silent stall.
        if let Some(pool) = self.server.session_pool() {
            pool.filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        }
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
