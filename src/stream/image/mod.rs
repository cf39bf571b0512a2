//! Image processing, part of the capture: orientation, exposure, white balance, focus, digital
//! zoom and the text overlay of `[image]`. [`plan`] decides per setting whether the camera
//! itself carries it ([`libcamera`] properties, [`v4l2`] controls) or software elements in the
//! capture pipeline do ([`software`]); that decision is reported in the status, the controls
//! API and `camstream check`.

pub mod libcamera;
pub mod orientation;
pub mod plan;
pub mod software;
pub mod v4l2;

use gst::prelude::*;

pub use plan::{Backend, Caps, ImageError, Plan, Use};

use super::source::Source;

/// Reads what a source offers for image settings (blocking: it may create a `libcamerasrc`
/// or run `v4l2-ctl`; call it off the async threads).
pub fn probe(source: &Source) -> Caps {
    match source {
        Source::Libcamera { .. } => Caps::Libcamera(libcamera::installed_specs()),
        Source::V4l2 { device } => Caps::V4l2 {
            device: device.clone(),
            controls: v4l2::list(device).map_err(|e| e.to_string()),
        },
        other => Caps::SoftwareOnly {
            source: other.to_string(),
        },
    }
}

/// Checks the image settings of a source whose abilities are known without opening it (the
/// test pattern and operator pipelines: software only); other sources are checked when opened.
pub fn check_static(config: &crate::config::StreamConfig) -> Result<Option<Plan>, ImageError> {
    use crate::config::SourceKind;
    let source = match config.source.kind {
        SourceKind::Test => "test pattern",
        SourceKind::Pipeline => "pipeline fragment",
        _ => return Ok(None),
    };
    plan::plan(
        &config.image,
        &Caps::SoftwareOnly {
            source: source.into(),
        },
    )
    .map(Some)
}

/// Sets everything of `plan` that lives in element properties: the camera's (before start or
/// while playing) and the software elements'.
pub fn apply(pipeline: &gst::Pipeline, plan: &Plan) -> Result<(), String> {
    if let Some(src) = pipeline.by_name("src") {
        if !plan.libcamera.is_empty() {
            libcamera::apply(&src, &plan.libcamera)?;
        }
        if !plan.v4l2.is_empty() {
            let s: gst::Structure = v4l2::structure(&plan.v4l2)
                .parse()
                .map_err(|_| "the V4L2 controls do not form a valid structure".to_string())?;
            src.set_property("extra-controls", &s);
        }
    }
    software::apply(pipeline, plan)
}

/// The range of a setting, as the controls API shows it.
pub fn range_of(setting: &str) -> serde_json::Value {
    use serde_json::json;
    match setting {
        "hflip" | "vflip" | "hdr" => json!({ "type": "bool" }),
        "rotation" => json!({ "type": "enum", "values": [0, 90, 180, 270] }),
        "brightness" => json!({ "type": "float", "min": -1.0, "max": 1.0 }),
        "contrast" | "saturation" | "sharpness" => {
            json!({ "type": "float", "min": 0.0, "max": 16.0, "software_max": 2.0 })
        }
        "exposure" => json!({ "type": "enum", "values": ["auto", "short", "long", "manual"] }),
        "shutter_us" => json!({ "type": "int", "min": 0, "max": 10_000_000, "auto": 0 }),
        "gain" => json!({ "type": "float", "min": 1.0, "max": 64.0, "auto": 0.0 }),
        "ev" => json!({ "type": "float", "min": -10.0, "max": 10.0 }),
        "metering" => json!({ "type": "enum", "values": ["centre", "spot", "matrix"] }),
        "awb" => json!({ "type": "enum", "values": [
            "auto", "incandescent", "tungsten", "fluorescent", "indoor", "daylight", "cloudy"
        ] }),
        "awb_gains" => {
            json!({ "type": "[float, float]", "min": 0.0, "max": 32.0, "auto": [0.0, 0.0] })
        }
        "denoise" => json!({ "type": "enum", "values": ["auto", "off", "fast", "high_quality"] }),
        "af_mode" => {
            json!({ "type": "enum", "values": ["manual", "auto", "continuous"], "unset": null })
        }
        "af_range" => {
            json!({ "type": "enum", "values": ["normal", "macro", "full"], "unset": null })
        }
        "lens_position" => json!({ "type": "float", "min": 0.0, "max": 32.0, "unset": null }),
        "flicker_period" => json!({ "type": "int", "min": 100, "max": 1_000_000, "off": 0 }),
        "roi" => json!({ "type": "[x, y, w, h]", "min": 0.0, "max": 1.0 }),
        "sensor_mode" | "tuning_file" => json!({ "type": "string" }),
        "overlay" => json!({ "type": "object", "fields": {
            "text": "strftime text, empty = off",
            "position": ["top-left", "top", "top-right", "bottom-left", "bottom", "bottom-right"],
            "font_size": { "min": 6, "max": 200 }
        } }),
        _ => serde_json::Value::Null,
    }
}

/// Every image setting with its range, default, current value, and what carries it on this
/// source (`backend`, `live`), or why nothing can (`unsupported`). `caps` is `None` until the
/// camera has been opened once.
pub fn controls(
    cfg: &crate::config::image::ImageConfig,
    caps: Option<&Caps>,
) -> Vec<serde_json::Value> {
    let defaults = crate::config::image::ImageConfig::default();
    plan::SETTINGS
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({
                "name": s,
                "range": range_of(s),
                "default": plan::value_of(s, &defaults),
                "value": plan::value_of(s, cfg),
                "set": plan::is_set(s, cfg),
            });
            match caps.map(|c| plan::carrier(s, c)) {
                Some(Ok((backend, live))) => {
                    v["backend"] = backend.as_str().into();
                    v["live"] = live.into();
                }
                Some(Err(why)) => {
                    v["backend"] = serde_json::Value::Null;
                    v["unsupported"] = why.into();
                }
                None => v["backend"] = serde_json::Value::Null,
            }
            v
        })
        .collect()
}
