//! The recordings API: what is recorded (`GET /api/v1/recordings`: spans, segments, gaps) and
//! any time range as one MP4 (`GET /recordings/NAME.mp4?start=&duration=`), made from the
//! stored segments without re-encoding and served with `Content-Length`, an ETag and byte
//! ranges so a browser's `<video>` can seek. Same access rules as the status API.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::auth::{Doors, Rule, StreamOf};
use crate::access::Action;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use super::{Shared, error};
use crate::output::record::export::{self, Export, ExportError};
use crate::output::record::{self, index};
use crate::utc;

/// Longest range one MP4 may cover.
const MAX_DURATION_S: f64 = 24.0 * 3600.0;
/// Bytes read from disk per body chunk.
const CHUNK: usize = 256 * 1024;

/// The recordings routes: `view` on the stream they are of.
pub(super) fn routes(d: &mut Doors) {
    let view = Rule::http(Action::View);
    d.route(
        "/api/v1/recordings",
        "GET",
        view.on(StreamOf::Query),
        get(list),
    )
    .route(
        "/recordings/{file}",
        "GET",
        view.on(StreamOf::PathFile("file", ".mp4")),
        get(mp4),
    );
}

type Params = Query<HashMap<String, String>>;

/// An error answer, boxed to keep `Result`s small.
type Reject = Box<Response>;

fn time_param(q: &HashMap<String, String>, key: &str) -> Result<Option<utc::Nanos>, Reject> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => utc::parse_rfc3339(v).map(Some).ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                &format!("{key} = {v:?} is not an RFC 3339 time (e.g. 2026-12-02T02:53:17Z)"),
            ))
        }),
    }
}

/// The recording folder of a running stream.
fn folder_of(s: &Shared, stream: &str) -> Result<(PathBuf, bool), Reject> {
    let camera = s.control.camera(stream).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            &format!("no stream named {stream:?}"),
        ))
    })?;
    let c = camera.config();
    Ok((record::folder(&c.record, stream), c.record.enabled))
}

async fn list(AxumState(s): AxumState<Shared>, Query(q): Params) -> Response {
    let Some(stream) = q.get("stream").cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "stream is required, e.g. /api/v1/recordings?stream=video",
        );
    };
    let (start, end) = match (time_param(&q, "start"), time_param(&q, "end")) {
        (Ok(a), Ok(b)) => (a.unwrap_or(i64::MIN / 2), b.unwrap_or(i64::MAX / 2)),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    if start >= end {
        return error(StatusCode::BAD_REQUEST, "start must be before end");
    }
    let (dir, enabled) = match folder_of(&s, &stream) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let segments = tokio::task::spawn_blocking(move || index::segments(&dir, start, end)).await;
    let segments = match segments {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the recordings of {stream}: {e}"),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let (spans, gaps) = index::spans(segments);
    Json(json!({
        "stream": stream,
        "recording": enabled,
        "spans": spans,
        "gaps": gaps,
    }))
    .into_response()
}

/// A single `bytes=` range of a `len`-byte body: `Ok(None)` means serve it whole (no or an
/// unusable header, which RFC 9110 says to ignore), `Err` means unsatisfiable.
fn parse_range(h: Option<&HeaderValue>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let Ok(first) = a.parse::<u64>() else {
            return Ok(None);
        };
        let last = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(l) if l >= first => l.min(len.saturating_sub(1)),
                _ => return Ok(None),
            }
        };
        if first >= len {
            return Err(());
        }
        (first, last)
    };
    Ok(Some(range))
}

fn body_of(e: Arc<Export>, from: u64, to: u64) -> Body {
    let stream = futures_util::stream::try_unfold(
        (e, from, to, None::<(PathBuf, File)>),
        |(e, pos, stop, open)| async move {
            if pos >= stop {
                return Ok::<_, std::io::Error>(None);
            }
            let n = (stop - pos).min(CHUNK as u64) as usize;
            let (read, e, open) = tokio::task::spawn_blocking(move || {
                let mut open = open;
                let mut buf = Vec::with_capacity(n);
                let r = e.read(pos, n, &mut open, &mut buf).map(|_| buf);
                (r, e, open)
            })
            .await
            .map_err(std::io::Error::other)?;
            let buf = read?;
            Ok(Some((Bytes::from(buf), (e, pos + n as u64, stop, open))))
        },
    );
    Body::from_stream(stream)
}

async fn mp4(
    AxumState(s): AxumState<Shared>,
    Path(file): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Response {
    let Some(stream) = file.strip_suffix(".mp4") else {
        return error(
            StatusCode::NOT_FOUND,
            "recordings are served as /recordings/STREAM.mp4?start=RFC3339&duration=SECONDS",
        );
    };
    let start = match time_param(&q, "start") {
        Ok(Some(t)) => t,
        Ok(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "start is required (RFC 3339, e.g. 2026-12-02T02:53:17Z)",
            );
        }
        Err(r) => return *r,
    };
    let duration = match q.get("duration").map(|d| d.parse::<f64>()) {
        Some(Ok(d)) if d > 0.0 && d <= MAX_DURATION_S => (d * 1e9) as i64,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "duration must be a number of seconds above 0 and at most {MAX_DURATION_S}"
                ),
            );
        }
        None => return error(StatusCode::BAD_REQUEST, "duration (seconds) is required"),
    };
    let (dir, _) = match folder_of(&s, stream) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let built = tokio::task::spawn_blocking(move || export::build(&dir, start, duration)).await;
    let e = match built {
        Ok(Ok(e)) => Arc::new(e),
        Ok(Err(ExportError::Empty(a, b))) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("nothing of {stream} was recorded between {a} and {b}"),
            );
        }
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let etag = HeaderValue::from_str(&e.etag).expect("an ETag is ASCII");
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, etag.clone());
    h.insert(
        "x-recording-start",
        HeaderValue::from_str(&utc::rfc3339(e.start)).expect("ASCII"),
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    // A Range with an If-Range naming another version is served whole.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = if if_range_ok {
        parse_range(headers.get(header::RANGE), e.len)
    } else {
        Ok(None)
    };
    match range {
        Err(()) => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", e.len)).expect("ASCII"),
            );
            (
                StatusCode::RANGE_NOT_SATISFIABLE,
                h,
                Json(json!({"error": format!("the range is outside the {} bytes of this recording", e.len)})),
            )
                .into_response()
        }
        Ok(None) => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(e.len));
            let len = e.len;
            (StatusCode::OK, h, body_of(e, 0, len)).into_response()
        }
        Ok(Some((a, b))) => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(b - a + 1));
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {a}-{b}/{}", e.len)).expect("ASCII"),
            );
            (StatusCode::PARTIAL_CONTENT, h, body_of(e, a, b + 1)).into_response()
        }
    }
}

/// Runs a stranger's `Range` header through the export's parser for a body of every length
/// the input's first byte picks, as the fuzz target and its stable smoke test do. Panics on a
/// violated invariant.
pub fn fuzz_range(data: &[u8]) {
    let (len, header) = match data.split_first() {
        Some((l, rest)) => (u64::from(*l) * 1000 + 1, rest),
        None => (0, data),
    };
    let Ok(v) = HeaderValue::from_bytes(header) else {
        return;
    };
    for len in [0, 1, len, u64::MAX] {
        if let Ok(Some((first, last))) = parse_range(Some(&v), len) {
            assert!(first <= last, "{first}-{last} of {len}");
            assert!(last < len, "{first}-{last} beyond {len} bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
        parse_range(Some(&HeaderValue::from_str(s).unwrap()), len)
    }

    #[test]
    fn ranges() {
        assert_eq!(r("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(r("bytes=900-", 1000), Ok(Some((900, 999))));
        assert_eq!(r("bytes=-100", 1000), Ok(Some((900, 999))));
        assert_eq!(r("bytes=990-2000", 1000), Ok(Some((990, 999))));
        assert_eq!(r("bytes=1000-", 1000), Err(()));
        assert_eq!(r("bytes=5-1", 1000), Ok(None));
        assert_eq!(r("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(r("items=0-1", 1000), Ok(None));
        assert_eq!(parse_range(None, 1000), Ok(None));
    }
}
