//! `GET /api/v1/streams/{name}/motion.jpg`: the peak picture of the stream's last (or running)
//! motion event, with its event id and score in headers. A picture, so it needs `view` on the
//! stream like a snapshot.

use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::auth::{Doors, Rule, StreamOf};
use super::{Shared, error};
use crate::access::Action;
use crate::output::record;

/// The motion picture route, and the event clips' thumbnails.
pub(super) fn routes(d: &mut Doors) {
    d.route(
        "/api/v1/streams/{name}/motion.jpg",
        "GET",
        Rule::http(Action::View).on(StreamOf::Path("name")),
        get(motion_jpg),
    )
    .route(
        "/recordings/{stream}/events/{file}",
        "GET",
        Rule::http(Action::View).on(StreamOf::Path("stream")),
        get(thumbnail),
    );
}

/// `GET /recordings/{stream}/events/{event_id}.jpg`: an event clip's thumbnail (the event's
/// peak picture, saved beside the clip).
async fn thumbnail(
    AxumState(s): AxumState<Shared>,
    Path((stream, file)): Path<(String, String)>,
) -> Response {
    let Some(camera) = s.control.camera(&stream) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no stream named {stream:?}"),
        );
    };
    let Some(id) = file
        .strip_suffix(".jpg")
        .filter(|id| record::clips::valid_event_id(id))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "thumbnails are named <event_id>.jpg, e.g. video-1796660280532.jpg",
        );
    };
    let dir = record::folder(&camera.config().record, &stream);
    let id = id.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let path = record::clips::find_thumbnail(&dir, &id)?;
        std::fs::read(path).ok()
    })
    .await
    .ok()
    .flatten();
    match found {
        Some(data) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "max-age=86400"),
            ],
            data,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no thumbnail for that event"),
    }
}

async fn motion_jpg(AxumState(s): AxumState<Shared>, Path(name): Path<String>) -> Response {
    let Some(camera) = s.control.camera(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no stream named {name:?}"));
    };
    let Some(jpeg) = camera.motion.jpeg() else {
        let why = if camera.config().motion.enabled {
            "no motion event yet since the start"
        } else {
            "motion detection is off for this stream (motion.enabled = false)"
        };
        return error(StatusCode::NOT_FOUND, why);
    };
    let mut r = (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg.data.clone(),
    )
        .into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&jpeg.event_id) {
        h.insert("x-motion-event-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&jpeg.score.to_string()) {
        h.insert("x-motion-score", v);
    }
    if let Ok(v) = HeaderValue::from_str(&jpeg.at_unix_ms.to_string()) {
        h.insert("x-motion-at-unix-ms", v);
    }
    r
}
