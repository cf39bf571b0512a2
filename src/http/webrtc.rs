//! WHEP (`POST /whep/{stream}`, `DELETE`/`PATCH` on the session) and the web page (`/`,
//! `/view/{stream}`, its script and style, embedded in the binary).
//!
//! WHEP is a door like RTSP (`Door::Webrtc`, `view` on the stream): an account over HTTP Basic,
//! an API token, or the page's session, unless `access.anonymous = view`. The page itself holds
//! nothing secret and is always served; the data it reads comes from the protected API.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::auth::{Doors, Rule, StreamOf};
use super::{Shared, error};
use crate::access::{Action, Door};
use crate::output::webrtc::{OfferError, WhepError};

/// Largest SDP offer accepted (a browser's is 3 to 10 KiB).
const MAX_OFFER: usize = 64 * 1024;
/// Bound on resolving the Host name a browser used.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

const INDEX_HTML: &str = include_str!("web/index.html");
const VIEW_HTML: &str = include_str!("web/view.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");
const TREND_JS: &str = include_str!("web/trend.js");

/// The WHEP routes: watching over WebRTC is `view` on the stream at the WebRTC door (the same
/// rule as RTSP); the capability query is open.
pub(super) fn whep(d: &mut Doors) {
    let watch = Rule::http(Action::View)
        .at(Door::Webrtc)
        .on(StreamOf::Path("stream"));
    d.route("/whep/{stream}", "POST", watch, post(offer))
        .route(
            "/whep/{stream}",
            "OPTIONS",
            Rule::http(Action::Public).at(Door::Webrtc),
            axum::routing::options(options),
        )
        .route(
            "/whep/{stream}/{id}",
            "DELETE, PATCH",
            watch,
            axum::routing::delete(delete).patch(patch),
        );
}

/// The page and its assets: open, they hold nothing secret (the data comes from the API).
pub(super) fn page(d: &mut Doors) {
    let public = Rule::http(Action::Public);
    // mjpg-streamer's `/?action=stream|snapshot` share the page's path, behind the View rule.
    d.route_by_query(
        "/",
        "GET",
        public,
        "action",
        Rule::http(Action::View).on(super::auth::StreamOf::Query),
        &["/?action=stream", "/?action=snapshot"],
        get(super::mjpeg::root),
    )
    .route("/view/{stream}", "GET", public, get(view))
    .route(
        "/web/app.js",
        "GET",
        public,
        get(|| async { asset("text/javascript", APP_JS) }),
    )
    .route(
        "/web/trend.js",
        "GET",
        public,
        get(|| async { asset("text/javascript", TREND_JS) }),
    )
    .route(
        "/web/style.css",
        "GET",
        public,
        get(|| async { asset("text/css", STYLE_CSS) }),
    );
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The page with the ICE servers the configuration names filled in.
fn html(s: &Shared, template: &str) -> Response {
    let config = s.control.config();
    let ice = serde_json::to_string(&config.webrtc.ice_servers).unwrap_or_else(|_| "[]".into());
    // `</` cannot end the script element early inside a JSON string.
    let ice = ice.replace("</", "<\\/");
    let enabled = s.webrtc.is_some();
    let body = template
        .replace("__ICE_SERVERS__", &ice)
        .replace("__WEBRTC__", if enabled { "true" } else { "false" })
        // HLS (issue #28): whether the page may fall back to the browser's own HLS player.
        .replace(
            "__HLS__",
            if config.hls.mode == crate::config::HlsMode::Off {
                "false"
            } else {
                "true"
            },
        );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The page.
pub(super) async fn index(AxumState(s): AxumState<Shared>) -> Response {
    html(&s, INDEX_HTML)
}

async fn view(AxumState(s): AxumState<Shared>, Path(stream): Path<String>) -> Response {
    if s.control.encoding(&stream).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no stream named {stream:?}"),
        );
    }
    html(&s, VIEW_HTML)
}

/// The IP address in a `Host` header, resolved if it is a name.
async fn host_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let host = headers.get(header::HOST)?.to_str().ok()?.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(ip);
    }
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, 0)))
        .await
        .ok()?
        .ok()?;
    found.map(|a| a.ip()).find(IpAddr::is_ipv4)
}

fn link_headers(s: &Shared, r: &mut Response) {
    for url in s.control.config().webrtc.ice_servers.iter() {
        if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"ice-server\"")) {
            r.headers_mut().append(header::LINK, v);
        }
    }
}

async fn options(AxumState(s): AxumState<Shared>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    r.headers_mut()
        .insert("Accept-Post", HeaderValue::from_static("application/sdp"));
    link_headers(&s, &mut r);
    r
}

async fn offer(
    AxumState(s): AxumState<Shared>,
    Path(stream): Path<String>,
    connection: Option<axum::Extension<crate::http::listener::Connection>>,
    axum::Extension(who): axum::Extension<crate::access::Principal>,
    req: Request,
) -> Response {
    let peer = connection.map(|axum::Extension(c)| c.peer);
    let Some(server) = s.webrtc.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "WebRTC is off: webrtc.enabled = false, or its UDP port could not be opened (see the log)",
        );
    };
    let headers = req.headers().clone();
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/sdp"));
    if !is_sdp {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a WHEP offer is sent as Content-Type: application/sdp",
        );
    }
    let body: Bytes = match axum::body::to_bytes(req.into_body(), MAX_OFFER).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("offer larger than {MAX_OFFER} bytes"),
            );
        }
    };
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text");
    };
    let Some((camera, enc, _)) = s.control.encoding(&stream) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no stream named {stream:?}"),
        );
    };
    let host = host_ip(&headers).await;
    // The camera's sound, for every encoding of it: the browser gets it when it asks.
    let opus = camera
        .audio()
        .map(|a| a.hub(crate::stream::audio::AudioCodec::Opus));
    // Let in without an account (an open stream): capped by webrtc.max_anonymous.
    let anonymous = matches!(who, crate::access::Principal::Anonymous);
    let source = peer.map(|p| p.ip());
    match server
        .create(enc.hub.clone(), opus, sdp, host, source, anonymous)
        .await
    {
        Ok(created) => {
            let location = format!("/whep/{stream}/{}", created.id);
            let mut r = (StatusCode::CREATED, created.sdp).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            link_headers(&s, &mut r);
            r
        }
        Err(e) => {
            let code = match &e {
                WhepError::Offer(OfferError::Profile { .. }) => StatusCode::NOT_ACCEPTABLE,
                WhepError::Offer(OfferError::NoPicture(_)) => StatusCode::SERVICE_UNAVAILABLE,
                WhepError::Offer(_) => StatusCode::BAD_REQUEST,
                WhepError::Full(_) | WhepError::Stopped | WhepError::Feed(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                WhepError::NoAddress => StatusCode::INTERNAL_SERVER_ERROR,
                WhepError::Busy(_) => {
                    // Rate-capped in the server: an offer flood must not flood the log.
                    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    return r;
                }
            };
            tracing::warn!(stream = %stream, error = %e, "WebRTC offer refused");
            let mut r = error(code, &e.to_string());
            if matches!(e, WhepError::Full(_)) {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            r
        }
    }
}

async fn delete(
    AxumState(s): AxumState<Shared>,
    Path((stream, id)): Path<(String, String)>,
) -> Response {
    match &s.webrtc {
        Some(w) if w.delete(&stream, &id) => StatusCode::OK.into_response(),
        _ => error(StatusCode::NOT_FOUND, "no such WebRTC session"),
    }
}

/// Trickle ICE is not needed: the server is ICE-lite and learns the browser's address from its
/// connectivity checks, so every candidate arrives in time without a PATCH.
async fn patch() -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not used: send the offer after gathering (or without candidates); the \
         server learns the browser's address from its connectivity checks",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE"));
    r
}
