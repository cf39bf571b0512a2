//! Where pictures come from: the configured source resolved to a concrete one (`auto` finds a
//! libcamera camera, else a V4L2 capture device; never a test pattern), and the description of
//! its part of the capture pipeline.

use std::fmt;
use std::path::Path;

use gst::prelude::*;

use super::CaptureError;
use super::elements::require;
use crate::config::{SourceConfig, SourceKind, VideoConfig};

/// A concrete source, after `auto` has been resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `libcamerasrc`, optionally a named camera.
    Libcamera {
        /// Camera name; empty for the first.
        camera_name: String,
    },
    /// `v4l2src` on a device.
    V4l2 {
        /// Device path.
        device: String,
    },
    /// `videotestsrc`.
    Test {
        /// Pattern name.
        pattern: String,
    },
    /// An operator-given launch fragment.
    Pipeline {
        /// The fragment.
        fragment: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Libcamera { camera_name } if camera_name.is_empty() => {
                write!(f, "libcamera (first camera)")
            }
            Source::Libcamera { camera_name } => write!(f, "libcamera camera {camera_name}"),
            Source::V4l2 { device } => write!(f, "v4l2 {device}"),
            Source::Test { pattern } => write!(f, "test pattern {pattern}"),
            Source::Pipeline { .. } => write!(f, "pipeline fragment"),
        }
    }
}

impl Source {
    /// Short name for metrics and status: libcamera, v4l2, test or pipeline.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Source::Libcamera { .. } => "libcamera",
            Source::V4l2 { .. } => "v4l2",
            Source::Test { .. } => "test",
            Source::Pipeline { .. } => "pipeline",
        }
    }
}

/// Finds a camera for `source.kind = "auto"`: a libcamera camera first, else a V4L2 capture
/// device. Runs the GStreamer device monitor, so it takes a moment; call it off the GLib thread.
pub fn discover_camera() -> Option<Source> {
    let monitor = gst::DeviceMonitor::new();
    monitor.add_filter(Some("Video/Source"), None);
    if monitor.start().is_err() {
        return None;
    }
    let devices = monitor.devices();
    monitor.stop();
    let mut v4l2 = None;
    for device in devices {
        let Ok(element) = device.create_element(None) else {
            continue;
        };
        let factory = element.factory().map(|f| f.name().to_string());
        match factory.as_deref() {
            Some("libcamerasrc") => {
                let camera_name = if element.has_property("camera-name") {
                    element
                        .property::<Option<String>>("camera-name")
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                return Some(Source::Libcamera { camera_name });
            }
            Some("v4l2src") if v4l2.is_none() => {
                let device: Option<String> = element.property("device");
                if let Some(device) = device {
                    v4l2 = Some(Source::V4l2 { device });
                }
            }
            _ => {}
        }
    }
    v4l2
}

/// Resolves the configured source to a concrete one, checking that what it needs exists.
pub fn resolve(s: &SourceConfig) -> Result<Source, CaptureError> {
    match s.kind {
        SourceKind::Test => {
            require("videotestsrc")?;
            Ok(Source::Test {
                pattern: s.pattern.clone(),
            })
        }
        SourceKind::Pipeline => Ok(Source::Pipeline {
            fragment: s.pipeline.clone(),
        }),
        SourceKind::Libcamera => {
            require("libcamerasrc")?;
            Ok(Source::Libcamera {
                camera_name: s.camera_name.clone(),
            })
        }
        SourceKind::V4l2 => {
            require("v4l2src")?;
            let device = if s.device.is_empty() {
                match discover_camera() {
                    Some(Source::V4l2 { device }) => device,
                    _ => "/dev/video0".to_string(),
                }
            } else {
                s.device.clone()
            };
            if !Path::new(&device).exists() {
                return Err(CaptureError::NoDevice {
                    what: "camera device",
                    path: device,
                });
            }
            Ok(Source::V4l2 { device })
        }
        SourceKind::Auto => {
            if !s.device.is_empty() {
                require("v4l2src")?;
                if !Path::new(&s.device).exists() {
                    return Err(CaptureError::NoDevice {
                        what: "camera device",
                        path: s.device.clone(),
                    });
                }
                return Ok(Source::V4l2 {
                    device: s.device.clone(),
                });
            }
            discover_camera().ok_or(CaptureError::NoCamera)
        }
    }
}

/// Quotes a value for a launch description.
pub(super) fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The source part of a capture description, ending in raw video of the configured size and
/// rate (converters are passthrough when the camera already delivers it).
pub fn describe(source: &Source, v: &VideoConfig) -> String {
    let raw_caps = format!(
        "video/x-raw,width={},height={},framerate={}/1",
        v.width, v.height, v.fps
    );
    match source {
        // videotestsrc produces the exact size and rate, so nothing needs converting.
        Source::Test { pattern } => format!(
            "videotestsrc name=src is-live=true pattern={} ! {raw_caps}",
            quote(pattern)
        ),
        // libcamerasrc only negotiates with explicit format, colorimetry and interlace mode.
        Source::Libcamera { camera_name } => {
            let name = if camera_name.is_empty() {
                String::new()
            } else {
                format!(" camera-name={}", quote(camera_name))
            };
            format!(
                "libcamerasrc name=src{name} ! {raw_caps},format=NV12,colorimetry=bt709,\
                 interlace-mode=progressive"
            )
        }
        Source::V4l2 { device } => format!(
            "v4l2src name=src device={} ! videoconvert ! videoscale ! videorate drop-only=true \
             ! {raw_caps}",
            quote(device)
        ),
        Source::Pipeline { fragment } => format!(
            "{fragment} ! videoconvert ! videoscale ! videorate drop-only=true ! {raw_caps}"
        ),
    }
}

/// Opens `source` and waits for `frames` raw frames within `within`, to prove a camera that
/// lists can also stream (`camstream check`). A failure says why in libcamera's words when it
/// said anything, and ends as soon as libcamera names a known cause.
pub fn test_capture(
    source: &Source,
    v: &VideoConfig,
    frames: u32,
    within: std::time::Duration,
) -> Result<(), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::{libcamera_log, lifecycle};

    let t0 = std::time::Instant::now();
    let libcamera = matches!(source, Source::Libcamera { .. });
    let explain = |message: String| {
        if libcamera {
            libcamera_log::explain_failure(&message, t0)
        } else {
            message
        }
    };
    let desc = format!("{} ! fakesink name=sink sync=false", describe(source, v));
    let pipeline = gst::parse::launch_full(&desc, None, gst::ParseFlags::FATAL_ERRORS)
        .map_err(|e| format!("{e} (pipeline: {desc})"))?;
    let seen = Arc::new(AtomicU32::new(0));
    if let Some(pad) = pipeline
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("sink"))
        .and_then(|s| s.static_pad("sink"))
    {
        let seen = seen.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            seen.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    }
    let bus = pipeline.bus().ok_or("the capture pipeline has no bus")?;
    let result = (|| {
        if pipeline.set_state(gst::State::Playing).is_err() {
            let detail = bus
                .pop_filtered(&[gst::MessageType::Error])
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(e) => Some(lifecycle::describe_error(e)),
                    _ => None,
                })
                .unwrap_or_else(|| "the camera refused to start".into());
            return Err(explain(detail));
        }
        loop {
            if seen.load(Ordering::Relaxed) >= frames {
                return Ok(());
            }
            if libcamera
                && t0.elapsed() >= libcamera_log::GRACE
                && let Some(d) = libcamera_log::known_cause_since(t0)
            {
                return Err(d.to_string());
            }
            if t0.elapsed() >= within {
                return Err(explain(format!(
                    "{} of {frames} frames within {} ms",
                    seen.load(Ordering::Relaxed),
                    within.as_millis()
                )));
            }
            if let Some(m) = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(50),
                &[gst::MessageType::Error, gst::MessageType::Eos],
            ) {
                return Err(explain(match m.view() {
                    gst::MessageView::Error(e) => lifecycle::describe_error(e),
                    _ => "the source ended (EOS) before the frames came".into(),
                }));
            }
        }
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}
