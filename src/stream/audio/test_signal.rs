//! The sync test signal: with `source.kind = "test"` and `audio.kind = "test"`, the picture
//! flashes white and a short beep sounds at the same instant once a second. Both are derived
//! from the buffers' running time on the shared clock (never from a source's own counter), so
//! whatever offset a viewer measures between them was added by the transport, not the source.
//! Users check their own player the same way (docs/audio.md).

use gst::prelude::*;
use gst_video::prelude::*;

/// Length of the beep.
pub const BEEP_NS: u64 = 50_000_000;
/// Pitch of the beep in Hz.
pub const BEEP_HZ: f64 = 1000.0;
/// Peak of the beep as a fraction of full scale.
pub const BEEP_AMPLITUDE: f64 = 0.5;
const SECOND: u64 = 1_000_000_000;

/// The beep's sample at running time `t_ns`: a 1 kHz tone during the first [`BEEP_NS`] of each
/// second, silence otherwise.
pub fn beep_sample(t_ns: u64) -> i16 {
    let into = t_ns % SECOND;
    if into >= BEEP_NS {
        return 0;
    }
    let phase = 2.0 * std::f64::consts::PI * BEEP_HZ * into as f64 / SECOND as f64;
    (phase.sin() * BEEP_AMPLITUDE * f64::from(i16::MAX)) as i16
}

/// Whether the frame at `pts` lasting `duration` is the one nearest a whole second: that frame
/// flashes.
pub fn flashes(pts: u64, duration: u64) -> bool {
    let into = (pts + duration / 2) % SECOND;
    into < duration.max(1)
}

/// Writes the beep into every buffer entering `element` (interleaved S16LE of `rate` Hz and
/// `channels` channels), from the buffer's running time.
pub fn attach_beep(element: &gst::Element, rate: u32, channels: u32) {
    let Some(pad) = element.static_pad("sink") else {
        return;
    };
    let (rate, channels) = (u64::from(rate.max(1)), channels.max(1) as usize);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(pts) = buffer.pts() else {
            return gst::PadProbeReturn::Ok;
        };
        let start = running_time(pad, pts);
        let buffer = buffer.make_mut();
        // audiotestsrc marks its silence as a gap, which audioconvert and volume then output
        // as zeros whatever the samples say.
        buffer.unset_flags(gst::BufferFlags::GAP);
        let Ok(mut map) = buffer.map_writable() else {
            return gst::PadProbeReturn::Ok;
        };
        for (i, frame) in map
            .as_mut_slice()
            .chunks_exact_mut(2 * channels)
            .enumerate()
        {
            let t = start + i as u64 * SECOND / rate;
            let s = beep_sample(t).to_le_bytes();
            for c in frame.chunks_exact_mut(2) {
                c.copy_from_slice(&s);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// The running time of `pts` in the pad's segment (the PTS itself when none is known).
fn running_time(pad: &gst::Pad, pts: gst::ClockTime) -> u64 {
    pad.sticky_event::<gst::event::Segment>(0)
        .and_then(|e| {
            e.segment()
                .downcast_ref::<gst::ClockTime>()
                .and_then(|s| s.to_running_time(pts))
        })
        .unwrap_or(pts)
        .nseconds()
}

/// Paints white the frame nearest each whole second of running time, on `element`'s src pad
/// (planar or semi-planar YUV; other formats are left alone with a warning).
pub fn attach_flash(element: &gst::Element) {
    let Some(pad) = element.static_pad("src") else {
        return;
    };
    let warned = std::sync::atomic::AtomicBool::new(false);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let (Some(pts), Some(duration)) = (buffer.pts(), buffer.duration()) else {
            return gst::PadProbeReturn::Ok;
        };
        if !flashes(running_time(pad, pts), duration.nseconds()) {
            return gst::PadProbeReturn::Ok;
        }
        let Some(vinfo) = pad
            .current_caps()
            .and_then(|c| gst_video::VideoInfo::from_caps(&c).ok())
        else {
            return gst::PadProbeReturn::Ok;
        };
        if !vinfo.is_yuv() {
            if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(format = %vinfo.format(), "The test flash needs a YUV picture; not flashing");
            }
            return gst::PadProbeReturn::Ok;
        }
        let buffer = buffer.make_mut();
        let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &vinfo)
        else {
            return gst::PadProbeReturn::Ok;
        };
        for plane in 0..frame.n_planes() {
            // Plane 0 is luma: video-range white; the others are chroma: neutral.
            let value = if plane == 0 { 235 } else { 128 };
            if let Ok(data) = frame.plane_data_mut(plane) {
                data.fill(value);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_beep_starts_on_the_second_and_lasts_fifty_ms() {
        assert_eq!(beep_sample(3 * SECOND), 0, "a sine starts at zero");
        assert!(
            beep_sample(3 * SECOND + 250_000).abs() > 10_000,
            "a quarter period in"
        );
        assert_eq!(beep_sample(3 * SECOND + BEEP_NS + 250_000), 0);
        assert_eq!(beep_sample(3 * SECOND - 250_000), 0);
    }

    #[test]
    fn the_frame_nearest_each_second_flashes_once() {
        let d = SECOND / 30;
        let start = 123_456_789;
        let flashing: Vec<u64> = (0..90)
            .map(|i| start + i * d)
            .filter(|&p| flashes(p, d))
            .collect();
        assert_eq!(flashing.len(), 3, "{flashing:?}");
        for p in flashing {
            let off = (p + SECOND / 2) % SECOND;
            assert!(off.abs_diff(SECOND / 2) <= d / 2, "{p}");
        }
    }
}
