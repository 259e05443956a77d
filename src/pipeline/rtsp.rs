//! The RTSP server output: the explained stream is encoded once (H.264, `tune=zerolatency`)
//! in the output pipeline, and each encoded frame is handed to every media the server has
//! running. All clients of one mount share one media (`shared`), so a second viewer costs
//! no second encoder.
//!
//! ```text
//! output pipeline:  … x264enc ! h264parse ! appsink name=rtspN ──Feeds::push──┐
//! server media:     ( appsrc name=src ! h264parse ! rtph264pay name=pay0 ) ◀──┘
//! ```
//! A media that starts mid-stream gets frames from the next keyframe on, and asks the encoder
//! for one at once.

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

use crate::config::Credentials;

/// The server's medias that want frames, fed from the encoder's appsink.
#[derive(Default)]
pub struct Feeds {
    medias: Mutex<Vec<Feed>>,
    caps: Mutex<Option<gst::Caps>>,
    keyframe_wanted: AtomicBool,
}

struct Feed {
    appsrc: gst_app::AppSrc,
    /// Whether a keyframe has been sent; until then delta frames are skipped.
    started: bool,
}

impl Feeds {
    fn add(&self, appsrc: gst_app::AppSrc) {
        if let Some(caps) = self.caps.lock().ok().and_then(|c| c.clone()) {
            appsrc.set_caps(Some(&caps));
        }
        if let Ok(mut m) = self.medias.lock() {
            m.push(Feed {
                appsrc,
                started: false,
            });
        }
        self.keyframe_wanted.store(true, Ordering::Relaxed);
    }

    /// Whether a media joined since the last call and needs a keyframe.
    fn take_keyframe_request(&self) -> bool {
        self.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    /// Hand one encoded frame to every media; a media that has gone (its clients left) is
    /// forgotten.
    pub fn push(&self, sample: &gst::Sample) {
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            return;
        };
        let caps = caps.to_owned();
        if let Ok(mut c) = self.caps.lock() {
            if c.as_ref() != Some(&caps) {
                *c = Some(caps.clone());
            }
        }
        let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let Ok(mut medias) = self.medias.lock() else {
            return;
        };
        medias.retain_mut(|feed| {
            if !feed.started && !key {
                return true;
            }
            feed.started = true;
            if feed.appsrc.caps().as_ref() != Some(&caps) {
                feed.appsrc.set_caps(Some(&caps));
            }
            // The media stamps frames on arrival (do-timestamp): its clock, not ours.
            let mut b = buffer.copy();
            {
                let b = b.make_mut();
                b.set_pts(gst::ClockTime::NONE);
                b.set_dts(gst::ClockTime::NONE);
            }
            feed.appsrc.push_buffer(b).is_ok()
        });
    }

    /// Feed the server from `appsink` (H.264 byte-stream, one access unit a buffer); a new
    /// media makes the encoder upstream send a keyframe.
    pub fn attach(self: Arc<Self>, appsink: &gst_app::AppSink) {
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |appsink| {
                    let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if self.take_keyframe_request() {
                        let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
                            .all_headers(true)
                            .build();
                        if let Some(pad) = appsink.static_pad("sink") {
                            pad.push_event(event);
                        }
                    }
                    self.push(&sample);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }

    /// End of the stream for every media: clients see the stream end.
    pub fn finish(&self) {
        if let Ok(mut medias) = self.medias.lock() {
            for feed in medias.drain(..) {
                let _ = feed.appsrc.end_of_stream();
            }
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

/// What the server's media does with the frames it is handed.
const MEDIA: &str = "( appsrc name=src is-live=true format=time do-timestamp=true \
     ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )";

/// The role a client with the credentials has.
const ROLE: &str = "viewer";

impl Server {
    /// Serve on `host:port` (port 0: any free port) at mount `path`, on a main loop of its own.
    pub fn start(host: &str, port: u16, path: &str) -> Result<Server> {
        let mut server = Server::open(host, port, None)?;
        let feeds = server.mount(path)?;
        server.feeds = feeds;
        server.url = format!("{}{path}", server.base);
        Ok(server)
    }

    /// Serve on `host:port` (port 0: any free port) with no mount yet; with `credentials`,
    /// only clients that give them (HTTP Basic) are let in (401 otherwise).
    pub fn open(host: &str, port: u16, credentials: Option<&Credentials>) -> Result<Server> {
        let server = rtsp::RTSPServer::new();
        server.set_address(host);
        server.set_service(&port.to_string());
        if let Some(c) = credentials {
            let auth = rtsp::RTSPAuth::new();
            let token = rtsp::RTSPToken::builder()
                .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
                .build();
            auth.add_basic(
                rtsp::RTSPAuth::make_basic(&c.user, &c.password).as_str(),
                &token,
            );
            server.set_auth(Some(&auth));
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
        let base = format!("rtsp://{host}:{}", server.bound_port());
        Ok(Server {
            server,
            context,
            main_loop,
            source: Some(source),
            thread: Some(thread),
            mounts: Vec::new(),
            auth: credentials.is_some(),
            base: base.clone(),
            feeds: Arc::new(Feeds::default()),
            url: base,
        })
    }

    /// Serve a stream at `path`: the returned feeds take its encoded frames.
    pub fn mount(&mut self, path: &str) -> Result<Arc<Feeds>> {
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(MEDIA);
        factory.set_shared(true);
        if self.auth {
            factory.add_role_from_structure(
                &gst::Structure::builder(ROLE)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }
        let feeds = Arc::new(Feeds::default());
        let f = feeds.clone();
        factory.connect_media_configure(move |_, media| {
            let appsrc = media
                .element()
                .downcast::<gst::Bin>()
                .ok()
                .and_then(|bin| bin.by_name_recurse_up("src"))
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
            if let Some(appsrc) = appsrc {
                f.add(appsrc);
            }
        });
        self.server
            .mount_points()
            .context("the RTSP server has no mount points")?
            .add_factory(path, factory);
        self.mounts.push(feeds.clone());
        Ok(feeds)
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
