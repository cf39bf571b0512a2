//! The capture pipeline: source → (split per rendition) → H.264 encoder → `h264parse` →
//! `appsink`, one appsink per encoding, and the per-frame accounting that stall detection and
//! metrics read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::encoder::{self, Encoder, Target};
use super::source::{self, Source};
use crate::config::{StreamConfig, h264};

/// Name of the main encoding's `appsink`.
pub const SINK_NAME: &str = "sink";
/// Name of the main encoder element.
pub const ENCODER_NAME: &str = "enc";

/// Name of rendition `i`'s appsink.
pub fn rendition_sink(i: usize) -> String {
    format!("sink_r{i}")
}

/// Name of rendition `i`'s encoder.
pub fn rendition_encoder(i: usize) -> String {
    format!("enc_r{i}")
}

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
    /// An element's plugin is installed but registered no such element: no device for it.
    #[error("GStreamer element {element} is not available: {detail}")]
    NoDeviceFor {
        /// The element factory name.
        element: &'static str,
        /// What is missing.
        detail: String,
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
    /// A configured hardware encoder does not work here.
    #[error("the encoder {element} is not usable: {reason}")]
    EncoderUnusable {
        /// The element.
        element: &'static str,
        /// What the test encode said.
        reason: String,
    },
    /// `auto` found no encoder that works.
    #[error("no H.264 encoder works here: {0}")]
    NoEncoder(String),
    /// The description did not parse (usually a bad `source.pipeline` fragment).
    #[error("cannot build the capture pipeline: {error} (pipeline: {description})")]
    Parse {
        /// GStreamer's message.
        error: String,
        /// The description that failed.
        description: String,
    },
}

/// The full capture description: the source, then one encoder and appsink per encoding. With
/// renditions, a tee splits the raw picture; each rendition's queue leaks so a slow rendition
/// never holds up the main encoding or the camera.
pub fn describe(stream: &StreamConfig, source: &Source, encoder: Encoder) -> String {
    describe_with_image(stream, source, encoder, "")
}

/// [`describe`], with the image processing fragment (`stream::image::software::describe`)
/// after the source, so every encoding gets the processed picture.
pub fn describe_with_image(
    stream: &StreamConfig,
    source: &Source,
    encoder: Encoder,
    image: &str,
) -> String {
    let src = format!("{}{image}", source::describe(source, &stream.video));
    // Raw-picture tap (snapshots, MJPEG, analysis): a tee branch before any encoder, closed
    // while nobody reads (`stream::tap`).
    let src = format!("{src} ! {}", super::tap::describe());
    let level = stream.level().unwrap_or_else(|_| h264::Level::fallback());
    let main = format!(
        "{} ! h264parse name=parse config-interval=-1 \
         ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! appsink name={SINK_NAME} max-buffers=4 drop=true",
        encoder::fragment(encoder, ENCODER_NAME, &Target::of(stream, level))
    );
    // Motion detection (stream::motion): its own leaky branch of the raw picture.
    let motion = super::motion::branch(stream);
    if stream.renditions.is_empty() && motion.is_empty() {
        return format!("{src} ! {main}");
    }
    let mut d = format!(
        "{src} ! tee name=split split. ! queue max-size-buffers=3 max-size-bytes=0 max-size-time=0 ! {main}"
    );
    for (i, r) in stream.renditions.iter().enumerate() {
        let fps = stream.rendition_fps(r);
        // The same keyframe spacing in time as the main encoding.
        let target = Target {
            bitrate_kbps: r.bitrate_kbps,
            keyframe_interval: (stream.encoder.keyframe_interval * fps / stream.video.fps).max(1),
            profile: stream.encoder.profile,
            level: h264::derive_level_for(r.width, r.height, fps, r.bitrate_kbps, false)
                .unwrap_or_else(h264::Level::fallback),
        };
        d.push_str(&format!(
            " split. ! queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0 \
             ! videoscale ! videorate drop-only=true \
             ! video/x-raw,width={},height={},framerate={fps}/1 ! {} \
             ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! appsink name={} max-buffers=4 drop=true",
            r.width,
            r.height,
            encoder::fragment(encoder, &rendition_encoder(i), &target),
            rendition_sink(i)
        ));
    }
    d.push_str(&motion);
    d
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

/// Counts every buffer reaching the appsink named `sink` into `stats`, and calls `on_frame` for
/// each (metrics and the snapshot cache, without a registry look-up per frame).
pub fn attach_frame_probe(
    pipeline: &gst::Pipeline,
    sink: &str,
    stats: Arc<FrameStats>,
    on_frame: impl Fn(&gst::Buffer, bool) + Send + Sync + 'static,
) {
    let Some(sink) = pipeline.by_name(sink) else {
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
