//! The program's one HTTP server: `--metrics` (`/metrics`, `/healthz`) and the `--web` view
//! (the pages, each stream's live video and verdicts over a WebSocket, the recordings), behind
//! one credentials check, over HTTP or HTTPS. It reads what the stages already publish (the
//! counters, the hub fed by each stream's live encoder and the render stage) and never
//! reaches into them; a slow client slows only its own connection.
//!
//! ```text
//! GET /                  overview: a tile a stream        GET /api/streams       states, counts, verdicts
//! GET /stream/NAME       one stream, its timeline         GET /api/history/NAME  the last minutes' verdicts
//! GET /recordings        the run's files                  GET /api/recordings    the same, as JSON
//! GET /live/NAME         WebSocket: fMP4 + JSON verdicts  GET /recordings/ID/FILE   a file (ranges: 206)
//! GET /metrics /healthz  Prometheus, health               GET /assets/FILE       the page's own files
//! ```

pub mod fmp4;
pub mod hub;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tower::ServiceExt;

use crate::config::{Credentials, Tls};
use crate::metrics::Board;
use crate::stats::Health;
use hub::{Hub, Message};

/// What the server serves: always the metrics; with a hub, the web view too.
#[derive(Clone)]
pub struct Site {
    pub board: Board,
    pub hub: Option<Arc<Hub>>,
    pub auth: Option<Credentials>,
}

/// A running server; stops when dropped.
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    handle: axum_server::Handle,
    /// `http(s)://host:port` as bound.
    pub url: String,
}

impl Server {
    /// Bind `addr` now (so a port in use fails before anything else starts), then serve on a
    /// thread of its own.
    pub fn start(addr: SocketAddr, site: Site, tls: Option<&Tls>, what: &str) -> Result<Server> {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            anyhow!("cannot serve {what} on {addr}: {e}; pick another address (port 0 picks a free one)")
        })?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("gradcam-http")
            .enable_all()
            .build()
            .context("starting the HTTP server's runtime")?;
        let handle = axum_server::Handle::new();
        let app = routes(site).into_make_service();
        let scheme = match tls {
            Some(tls) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config = runtime
                    .block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(
                        &tls.cert, &tls.key,
                    ))
                    .map_err(|e| {
                        anyhow!(
                            "--tls-cert {} / --tls-key {}: {e}; give a PEM certificate and its PEM private key",
                            tls.cert.display(),
                            tls.key.display()
                        )
                    })?;
                let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
                runtime.spawn(async move { server.serve(app).await });
                "https"
            }
            None => {
                let server = axum_server::from_tcp(listener).handle(handle.clone());
                runtime.spawn(async move { server.serve(app).await });
                "http"
            }
        };
        Ok(Server {
            runtime: Some(runtime),
            handle,
            url: format!("{scheme}://{bound}"),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle
            .graceful_shutdown(Some(Duration::from_millis(500)));
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn routes(site: Site) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz));
    if site.hub.is_some() {
        r = r
            .route("/", get(|| page(OVERVIEW)))
            .route("/stream/{name}", get(stream_page))
            .route("/recordings", get(|| page(RECORDINGS)))
            .route("/assets/{file}", get(asset))
            .route("/api/streams", get(api_streams))
            .route("/api/history/{name}", get(api_history))
            .route("/api/recordings", get(api_recordings))
            .route("/recordings/{id}/{file}", get(recording_file))
            .route("/live/{name}", get(live));
    }
    r.fallback(|| async { not_found("no such page; the streams are listed at /") })
        .layer(middleware::from_fn_with_state(site.clone(), check_auth))
        .layer(middleware::from_fn_with_state(site.clone(), protect))
        .with_state(site)
}

/// What the pages may load: only what this server serves (their scripts and styles are
/// compiled in, none inline), the live video as a `blob:` of the page's own MediaSource, and
/// the WebSocket back to the same origin. No other site may frame them.
const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The protective headers on every answer (401s and 404s too): the policy above, no MIME
/// sniffing, no referrer leaving with a camera's page address, and, where the run has
/// credentials, nothing kept in a cache.
async fn protect(State(site): State<Site>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if site.auth.is_some() {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// HTTP Basic on everything, when the run has credentials.
async fn check_auth(State(site): State<Site>, req: Request, next: Next) -> Response {
    let Some(c) = &site.auth else {
        return next.run(req).await;
    };
    if authorized(req.headers(), c) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            r#"Basic realm="gradcam-stream", charset="UTF-8""#,
        )],
        "credentials required\n",
    )
        .into_response()
}

fn authorized(headers: &HeaderMap, c: &Credentials) -> bool {
    use base64::Engine;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let want = format!("{}:{}", c.user, c.password);
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .is_ok_and(|got| constant_time_eq(&got, want.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn not_found(line: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>not found</title><p>{}</p>\n",
            escape(line)
        )),
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn metrics(State(site): State<Site>) -> Response {
    match site.board.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn healthz(State(site): State<Site>) -> Response {
    let (code, line) = site.board.health();
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, format!("{line}\n")).into_response()
}

// The page's files, compiled in.
const OVERVIEW: &str = include_str!("../../web/index.html");
const STREAM: &str = include_str!("../../web/stream.html");
const RECORDINGS: &str = include_str!("../../web/recordings.html");
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "gradcam.js",
        "text/javascript",
        include_bytes!("../../web/gradcam.js"),
    ),
    (
        "overview.js",
        "text/javascript",
        include_bytes!("../../web/overview.js"),
    ),
    (
        "stream-page.js",
        "text/javascript",
        include_bytes!("../../web/stream-page.js"),
    ),
    (
        "recordings-page.js",
        "text/javascript",
        include_bytes!("../../web/recordings-page.js"),
    ),
    (
        "style.css",
        "text/css",
        include_bytes!("../../web/style.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript",
        include_bytes!("../../web/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css",
        include_bytes!("../../web/vendor/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain",
        include_bytes!("../../web/vendor/uPlot.LICENSE"),
    ),
];

async fn page(html: &'static str) -> Response {
    Html(html).into_response()
}

async fn asset(UrlPath(file): UrlPath<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == file) {
        Some((_, kind, body)) => ([(header::CONTENT_TYPE, *kind)], *body).into_response(),
        None => not_found("no such file"),
    }
}

fn hub(site: &Site) -> &Arc<Hub> {
    site.hub.as_ref().expect("web routes exist only with a hub")
}

async fn stream_page(State(site): State<Site>, UrlPath(name): UrlPath<String>) -> Response {
    match hub(&site).channel(&name) {
        Some(_) => Html(STREAM).into_response(),
        None => not_found(&format!(
            "no stream named {name}; the streams are listed at /"
        )),
    }
}

#[derive(Serialize)]
struct StreamJson {
    name: String,
    state: &'static str,
    reason: Option<String>,
    frames_in: u64,
    frames_out: u64,
    dropped: u64,
    reconnects: u64,
    /// An RTP feed's: packets lost, and their share over the last minute (percent; absent
    /// for other inputs), and frames decoded from damaged data.
    packets_lost: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_percent: Option<f64>,
    frames_damaged: u64,
    viewers: usize,
    encoders: u64,
    verdict: Option<hub::Verdict>,
}

fn state(h: &Health) -> (&'static str, Option<String>) {
    if let Some(why) = h.down() {
        return ("down", Some(crate::redact::line(&why)));
    }
    match h {
        Health::Starting => ("starting", None),
        Health::Up => ("up", None),
        Health::Reconnecting { why, .. } => ("reconnecting", Some(crate::redact::line(why))),
        Health::Ended => ("ended", None),
        Health::Failed(why) => ("down", Some(crate::redact::line(why))),
    }
}

async fn api_streams(State(site): State<Site>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let hub = hub(&site);
    let list: Vec<StreamJson> = site
        .board
        .streams
        .iter()
        .zip(&hub.channels)
        .map(|((name, s, _), ch)| {
            let (state, reason) = state(&s.health());
            StreamJson {
                name: name.clone(),
                state,
                reason,
                frames_in: s.received.load(Relaxed),
                frames_out: s.written.load(Relaxed),
                dropped: s.dropped.load(Relaxed),
                reconnects: s.reconnects.load(Relaxed),
                packets_lost: s.packets_lost.load(Relaxed),
                loss_percent: s.loss_percent(),
                frames_damaged: s.damaged.load(Relaxed),
                viewers: ch.viewers(),
                encoders: s.encoders.load(Relaxed),
                verdict: ch.latest(),
            }
        })
        .collect();
    axum::Json(list).into_response()
}

async fn api_history(State(site): State<Site>, UrlPath(name): UrlPath<String>) -> Response {
    match hub(&site).channel(&name) {
        Some(ch) => (
            [(header::CONTENT_TYPE, "application/json")],
            ch.history(hub::HISTORY),
        )
            .into_response(),
        None => not_found(&format!("no stream named {name}")),
    }
}

#[derive(Serialize)]
struct RecordingJson {
    id: usize,
    stream: String,
    file: String,
    url: String,
    bytes: u64,
    started_ms: u128,
    metadata_url: Option<String>,
    begins_at: f64,
}

async fn api_recordings(State(site): State<Site>) -> Response {
    let recordings = &hub(&site).recordings;
    let list: Vec<RecordingJson> = recordings
        .existing()
        .into_iter()
        .map(|(id, r)| {
            let file = r
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            RecordingJson {
                id,
                stream: r.stream.clone(),
                url: format!("/recordings/{id}/{file}"),
                metadata_url: recordings
                    .metadata(r.index)
                    .map(|_| format!("/recordings/{id}/metadata.jsonl")),
                file,
                bytes: std::fs::metadata(&r.path).map(|m| m.len()).unwrap_or(0),
                started_ms: r
                    .started
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
                begins_at: r.begins_at,
            }
        })
        .collect();
    axum::Json(list).into_response()
}

/// A recorded file (or its stream's metadata lines) by its number and name: nothing a
/// request names reaches a path the run did not write. Range requests get 206.
async fn recording_file(
    State(site): State<Site>,
    UrlPath((id, file)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    let gone = || not_found("no such recording; the run's files are listed at /recordings");
    let recordings = &hub(&site).recordings;
    let Some(r) = id.parse::<usize>().ok().and_then(|id| recordings.get(id)) else {
        return gone();
    };
    let name = r.path.file_name().map(|f| f.to_string_lossy().into_owned());
    let path = match (file.as_str(), recordings.metadata(r.index)) {
        ("metadata.jsonl", Some(m)) => m,
        (f, _) if Some(f) == name.as_deref() => r.path.clone(),
        _ => return gone(),
    };
    if !path.is_file() {
        return gone();
    }
    match tower_http::services::ServeFile::new(path)
        .oneshot(req)
        .await
    {
        Ok(resp) => resp.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// A viewer: the stream's fMP4 and verdicts, from the hub's bounded queue, until either
/// side ends.
async fn live(
    State(site): State<Site>,
    UrlPath(name): UrlPath<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(channel) = hub(&site).channel(&name).cloned() else {
        return not_found(&format!("no stream named {name}"));
    };
    ws.on_upgrade(move |socket| watch(socket, channel.join()))
}

async fn watch(mut socket: WebSocket, mut rx: tokio::sync::mpsc::Receiver<Message>) {
    loop {
        tokio::select! {
            m = rx.recv() => {
                let msg = match m {
                    Some(Message::Video(b)) => WsMessage::Binary(b),
                    Some(Message::Text(t)) => WsMessage::Text((*t).into()),
                    None => break, // the stream ended, or this viewer stopped reading
                };
                if socket.send(msg).await.is_err() {
                    break;
                }
            }
            r = socket.recv() => match r {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(WsMessage::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_checked_exactly() {
        use base64::Engine;
        let c = Credentials {
            user: "viewer".into(),
            password: "s3cret".into(),
        };
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, &c));
        let good = base64::engine::general_purpose::STANDARD.encode("viewer:s3cret");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {good}").parse().unwrap(),
        );
        assert!(authorized(&h, &c));
        let bad = base64::engine::general_purpose::STANDARD.encode("viewer:s3cre");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {bad}").parse().unwrap(),
        );
        assert!(!authorized(&h, &c));
    }
}
