//! WHEP (`POST /whep/{stream}`, `DELETE`/`PATCH` on the session) and the web page (`/`,
//! `/view/{stream}`, its script and style, embedded in the binary).
//!
//! WHEP follows the stream's access rules: when RTSP accounts exist, a viewer's user name and
//! password (HTTP Basic) or the HTTP bearer token is needed; without accounts the stream is
//! open, as it is over RTSP. The page itself holds nothing secret and is always served; the data
//! it reads comes from the protected API.

use std::net::IpAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{Shared, error, same_secret};
use crate::output::webrtc::{self, OfferError, WhepError};

/// Largest SDP offer accepted (a browser's is 3 to 10 KiB).
const MAX_OFFER: usize = 64 * 1024;
/// Bound on resolving the Host name a browser used.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

const INDEX_HTML: &str = include_str!("web/index.html");
const VIEW_HTML: &str = include_str!("web/view.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// The WHEP routes.
pub(super) fn whep() -> Router<Shared> {
    Router::new()
        .route("/whep/{stream}", post(offer).options(options))
        .route(
            "/whep/{stream}/{id}",
            axum::routing::delete(delete).patch(patch),
        )
}

/// The page and its assets.
pub(super) fn page() -> Router<Shared> {
    Router::new()
        .route("/", get(index))
        .route("/view/{stream}", get(view))
        .route(
            "/web/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route(
            "/web/style.css",
            get(|| async { asset("text/css", STYLE_CSS) }),
        )
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
        .replace("__WEBRTC__", if enabled { "true" } else { "false" });
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index(AxumState(s): AxumState<Shared>) -> Response {
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

/// Whether the request may watch: the bearer token, or an RTSP account over Basic, or no
/// accounts at all (an open stream).
fn allowed(s: &Shared, headers: &HeaderMap) -> bool {
    // merge: goes into http::auth (the page's session may watch).
    if !headers.contains_key(header::AUTHORIZATION) && s.sessions.principal(headers).is_some() {
        return true;
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if let (Some(t), Some(given)) = (&s.token, auth.and_then(|a| a.strip_prefix("Bearer ")))
        && same_secret(given.trim().as_bytes(), t.0.as_bytes())
    {
        return true;
    }
    let config = s.control.config();
    let users = match config.users() {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "WHEP refused: the accounts cannot be read");
            return false;
        }
    };
    if users.is_empty() {
        return true;
    }
    let Some(raw) = auth
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| crate::output::rtsp::auth::decode_base64(b.trim()))
    else {
        return false;
    };
    let Ok(pair) = String::from_utf8(raw) else {
        return false;
    };
    let Some((user, password)) = pair.split_once(':') else {
        return false;
    };
    users.iter().any(|u| {
        same_secret(u.username.as_bytes(), user.as_bytes())
            & same_secret(u.password.0.as_bytes(), password.as_bytes())
    })
}

fn unauthorized() -> Response {
    webrtc::reject("unauthorized");
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "this stream needs a viewer account (HTTP Basic, as for RTSP) or the HTTP bearer token",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"camstream\", charset=\"UTF-8\""),
    );
    r
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
    req: Request,
) -> Response {
    let Some(server) = s.webrtc.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "WebRTC is off: webrtc.enabled = false, or its UDP port could not be opened (see the log)",
        );
    };
    let headers = req.headers().clone();
    if !allowed(&s, &headers) {
        return unauthorized();
    }
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
    let Some((_, enc, _)) = s.control.encoding(&stream) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no stream named {stream:?}"),
        );
    };
    let host = host_ip(&headers).await;
    match server.create(enc.hub.clone(), sdp, host).await {
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
            };
            tracing::warn!(stream = %stream, error = %e, "WebRTC offer refused");
            error(code, &e.to_string())
        }
    }
}

async fn delete(
    AxumState(s): AxumState<Shared>,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !allowed(&s, &headers) {
        return unauthorized();
    }
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
