//! The recordings API: what is recorded (`GET /api/v1/recordings`: spans, segments, gaps, one
//! page at a time) and any time range as one fragmented MP4
//! (`GET /recordings/NAME.mp4?start=&duration=`), made from the stored segments without
//! re-encoding as the body is sent. Ranges up to an hour are served with `Content-Length` and
//! byte ranges so a browser's `<video>` can seek; longer ones are streamed without a length.
//! At most [`MAX_EXPORTS`] exports run at once. Same access rules as the status API.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use super::auth::{Doors, Rule, StreamOf};
use crate::access::Action;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use metrics::{counter, gauge};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Shared, error};
use crate::metrics::names;
use crate::output::record::export::{self, Export, ExportError};
use crate::output::record::{self, index};
use crate::output::rtsp::auth::LogLimiter;
use crate::utc;

/// Longest range one MP4 may cover.
const MAX_DURATION_S: f64 = 24.0 * 3600.0;
/// Bytes read from disk per body chunk.
const CHUNK: usize = 64 * 1024;
/// Exports sent at once (all streams); more are answered 503 with `Retry-After`.
pub const MAX_EXPORTS: usize = 4;
/// Seconds a refused export is told to wait.
const EXPORT_RETRY_S: u32 = 5;
/// Segments in a listing page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 500;
/// Most segments in a listing page.
pub const MAX_PAGE: usize = 5000;

/// The export slots, shared by every stream.
static EXPORTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(MAX_EXPORTS)));
/// Refused exports are logged a few times a minute, then summed up.
static EXPORT_LOG: LazyLock<LogLimiter> =
    LazyLock::new(|| LogLimiter::new(3, Duration::from_secs(60)));

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
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_PAGE,
        Some(Ok(l)) if (1..=MAX_PAGE).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("limit must be a number of segments from 1 to {MAX_PAGE}"),
            );
        }
    };
    let after = q.get("after").cloned();
    let (dir, enabled) = match folder_of(&s, &stream) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let who = stream.clone();
    let page = tokio::task::spawn_blocking(move || {
        index::page(&dir, start, end, after.as_deref(), limit).map(|(segments, next)| {
            // Event clips: the motion events whose clips begin in this page.
            let names: Vec<String> = segments.iter().map(|s| s.name.clone()).collect();
            let events = record::clips::events_of(&dir, &who, &names);
            (segments, next, events)
        })
    })
    .await;
    let (segments, next, events) = match page {
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
    Json(Listing {
        stream,
        recording: enabled,
        spans,
        gaps,
        limit,
        next,
        events,
    })
    .into_response()
}

/// The answer of `/api/v1/recordings`: one page of spans and the gaps between them.
#[derive(Serialize)]
struct Listing {
    stream: String,
    recording: bool,
    spans: Vec<index::Span>,
    gaps: Vec<index::Gap>,
    limit: usize,
    next: Option<String>,
    /// Event clips (`record.mode = "events"`) beginning in this page, with their thumbnails.
    events: Vec<record::clips::ClipEvent>,
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

/// The export's bytes `[from, to)` as a body; the slot is released when the body ends or the
/// client goes away.
fn body_of(e: Arc<Export>, from: u64, to: Option<u64>, slot: Slot) -> Body {
    let reader = e.reader(from, to);
    let stream = futures_util::stream::try_unfold((reader, slot), |(reader, slot)| async move {
        let (read, reader) = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            (reader.next_chunk(CHUNK), reader)
        })
        .await
        .map_err(std::io::Error::other)?;
        let buf = read?;
        if buf.is_empty() {
            return Ok::<_, std::io::Error>(None);
        }
        Ok(Some((Bytes::from(buf), (reader, slot))))
    });
    Body::from_stream(stream)
}

/// An export slot, counted in the active-exports gauge while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn take() -> Option<Slot> {
        let permit = EXPORTS.clone().try_acquire_owned().ok()?;
        gauge!(names::RECORD_EXPORTS_ACTIVE).increment(1.0);
        Some(Slot { _permit: permit })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        gauge!(names::RECORD_EXPORTS_ACTIVE).decrement(1.0);
    }
}

/// The answer when every export slot is taken.
fn busy(stream: &str) -> Response {
    counter!(names::RECORD_EXPORTS_REJECTED).increment(1);
    if let Some(suppressed) = EXPORT_LOG.allow(Instant::now()) {
        tracing::warn!(
            stream,
            max = MAX_EXPORTS,
            suppressed,
            "Recording export refused: every export slot is taken"
        );
    }
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "{MAX_EXPORTS} recording exports are already being sent; retry in {EXPORT_RETRY_S} s"
        ),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(EXPORT_RETRY_S));
    r
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
    let Some(slot) = Slot::take() else {
        return busy(stream);
    };
    let built = tokio::task::spawn_blocking(move || export::open(&dir, start, duration)).await;
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
    h.insert(
        header::ACCEPT_RANGES,
        HeaderValue::from_static(if e.len.is_some() { "bytes" } else { "none" }),
    );
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
    // A streamed export has no length: it is always sent whole.
    let Some(len) = e.len else {
        return (StatusCode::OK, h, body_of(e, 0, None, slot)).into_response();
    };
    // A Range with an If-Range naming another version is served whole.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = if if_range_ok {
        parse_range(headers.get(header::RANGE), len)
    } else {
        Ok(None)
    };
    match range {
        Err(()) => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ASCII"),
            );
            (
                StatusCode::RANGE_NOT_SATISFIABLE,
                h,
                Json(super::body::ErrorBody {
                    error: &format!("the range is outside the {len} bytes of this recording"),
                }),
            )
                .into_response()
        }
        Ok(None) => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            (StatusCode::OK, h, body_of(e, 0, Some(len), slot)).into_response()
        }
        Ok(Some((a, b))) => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(b - a + 1));
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")).expect("ASCII"),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                h,
                body_of(e, a, Some(b + 1), slot),
            )
                .into_response()
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
