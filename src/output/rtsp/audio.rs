//! The RTSP audio track (issue #24): a second stream in the same shared media as the video,
//! fed by the stream's audio hub of the configured codec, behind the same RTSP access as the
//! picture. AAC goes out as MPEG4-GENERIC (RFC 3640, what NVRs and ffmpeg expect), Opus as
//! RFC 7587.

use std::sync::Arc;

use gst::prelude::*;

use crate::stream::audio::encode::{AacEncoder, check_opus};
use crate::stream::audio::{Audio, AudioCodec};
use crate::stream::hub::{SubscriberSettings, Subscription};

/// Name of the audio track's appsrc in the media.
const APPSRC_NAME: &str = "asrc";

/// The media's launch description: the video track, then the audio track when `codec` is set.
pub(super) fn launch(codec: Option<AudioCodec>) -> String {
    // config-interval=-1: SPS/PPS before every IDR in-band too, for clients that ignore the SDP.
    let video = "appsrc name=src ! rtph264pay name=pay0 pt=96 config-interval=-1";
    let audio = match codec {
        None => return format!("( {video} )"),
        Some(AudioCodec::Aac) => "rtpmp4gpay name=pay1 pt=97",
        Some(AudioCodec::Opus) => "rtpopuspay name=pay1 pt=97",
    };
    format!("( {video} appsrc name={APPSRC_NAME} ! {audio} )")
}

/// Subscribes the media's audio appsrc (if it has one) to `audio`'s hub of `codec`.
pub(super) fn subscribe(bin: &gst::Bin, audio: &Audio, codec: AudioCodec) -> Option<Subscription> {
    let appsrc = bin
        .by_name(APPSRC_NAME)
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())?;
    Some(
        audio
            .hub(codec)
            .subscribe(&appsrc, SubscriberSettings::new("rtsp")),
    )
}

/// The codec a mount carries for `audio`, if any (read once, when the mount is made). Without
/// its encoder installed there is no track: a track that never gets caps would keep the whole
/// media, the picture with it, from being described.
pub(super) fn codec_of(audio: Option<&Arc<Audio>>) -> Option<AudioCodec> {
    let codec = audio?.rtsp_codec();
    let installed = match codec {
        AudioCodec::Aac => AacEncoder::find().map(|_| ()),
        AudioCodec::Opus => check_opus(),
    };
    match installed {
        Ok(()) => Some(codec),
        Err(e) => {
            tracing::error!(error = %e, "RTSP carries no sound");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tracks_parse() {
        gst::init().unwrap();
        for codec in [None, Some(AudioCodec::Aac), Some(AudioCodec::Opus)] {
            let d = launch(codec);
            let inner = d.trim_start_matches("( ").trim_end_matches(" )");
            let p = gst::parse::launch(inner).unwrap_or_else(|e| panic!("{d}: {e}"));
            let bin = p.downcast::<gst::Bin>().unwrap();
            assert!(bin.by_name("pay0").is_some());
            assert_eq!(bin.by_name("pay1").is_some(), codec.is_some(), "{d}");
        }
    }
}
