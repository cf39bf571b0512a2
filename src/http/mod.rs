//! The HTTP sidecar: liveness, readiness, Prometheus metrics, status and snapshots.
//!
//! Served by [`listener`] (hyper directly, not `axum::serve`) so that each connection gets a
//! deadline from accept, a small header buffer and a place under connection caps that cannot
//! starve the probes: a slow or hostile HTTP client must not tie up a board that exists to
//! stream video.

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
use metrics::counter;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

use crate::access::{Action, Door, Principal};
use crate::control::Control;
use crate::metrics::names;
use crate::output::rtsp::Heartbeat;
use crate::output::snapshot::{SNAPSHOT_TIMEOUT, allowed_widths, scaled_height};
use auth::{Doors, Rule, StreamOf};

pub mod auth;
pub(crate) mod body;
mod hls; // HLS (issue #28)
mod host;
pub mod listener;
// Motion detection's picture route.
mod mjpeg;
mod motion;
mod onvif;
mod push;
mod recordings;
pub mod session;

pub use recordings::fuzz_range;
mod streams;
pub(crate) mod trends;
mod webrtc;

pub use listener::serve;

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
/// Oldest pulse of the GLib loop that still counts as alive.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest query string accepted.
const MAX_QUERY: usize = 256;

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
    /// The accounts, tokens and the rule for visitors: every route's check.
    pub access: Arc<crate::access::Access>,
    /// Whether the RTSP server runs (false once shutdown began).
    pub rtsp_running: Arc<AtomicBool>,
    /// The WebRTC (WHEP) server, when enabled.
    pub webrtc: Option<Arc<crate::output::webrtc::Server>>,
    /// The frame analysis, when `[analysis]` is enabled.
    pub analysis: Option<crate::analysis::Analysis>,
    /// The ONVIF services, when `[onvif]` is enabled.
    pub onvif: Option<Arc<crate::output::onvif::Onvif>>,
    /// The page's signed-in sessions.
    pub sessions: Arc<session::Sessions>,
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

/// Builds the router for one listener: every route with its rule ([`Doors`]), the host check
/// against DNS rebinding and the request bounds.
pub fn router(shared: Shared, part: Part) -> Router {
    let allowed = Arc::new(host::Allowed::from_config(&shared.control.config().http));
    let doors = doors(shared.clone(), part);
    for d in doors.declared() {
        tracing::debug!(
            path = d.path,
            methods = d.methods,
            door = d.rule.door.as_str(),
            action = d.rule.action.as_str(),
            "HTTP route"
        );
    }
    doors
        .into_router()
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            session::cross_site,
        ))
        .layer(middleware::from_fn_with_state(allowed, host::check))
        .layer(middleware::from_fn(guard))
        .with_state(shared)
}

/// Every route of one listener with its rule.
pub fn doors(shared: Shared, part: Part) -> Doors {
    let onvif = shared.onvif.is_some();
    let mut d = Doors::new(shared);
    if part != Part::Api {
        d.route("/healthz", "GET", Rule::http(Action::Probe), get(healthz))
            .route("/readyz", "GET", Rule::http(Action::Probe), get(readyz))
            .route("/metrics", "GET", Rule::http(Action::Metrics), get(metrics));
    }
    if part != Part::Public {
        d.route(
            "/api/v1/status",
            "GET",
            Rule::http(Action::View),
            get(status),
        )
        .route(
            "/snapshot.jpg",
            "GET",
            Rule::http(Action::View).on(StreamOf::Query),
            get(snapshot),
        );
        streams::routes(&mut d);
        push::routes(&mut d);
        recordings::routes(&mut d);
        trends::routes(&mut d);
        session::routes(&mut d);
        webrtc::whep(&mut d);
        webrtc::page(&mut d);
        // Motion detection.
        motion::routes(&mut d);
        mjpeg::routes(&mut d);
        hls::routes(&mut d); // HLS (issue #28)
    }
    if part != Part::Api && onvif {
        onvif::routes(&mut d);
    }
    d
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
    (code, Json(body::ErrorBody { error: message })).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn healthz(AxumState(s): AxumState<Shared>) -> Response {
    let alive = s.heartbeat.recent(HEARTBEAT_TIMEOUT);
    let code = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if alive { "alive" } else { "wedged" },
        checks: HealthChecks { glib_loop: alive },
    };
    (code, Json(body)).into_response()
}

/// The answer of `/healthz`.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    checks: HealthChecks,
}

/// What `/healthz` checked.
#[derive(Serialize)]
struct HealthChecks {
    glib_loop: bool,
}

/// The answer of `/readyz`.
#[derive(Serialize)]
struct Ready {
    status: &'static str,
    checks: ReadyChecks,
    streams: std::collections::BTreeMap<String, bool>,
    state: Option<&'static str>,
    last_frame_age_ms: Option<u64>,
}

/// What `/readyz` checked.
#[derive(Serialize)]
struct ReadyChecks {
    rtsp_listening: bool,
    camera_streaming: bool,
}

async fn readyz(AxumState(s): AxumState<Shared>) -> Response {
    let rtsp = s.rtsp_running.load(Ordering::Relaxed) && s.heartbeat.recent(HEARTBEAT_TIMEOUT);
    let required = s.control.required_streaming();
    let streaming = required.iter().all(|(_, ok)| *ok);
    let ready = rtsp && streaming;
    let streams: std::collections::BTreeMap<String, bool> = required.into_iter().collect();
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
    let body = Ready {
        status: if ready { "ready" } else { "not_ready" },
        checks: ReadyChecks {
            rtsp_listening: rtsp,
            camera_streaming: streaming,
        },
        streams,
        state,
        last_frame_age_ms: age_ms,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(AxumState(s): AxumState<Shared>) -> Response {
    let mut text = s.prometheus.render();
    text.push_str(&crate::process_metrics::render());
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Whether `who` sees the full status and configuration (admins) or the redacted view.
pub(crate) fn sees_everything(s: &Shared, who: &Principal) -> bool {
    s.access.check(who, Door::Http, None, Action::Admin).is_ok()
}

/// The view of the status for everyone but admins: no configuration, no pipeline strings, hook
/// arguments or URLs beyond scheme and host (push stream keys, webhooks, the analysis URL), no
/// viewer addresses.
pub(crate) fn redact_for_viewers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for key in ["config", "settings", "address", "args", "pipeline"] {
                map.remove(key);
            }
            if let Some(Value::String(source)) = map.get_mut("source")
                && source.starts_with("pipeline")
            {
                // A pipeline source says only its kind; a camera's name or device stays.
                *source = "pipeline".to_string();
            }
            for (_, child) in map.iter_mut() {
                redact_for_viewers(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_for_viewers),
        Value::String(text) => {
            if let Some(short) = scheme_and_host(text) {
                *text = short;
            }
            *text = without_property_values(text);
        }
        _ => {}
    }
}

/// The answer to a change the control path refused: which stream, key or property, never its
/// value (a pipeline's paths, keys, URLs).
pub(crate) fn refused_change(e: crate::control::ControlError) -> Response {
    use crate::control::ControlError;
    match e {
        ControlError::NotFound(n) => {
            error(StatusCode::NOT_FOUND, &format!("no stream named {n:?}"))
        }
        e @ ControlError::Invalid(_) => error(
            StatusCode::BAD_REQUEST,
            &without_property_values(&e.to_string()),
        ),
        e => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &without_property_values(&e.to_string()),
        ),
    }
}

/// `text` with the values of GStreamer-style `property=value` words cut out (`location=…`), so
/// an error message shows which property, never what it was set to (a path, a key, a URL).
pub(crate) fn without_property_values(text: &str) -> String {
    if !text.contains('=') {
        return text.to_string();
    }
    text.split(' ')
        .map(|word| match word.split_once('=') {
            Some((key, value))
                if !key.is_empty()
                    && !value.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) =>
            {
                format!("{key}=…")
            }
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `scheme://host[:port]` of a string that holds a URL anywhere (e.g. "srt://h:9000?streamid=…
/// (disabled)"), or `None` when it holds none.
fn scheme_and_host(text: &str) -> Option<String> {
    let at = text.find("://")?;
    let scheme_start = text[..at]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
        .map_or(0, |i| i + 1);
    let rest = &text[at + 3..];
    let end = rest
        .find(|c: char| "/?# ".contains(c))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(format!(
        "{}{}://{host}",
        &text[..scheme_start],
        &text[scheme_start..at]
    ))
}

async fn status(AxumState(s): AxumState<Shared>, who: axum::Extension<Principal>) -> Response {
    let cameras = s.control.cameras();
    let streams: Vec<serde_json::Value> =
        cameras.iter().map(|c| streams::describe(&s, c)).collect();
    // The first stream's fields stay at the top level, as before several streams existed.
    let first = streams.first().cloned().unwrap_or(serde_json::Value::Null);
    let mut body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "gstreamer": gst::version_string().to_string(),
        "uptime_s": s.started.elapsed().as_secs(),
        "access": if s.access.is_open() { "open" } else { "protected" },
        "role": who.role().map(|r| r.as_str()),
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
    if !sees_everything(&s, &who) {
        redact_for_viewers(&mut body);
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
    answer_snapshot(&s, q.stream, q.width).await
}

/// A JPEG of stream `name` (the first stream when `None`) at `width` (its own when `None`).
pub(crate) async fn answer_snapshot(
    s: &Shared,
    name: Option<String>,
    width: Option<u32>,
) -> Response {
    let name = match name {
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
    let width = width.unwrap_or(sw);
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
    let made = tokio::time::timeout(SNAPSHOT_TIMEOUT, snapshots.snapshot(width, height)).await;
    match made {
        Ok(Ok(jpeg)) => {
            count(if jpeg.shared { "shared" } else { "encoded" });
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
                tracing::warn!(stream = %name, width, suppressed, "Snapshot timed out: the camera delivered no raw picture");
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
    let bind = || -> std::io::Result<TcpListener> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        // A connect burst (1000 sockets at once) must not overflow the accept queue: a dropped
        // SYN makes a probe wait a second for its retry. The kernel caps this at somaxconn.
        s.listen(LISTEN_BACKLOG)?;
        s.set_nonblocking(true)?;
        TcpListener::from_std(s.into())
    };
    bind().map_err(|source| HttpError::Bind { addr, source })
}

/// The sidecar's accept queue (tokio's default is 1024).
const LISTEN_BACKLOG: i32 = 4096;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn viewers_see_no_urls_paths_or_property_values() {
        let mut v = json!({
            "config": {"source": {"pipeline": "filesrc location=/etc/shadow"}},
            "source": "pipeline: filesrc location=/etc/shadow ! decodebin",
            "last_error": {"message": "Could not open: filesrc0 location=/etc/shadow"},
            "outputs": [{"detail": "srt://user:pw@192.0.2.1:9000?streamid=key (disabled)"}],
            "viewers": [{"address": "192.0.2.7", "playing": true}],
        });
        redact_for_viewers(&mut v);
        let text = v.to_string();
        for secret in [
            "/etc/shadow",
            "streamid",
            "key",
            "user:pw",
            "192.0.2.7",
            "config",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("srt://192.0.2.1:9000"), "{text}");
        assert!(text.contains("location=…"), "{text}");
        assert_eq!(
            without_property_values("encoder.bitrate_kbps = 50 is outside 100 to 20000"),
            "encoder.bitrate_kbps = 50 is outside 100 to 20000"
        );
    }
}
