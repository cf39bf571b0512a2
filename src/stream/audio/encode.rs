//! The encoders: Opus for WebRTC (and RTSP on request), AAC-LC for RTSP, recordings and every
//! push. Each sits behind a `valve` that is open only while its hub has a subscriber, so a
//! codec no output needs costs nothing. AAC is `avenc_aac` (gstreamer1.0-libav) when installed,
//! else `voaacenc` (gstreamer1.0-plugins-bad).

use crate::config::AudioConfig;

use super::{AudioCodec, AudioError};

/// An AAC encoder element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AacEncoder {
    /// FFmpeg's native AAC encoder (gstreamer1.0-libav).
    Avenc,
    /// VisualOn's AAC encoder (gstreamer1.0-plugins-bad).
    Voaac,
}

impl AacEncoder {
    /// The element factory name.
    pub fn element(self) -> &'static str {
        match self {
            AacEncoder::Avenc => "avenc_aac",
            AacEncoder::Voaac => "voaacenc",
        }
    }

    /// The first installed AAC encoder.
    pub fn find() -> Result<Self, AudioError> {
        [AacEncoder::Avenc, AacEncoder::Voaac]
            .into_iter()
            .find(|e| gst::ElementFactory::find(e.element()).is_some())
            .ok_or(AudioError::MissingElement {
                element: "avenc_aac",
                package: "gstreamer1.0-libav (or gstreamer1.0-plugins-bad for voaacenc)",
            })
    }
}

/// Fails with the package to install when `opusenc` is missing.
pub fn check_opus() -> Result<(), AudioError> {
    if gst::ElementFactory::find("opusenc").is_none() {
        return Err(AudioError::MissingElement {
            element: "opusenc",
            package: "gstreamer1.0-plugins-base",
        });
    }
    Ok(())
}

/// Name of a codec's appsink.
pub fn sink_name(codec: AudioCodec) -> &'static str {
    match codec {
        AudioCodec::Opus => "opus_sink",
        AudioCodec::Aac => "aac_sink",
    }
}

/// Name of the valve in front of a codec's encoder.
pub fn valve_name(codec: AudioCodec) -> &'static str {
    match codec {
        AudioCodec::Opus => "opus_valve",
        AudioCodec::Aac => "aac_valve",
    }
}

/// Bits a second for a codec: speech-and-room quality, small next to the video.
pub fn bitrate(codec: AudioCodec, c: &AudioConfig) -> u32 {
    let per_channel = match codec {
        AudioCodec::Opus => 32_000,
        AudioCodec::Aac => 64_000,
    };
    per_channel * c.channels.clamp(1, 2)
}

/// The branch of one codec after the raw tee: valve, encoder, parser, appsink. The appsink's
/// caps are what subscribers get: raw Opus packets of 20 ms, or raw AAC access units with
/// `codec_data` (what rtpmp4gpay, flvmux, mpegtsmux and the recorder take).
pub fn branch(codec: AudioCodec, c: &AudioConfig, aac: AacEncoder, open: bool) -> String {
    let valve = format!(
        "queue max-size-buffers=0 max-size-bytes=0 max-size-time=200000000 leaky=downstream \
         ! valve name={} drop={}",
        valve_name(codec),
        !open
    );
    let encoder = match codec {
        AudioCodec::Opus => format!(
            "opusenc bitrate={} frame-size=20 ! audio/x-opus,channel-mapping-family=0",
            bitrate(codec, c)
        ),
        AudioCodec::Aac => format!(
            "{} bitrate={} ! aacparse ! audio/mpeg,mpegversion=4,stream-format=raw",
            aac.element(),
            bitrate(codec, c)
        ),
    };
    format!(
        "{valve} ! {encoder} ! appsink name={} max-buffers=50 drop=true sync=false",
        sink_name(codec)
    )
}
