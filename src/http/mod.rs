//! The HTTP sidecar: liveness, readiness, Prometheus metrics, status and snapshots.
//!
//! Served with hyper directly (not `axum::serve`) so that each connection gets a header read
//! timeout, a small header buffer and a place under a connection cap: a slow or hostile HTTP
//! client must not tie up a board that exists to stream video.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::counter;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::control::Control;
use crate::metrics::names;
use crate::output::rtsp::Heartbeat;
use crate::output::snapshot::{SNAPSHOT_TIMEOUT, allowed_widths, scaled_height};

mod onvif;
mod push;
mod recordings;
mod streams;
mod webrtc;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Longest a request may take before it is answered 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the liveness heartbeat through the GLib loop.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// Concurrent HTTP connections; more wait in the kernel backlog.
const MAX_CONNECTIONS: usize = 64;
/// Longest query string accepted.
const MAX_QUERY: usize = 256;
/// Read buffer per connection, which bounds request headers (larger gets 431).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What the handlers read.
#[derive(Clone)]
pub struct Shared {
    /// The running streams and the door for changing them.
    pub control: Arc<Control>,
    /// RTSP liveness check.
    pub heartbeat: Heartbeat,
    /// Prometheus renderer.
    pub prometheus: PrometheusHandle,
    /// Process start.
    pub started: Instant,
    /// Bearer token for protected endpoints, if configured.
    pub token: Option<crate::config::Secret>,
    /// Whether the RTSP server runs (false once shutdown began).
    pub rtsp_running: Arc<AtomicBool>,
    /// The WebRTC (WHEP) server, when enabled.
    pub webrtc: Option<Arc<crate::output::webrtc::Server>>,
    /// The frame analysis, when `[analysis]` is enabled.
    pub analysis: Option<crate::analysis::Analysis>,
    /// The ONVIF services, when `[onvif]` is enabled.
    pub onvif: Option<Arc<crate::output::onvif::Onvif>>,
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything (one listener).
    All,
    /// Probes and metrics only (when the API has its own listener).
    Public,
    /// `/api/*` and `/snapshot.jpg` only.
    Api,
}

/// Builds the router for one listener.
pub fn router(shared: Shared, part: Part) -> Router {
    let config = shared.control.config();
    let h = &config.http;
    let protect = |r: Router<Shared>, on: bool| match (&shared.token, on) {
        (Some(t), true) => r.route_layer(middleware::from_fn_with_state(t.clone(), require_token)),
        _ => r,
    };
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let metrics_route = Router::new().route("/metrics", get(metrics));
    let api = Router::new()
        .route("/api/v1/status", get(status))
        .route("/snapshot.jpg", get(snapshot))
        .merge(streams::reads())
        .merge(recordings::routes());
    // Writes always need the token; without one they say how to enable them.
    let write_routes = streams::writes().merge(push::writes());
    let writes = match &shared.token {
        Some(t) => {
            write_routes.route_layer(middleware::from_fn_with_state(t.clone(), require_token))
        }
        None => write_routes.route_layer(middleware::from_fn(writes_disabled)),
    };
    let mut r = Router::new();
    if part != Part::Api {
        r = r
            .merge(protect(probes, h.protect_probes))
            .merge(protect(metrics_route, h.protect_metrics));
    }
    if part != Part::Public {
        r = r
            .merge(protect(api, true))
            .merge(writes)
            .merge(webrtc::whep())
            .merge(webrtc::page());
    }
    if part != Part::Api && shared.onvif.is_some() {
        r = r.merge(onvif::routes());
    }
    r.fallback(not_found)
        .layer(middleware::from_fn(guard))
        .with_state(shared)
}

/// Byte-wise comparison whose time does not depend on where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// Requires `Authorization: Bearer <token>`.
async fn require_token(
    AxumState(token): AxumState<crate::config::Secret>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same_secret(g.as_bytes(), token.0.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// Answers write requests when no token is configured.
async fn writes_disabled(_req: Request, _next: Next) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "write endpoints are disabled: set http.token (or http.token_file) and send it as \
         'Authorization: Bearer <token>'",
    )
}

/// Rejects oversized query strings and bounds every request's time.
async fn guard(req: Request, next: Next) -> Response {
    if req.uri().query().is_some_and(|q| q.len() > MAX_QUERY) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("query string longer than {MAX_QUERY} bytes"),
        );
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "request timed out"),
    }
}

pub(crate) fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn healthz(AxumState(s): AxumState<Shared>) -> Response {
    let alive = s.heartbeat.beat(HEARTBEAT_TIMEOUT).await;
    let code = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if alive { "alive" } else { "wedged" },
        "checks": { "glib_loop": alive },
    });
    (code, Json(body)).into_response()
}

async fn readyz(AxumState(s): AxumState<Shared>) -> Response {
    let rtsp = s.rtsp_running.load(Ordering::Relaxed) && s.heartbeat.beat(HEARTBEAT_TIMEOUT).await;
    let required = s.control.required_streaming();
    let streaming = required.iter().all(|(_, ok)| *ok);
    let ready = rtsp && streaming;
    let streams: serde_json::Map<String, serde_json::Value> = required
        .into_iter()
        .map(|(n, ok)| (n, serde_json::Value::Bool(ok)))
        .collect();
    // The first stream's state and frame age, as before there were several.
    let first = s.control.cameras().into_iter().next();
    let state = first.as_ref().map(|c| c.status().health.state.name());
    let age_ms = first.as_ref().and_then(|c| {
        c.main()
            .hub
            .stats()
            .last_frame_age()
            .map(|a| a.as_millis() as u64)
    });
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "rtsp_listening": rtsp, "camera_streaming": streaming },
        "streams": streams,
        "state": state,
        "last_frame_age_ms": age_ms,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(AxumState(s): AxumState<Shared>) -> Response {
    let mut r = s.prometheus.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn status(AxumState(s): AxumState<Shared>) -> Response {
    let cameras = s.control.cameras();
    let streams: Vec<serde_json::Value> =
        cameras.iter().map(|c| streams::describe(&s, c)).collect();
    // The first stream's fields stay at the top level, as before several streams existed.
    let first = streams.first().cloned().unwrap_or(serde_json::Value::Null);
    let mut body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "gstreamer": gst::version_string().to_string(),
        "uptime_s": s.started.elapsed().as_secs(),
        "streams": streams,
        "viewers": s.control.rtsp().viewers().list(),
        "config": s.control.config().redacted(),
    });
    if let (Some(b), Some(a)) = (body.as_object_mut(), &s.analysis) {
        b.insert("analysis".into(), json!(a.status()));
    }
    if let (Some(b), Some(f)) = (body.as_object_mut(), first.as_object()) {
        for key in [
            "state",
            "backoff",
            "h264_level",
            "source",
            "encoder",
            "encoder_reason",
            "restarts",
            "last_error",
            "frames",
        ] {
            if let Some(v) = f.get(key) {
                b.insert(key.to_string(), v.clone());
            }
        }
    }
    Json(body).into_response()
}

/// `/snapshot.jpg` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotQuery {
    width: Option<u32>,
    stream: Option<String>,
}

async fn snapshot(
    AxumState(s): AxumState<Shared>,
    q: Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query: the parameters are width (a whole number of pixels) and stream (a name)",
        );
    };
    let name = match q.stream {
        Some(n) => n,
        None => match s.control.cameras().first() {
            Some(c) => c.name.clone(),
            None => return error(StatusCode::SERVICE_UNAVAILABLE, "no stream is running"),
        },
    };
    let Some((cam, enc, snapshots)) = s.control.encoding(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no stream named {name:?}"));
    };
    let (sw, sh) = cam.picture_size(&enc);
    let allowed = allowed_widths(sw);
    let width = q.width.unwrap_or(sw);
    let count = |result: &'static str| {
        counter!(names::SNAPSHOTS, "stream" => name.clone(), "result" => result).increment(1);
    };
    if !allowed.contains(&width) {
        count("refused");
        let list: Vec<String> = allowed.iter().map(u32::to_string).collect();
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "width must be one of {} (snapshots are made at a few sizes only, so requests share them)",
                list.join(", ")
            ),
        );
    }
    let height = if width == sw {
        sh
    } else {
        scaled_height(sw, sh, width)
    };
    // A request that gives up drops its share of the decode; the last one cancels it.
    let made = tokio::time::timeout(
        SNAPSHOT_TIMEOUT,
        snapshots.snapshot(enc.hub.gop().clone(), width, height),
    )
    .await;
    match made {
        Ok(Ok(jpeg)) => {
            count(if jpeg.shared { "shared" } else { "decoded" });
            (
                [
                    (header::CONTENT_TYPE, "image/jpeg"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                jpeg.data,
            )
                .into_response()
        }
        Ok(Err(e)) => {
            count("failed");
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        Err(_) => {
            count("timeout");
            if let Some(suppressed) = SNAPSHOT_LOG.allow(Instant::now()) {
                tracing::warn!(stream = %name, width, suppressed, "Snapshot timed out; its decode is cancelled unless another request shares it");
            }
            error(StatusCode::SERVICE_UNAVAILABLE, "snapshot timed out")
        }
    }
}

/// Timed-out snapshots are logged a few times a minute, then summed up.
static SNAPSHOT_LOG: std::sync::LazyLock<crate::output::rtsp::auth::LogLimiter> =
    std::sync::LazyLock::new(|| {
        crate::output::rtsp::auth::LogLimiter::new(3, Duration::from_secs(60))
    });

/// Binds the sidecar; `serve` then runs it.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves until shutdown, then lets in-flight requests finish for a moment.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_millis(300), graceful.shutdown()).await;
}

#[cfg(test)]
mod tests;
