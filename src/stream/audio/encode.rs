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

    /// Samples the encoder puts in front of the sound (its priming). A container can say so in
    /// an edit list, but RTP, FLV and MPEG-TS cannot: decoders play them, and the sound comes
    /// that much after the picture. Subtracting them from the packets' timestamps puts each
    /// packet's sound back at the instant it was captured.
    pub fn priming_samples(self) -> u64 {
        match self {
            // FFmpeg's encoder: `initial_padding` = 1024.
            AacEncoder::Avenc => 1024,
            // VisualOn's: one frame of delay.
            AacEncoder::Voaac => 1024,
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

/// A valve that reopens leaves a gap: the encoder must take the new timestamps (drain, start
/// again from them) rather than keep counting samples from before the gap, which would put
/// every later packet behind the picture by the length of the gap.
const RESYNC: &str = "hard-resync=true tolerance=20000000";

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
/// `codec_data` (what rtpmp4gpay, flvmux, mpegtsmux and the recorder take). The appsink is
/// `async=false`: a branch whose valve is shut gets no data, and a sink waiting for its preroll
/// would hold the whole pipeline out of PLAYING.
pub fn branch(codec: AudioCodec, c: &AudioConfig, aac: AacEncoder, open: bool) -> String {
    let valve = format!(
        "queue max-size-buffers=0 max-size-bytes=0 max-size-time=200000000 leaky=downstream \
         ! valve name={} drop-mode=forward-sticky-events drop={}",
        valve_name(codec),
        !open
    );
    let encoder = match codec {
        AudioCodec::Opus => format!(
            "opusenc bitrate={} frame-size=20 {RESYNC} ! audio/x-opus,channel-mapping-family=0",
            bitrate(codec, c)
        ),
        AudioCodec::Aac => format!(
            // avenc_aac takes planar float only: convert here, not for Opus.
            "audioconvert ! {} bitrate={} {RESYNC} ! aacparse ! audio/mpeg,mpegversion=4,stream-format=raw",
            aac.element(),
            bitrate(codec, c)
        ),
    };
    format!(
        "{valve} ! {encoder} ! appsink name={} max-buffers=50 drop=true sync=false async=false",
        sink_name(codec)
    )
}

/// Moves every buffer reaching the AAC appsink earlier by the encoder's priming (see
/// [`AacEncoder::priming_samples`]), so the decoded sound lines up with the picture.
pub fn correct_priming(pipeline: &gst::Pipeline, aac: AacEncoder, rate: u32) {
    use gst::prelude::*;
    let Some(pad) = pipeline
        .by_name(sink_name(AudioCodec::Aac))
        .and_then(|s| s.static_pad("sink"))
    else {
        return;
    };
    let delay = gst::ClockTime::from_nseconds(
        aac.priming_samples() * 1_000_000_000 / u64::from(rate.max(1)),
    );
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
            let b = buffer.make_mut();
            if let Some(pts) = b.pts() {
                b.set_pts(pts.saturating_sub(delay));
            }
            if let Some(dts) = b.dts() {
                b.set_dts(dts.saturating_sub(delay));
            }
        }
        gst::PadProbeReturn::Ok
    });
}
