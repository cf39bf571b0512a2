//! The HLS routes (issue #28): `/hls/{stream}/index.m3u8` (the low-latency media playlist, with
//! blocking reload), `/hls/{stream}/` and `/hls/{stream}/main.m3u8` (the multivariant playlist
//! of the stream's camera), and the init segments, segments and parts the playlists name. Every
//! route is `view` on the stream at the HTTP door, like snapshots and recordings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use super::auth::{Doors, Rule, StreamOf};
use super::{Shared, error};
use crate::access::Action;
use crate::output::hls::playlist::{self, ADVANCE_PARTS, ADVANCE_SEGMENTS, Variant};
use crate::output::hls::{Channel, HlsError, Live};

const PLAYLIST: &str = "application/vnd.apple.mpegurl";

/// The HLS routes.
pub(super) fn routes(d: &mut Doors) {
    let watch = Rule::http(Action::View).on(StreamOf::Path("stream"));
    d.route("/hls/{stream}/", "GET", watch, get(multivariant))
        .route("/hls/{stream}/{file}", "GET", watch, get(file));
}

fn no_stream(stream: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no stream named {stream:?}"),
    )
}

fn answer(kind: &'static str, body: Bytes, cache: &str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

fn open_error(e: &HlsError) -> Response {
    match e {
        HlsError::Off => error(StatusCode::NOT_FOUND, &e.to_string()),
        HlsError::NoSegment(..) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            r
        }
    }
}

/// The multivariant playlist: every encoding of the stream's camera, highest rate first.
async fn multivariant(AxumState(s): AxumState<Shared>, Path(stream): Path<String>) -> Response {
    let Some((hls, ch)) = s.control.hls(&stream) else {
        return no_stream(&stream);
    };
    if ch.config.mode == crate::config::HlsMode::Off {
        return open_error(&HlsError::Off);
    }
    let Some(camera) = s.control.camera(&hls.camera) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no stream named {stream:?}"),
        );
    };
    let config = camera.config();
    let mut variants = Vec::new();
    for (enc, c) in camera.encodings.iter().zip(&hls.channels) {
        let kbps = config
            .renditions
            .iter()
            .find(|r| r.name == enc.name)
            .map_or(config.encoder.bitrate_kbps, |r| r.bitrate_kbps);
        let (width, height) = camera.picture_size(enc);
        let codec = match c.track() {
            Some(t) => playlist::codec(&t),
            None => codec_of_caps(c.hub.caps().as_ref()),
        };
        variants.push(Variant {
            name: enc.name.clone(),
            // Peak: a keyframe burst over the average rate.
            bandwidth: u64::from(kbps) * 1200,
            width,
            height,
            fps: enc.fps,
            codec,
        });
    }
    let text = playlist::multivariant(&variants);
    ch.served("multivariant", text.len());
    answer(PLAYLIST, Bytes::from(text), "no-cache")
}

/// `avc1.PPCCLL` from the hub's caps (profile and level strings), before any muxer ran.
fn codec_of_caps(caps: Option<&gst::Caps>) -> String {
    let s = caps.and_then(|c| c.structure(0));
    let profile = s
        .and_then(|s| s.get::<String>("profile").ok())
        .unwrap_or_default();
    let (idc, compat) = match profile.as_str() {
        "baseline" => (0x42, 0x00),
        "constrained-baseline" => (0x42, 0xe0),
        "main" => (0x4d, 0x40),
        "high" | "progressive-high" | "constrained-high" => (0x64, 0x00),
        _ => (0x42, 0xe0),
    };
    let level = s
        .and_then(|s| s.get::<String>("level").ok())
        .and_then(|l| {
            let mut it = l.split('.');
            let major: u32 = it.next()?.parse().ok()?;
            let minor: u32 = it.next().map_or(Some(0), |m| m.parse().ok())?;
            Some(major * 10 + minor)
        })
        .unwrap_or(31);
    format!("avc1.{idc:02x}{compat:02x}{level:02x}")
}

/// What a file name asks for.
enum Asked {
    Media,
    Multivariant,
    CurrentInit,
    Init(u64, u32),
    Segment(u64, u64),
    Part(u64, u64),
}

fn parse_file(file: &str) -> Option<Asked> {
    match file {
        "index.m3u8" => return Some(Asked::Media),
        "main.m3u8" => return Some(Asked::Multivariant),
        "init.mp4" => return Some(Asked::CurrentInit),
        _ => {}
    }
    let (run, rest) = file.split_once('-')?;
    let run: u64 = run.parse().ok()?;
    if let Some(id) = rest
        .strip_prefix("init")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        return Some(Asked::Init(run, id.parse().ok()?));
    }
    let rest = rest.strip_suffix(".m4s")?;
    if let Some(msn) = rest.strip_prefix('s') {
        return Some(Asked::Segment(run, msn.parse().ok()?));
    }
    let id = rest.strip_prefix('p')?;
    Some(Asked::Part(run, id.parse().ok()?))
}

/// A file: a playlist, an init segment, a segment or a part.
async fn file(
    AxumState(s): AxumState<Shared>,
    Path((stream, file)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(asked) = parse_file(&file) else {
        return error(StatusCode::NOT_FOUND, "no such HLS file");
    };
    if let Asked::Multivariant = asked {
        return multivariant(AxumState(s), Path(stream)).await;
    }
    let Some((_, ch)) = s.control.hls(&stream) else {
        return no_stream(&stream);
    };
    if let Asked::Media = asked {
        return media(&ch, &q).await;
    }
    let Some(live) = ch.live() else {
        return error(
            StatusCode::NOT_FOUND,
            "HLS is not running for this stream: load its playlist first",
        );
    };
    // Parts and segments never change under their name: a client may keep them.
    let keep = format!(
        "private, max-age={}, immutable",
        (ch.target_s * u64::from(ch.config.segment_count) + 10)
    );
    let part_wait = Duration::from_millis(u64::from(ch.config.part_ms) * 3 + 1000);
    let wrong_run = |run: u64| run != live.run;
    let found = match asked {
        Asked::CurrentInit => {
            let m = live.muxer.lock().unwrap();
            m.inits.back().map(|i| i.bytes.clone())
        }
        Asked::Init(run, _) | Asked::Segment(run, _) | Asked::Part(run, _) if wrong_run(run) => {
            None
        }
        Asked::Init(_, id) => live.muxer.lock().unwrap().init(id),
        Asked::Segment(_, msn) => {
            // The segment being made is answered once it is finished (bounded).
            let soon = {
                let m = live.muxer.lock().unwrap();
                msn <= m.current_msn()
            };
            if soon {
                let limit = Duration::from_secs(ch.target_s * 2 + 1);
                live.wait_for(limit, |m| {
                    m.segment(msn).is_some() || m.current_msn() > msn + 1
                })
                .await;
            }
            live.muxer.lock().unwrap().segment(msn)
        }
        Asked::Part(_, id) => {
            // The preload hint names the next part: the request waits until it exists.
            let soon = {
                let m = live.muxer.lock().unwrap();
                id >= m.next_part_id() && id <= m.next_part_id() + ADVANCE_PARTS as u64
            };
            if soon {
                live.wait_for(part_wait, |m| m.next_part_id() > id).await;
            }
            live.muxer.lock().unwrap().part(id)
        }
        Asked::Media | Asked::Multivariant => None,
    };
    let kind = match asked {
        Asked::CurrentInit | Asked::Init(..) => "init",
        Asked::Segment(..) => "segment",
        _ => "part",
    };
    match found {
        Some(b) => {
            ch.served(kind, b.len());
            let cache = if matches!(asked, Asked::CurrentInit) {
                "no-cache".to_string()
            } else {
                keep
            };
            answer("video/mp4", b, &cache)
        }
        None => error(
            StatusCode::NOT_FOUND,
            "no such HLS file (it left the window or never existed)",
        ),
    }
}

/// The media playlist; with `_HLS_msn` (and `_HLS_part`) it waits until that segment or part
/// exists (a blocking reload), refusing a request too far ahead with 400.
async fn media(ch: &Arc<Channel>, q: &HashMap<String, String>) -> Response {
    let live: Arc<Live> = match ch.open().await {
        Ok(l) => l,
        Err(e) => return open_error(&e),
    };
    let num = |k: &str| q.get(k).map(|v| v.parse::<u64>());
    let msn = match num("_HLS_msn").transpose() {
        Ok(v) => v,
        Err(_) => return error(StatusCode::BAD_REQUEST, "_HLS_msn must be a whole number"),
    };
    let part = match num("_HLS_part").transpose() {
        Ok(v) => v,
        Err(_) => return error(StatusCode::BAD_REQUEST, "_HLS_part must be a whole number"),
    };
    if part.is_some() && msn.is_none() {
        return error(StatusCode::BAD_REQUEST, "_HLS_part needs _HLS_msn");
    }
    if let Some(msn) = msn {
        let part = part.map(|p| p as usize);
        let too_far = {
            let m = live.muxer.lock().unwrap();
            let last = m.current_msn();
            let parts_now = m.current.as_ref().map_or(0, |c| c.parts.len());
            msn > last + ADVANCE_SEGMENTS
                || (msn == last && part.is_some_and(|p| p > parts_now + ADVANCE_PARTS))
        };
        if too_far {
            return error(
                StatusCode::BAD_REQUEST,
                "_HLS_msn/_HLS_part is too far ahead of the live edge",
            );
        }
        // The spec's bound: a blocking request waits at most three target durations (and less
        // than the sidecar's 15 s bound on every request).
        let limit = Duration::from_secs((3 * ch.target_s).min(12));
        if !live.wait_for(limit, |m| m.has(msn, part)).await {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the requested part did not come in time (is the camera streaming?)",
            );
        }
    }
    match ch.playlist(&live) {
        Some(text) => {
            ch.served("playlist", text.len());
            answer(PLAYLIST, Bytes::from(text), "no-cache")
        }
        None => error(StatusCode::SERVICE_UNAVAILABLE, "no HLS segment yet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_parsed_back() {
        assert!(matches!(parse_file("index.m3u8"), Some(Asked::Media)));
        assert!(matches!(
            parse_file("12-init3.mp4"),
            Some(Asked::Init(12, 3))
        ));
        assert!(matches!(
            parse_file("12-s40.m4s"),
            Some(Asked::Segment(12, 40))
        ));
        assert!(matches!(
            parse_file("12-p400.m4s"),
            Some(Asked::Part(12, 400))
        ));
        assert!(parse_file("12-x4.m4s").is_none());
        assert!(parse_file("../etc").is_none());
        assert_eq!(codec_of_caps(None), "avc1.42e01f");
    }
}
