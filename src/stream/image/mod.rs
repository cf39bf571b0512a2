//! Image processing, part of the capture: orientation, exposure, white balance, focus, digital
//! zoom and the text overlay of `[image]`. [`plan`] decides per setting whether the camera
//! itself carries it ([`libcamera`] properties, [`v4l2`] controls) or software elements in the
//! capture pipeline do ([`software`]); that decision is reported in the status, the controls
//! API and `camstream check`.

pub mod libcamera;
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
