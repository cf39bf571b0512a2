//! A WebRTC viewer's feeds: its own hub subscription (`appsrc ! appsink`) for the picture and,
//! when the stream has sound, one for the Opus audio, so each browser has the hubs' bounded,
//! leaky queues and starts on a keyframe like every other output. Frames are handed to the UDP
//! task without blocking; a full hand-over queue drops the frame and the session then waits for
//! the next keyframe rather than sending a broken picture (a lost audio frame is only a gap).

use std::sync::Arc;

use gst::prelude::*;
use tokio::sync::mpsc;

use crate::stream::hub::{Hub, SubscriberSettings, Subscription};

/// Which track a feed carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// H.264 from the encoding's hub.
    Video,
    /// Opus from the camera's audio hub.
    Audio,
}

/// One encoded access unit (or one Opus packet) for one session.
pub struct Frame {
    /// The session it is for.
    pub session: u64,
    /// The track it belongs to.
    pub kind: Kind,
    /// Annex B bytes (SPS/PPS in front of every keyframe), or one raw Opus packet.
    pub data: Vec<u8>,
    /// Presentation time in ns, as running time of the shared clock: the one timeline both
    /// tracks share (an encoder may put its buffers' own timestamps 1000 hours ahead, in a
    /// segment that starts there).
    pub pts_ns: u64,
    /// Whether it is a keyframe (every audio packet is one).
    pub keyframe: bool,
    /// Counts every frame the feed received, handed over or not: a gap means a lost frame.
    pub seq: u64,
}

/// Why a feed could not start.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// GStreamer refused the pipeline.
    #[error("cannot start a WebRTC feed of {stream}: {reason}")]
    Start {
        /// Stream name.
        stream: String,
        /// What GStreamer said.
        reason: String,
    },
}

/// A running feed; dropping it unsubscribes and stops its pipeline (call from a blocking
/// context: the state change may wait on a streaming thread).
pub struct Feed {
    pipeline: gst::Pipeline,
    _subscription: Subscription,
}

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Subscribes session `session` to `hub`, whose frames are of `kind`; frames go to `tx`.
pub fn start(
    hub: &Arc<Hub>,
    session: u64,
    kind: Kind,
    tx: mpsc::Sender<Frame>,
) -> Result<Feed, FeedError> {
    let fail = |reason: String| FeedError::Start {
        stream: hub.name().to_string(),
        reason,
    };
    let pipeline = gst::parse::launch(
        // handle-segment-change: the producer's segment comes along, so running time can be
        // computed from it.
        "appsrc name=src is-live=true format=time handle-segment-change=true ! appsink name=sink sync=false max-buffers=30 drop=true",
    )
    .map_err(|e| fail(e.to_string()))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| fail("not a pipeline".into()))?;
    let appsrc = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| fail("no appsrc".into()))?;
    let appsink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| fail("no appsink".into()))?;
    let mut seq = 0u64;
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(map) = buffer.map_readable() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                seq += 1;
                let pts = buffer.pts();
                let running = sample
                    .segment()
                    .and_then(|s| s.downcast_ref::<gst::format::Time>())
                    .zip(pts)
                    .and_then(|(s, t)| s.to_running_time(t))
                    .or(pts);
                let frame = Frame {
                    seq,
                    session,
                    kind,
                    data: map.as_slice().to_vec(),
                    pts_ns: running.map_or(0, |t| t.nseconds()),
                    keyframe: kind == Kind::Audio
                        || !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                };
                // Never waits: a UDP task that cannot keep up loses frames, not the capture.
                let _ = tx.try_send(frame);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    // The output is the same for both tracks; the hub's name tells the audio from the picture.
    let subscription = hub.subscribe(&appsrc, SubscriberSettings::new("webrtc"));
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Feed {
        pipeline,
        _subscription: subscription,
    })
}
