//! The servers a run opens beside its streams: the RTSP server of its rtsp:// outputs and the
//! HTTP stack of `--metrics` and `--web`, each with one line when it is open to the network
//! without credentials or TLS.

use std::sync::Arc;

use anyhow::Result;

use super::lines::Lines;
use crate::config::{Config, Output};
use crate::metrics;
use crate::pipeline::rtsp;
use crate::pipeline::sound::{self, Track};
use crate::web::{self, hub::Hub};

pub(super) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// One line when a server is reachable from the network and anyone there can watch, or the
/// credentials it asks for travel in clear.
pub(super) fn warn_if_open(url: &str, host: &str, credentials: bool, tls: bool, set: &str) {
    if is_loopback(host) {
        return;
    }
    if !credentials {
        eprintln!("warning: {url} is served to the network without credentials; anyone who reaches it can watch (set {set})");
    } else if !tls {
        eprintln!("warning: {url} asks for credentials without TLS: they travel in clear; add --tls-cert FILE --tls-key FILE");
    }
}

/// The RTSP servers of a run: one per address, one mount per stream served there, with the
/// stream's sound (`tracks`) as a second stream.
pub(super) fn start_servers(
    cfg: &Config,
    tracks: &[Option<Track>],
) -> Result<(Vec<rtsp::Server>, Mounts)> {
    let mut servers: Vec<((String, u16), rtsp::Server)> = Vec::new();
    let mut per_stream = Vec::new();
    for (s, track) in cfg.streams.iter().zip(tracks) {
        let mut feeds = Vec::new();
        for o in &s.outputs {
            let Output::Rtsp { host, port, path } = o else {
                continue;
            };
            let key = (host.clone(), *port);
            let at = match servers.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    let server =
                        rtsp::Server::open(host, *port, cfg.rtsp_auth.as_ref(), cfg.tls.as_ref())?;
                    warn_if_open(
                        &server.base,
                        host,
                        cfg.rtsp_auth.is_some(),
                        cfg.tls.is_some(),
                        "--rtsp-auth USER:PASSWORD or GRADCAM_RTSP_AUTH",
                    );
                    servers.push((key, server));
                    servers.len() - 1
                }
            };
            let server = &mut servers[at].1;
            feeds.push(server.mount(path, track.map(|t| t.at(sound::Target::Rtsp)))?);
            eprintln!("serving: {}{path}", server.base);
        }
        per_stream.push(feeds);
    }
    Ok((servers.into_iter().map(|(_, s)| s).collect(), per_stream))
}

/// `--metrics` and `--web`: one server stack, reading the same counters and queues as the
/// stats lines (and, for the web view, the hub). The web view serves the metrics too.
pub(super) fn serve_http(
    cfg: &Config,
    lines: &Lines,
    hub: Option<Arc<Hub>>,
) -> Result<Vec<web::Server>> {
    let board = metrics::Board {
        streams: cfg
            .streams
            .iter()
            .zip(&lines.stats)
            .zip(&lines.queues)
            .map(|((s, st), (_, rx))| (s.name.clone(), st.clone(), rx.clone()))
            .collect(),
        all: lines.all.clone(),
    };
    let mut servers = Vec::new();
    if let Some(addr) = cfg.metrics {
        let site = web::Site {
            board: board.clone(),
            hub: None,
            auth: None,
        };
        let server = web::Server::start(addr, site, None, "metrics")?;
        eprintln!(
            "metrics: {}/metrics (health: {}/healthz)",
            server.url, server.url
        );
        servers.push(server);
    }
    if let (Some(view), Some(hub)) = (&cfg.web, hub) {
        let site = web::Site {
            board,
            hub: Some(hub),
            auth: view.auth.clone(),
        };
        let server = web::Server::start(view.addr, site, cfg.tls.as_ref(), "the web view")?;
        warn_if_open(
            &server.url,
            &view.addr.ip().to_string(),
            view.auth.is_some(),
            cfg.tls.is_some(),
            "--web-auth USER:PASSWORD or GRADCAM_WEB_AUTH",
        );
        eprintln!("web: {}/", server.url);
        servers.push(server);
    }
    Ok(servers)
}

/// Each stream's RTSP mounts.
pub(super) type Mounts = Vec<Vec<Arc<rtsp::Feeds>>>;
