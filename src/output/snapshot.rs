//! JPEG snapshots of the live stream, made from the raw-picture tap (`stream::tap`) before the
//! encoder: the newest raw frame is scaled and JPEG-encoded on demand, with no H.264 decoder.
//! Concurrent requests for one size share one encode; sizes are a small set (the HTTP side
//! refuses others).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};

use crate::stream::tap::{RawTap, TapError};

/// Why no snapshot could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    /// No raw frame came (the camera is restarting or not up yet).
    #[error("no frame yet: {0}")]
    NoFrame(#[from] TapError),
    /// Scaling or JPEG encoding failed.
    #[error("snapshot failed: {0}")]
    Failed(String),
}

/// A JPEG and what it shows.
#[derive(Debug, Clone)]
pub struct Jpeg {
    /// The JPEG bytes.
    pub data: Vec<u8>,
    /// Its width.
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Whether this request was served by an encode another request had started.
    pub shared: bool,
}

type Made = BoxFuture<'static, Result<Jpeg, SnapshotError>>;
/// The encodes running, by size, with the id that tells a finished one from its successor.
type Running = HashMap<(u32, u32), (u64, WeakShared<Made>)>;

/// How long a snapshot waits for a raw frame when the tap was closed.
const FRAME_WAIT: Duration = Duration::from_secs(5);

/// Makes one camera's snapshots: at most one encode per size at a time, shared by every
/// request for that size that arrives while it runs.
pub struct Snapshotter {
    tap: Arc<RawTap>,
    running: Mutex<Running>,
    ids: AtomicU64,
}

impl Snapshotter {
    /// The snapshot maker of the camera whose raw pictures `tap` gives.
    pub fn new(tap: Arc<RawTap>) -> Self {
        Snapshotter {
            tap,
            running: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
        }
    }

    /// The newest picture as JPEG at `width` × `height`.
    pub async fn snapshot(&self, width: u32, height: u32) -> Result<Jpeg, SnapshotError> {
        let key = (width, height);
        let (id, made, shared): (u64, Shared<Made>, bool) = {
            let mut running = self.running.lock().unwrap();
            match running
                .get(&key)
                .and_then(|(id, w)| Some((*id, w.upgrade()?)))
            {
                Some((id, d)) => (id, d, true),
                None => {
                    let id = self.ids.fetch_add(1, Ordering::Relaxed);
                    let tap = self.tap.clone();
                    let d = async move {
                        let frame = tap.newest(FRAME_WAIT).await?;
                        tokio::task::spawn_blocking(move || jpeg_of(&frame.sample, width, height))
                            .await
                            .map_err(|e| SnapshotError::Failed(e.to_string()))?
                    }
                    .boxed()
                    .shared();
                    if let Some(w) = d.downgrade() {
                        running.insert(key, (id, w));
                    }
                    (id, d, false)
                }
            }
        };
        let r = made.await;
        let mut running = self.running.lock().unwrap();
        if running.get(&key).is_some_and(|(i, _)| *i == id) {
            running.remove(&key);
        }
        r.map(|mut j| {
            j.shared = shared;
            j
        })
    }
}

/// Scales a raw picture to `width` × `height` and encodes it as JPEG (blocking: a small
/// converter pipeline runs for it).
pub fn jpeg_of(sample: &gst::Sample, width: u32, height: u32) -> Result<Jpeg, SnapshotError> {
    let fail = |e: &dyn std::fmt::Display| SnapshotError::Failed(e.to_string());
    let caps = gst::Caps::builder("image/jpeg")
        .field("width", width as i32)
        .field("height", height as i32)
        .build();
    let jpeg = gst_video::convert_sample(sample, &caps, Some(gst::ClockTime::from_seconds(5)))
        .map_err(|e| fail(&e))?;
    let buffer = jpeg.buffer().ok_or_else(|| fail(&"empty JPEG"))?;
    let map = buffer.map_readable().map_err(|e| fail(&e))?;
    Ok(Jpeg {
        data: map.as_slice().to_vec(),
        width,
        height,
        shared: false,
    })
}

/// Widths besides the stream's own, its half and its quarter that snapshots are made at (when
/// smaller than it): a small set, so requests share decodes and cannot make one per width.
pub const SNAPSHOT_WIDTHS: [u32; 3] = [320, 640, 1280];

/// The widths a snapshot of a `stream_w` wide picture may be asked at, smallest first: the
/// stream's own, its half and quarter (even, at least 16), and [`SNAPSHOT_WIDTHS`] below it.
pub fn allowed_widths(stream_w: u32) -> Vec<u32> {
    let mut v: Vec<u32> = SNAPSHOT_WIDTHS
        .iter()
        .copied()
        .filter(|w| *w < stream_w)
        .chain(
            [(stream_w / 2) & !1, (stream_w / 4) & !1]
                .into_iter()
                .filter(|w| *w >= 16),
        )
        .chain([stream_w])
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Height for `width` keeping the stream's aspect ratio, rounded to even.
pub fn scaled_height(stream_w: u32, stream_h: u32, width: u32) -> u32 {
    let h = (u64::from(stream_h) * u64::from(width) / u64::from(stream_w.max(1))) as u32;
    (h.max(2) + 1) & !1
}

/// How long a snapshot may take before the HTTP side gives up.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_raw_picture_at_the_size_asked() {
        gst::init().unwrap();
        let p = gst::parse::launch(
            "videotestsrc num-buffers=1 ! video/x-raw,width=160,height=120,format=NV12 \
             ! appsink name=sink sync=false",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = p
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        use gst::prelude::*;
        p.set_state(gst::State::Playing).unwrap();
        let sample = sink.pull_sample().unwrap();
        p.set_state(gst::State::Null).unwrap();
        let jpeg = jpeg_of(&sample, 80, 60).unwrap();
        assert_eq!(&jpeg.data[..2], &[0xFF, 0xD8], "JPEG magic");
        assert_eq!((jpeg.width, jpeg.height), (80, 60));
    }

    #[test]
    fn widths_are_a_small_set() {
        assert_eq!(allowed_widths(1920), vec![320, 480, 640, 960, 1280, 1920]);
        assert_eq!(allowed_widths(1280), vec![320, 640, 1280]);
        assert_eq!(allowed_widths(320), vec![80, 160, 320]);
        assert_eq!(allowed_widths(240), vec![60, 120, 240]);
        assert_eq!(allowed_widths(40), vec![20, 40]);
    }

    #[test]
    fn aspect_ratio() {
        assert_eq!(scaled_height(1280, 720, 640), 360);
        assert_eq!(scaled_height(320, 240, 100), 76);
    }
}
