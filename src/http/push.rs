//! One push changed without resending the stream's whole `push` list: `PATCH
//! /api/v1/streams/{name}/push/{push}` merges a JSON object into that entry (e.g.
//! `{"enabled": false}`), keeping its other settings and its secret. It goes through the same
//! validation and live apply as a `PATCH` of the stream, where `push` (an array) is replaced
//! whole, as JSON merge patch (RFC 7396) has it.

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::auth::{Doors, Rule, StreamOf};
use super::{Shared, error};
use crate::access::Action;
use crate::control::merge;

/// Largest body accepted.
const MAX_BODY: usize = 16 * 1024;

/// The push route: a live change, `control` on the named stream.
pub(super) fn routes(d: &mut Doors) {
    d.route(
        "/api/v1/streams/{name}/push/{push}",
        "PATCH",
        Rule::http(Action::Control).on(StreamOf::Path("name")),
        axum::routing::patch(patch_one),
    );
}

async fn patch_one(
    AxumState(s): AxumState<Shared>,
    Path((name, push)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {MAX_BODY} bytes"),
        );
    }
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object of push settings, e.g. {\"enabled\": false}",
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    if patch.get("name").is_some_and(|n| n.as_str() != Some(&push)) {
        return error(
            StatusCode::BAD_REQUEST,
            "name cannot change here; replace the stream's push list to rename a push",
        );
    }
    let Some(camera) = s.control.camera(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no stream named {name:?}"));
    };
    let config = camera.config();
    let Some(index) = config.push.iter().position(|p| p.name == push) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("stream {name:?} has no push named {push:?}"),
        );
    };
    let mut list = match serde_json::to_value(&config.push) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    merge(&mut list[index], &patch);
    match s.control.patch(&name, &json!({ "push": list })).await {
        Ok(o) => Json(PushChanged {
            stream: o.stream,
            push,
            applied: o.applied,
        })
        .into_response(),
        Err(e) => super::refused_change(e),
    }
}

/// The answer to a changed push: which stream and push, and how the change was applied.
#[derive(Serialize)]
struct PushChanged {
    stream: String,
    push: String,
    applied: crate::stream::camera::Applied,
}
