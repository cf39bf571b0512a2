//! The capture pipeline: which source and encoder to use, the GStreamer description that joins
//! them (source → convert/scale when needed → H.264 encoder → `h264parse` → `appsink`), and the
//! per-frame accounting the supervisor's stall detection reads.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;

use crate::config::{Config, EncoderKind, Profile264, SourceKind};

/// Name of the `appsink` at the end of every capture pipeline.
pub const SINK_NAME: &str = "sink";
/// Name of the encoder element.
pub const ENCODER_NAME: &str = "enc";

/// Why a capture pipeline could not be chosen or built.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A needed GStreamer element is not installed.
    #[error("GStreamer element {element} is missing (install the Debian package {package})")]
    MissingElement {
        /// The element factory name.
        element: &'static str,
        /// The package that provides it.
        package: &'static str,
    },
    /// `auto` found neither a libcamera camera nor a V4L2 capture device.
    #[error(
        "no camera found (source.kind = \"auto\" looked for libcamera cameras and V4L2 capture devices); \
         check the cable and driver, or set source.kind = \"test\" to stream a test pattern"
    )]
    NoCamera,
    /// A configured device path does not exist.
    #[error("{what} {path} does not exist")]
    NoDevice {
        /// What the device is for.
        what: &'static str,
        /// The path.
        path: String,
    },
    /// The Pi hardware encoder was asked for but does not work here.
    #[error("the V4L2 hardware encoder is not usable: {0}")]
    EncoderUnusable(String),
    /// The description did not parse (usually a bad `source.pipeline` fragment).
    #[error("cannot build the capture pipeline: {error} (pipeline: {description})")]
    Parse {
        /// GStreamer's message.
        error: String,
        /// The description that failed.
        description: String,
    },
}

/// Debian package that ships each element camstream may use.
pub fn package_for(element: &str) -> &'static str {
    match element {
        "libcamerasrc" => "gstreamer1.0-libcamera",
        "v4l2src" | "v4l2h264enc" | "rtph264pay" | "rtph264depay" | "jpegenc" | "udpsrc"
        | "udpsink" | "rtpbin" => "gstreamer1.0-plugins-good",
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "openh264enc" | "h264parse" => "gstreamer1.0-plugins-bad",
        "avdec_h264" => "gstreamer1.0-libav",
        "identity" | "queue" | "valve" | "concat" | "fakesink" => "libgstreamer1.0-0",
        _ => "gstreamer1.0-plugins-base",
    }
}

/// Whether an element factory is installed.
pub fn has_element(name: &str) -> bool {
    gst::ElementFactory::find(name).is_some()
}

/// Fails with the package name when `element` is missing.
pub fn require(element: &'static str) -> Result<(), CaptureError> {
    if has_element(element) {
        Ok(())
    } else {
        Err(CaptureError::MissingElement {
            element,
            package: package_for(element),
        })
    }
}

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

/// A concrete encoder, after `auto` has been resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// `v4l2h264enc`.
    V4l2,
    /// `x264enc`.
    X264,
    /// `openh264enc`.
    Openh264,
}

impl Encoder {
    /// The element factory name.
    pub fn element(self) -> &'static str {
        match self {
            Encoder::V4l2 => "v4l2h264enc",
            Encoder::X264 => "x264enc",
            Encoder::Openh264 => "openh264enc",
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
pub fn resolve_source(config: &Config) -> Result<Source, CaptureError> {
    let s = &config.source;
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

/// Picks the encoder: the configured one, or for `auto` the Pi hardware encoder when its device
/// is present and works, else x264, else openh264. Returns the choice and why it was made.
pub fn select_encoder(config: &Config) -> Result<(Encoder, String), CaptureError> {
    let dev = &config.encoder.device;
    match config.encoder.kind {
        EncoderKind::X264 => require("x264enc").map(|_| (Encoder::X264, "configured".into())),
        EncoderKind::Openh264 => {
            require("openh264enc").map(|_| (Encoder::Openh264, "configured".into()))
        }
        EncoderKind::V4l2 => {
            require("v4l2h264enc")?;
            if !Path::new(dev).exists() {
                return Err(CaptureError::NoDevice {
                    what: "hardware encoder device",
                    path: dev.clone(),
                });
            }
            test_encode(config, Encoder::V4l2).map_err(CaptureError::EncoderUnusable)?;
            Ok((Encoder::V4l2, "configured".into()))
        }
        EncoderKind::Auto => {
            let hw_reason = if !has_element("v4l2h264enc") {
                "v4l2h264enc is not installed".to_string()
            } else if !Path::new(dev).exists() {
                format!("hardware encoder device {dev} is absent")
            } else {
                match test_encode(config, Encoder::V4l2) {
                    Ok(()) => {
                        return Ok((
                            Encoder::V4l2,
                            format!("hardware encoder at {dev} passed a test encode"),
                        ));
                    }
                    Err(e) => format!("hardware encoder at {dev} failed a test encode: {e}"),
                }
            };
            if has_element("x264enc") {
                Ok((Encoder::X264, format!("{hw_reason}; using software x264")))
            } else if has_element("openh264enc") {
                Ok((
                    Encoder::Openh264,
                    format!("{hw_reason} and x264enc is not installed; using openh264"),
                ))
            } else {
                Err(CaptureError::MissingElement {
                    element: "x264enc",
                    package: package_for("x264enc"),
                })
            }
        }
    }
}

/// Quotes a value for a launch description.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The full capture description for a source and encoder.
pub fn describe(config: &Config, source: &Source, encoder: Encoder) -> String {
    let v = &config.video;
    let raw_caps = format!(
        "video/x-raw,width={},height={},framerate={}/1",
        v.width, v.height, v.fps
    );
    let src = match source {
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
        // Converters are passthrough when the camera already delivers the configured caps.
        Source::V4l2 { device } => format!(
            "v4l2src name=src device={} ! videoconvert ! videoscale ! videorate drop-only=true \
             ! {raw_caps}",
            quote(device)
        ),
        Source::Pipeline { fragment } => format!(
            "{fragment} ! videoconvert ! videoscale ! videorate drop-only=true ! {raw_caps}"
        ),
    };
    let enc = encoder_fragment(config, encoder);
    format!(
        "{src} ! {enc} ! h264parse name=parse config-interval=-1 \
         ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! appsink name={SINK_NAME} max-buffers=4 drop=true"
    )
}

/// The encoder part of a description: the encoder element and the caps it must output.
pub fn encoder_fragment(config: &Config, encoder: Encoder) -> String {
    let e = &config.encoder;
    let gop = e.keyframe_interval;
    let level = config.effective_level().map(|l| l.as_str()).unwrap_or("4");
    match encoder {
        Encoder::X264 => format!(
            "x264enc name={ENCODER_NAME} tune=zerolatency speed-preset=ultrafast bframes=0 \
             key-int-max={gop} bitrate={} ! video/x-h264,profile={}",
            e.bitrate_kbps,
            e.profile.caps_name()
        ),
        // openh264 only produces constrained baseline; asking for more fails negotiation.
        Encoder::Openh264 => format!(
            "openh264enc name={ENCODER_NAME} bitrate={} gop-size={gop} complexity=low \
             usage-type=camera rate-control=bitrate ! video/x-h264",
            u64::from(e.bitrate_kbps) * 1000
        ),
        // The Pi encoder: SPS/PPS on every IDR, GOP and bitrate through extra-controls, and the
        // level in the caps or negotiation fails.
        Encoder::V4l2 => format!(
            "v4l2h264enc name={ENCODER_NAME} extra-controls=\"controls,repeat_sequence_header=1,\
             h264_i_frame_period={gop},video_bitrate={}\" ! video/x-h264,level=(string){level},\
             profile=(string){}",
            u64::from(e.bitrate_kbps) * 1000,
            e.profile.caps_name()
        ),
    }
}

/// Encodes a few frames of test pattern at the configured size through `encoder`, to prove it
/// works here (an element can be installed while its driver is missing or busy).
pub fn test_encode(config: &Config, encoder: Encoder) -> Result<(), String> {
    let v = &config.video;
    let desc = format!(
        "videotestsrc num-buffers=5 ! video/x-raw,format=I420,width={},height={},framerate={}/1 \
         ! {} ! h264parse ! fakesink",
        v.width,
        v.height,
        v.fps,
        encoder_fragment(config, encoder)
    );
    let pipeline = gst::parse::launch(&desc).map_err(|e| e.to_string())?;
    let bus = pipeline.bus().ok_or("pipeline has no bus")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("cannot start a test encode: {e}"))?;
    let result = match bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(5),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(msg) => match msg.view() {
            gst::MessageView::Eos(_) => Ok(()),
            gst::MessageView::Error(e) => Err(e.error().to_string()),
            _ => Err("unexpected message".into()),
        },
        None => Err("a 5-frame test encode did not finish within 5 s".into()),
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Warnings about settings an encoder ignores, for the log.
pub fn encoder_caveats(config: &Config, encoder: Encoder) -> Option<String> {
    match encoder {
        Encoder::Openh264 if config.encoder.profile != Profile264::ConstrainedBaseline => {
            Some(format!(
                "openh264enc encodes constrained-baseline only; encoder.profile = {} is ignored",
                config.encoder.profile.caps_name()
            ))
        }
        // ultrafast turns off CABAC and 8x8 transforms, which is what keeps x264 cheap enough for
        // a small board; the stream then only uses Constrained Baseline tools.
        Encoder::X264 if config.encoder.profile != Profile264::ConstrainedBaseline => {
            Some(format!(
                "x264enc with speed-preset=ultrafast produces a Constrained Baseline stream; \
             encoder.profile = {} applies to the hardware encoder",
                config.encoder.profile.caps_name()
            ))
        }
        _ => None,
    }
}

/// Parses a description into a pipeline, failing on any unknown element or property.
pub fn build(description: &str) -> Result<gst::Pipeline, CaptureError> {
    let parse_err = |error: String| CaptureError::Parse {
        error,
        description: description.to_string(),
    };
    let element = gst::parse::launch_full(description, None, gst::ParseFlags::FATAL_ERRORS)
        .map_err(|e| parse_err(e.to_string()))?;
    let pipeline = element
        .downcast::<gst::Pipeline>()
        .map_err(|_| parse_err("description is not a pipeline".into()))?;
    if pipeline.by_name(SINK_NAME).is_none() {
        return Err(parse_err(format!("no element named {SINK_NAME}")));
    }
    Ok(pipeline)
}

/// Frame counters shared by every capture pipeline of the process. Written from the streaming
/// thread with relaxed atomics only, read by the supervisor and the HTTP side.
#[derive(Debug)]
pub struct FrameStats {
    epoch: Instant,
    frames: AtomicU64,
    keyframes: AtomicU64,
    bytes: AtomicU64,
    /// Nanoseconds after `epoch` of the last frame; 0 = none yet.
    last_frame_ns: AtomicU64,
}

impl Default for FrameStats {
    fn default() -> Self {
        FrameStats {
            epoch: Instant::now(),
            frames: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_frame_ns: AtomicU64::new(0),
        }
    }
}

impl FrameStats {
    /// Counts one encoded access unit.
    pub fn record(&self, size: usize, keyframe: bool) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        if keyframe {
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
        let ns = self.epoch.elapsed().as_nanos().max(1) as u64;
        self.last_frame_ns.store(ns, Ordering::Relaxed);
    }

    /// Encoded frames so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Keyframes so far.
    pub fn keyframes(&self) -> u64 {
        self.keyframes.load(Ordering::Relaxed)
    }

    /// Encoded bytes so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// When the last frame arrived, if any.
    pub fn last_frame(&self) -> Option<Instant> {
        match self.last_frame_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.epoch + Duration::from_nanos(ns)),
        }
    }

    /// Age of the last frame, if any.
    pub fn last_frame_age(&self) -> Option<Duration> {
        self.last_frame().map(|t| t.elapsed())
    }
}

/// Counts every buffer reaching the appsink into `stats`, and calls `on_frame` for each (metrics
/// and the snapshot cache, without a registry look-up per frame).
pub fn attach_frame_probe(
    pipeline: &gst::Pipeline,
    stats: Arc<FrameStats>,
    on_frame: impl Fn(&gst::Buffer, bool) + Send + Sync + 'static,
) {
    let Some(sink) = pipeline.by_name(SINK_NAME) else {
        return;
    };
    let Some(pad) = sink.static_pad("sink") else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
            stats.record(buffer.size(), keyframe);
            on_frame(buffer, keyframe);
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_parse() {
        gst::init().unwrap();
        let mut config = Config::default();
        config.video.width = 320;
        config.video.height = 240;
        let test = Source::Test {
            pattern: "ball".into(),
        };
        for enc in [Encoder::X264, Encoder::Openh264] {
            if has_element(enc.element()) {
                let d = describe(&config, &test, enc);
                build(&d).unwrap_or_else(|e| panic!("{enc:?}: {e}"));
            }
        }
        let frag = Source::Pipeline {
            fragment: "videotestsrc is-live=true ! identity error-after=5".into(),
        };
        build(&describe(&config, &frag, Encoder::X264)).unwrap();
    }

    #[test]
    fn bad_fragment_is_a_parse_error() {
        gst::init().unwrap();
        let config = Config::default();
        let frag = Source::Pipeline {
            fragment: "nosuchelement123".into(),
        };
        let e = build(&describe(&config, &frag, Encoder::X264)).unwrap_err();
        assert!(e.to_string().contains("nosuchelement123"), "{e}");
    }

    #[test]
    fn quoting_survives_hostile_names() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn v4l2_description_carries_pi_pitfalls() {
        let config = Config::default();
        let d = describe(
            &config,
            &Source::Libcamera {
                camera_name: String::new(),
            },
            Encoder::V4l2,
        );
        assert!(d.contains("level=(string)3.1"), "{d}");
        assert!(d.contains("repeat_sequence_header=1"), "{d}");
        assert!(d.contains("h264_i_frame_period=60"), "{d}");
        assert!(d.contains("colorimetry=bt709"), "{d}");
    }
}
