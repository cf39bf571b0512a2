//! MJPEG over HTTP and mjpg-streamer's URLs (issue 28): `/mjpeg/{stream}`, the per-stream
//! snapshot path, and `/?action=stream` / `/?action=snapshot` answered at the page's path so
//! OctoPrint, Mainsail, Fluidd and crowsnest configs work unchanged (`output::mjpeg`).

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::Deserialize;

use super::auth::{Doors, Rule, StreamOf};
use super::{Shared, answer_snapshot, error};
use crate::access::Action;
use crate::metrics::names;
use crate::output::mjpeg::{BOUNDARY, Client, MjpegError};
use crate::output::snapshot::{allowed_widths, scaled_height};

/// The MJPEG routes (the `/?action=` forms are registered with the page, in `webrtc::page`).
pub(super) fn routes(d: &mut Doors) {
    d.route(
        "/mjpeg/{stream}",
        "GET",
        Rule::http(Action::View).on(StreamOf::Path("stream")),
        get(mjpeg),
    )
    .route(
        "/api/v1/streams/{name}/snapshot.jpg",
        "GET",
        Rule::http(Action::View).on(StreamOf::Path("name")),
        get(stream_snapshot),
    );
}

/// `/mjpeg/{stream}` and `/api/v1/streams/{name}/snapshot.jpg` query. Other keys (the cache
/// busters dashboards add) are ignored.
#[derive(Debug, Deserialize)]
struct SizeQuery {
    width: Option<u32>,
}

/// The query of `/`: the page without `action`, else mjpg-streamer's request.
#[derive(Debug, Deserialize)]
pub(super) struct RootQuery {
    action: Option<String>,
    stream: Option<String>,
    width: Option<u32>,
}

const BAD_QUERY: &str = "bad query: width is a whole number of pixels";

async fn mjpeg(
    AxumState(s): AxumState<Shared>,
    Path(stream): Path<String>,
    q: Result<Query<SizeQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, BAD_QUERY);
    };
    answer_stream(&s, Some(stream), q.width).await
}

async fn stream_snapshot(
    AxumState(s): AxumState<Shared>,
    Path(name): Path<String>,
    q: Result<Query<SizeQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, BAD_QUERY);
    };
    answer_snapshot(&s, Some(name), q.width).await
}

/// `/`: the page, or mjpg-streamer's `?action=stream` / `?action=snapshot` (on the first
/// stream, or the one `stream=` names).
pub(super) async fn root(
    state: AxumState<Shared>,
    q: Result<Query<RootQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query: the parameters are action (stream or snapshot), stream (a name) and width (pixels)",
        );
    };
    match q.action.as_deref() {
        None => super::webrtc::index(state).await,
        Some("stream") => answer_stream(&state.0, q.stream, q.width).await,
        Some("snapshot") => answer_snapshot(&state.0, q.stream, q.width).await,
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            &format!(
                "action {:?} is not served: camstream answers mjpg-streamer's action=stream and action=snapshot",
                other.chars().take(32).collect::<String>()
            ),
        ),
    }
}

/// An MJPEG stream of `name` (the first stream when `None`) at `width` (its own when `None`).
async fn answer_stream(s: &Shared, name: Option<String>, width: Option<u32>) -> Response {
    let name = match name {
        Some(n) => n,
        None => match s.control.cameras().first() {
            Some(c) => c.name.clone(),
            None => return error(StatusCode::SERVICE_UNAVAILABLE, "no stream is running"),
        },
    };
    let Some((cam, enc, _)) = s.control.encoding(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no stream named {name:?}"));
    };
    let Some(mjpeg) = s.control.mjpeg(&cam.name) else {
        return error(StatusCode::NOT_FOUND, &format!("no stream named {name:?}"));
    };
    let (sw, sh) = cam.picture_size(&enc);
    let allowed = allowed_widths(sw);
    let width = width.unwrap_or(sw);
    if !allowed.contains(&width) {
        let list: Vec<String> = allowed.iter().map(u32::to_string).collect();
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "width must be one of {} (MJPEG is encoded at a few sizes only, so clients share encoders)",
                list.join(", ")
            ),
        );
    }
    let height = if width == sw {
        sh
    } else {
        scaled_height(sw, sh, width)
    };
    let config = s.control.config().mjpeg.clone();
    let client = match mjpeg.client(width, height, &config).await {
        Ok(c) => c,
        Err(e) => {
            let (reason, code) = match e {
                MjpegError::Disabled => ("disabled", StatusCode::NOT_FOUND),
                MjpegError::TooMany(_) => ("max_clients", StatusCode::SERVICE_UNAVAILABLE),
                MjpegError::Encoder(_) => ("encoder", StatusCode::SERVICE_UNAVAILABLE),
            };
            metrics::counter!(names::MJPEG_REJECTED, "reason" => reason).increment(1);
            tracing::warn!(stream = %name, error = %e, "MJPEG client refused");
            return error(code, &e.to_string());
        }
    };
    tracing::debug!(stream = %client.stream(), width, height, "MJPEG client connected");
    // Each part is asked for only when the connection took the previous one, so a client that
    // stops reading holds one picture (shared with the others), never a queue.
    let parts = futures_util::stream::unfold(client, |mut c| async move {
        let jpeg = c.next().await?;
        let part = futures_util::stream::iter(Client::part(jpeg).map(Ok::<_, Infallible>));
        Some((part, c))
    })
    .flatten();
    (
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace;boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::PRAGMA, "no-cache".to_string()),
        ],
        Body::from_stream(parts),
    )
        .into_response()
}
