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

/// The motion picture route.
pub(super) fn routes(d: &mut Doors) {
    d.route(
        "/api/v1/streams/{name}/motion.jpg",
        "GET",
        Rule::http(Action::View).on(StreamOf::Path("name")),
        get(motion_jpg),
    );
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
