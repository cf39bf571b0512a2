//! JPEG snapshots of the live stream, made without touching the encoder: the capture keeps the
//! access units since the last keyframe, and a snapshot decodes them off to the side and encodes
//! only the newest picture. Concurrent requests for one size share one decode; sizes are a
//! small set (the HTTP side refuses others); a decode nobody waits for is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use gst::prelude::*;

use crate::stream::gop::GopCache;

/// Why no snapshot could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    /// No keyframe has been encoded yet (or the camera is restarting).
    #[error("no frame yet: the camera has not delivered a keyframe")]
    NoFrame,
    /// Decoding or JPEG encoding failed.
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
    /// Whether this request was served by a decode another request had started.
    pub shared: bool,
}

type Made = BoxFuture<'static, Result<Jpeg, SnapshotError>>;
type Decode = Shared<Made>;
/// The decodes running, by size, with the id that tells a finished one from its successor.
type Running = HashMap<(u32, u32), (u64, WeakShared<Made>)>;

/// Makes snapshots: at most one decode per size at a time, shared by every request for that
/// size that arrives while it runs. A decode nobody waits for any more (every request timed out
/// or went away) is cancelled.
#[derive(Default)]
pub struct Snapshotter {
    running: Mutex<Running>,
    ids: AtomicU64,
}

/// Sets the flag when the decode's future is dropped, finished or not.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Snapshotter {
    /// The newest picture as JPEG at `width` × `height`.
    pub async fn snapshot(
        &self,
        gop: Arc<GopCache>,
        width: u32,
        height: u32,
    ) -> Result<Jpeg, SnapshotError> {
        let key = (width, height);
        let (id, decode, shared): (u64, Decode, bool) = {
            let mut running = self.running.lock().unwrap();
            match running
                .get(&key)
                .and_then(|(id, w)| Some((*id, w.upgrade()?)))
            {
                Some((id, d)) => (id, d, true),
                None => {
                    let id = self.ids.fetch_add(1, Ordering::Relaxed);
                    let cancel = Arc::new(AtomicBool::new(false));
                    let guard = CancelOnDrop(cancel.clone());
                    let d = async move {
                        let _guard = guard;
                        let (_, buffers) = gop.take().ok_or(SnapshotError::NoFrame)?;
                        tokio::task::spawn_blocking(move || {
                            decode_last(buffers, width, height, &cancel)
                        })
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
        let r = decode.await;
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

/// Decodes a GOP and encodes its last picture as JPEG at `width` × `height`; stops early when
/// `cancel` is set (nobody waits for it any more).
fn decode_last(
    buffers: Vec<gst::Buffer>,
    width: u32,
    height: u32,
    cancel: &AtomicBool,
) -> Result<Jpeg, SnapshotError> {
    let fail = |e: &dyn std::fmt::Display| SnapshotError::Failed(e.to_string());
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time caps=video/x-h264,stream-format=byte-stream,alignment=au \
         ! h264parse ! decodebin ! videoconvert ! appsink name=sink sync=false",
    )
    .map_err(|e| fail(&e))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| fail(&"not a pipeline"))?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| fail(&"no appsrc"))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| fail(&"no appsink"))?;
    // Only the newest decoded picture matters; older ones are dropped as they come.
    sink.set_max_buffers(1);
    sink.set_drop(true);
    let cancelled = || fail(&"cancelled: nobody waits for it any more");
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| fail(&e))?;
        for b in buffers {
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            src.push_buffer(b).map_err(|e| fail(&e))?;
        }
        src.end_of_stream().map_err(|e| fail(&e))?;
        // appsink holds EOS back until its queue is drained, so pull until it reports EOS,
        // keeping the newest picture; in short steps, so a cancel is seen.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut newest = None;
        while !sink.is_eos() && Instant::now() < deadline {
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) {
                newest = Some(sample);
            }
        }
        if let Some(msg) = pipeline
            .bus()
            .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
            && let gst::MessageView::Error(e) = msg.view()
        {
            return Err(fail(&e.error()));
        }
        if !sink.is_eos() {
            return Err(fail(&"decoding took longer than 5 s"));
        }
        let sample = newest.ok_or_else(|| fail(&"the decoder produced no picture"))?;
        let caps = gst::Caps::builder("image/jpeg")
            .field("width", width as i32)
            .field("height", height as i32)
            .build();
        let jpeg = gst_video::convert_sample(&sample, &caps, Some(gst::ClockTime::from_seconds(5)))
            .map_err(|e| fail(&e))?;
        let buffer = jpeg.buffer().ok_or_else(|| fail(&"empty JPEG"))?;
        let map = buffer.map_readable().map_err(|e| fail(&e))?;
        Ok(Jpeg {
            data: map.as_slice().to_vec(),
            width,
            height,
            shared: false,
        })
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
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

    /// Encodes `n` frames of test pattern with x264 into access units.
    fn encoded(n: u32) -> Vec<gst::Buffer> {
        gst::init().unwrap();
        let p = gst::parse::launch(&format!(
            "videotestsrc num-buffers={n} pattern=ball ! video/x-raw,width=160,height=120,framerate=15/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=100 \
             ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! appsink name=sink sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = p
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let mut out = Vec::new();
        while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(5)) {
            out.push(s.buffer_owned().unwrap());
        }
        p.set_state(gst::State::Null).unwrap();
        out
    }

    #[test]
    fn decodes_the_last_picture_of_a_gop() {
        let buffers = encoded(12);
        assert_eq!(buffers.len(), 12);
        let jpeg = decode_last(buffers, 80, 60, &AtomicBool::new(false)).unwrap();
        assert_eq!(&jpeg.data[..2], &[0xFF, 0xD8], "JPEG magic");
        assert_eq!((jpeg.width, jpeg.height), (80, 60));
    }

    #[test]
    fn a_cancelled_decode_stops() {
        let buffers = encoded(4);
        let r = decode_last(buffers, 80, 60, &AtomicBool::new(true));
        assert!(matches!(r, Err(SnapshotError::Failed(m)) if m.contains("cancelled")));
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

    #[test]
    fn gop_cache_starts_at_a_keyframe() {
        gst::init().unwrap();
        let g = GopCache::default();
        g.push(&gst::Buffer::with_size(10).unwrap(), false);
        assert!(g.take().is_none(), "a delta frame alone is useless");
        g.push(&gst::Buffer::with_size(10).unwrap(), true);
        g.push(&gst::Buffer::with_size(10).unwrap(), false);
        assert_eq!(g.take().unwrap().1.len(), 2);
        g.push(&gst::Buffer::with_size(10).unwrap(), true);
        assert_eq!(g.take().unwrap().1.len(), 1);
        g.clear();
        assert!(g.take().is_none());
    }
}
