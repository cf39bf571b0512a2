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
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::output::rtsp::{Heartbeat, Viewers};
use crate::output::snapshot::{GopCache, SNAPSHOT_TIMEOUT, Snapshotter, scaled_height};
use crate::stream::capture::FrameStats;
use crate::stream::supervisor::{self, State, Status};

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
    /// Effective configuration (secrets are redacted before it is shown).
    pub config: Arc<Config>,
    /// Supervisor state.
    pub status: watch::Receiver<Status>,
    /// Frame counters.
    pub stats: Arc<FrameStats>,
    /// RTSP liveness check.
    pub heartbeat: Heartbeat,
    /// Whether the RTSP server is bound and running.
    pub rtsp_listening: Arc<AtomicBool>,
    /// Connected RTSP clients.
    pub viewers: Arc<Viewers>,
    /// Prometheus renderer.
    pub prometheus: PrometheusHandle,
    /// Access units for snapshots.
    pub gop: Arc<GopCache>,
    /// Snapshot maker.
    pub snapshots: Arc<Snapshotter>,
    /// Process start.
    pub started: Instant,
    /// Bearer token for protected endpoints, if configured.
    pub token: Option<crate::config::Secret>,
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
    let h = &shared.config.http;
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
        .route("/snapshot.jpg", get(snapshot));
    let mut r = Router::new();
    if part != Part::Api {
        r = r
            .merge(protect(probes, h.protect_probes))
            .merge(protect(metrics_route, h.protect_metrics));
    }
    if part != Part::Public {
        r = r.merge(protect(api, true));
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

fn error(code: StatusCode, message: &str) -> Response {
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

/// Whether frames are flowing: the last one is younger than the stall window.
fn flowing(s: &Shared) -> (bool, Option<u128>) {
    let age = s.stats.last_frame_age();
    let window = Duration::from_millis(s.config.supervisor.stall_timeout_ms);
    let streaming = matches!(s.status.borrow().state, State::Streaming);
    (
        streaming && age.is_some_and(|a| a < window),
        age.map(|a| a.as_millis()),
    )
}

async fn readyz(AxumState(s): AxumState<Shared>) -> Response {
    let rtsp = s.rtsp_listening.load(Ordering::Relaxed);
    let (camera, age_ms) = flowing(&s);
    let ready = rtsp && camera;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "rtsp_listening": rtsp, "camera_streaming": camera },
        "last_frame_age_ms": age_ms,
        "state": s.status.borrow().state.name(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(AxumState(s): AxumState<Shared>) -> Response {
    let age = s
        .stats
        .last_frame_age()
        .map(|d| d.as_secs_f64())
        .unwrap_or(-1.0);
    // Fresh at scrape time rather than up to a second old.
    metrics::gauge!(crate::metrics::names::LAST_FRAME_AGE).set(age);
    let mut r = s.prometheus.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn status(AxumState(s): AxumState<Shared>) -> Response {
    let st = s.status.borrow().clone();
    let (_, age_ms) = flowing(&s);
    let backoff = match &st.state {
        State::Backoff {
            attempt,
            reason,
            delay_ms,
        } => json!({ "attempt": attempt, "reason": reason, "delay_ms": delay_ms }),
        _ => serde_json::Value::Null,
    };
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "gstreamer": gst::version_string().to_string(),
        "state": st.state.name(),
        "backoff": backoff,
        "h264_level": s.config.effective_level().ok().map(|l| l.as_str()),
        "uptime_s": s.started.elapsed().as_secs(),
        "source": st.source,
        "encoder": st.encoder,
        "restarts": st.restarts,
        "last_error": st.last_error,
        "frames": {
            "encoded": s.stats.frames(),
            "keyframes": s.stats.keyframes(),
            "bytes": s.stats.bytes(),
            "last_frame_age_ms": age_ms,
        },
        "viewers": s.viewers.list(),
        "config": s.config.redacted(),
    });
    Json(body).into_response()
}

/// `/snapshot.jpg` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotQuery {
    width: Option<u32>,
}

async fn snapshot(
    AxumState(s): AxumState<Shared>,
    q: Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query: the only parameter is width, a whole number of pixels",
        );
    };
    let (sw, sh) = (s.config.video.width, s.config.video.height);
    let width = q.width.unwrap_or(sw);
    if !(16..=sw).contains(&width) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("width must be between 16 and the stream width ({sw})"),
        );
    }
    let width = width & !1;
    let height = if width == sw {
        sh
    } else {
        scaled_height(sw, sh, width)
    };
    let made = tokio::time::timeout(
        SNAPSHOT_TIMEOUT,
        s.snapshots.snapshot(s.gop.clone(), width, height),
    )
    .await;
    match made {
        Ok(Ok(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            jpeg.data,
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "snapshot timed out"),
    }
}

/// Binds the sidecar; `serve` then runs it.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves until shutdown, then lets in-flight requests finish for a moment.
pub async fn serve(listener: TcpListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = supervisor::wait_shutdown(&mut shutdown) => break,
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
            _ = supervisor::wait_shutdown(&mut shutdown) => break,
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
