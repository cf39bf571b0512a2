//! Low-latency HLS (issue #28): each encoding of a camera as CMAF segments of one GOP, cut into
//! partial segments, held in memory only, with the media playlist (blocking reload, preload
//! hints) and a multivariant playlist listing the camera's encodings (docs/hls.md).
//!
//! `muxer` is the segmenter (frames in, parts and segments out, a bounded window), `playlist`
//! writes the playlists, `channel` runs one encoding's muxer on demand (or always) and holds
//! the waiters of blocking requests. The routes are in `http::hls`.

pub mod channel;
pub mod muxer;
pub mod playlist;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Context;
use super::Outputs;
use crate::config::HlsMode;
use crate::stream::camera::Camera;
use crate::stream::restart::Policy;
pub use channel::{Channel, HlsError, Live};

/// A camera's HLS: one channel per encoding (main first).
pub struct Hls {
    /// The camera's stream name.
    pub camera: String,
    /// One per encoding, in the camera's order.
    pub channels: Vec<Arc<Channel>>,
}

impl Hls {
    /// The channel of an encoding name.
    pub fn channel(&self, name: &str) -> Option<&Arc<Channel>> {
        self.channels.iter().find(|c| c.name == name)
    }
}

/// Makes the camera's HLS channels; with `mode = "always"` their muxers start now. Each runs
/// until `cancel`.
pub fn start(
    camera: &Camera,
    ctx: &Context,
    outputs: &Outputs,
    cancel: &CancellationToken,
) -> Arc<Hls> {
    let config = camera.config();
    let mut policy = Policy::from_config(&config.supervisor);
    // Viewers may come back at any time: the muxer never gives up for good.
    policy.max_retries = 0;
    let channels = camera
        .encodings
        .iter()
        .map(|e| {
            let fps = e.fps.max(1);
            let target_s =
                u64::from(config.encoder.keyframe_interval.max(1)).div_ceil(u64::from(fps));
            Channel::new(
                e.name.clone(),
                e.hub.clone(),
                target_s.max(1),
                ctx,
                policy.clone(),
                outputs.clone(),
                cancel.clone(),
            )
        })
        .collect::<Vec<_>>();
    if ctx.hls.mode != HlsMode::Off {
        for c in &channels {
            if ctx.hls.mode == HlsMode::Always {
                c.start();
            }
            tokio::spawn(c.clone().reap());
        }
    }
    Arc::new(Hls {
        camera: camera.name.clone(),
        channels,
    })
}
