//! The ONVIF services on the sidecar: `POST /onvif/device_service` and
//! `POST /onvif/media_service`. This side knows the running streams and where the client reached
//! us; `output::onvif` does the SOAP.

use axum::body::Body;
use axum::extract::{Path as AxumPath, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::Shared;
use super::auth::{Doors, Rule};
use crate::access::{Action, Denied, Door, Principal};
use crate::config::Profile264;
use crate::output::onvif::audio::AudioProfile;
use crate::output::onvif::events::EVENTS_PATH;
use crate::output::onvif::soap::{Fault, MAX_MESSAGE};
use crate::output::onvif::{DEVICE_PATH, MEDIA_PATH, MediaProfile, Reached};
use crate::stream::audio::{Audio, AudioCodec};

/// The ONVIF routes. The door is open at the HTTP level: what a request may do depends on its
/// SOAP operation and the credentials inside the envelope (WS-UsernameToken) or in HTTP Basic,
/// decided by `output::onvif` through the same `Access::check` (`Door::Onvif`).
pub(super) fn routes(d: &mut Doors) {
    let rule = Rule::http(Action::Public).at(Door::Onvif);
    d.route(DEVICE_PATH, "POST", rule, post(device))
        .route(MEDIA_PATH, "POST", rule, post(media))
        .route(EVENTS_PATH, "POST", rule, post(events))
        .route(SUBSCRIPTION_ROUTE, "POST", rule, post(subscription));
}

/// A pull point's route; `output::onvif::events::SUBSCRIPTION_PREFIX` and the number.
const SUBSCRIPTION_ROUTE: &str = "/onvif/subscription/{id}";

async fn events(s: AxumState<Shared>, headers: HeaderMap, body: Body) -> Response {
    serve_with(s, "events", headers, body, Some(None)).await
}

async fn subscription(
    s: AxumState<Shared>,
    AxumPath(id): AxumPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // An id that is not a number names no subscription: it gets the same fault as an ended one.
    let id = crate::output::onvif::events::subscription_id(&id).unwrap_or(0);
    serve_with(s, "events", headers, body, Some(Some(id))).await
}

async fn device(s: AxumState<Shared>, headers: HeaderMap, body: Body) -> Response {
    serve(s, "device", headers, body).await
}

async fn media(s: AxumState<Shared>, headers: HeaderMap, body: Body) -> Response {
    serve(s, "media", headers, body).await
}

fn soap_response(status: u16, body: Vec<u8>) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/soap+xml; charset=utf-8"),
    );
    r
}

/// Host and port from a `Host` header, if it is a plain host name or address.
fn host_port(value: &str) -> Option<(String, Option<u16>)> {
    let ok = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    if value.is_empty() || value.len() > 255 || !value.chars().all(ok) {
        return None;
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (format!("[{h}]"), after.strip_prefix(':'))
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (value.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

fn h264_profile(p: Profile264) -> &'static str {
    match p {
        Profile264::ConstrainedBaseline | Profile264::Baseline => "Baseline",
        Profile264::Main => "Main",
        Profile264::High => "High",
    }
}

/// What ONVIF says of a camera's sound: AAC is what Profile S can name, so an Opus RTSP track
/// has no encoder configuration.
fn audio_profile(a: &Audio) -> AudioProfile {
    let c = a.config();
    AudioProfile {
        channels: c.channels,
        rate_hz: c.rate,
        aac_kbps: (a.rtsp_codec() == AudioCodec::Aac)
            .then(|| crate::stream::audio::encode::bitrate(AudioCodec::Aac, &c) / 1000),
    }
}

/// One profile per encoding of every running stream.
fn profiles(s: &Shared) -> Vec<MediaProfile> {
    let mut out = Vec::new();
    for camera in s.control.cameras() {
        let c = camera.config();
        let audio = camera.audio().map(|a| audio_profile(&a));
        for e in &camera.encodings {
            let (width, height) = c.picture_size(&e.name).unwrap_or((e.width, e.height));
            let bitrate = c
                .renditions
                .iter()
                .find(|r| r.name == e.name)
                .map_or(c.encoder.bitrate_kbps, |r| r.bitrate_kbps);
            out.push(MediaProfile {
                name: e.name.clone(),
                camera: camera.name.clone(),
                mount: e.mount.clone(),
                width,
                height,
                fps: e.fps,
                bitrate_kbps: bitrate,
                gop: c.encoder.keyframe_interval,
                h264_profile: h264_profile(c.encoder.profile),
                source_size: (c.video.width, c.video.height),
                audio: audio.clone(),
            });
        }
    }
    out
}

async fn serve(
    s: AxumState<Shared>,
    service: &'static str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_with(s, service, headers, body, None).await
}

/// Serves one SOAP request; `events` is `Some(subscription)` for the event service and its
/// pull points (answered asynchronously: PullMessages waits), `None` for device and media.
async fn serve_with(
    AxumState(s): AxumState<Shared>,
    service: &'static str,
    headers: HeaderMap,
    body: Body,
    events: Option<Option<u64>>,
) -> Response {
    let Some(onvif) = s.onvif.clone() else {
        return super::error(StatusCode::NOT_FOUND, "ONVIF is disabled (onvif.enabled)");
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_MESSAGE).await else {
        let f = Fault::malformed(format!("the message is larger than {MAX_MESSAGE} bytes"));
        return soap_response(f.http_status(), f.envelope());
    };
    let config = s.control.config();
    let fallback_host = if config.http.address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        config.http.address.to_string()
    };
    let reached = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(host_port);
    let (host, port) = match reached {
        Some((h, p)) => (h, p.unwrap_or(80)),
        None => (fallback_host, config.http.port),
    };
    let profiles = profiles(&s);
    let at = Reached {
        host: &host,
        http_port: port,
        profiles: &profiles,
    };
    let now = crate::stream::status::unix_now() as i64;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let digest = authorization.is_some_and(|a| a.trim_start().starts_with("Digest"));
    let http = match authorization {
        Some(a) if digest => onvif
            .digest
            .verify(&s.access, a, "POST", now)
            .ok_or(Denied::Unauthenticated),
        _ => super::auth::principal(&s, &headers),
    };
    let answer = match events {
        Some(subscription) => {
            onvif
                .handle_events(&bytes, &at, now, http, subscription)
                .await
        }
        None => onvif.handle(service, &bytes, &at, now, http),
    };
    let mut r = soap_response(answer.status, answer.body);
    // A client that brought no credentials, or HTTP Digest ones that did not prove an account
    // (a stale nonce too), gets a Digest challenge: 401, as HTTP authentication expects. A
    // WS-UsernameToken client keeps its SOAP fault.
    let token = bytes.windows(13).any(|w| w == b"UsernameToken");
    // An empty body without credentials is how HTTP clients (curl --digest) ask for one.
    let closed = s
        .access
        .check(&Principal::Anonymous, Door::Onvif, None, Action::View)
        .is_err();
    let asks = bytes.is_empty() && authorization.is_none() && closed;
    if (answer.unauthorized || asks) && (digest || (authorization.is_none() && !token)) {
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        if let Ok(v) = HeaderValue::from_str(&onvif.digest.challenge(now)) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers() {
        assert_eq!(
            host_port("10.0.0.5:8080"),
            Some(("10.0.0.5".into(), Some(8080)))
        );
        assert_eq!(host_port("cam.lan"), Some(("cam.lan".into(), None)));
        assert_eq!(host_port("[::1]:80"), Some(("[::1]".into(), Some(80))));
        assert_eq!(host_port("evil/x:1"), None);
        assert_eq!(host_port("a:b"), None);
    }
}
