//! The access units since the last keyframe, kept for snapshots (and any consumer that needs a
//! decodable start without asking the encoder). Written on the streaming thread: a refcount bump
//! and a push under an uncontended mutex.

use std::sync::Mutex;

/// The access units since the last keyframe; a camera restart clears it.
#[derive(Debug, Default)]
pub struct GopCache {
    inner: Mutex<Gop>,
}

#[derive(Debug, Default)]
struct Gop {
    buffers: Vec<gst::Buffer>,
    /// Frames pushed since start-up; identifies the newest picture.
    seq: u64,
}

/// Upper bound on cached access units, so a source with no keyframes cannot grow memory.
const MAX_GOP: usize = 600;

impl GopCache {
    /// Stores an access unit (streaming thread: a refcount bump and a push).
    pub fn push(&self, buffer: &gst::Buffer, keyframe: bool) {
        let mut g = self.inner.lock().unwrap();
        if keyframe {
            g.buffers.clear();
        } else if g.buffers.is_empty() || g.buffers.len() >= MAX_GOP {
            // Without the keyframe in front, these cannot be decoded.
            return;
        }
        g.buffers.push(buffer.clone());
        g.seq += 1;
    }

    /// Forgets everything (the capture pipeline is being replaced).
    pub fn clear(&self) {
        self.inner.lock().unwrap().buffers.clear();
    }

    /// The newest picture's sequence number and the access units to decode it.
    pub fn take(&self) -> Option<(u64, Vec<gst::Buffer>)> {
        let g = self.inner.lock().unwrap();
        (!g.buffers.is_empty()).then(|| (g.seq, g.buffers.clone()))
    }
}
