//! The H.264 encoder: which one to use (probed with a short test encode, in a fixed order unless
//! configured), its part of the capture pipeline, and which settings it takes while playing.

use std::path::Path;

use gst::prelude::*;

use super::CaptureError;
use super::elements::{absence, has_element, require};
use crate::config::{EncoderConfig, EncoderKind, Level, Profile264, StreamConfig};

/// A concrete encoder, after `auto` has been resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// `v4l2h264enc` (Raspberry Pi bcm2835-codec).
    V4l2,
    /// `vah264enc` (VA-API through GStreamer's `va` plugin).
    Va,
    /// `vaapih264enc` (the older `vaapi` plugin).
    Vaapi,
    /// `nvh264enc` (NVIDIA NVENC).
    Nvenc,
    /// `qsvh264enc` (Intel Quick Sync).
    Qsv,
    /// `x264enc`, software.
    X264,
    /// `openh264enc`, software.
    Openh264,
}

/// The order `auto` tries encoders in: hardware first, then software.
pub const PROBE_ORDER: &[Encoder] = &[
    Encoder::V4l2,
    Encoder::Va,
    Encoder::Vaapi,
    Encoder::Nvenc,
    Encoder::Qsv,
    Encoder::X264,
    Encoder::Openh264,
];

impl Encoder {
    /// The element factory name.
    pub fn element(self) -> &'static str {
        match self {
            Encoder::V4l2 => "v4l2h264enc",
            Encoder::Va => "vah264enc",
            Encoder::Vaapi => "vaapih264enc",
            Encoder::Nvenc => "nvh264enc",
            Encoder::Qsv => "qsvh264enc",
            Encoder::X264 => "x264enc",
            Encoder::Openh264 => "openh264enc",
        }
    }

    /// The encoder a configured kind names (`None` for `auto`).
    pub fn from_kind(kind: EncoderKind) -> Option<Encoder> {
        Some(match kind {
            EncoderKind::Auto => return None,
            EncoderKind::V4l2 => Encoder::V4l2,
            EncoderKind::Va => Encoder::Va,
            EncoderKind::Vaapi => Encoder::Vaapi,
            EncoderKind::Nvenc => Encoder::Nvenc,
            EncoderKind::Qsv => Encoder::Qsv,
            EncoderKind::X264 => Encoder::X264,
            EncoderKind::Openh264 => Encoder::Openh264,
        })
    }

    /// The bitrate property and its unit divisor from kbit/s (1 = kbit/s, 1000 = bit/s);
    /// `None` where the bitrate goes through controls.
    fn bitrate_property(self) -> Option<(&'static str, u64)> {
        match self {
            Encoder::V4l2 => None,
            Encoder::Openh264 => Some(("bitrate", 1000)),
            _ => Some(("bitrate", 1)),
        }
    }
}

/// What one encoder's probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The element.
    pub element: &'static str,
    /// Why it was or was not chosen.
    pub outcome: String,
}

/// The encoder chosen for a stream, and the probes that led there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The encoder.
    pub encoder: Encoder,
    /// Every encoder tried, in order, ending with the chosen one.
    pub probes: Vec<Probe>,
}

impl Selection {
    /// One line: why this encoder, and why not the ones before it.
    pub fn reason(&self) -> String {
        self.probes
            .iter()
            .map(|p| format!("{}: {}", p.element, p.outcome))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why `encoder` cannot be used here, or `None` if a test encode passed.
fn probe(stream: &StreamConfig, encoder: Encoder) -> Option<String> {
    if !has_element(encoder.element()) {
        return Some(absence(encoder.element()));
    }
    if encoder == Encoder::V4l2 && !Path::new(&stream.encoder.device).exists() {
        return Some(format!("device {} is absent", stream.encoder.device));
    }
    test_encode(stream, encoder)
        .err()
        .map(|e| format!("test encode failed: {e}"))
}

/// Picks the encoder: the configured one (which must pass a test encode), or for `auto` the
/// first in [`PROBE_ORDER`] that passes one.
pub fn select(stream: &StreamConfig) -> Result<Selection, CaptureError> {
    if let Some(encoder) = Encoder::from_kind(stream.encoder.kind) {
        require(encoder.element())?;
        if encoder == Encoder::V4l2 && !Path::new(&stream.encoder.device).exists() {
            return Err(CaptureError::NoDevice {
                what: "hardware encoder device",
                path: stream.encoder.device.clone(),
            });
        }
        // Software encoders always work once installed; the test encode is for drivers.
        if !matches!(encoder, Encoder::X264 | Encoder::Openh264)
            && let Err(e) = test_encode(stream, encoder)
        {
            return Err(CaptureError::EncoderUnusable {
                element: encoder.element(),
                reason: e,
            });
        }
        return Ok(Selection {
            encoder,
            probes: vec![Probe {
                element: encoder.element(),
                outcome: "configured".into(),
            }],
        });
    }
    let mut probes = Vec::new();
    for &encoder in PROBE_ORDER {
        match probe(stream, encoder) {
            None => {
                probes.push(Probe {
                    element: encoder.element(),
                    outcome: "chosen: passed a test encode".into(),
                });
                return Ok(Selection { encoder, probes });
            }
            Some(why) => probes.push(Probe {
                element: encoder.element(),
                outcome: why,
            }),
        }
    }
    Err(CaptureError::NoEncoder(
        probes
            .iter()
            .map(|p| format!("{}: {}", p.element, p.outcome))
            .collect::<Vec<_>>()
            .join("; "),
    ))
}

/// What an encoder is asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// kbit/s.
    pub bitrate_kbps: u32,
    /// Frames between keyframes.
    pub keyframe_interval: u32,
    /// Profile asked for.
    pub profile: Profile264,
    /// Level for the output caps.
    pub level: Level,
}

impl Target {
    /// The main encoding of a stream.
    pub fn of(stream: &StreamConfig, level: Level) -> Self {
        let e: &EncoderConfig = &stream.encoder;
        Target {
            bitrate_kbps: e.bitrate_kbps,
            keyframe_interval: e.keyframe_interval,
            profile: e.profile,
            level,
        }
    }
}

/// Properties set only when the installed element has them: hardware encoders' property sets
/// differ between GStreamer releases, and an unknown property would fail the whole pipeline.
fn existing(element: &str, props: &[(&str, String)]) -> String {
    let probe = gst::ElementFactory::make(element).build().ok();
    props
        .iter()
        .filter(|(k, _)| probe.as_ref().is_none_or(|e| e.find_property(k).is_some()))
        .map(|(k, v)| format!(" {k}={v}"))
        .collect()
}

/// The encoder part of a description: the encoder element named `name` and the caps it must
/// output.
pub fn fragment(encoder: Encoder, name: &str, t: &Target) -> String {
    let (kbps, gop) = (t.bitrate_kbps, t.keyframe_interval);
    let profile = t.profile.caps_name();
    let level = t.level.as_str();
    match encoder {
        Encoder::X264 => format!(
            "x264enc name={name} tune=zerolatency speed-preset=ultrafast bframes=0 \
             key-int-max={gop} bitrate={kbps} ! video/x-h264,profile={profile}"
        ),
        // openh264 only produces constrained baseline; asking for more fails negotiation.
        Encoder::Openh264 => format!(
            "openh264enc name={name} bitrate={} gop-size={gop} complexity=low \
             usage-type=camera rate-control=bitrate ! video/x-h264",
            u64::from(kbps) * 1000
        ),
        // The Pi encoder: SPS/PPS on every IDR, GOP and bitrate through extra-controls, and the
        // level in the caps or negotiation fails.
        Encoder::V4l2 => format!(
            "v4l2h264enc name={name} extra-controls=\"{}\" ! \
             video/x-h264,level=(string){level},profile=(string){profile}",
            v4l2_controls(kbps, gop)
        ),
        Encoder::Va => format!(
            "vah264enc name={name}{} ! video/x-h264,profile={profile}",
            existing(
                "vah264enc",
                &[
                    ("bitrate", kbps.to_string()),
                    ("key-int-max", gop.to_string()),
                    ("b-frames", "0".into()),
                    ("rate-control", "cbr".into()),
                ]
            )
        ),
        Encoder::Vaapi => format!(
            "vaapih264enc name={name}{} ! video/x-h264,profile={profile}",
            existing(
                "vaapih264enc",
                &[
                    ("bitrate", kbps.to_string()),
                    ("keyframe-period", gop.to_string()),
                    ("max-bframes", "0".into()),
                    ("rate-control", "cbr".into()),
                ]
            )
        ),
        Encoder::Nvenc => format!(
            "nvh264enc name={name}{} ! video/x-h264,profile={profile}",
            existing(
                "nvh264enc",
                &[
                    ("bitrate", kbps.to_string()),
                    ("gop-size", gop.to_string()),
                    ("bframes", "0".into()),
                    ("rc-mode", "cbr".into()),
                    ("zerolatency", "true".into()),
                ]
            )
        ),
        Encoder::Qsv => format!(
            "qsvh264enc name={name}{} ! video/x-h264,profile={profile}",
            existing(
                "qsvh264enc",
                &[
                    ("bitrate", kbps.to_string()),
                    ("gop-size", gop.to_string()),
                    ("b-frames", "0".into()),
                    ("rate-control", "cbr".into()),
                ]
            )
        ),
    }
}

/// The V4L2 controls that set the Pi encoder's bitrate and GOP, and put SPS/PPS on every IDR.
fn v4l2_controls(kbps: u32, gop: u32) -> String {
    format!(
        "controls,repeat_sequence_header=1,h264_i_frame_period={gop},video_bitrate={}",
        u64::from(kbps) * 1000
    )
}

/// Whether `element` takes `property` while playing (the element's own declaration).
fn mutable_playing(element: &gst::Element, property: &str) -> bool {
    element
        .find_property(property)
        .is_some_and(|p| p.flags().contains(gst::PARAM_FLAG_MUTABLE_PLAYING))
}

/// Whether a bitrate change can be applied to this running encoder without a restart.
pub fn bitrate_is_live(encoder: Encoder, element: &gst::Element) -> bool {
    match encoder.bitrate_property() {
        Some((prop, _)) => mutable_playing(element, prop),
        // The V4L2 element sends changed extra-controls to the open device.
        None => element.find_property("extra-controls").is_some(),
    }
}

/// Sets the bitrate on a running encoder; the caller checked [`bitrate_is_live`].
pub fn set_bitrate(encoder: Encoder, element: &gst::Element, kbps: u32, gop: u32) {
    match encoder.bitrate_property() {
        Some((prop, divisor)) => {
            let value = u64::from(kbps) * divisor;
            // Every encoder here declares its bitrate as a u32.
            element.set_property(prop, u32::try_from(value).unwrap_or(u32::MAX));
        }
        None => {
            if let Ok(s) = v4l2_controls(kbps, gop).parse::<gst::Structure>() {
                element.set_property("extra-controls", s);
            }
        }
    }
}

/// Encodes a few frames of test pattern at the stream's size through `encoder`, to prove it
/// works here (an element can be installed while its driver is missing or busy).
pub fn test_encode(stream: &StreamConfig, encoder: Encoder) -> Result<(), String> {
    let v = &stream.video;
    let level = stream.level().map_err(|e| e.to_string())?;
    let desc = format!(
        "videotestsrc num-buffers=5 ! video/x-raw,format=I420,width={},height={},framerate={}/1 \
         ! {} ! h264parse ! fakesink",
        v.width,
        v.height,
        v.fps,
        fragment(encoder, "probe", &Target::of(stream, level))
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
pub fn caveats(stream: &StreamConfig, encoder: Encoder) -> Option<String> {
    let profile = stream.encoder.profile;
    match encoder {
        Encoder::Openh264 if profile != Profile264::ConstrainedBaseline => Some(format!(
            "openh264enc encodes constrained-baseline only; encoder.profile = {} is ignored",
            profile.caps_name()
        )),
        // ultrafast turns off CABAC and 8x8 transforms, which is what keeps x264 cheap enough for
        // a small board; the stream then only uses Constrained Baseline tools.
        Encoder::X264 if profile != Profile264::ConstrainedBaseline => Some(format!(
            "x264enc with speed-preset=ultrafast produces a Constrained Baseline stream; \
             encoder.profile = {} applies to the hardware encoders",
            profile.caps_name()
        )),
        _ => None,
    }
}
