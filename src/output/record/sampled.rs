//! An H.264 access unit as the recorder and the HLS muxer take it from their appsinks: its
//! fMP4 track (read from the caps once per caps change), running times and wall-clock time.

use std::sync::Arc;

use gst::prelude::*;

use super::mp4::Track;
use crate::stream::clock::SharedTime;
use crate::utc::{self, Nanos};

/// One access unit, timed.
pub struct Sampled {
    /// The encoded picture.
    pub buffer: gst::Buffer,
    /// Its track (size and avcC).
    pub track: Arc<Track>,
    /// Presentation time (running time, ns).
    pub pts: u64,
    /// Decoding time (running time, ns), when the buffer has one.
    pub dts: Option<u64>,
    /// Whether it is a keyframe.
    pub key: bool,
    /// When it was captured, UTC.
    pub utc: Nanos,
}

/// Reads samples of one appsink, keeping the track of the last caps seen.
#[derive(Default)]
pub struct Sampler {
    last: Option<(gst::Caps, Arc<Track>)>,
}

impl Sampler {
    /// The sample's access unit, or `None` when it has no buffer, no AVC caps or no time.
    pub fn read(&mut self, sample: &gst::Sample, time: &SharedTime) -> Option<Sampled> {
        let (buffer, caps, segment) = (
            sample.buffer_owned()?,
            sample.caps_owned()?,
            sample.segment()?,
        );
        let track = match &self.last {
            Some((c, t)) if *c == caps => t.clone(),
            _ => {
                let t = Arc::new(track_of(&caps)?);
                self.last = Some((caps, t.clone()));
                t
            }
        };
        let segment = segment.downcast_ref::<gst::format::Time>();
        let running = |t: Option<gst::ClockTime>| {
            t.and_then(|t| segment.and_then(|s| s.to_running_time(t)))
                .map(|t| t.nseconds())
        };
        let pts = running(buffer.pts())?;
        let dts = running(buffer.dts());
        let now_running = time
            .clock
            .time()
            .nseconds()
            .saturating_sub(time.base_time.nseconds());
        Some(Sampled {
            track,
            pts,
            dts,
            key: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            utc: utc::now() - (now_running as i64 - pts as i64),
            buffer,
        })
    }
}

/// The track of H.264 caps in AVC form.
fn track_of(caps: &gst::CapsRef) -> Option<Track> {
    let s = caps.structure(0)?;
    let data = s.get::<gst::Buffer>("codec_data").ok()?;
    let map = data.map_readable().ok()?;
    Some(Track {
        width: u32::try_from(s.get::<i32>("width").ok()?).ok()?,
        height: u32::try_from(s.get::<i32>("height").ok()?).ok()?,
        avcc: map.as_slice().to_vec(),
    })
}
