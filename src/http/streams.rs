//! The streams API: read each stream's state and settings, change them (`PATCH`, a JSON merge
//! of settings, applied live or by a restart of that stream alone), and ask for a keyframe.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use super::auth::{Doors, Rule, StreamOf};
use super::{Shared, error};
use crate::access::{Action, Door, Principal};
use crate::stream::camera::Camera;
use crate::stream::hub::KeyframeAsk;
use crate::stream::status::State;

/// Largest PATCH body accepted.
const MAX_BODY: usize = 16 * 1024;

/// The streams routes: reads need `view`, live changes `control`, each on the named stream.
pub(super) fn routes(d: &mut Doors) {
    let view = Rule::http(Action::View);
    let control = Rule::http(Action::Control).on(StreamOf::Path("name"));
    d.route("/api/v1/streams", "GET", view, get(list))
        .route(
            "/api/v1/streams/{name}",
            "GET",
            view.on(StreamOf::Path("name")),
            get(one),
        )
        .route(
            "/api/v1/streams/{name}",
            "PATCH",
            control,
            axum::routing::patch(patch),
        )
        .route(
            "/api/v1/streams/{name}/controls",
            "GET",
            view.on(StreamOf::Path("name")),
            get(controls),
        )
        .route(
            "/api/v1/streams/{name}/keyframe",
            "POST",
            control,
            post(keyframe),
        );
}

/// One stream as the API shows it: state, encoder, settings, encodings and their viewers.
pub(super) fn describe(s: &Shared, c: &Camera) -> Value {
    let st = c.status();
    let config = c.config();
    let backoff = match &st.health.state {
        State::Backoff {
            attempt,
            reason,
            delay_ms,
        } => json!({ "attempt": attempt, "reason": reason, "delay_ms": delay_ms }),
        _ => Value::Null,
    };
    let viewers = s.control.rtsp().viewers();
    let encodings: Vec<Value> = c
        .encodings
        .iter()
        .map(|e| {
            let stats = e.hub.stats();
            let (width, height) = config.picture_size(&e.name).unwrap_or((e.width, e.height));
            json!({
                "name": e.name,
                "mount": e.mount,
                "width": width,
                "height": height,
                "fps": e.fps,
                "frames": {
                    "encoded": stats.frames(),
                    "keyframes": stats.keyframes(),
                    "bytes": stats.bytes(),
                    "last_frame_age_ms": stats.last_frame_age().map(|a| a.as_millis() as u64),
                },
                "outputs": e.hub.output_counts().into_iter().map(|o| json!({
                    "output": o.output, "pushed": o.pushed, "dropped": o.dropped,
                })).collect::<Vec<_>>(),
                "viewers": viewers.playing(&e.name),
                "webrtc_viewers": s.webrtc.as_ref().map_or(0, |w| w.viewers(&e.name)),
            })
        })
        .collect();
    let main = &encodings[0];
    json!({
        "name": c.name,
        "mount": config.mount_path(),
        "required": config.required,
        "state": st.health.state.name(),
        "backoff": backoff,
        "restarts": st.health.restarts,
        "last_error": st.health.last_error,
        "source": st.source,
        "encoder": st.encoder,
        "encoder_reason": st.encoder_reason,
        "image": st.image,
        "image_software": st.image.iter().any(|u| u.backend == "software"),
        "h264_level": config.level().ok().map(|l| l.as_str()),
        "frames": main["frames"],
        "encodings": encodings,
        "outputs": s.control.outputs(&c.name).map(|o| o.describe()).unwrap_or_default(),
        "settings": config.redacted(),
        // Audio (issue #24): null without sound.
        "audio": c.audio().map(|a| a.status()),
    })
}

/// What `who` may see of a described stream: everything for admins, else the redacted view.
fn shown(s: &Shared, who: &Principal, mut v: Value) -> Value {
    if !super::sees_everything(s, who) {
        let live = live_settings(&v["settings"]);
        super::redact_for_viewers(&mut v);
        if let Some(map) = v.as_object_mut() {
            map.insert("settings".into(), live);
        }
    }
    v
}

/// The live settings (what an operator may change, and the page shows in its forms) out of a
/// stream's full settings: nothing that names a device, a pipeline, a path or a destination.
fn live_settings(full: &Value) -> Value {
    let list = |key: &str, field: &str| -> Value {
        full[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| json!({ "name": i["name"], field: i[field] }))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into()
    };
    let mut image = full["image"].clone();
    if let Some(map) = image.as_object_mut() {
        map.remove("tuning_file");
    }
    json!({
        "image": image,
        "encoder": {
            "bitrate_kbps": full["encoder"]["bitrate_kbps"],
            "keyframe_interval": full["encoder"]["keyframe_interval"],
        },
        "record": { "enabled": full["record"]["enabled"] },
        "renditions": list("renditions", "bitrate_kbps"),
        "push": list("push", "enabled"),
        // Audio (issue #24).
        "audio": { "mute": full["audio"]["mute"], "gain_db": full["audio"]["gain_db"] },
    })
}

async fn list(AxumState(s): AxumState<Shared>, Extension(who): Extension<Principal>) -> Response {
    // An account limited to some streams lists only those.
    let streams: Vec<Value> = s
        .control
        .cameras()
        .iter()
        .filter(|c| {
            s.access
                .check(&who, Door::Http, Some(&c.name), Action::View)
                .is_ok()
        })
        .map(|c| shown(&s, &who, describe(&s, c)))
        .collect();
    Json(StreamList { streams }).into_response()
}

async fn one(
    AxumState(s): AxumState<Shared>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    match s.control.camera(&name) {
        Some(c) => Json(shown(&s, &who, describe(&s, &c))).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no stream named {name:?}")),
    }
}

/// The image controls of a stream: range, default, current value, backend and liveness.
async fn controls(AxumState(s): AxumState<Shared>, Path(name): Path<String>) -> Response {
    let Some(c) = s.control.camera(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no stream named {name:?}"));
    };
    let config = c.config();
    let caps = c.image_caps();
    Json(ImageControls {
        stream: name,
        source: c.status().source,
        probed: caps.is_some(),
        controls: crate::stream::image::controls(&config.image, caps.as_deref()),
    })
    .into_response()
}

/// The answer of the stream list: each visible stream's status tree.
#[derive(Serialize)]
struct StreamList {
    streams: Vec<Value>,
}

/// The answer of a stream's image controls: what the source offers and whether it was probed.
#[derive(Serialize)]
struct ImageControls {
    stream: String,
    source: Option<String>,
    probed: bool,
    controls: Vec<Value>,
}

/// The answer to a changed stream: which stream, and how the change was applied.
#[derive(Serialize)]
struct Changed {
    stream: String,
    applied: crate::stream::camera::Applied,
}

/// The answer to a keyframe request: whether it was sent now or deferred.
#[derive(Serialize)]
struct KeyframeAnswer {
    stream: String,
    keyframe: &'static str,
}

async fn patch(AxumState(s): AxumState<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {MAX_BODY} bytes"),
        );
    }
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    match s.control.patch(&name, &patch).await {
        Ok(o) => Json(Changed {
            stream: o.stream,
            applied: o.applied,
        })
        .into_response(),
        Err(e) => super::refused_change(e),
    }
}

async fn keyframe(AxumState(s): AxumState<Shared>, Path(name): Path<String>) -> Response {
    match s.control.encoding(&name) {
        Some((_, e, _)) => {
            // Over the stream's keyframe budget the request is served by the next slot's.
            let keyframe = match e.hub.request_keyframe() {
                KeyframeAsk::Sent => "requested",
                KeyframeAsk::Coalesced => "scheduled",
            };
            (
                StatusCode::ACCEPTED,
                Json(KeyframeAnswer {
                    stream: name,
                    keyframe,
                }),
            )
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, &format!("no stream named {name:?}")),
    }
}
