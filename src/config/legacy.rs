//! The environment variables existing deployments (the seeds) set, mapped onto settings.

use std::collections::BTreeMap;

use figment::value::Value;

/// Variables existing deployments set, and the key each one maps to. `VIDEO_DEVICE` (set by the
/// Kubernetes device plugin) comes first so an operator's explicit `CAPTURE_DEVICE` wins.
pub const LEGACY_ENV: &[(&str, &str)] = &[
    ("VIDEO_DEVICE", "source.device"),
    ("CAPTURE_DEVICE", "source.device"),
    ("STREAM_WIDTH", "video.width"),
    ("STREAM_HEIGHT", "video.height"),
    ("STREAM_FPS", "video.fps"),
    ("H264_PROFILE", "encoder.profile"),
    ("H264_LEVEL", "encoder.level"),
    ("KEYFRAME_INTERVAL", "encoder.keyframe_interval"),
];

/// Maps the seeds' `RTSP_AUTH`, `RTSP_USERNAME` and `RTSP_PASSWORD` to the settings they set.
/// `RTSP_AUTH` takes a boolean, or the methods to offer ("digest", "basic", "digest,basic").
pub(super) fn auth(env: &BTreeMap<String, String>) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    if let Some(v) = env.get("RTSP_USERNAME").filter(|v| !v.is_empty()) {
        out.push(("auth.username", Value::from(v.clone())));
    }
    if let Some(v) = env.get("RTSP_PASSWORD").filter(|v| !v.is_empty()) {
        out.push(("auth.password", Value::from(v.clone())));
    }
    let Some(v) = env.get("RTSP_AUTH").map(|v| v.trim().to_ascii_lowercase()) else {
        return out;
    };
    match v.as_str() {
        "" => {}
        "1" | "true" | "yes" | "on" => out.push(("auth.enabled", Value::from(true))),
        "0" | "false" | "no" | "off" | "none" => out.push(("auth.enabled", Value::from(false))),
        methods => {
            out.push(("auth.enabled", Value::from(true)));
            let list: Vec<Value> = methods
                .split([',', ' '])
                .filter(|m| !m.is_empty())
                .map(|m| Value::from(m.to_string()))
                .collect();
            out.push(("auth.methods", Value::from(list)));
        }
    }
    out
}
