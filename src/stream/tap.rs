//! The raw-picture tap: a branch of the capture before the encoder (`tee → valve → leaky queue
//! → appsink`) that snapshots, MJPEG and the analysis read, so none of them decodes H.264 and
//! the camera still opens once. The valve is closed while nobody listens: the branch then drops
//! each frame at the tee, on the capture's thread, without a copy, a wake-up or a held buffer.
//!
//! Like the hub, a tap outlives camera restarts: the supervisor attaches each new capture
//! pipeline's branch, and listeners carry on when frames resume.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use tokio::sync::watch;

/// Name of the tap's valve in the capture pipeline.
pub const VALVE_NAME: &str = "rawvalve";
/// Name of the tap's appsink in the capture pipeline.
pub const SINK_NAME: &str = "raw";

/// A frame younger than this is "the newest" for a new reader; an older one (left from before
/// the valve closed) is not shown, the next one is awaited.
const FRESH: Duration = Duration::from_millis(250);

/// The capture description's tap branch, put right after the source (and image processing).
/// It ends on the tee, so the description continues with `! <encoder branch>`. The closed valve
/// still forwards sticky events: the end of stream must reach this sink too, or the pipeline
/// never posts EOS and a source that ends would be seen as a stall.
pub fn describe() -> String {
    format!(
        "tee name=rawtap rawtap. ! valve name={VALVE_NAME} drop=true drop-mode=forward-sticky-events \
         ! queue leaky=downstream max-size-buffers=1 max-size-bytes=0 max-size-time=0 \
         ! appsink name={SINK_NAME} async=false sync=false max-buffers=1 drop=true \
         enable-last-sample=false rawtap."
    )
}

/// Why no raw frame could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TapError {
    /// No frame came in time (the camera is restarting or not up yet).
    #[error("no frame within {} ms: the camera is not delivering pictures", .0.as_millis())]
    NoFrame(Duration),
    /// The stream was stopped.
    #[error("the stream was stopped")]
    Closed,
}

/// One raw picture, with its caps (format and size).
#[derive(Clone)]
pub struct RawFrame {
    /// The picture and its caps.
    pub sample: gst::Sample,
    /// When it reached the tap.
    pub at: Instant,
    /// Its number since the daemon started (gaps are frames a reader missed).
    pub seq: u64,
}

impl RawFrame {
    /// The picture's width and height, from its caps.
    pub fn size(&self) -> Option<(u32, u32)> {
        let caps = self.sample.caps()?;
        let info = gst_video::VideoInfo::from_caps(caps).ok()?;
        Some((info.width(), info.height()))
    }
}

/// The raw-picture tap of one camera. Cheap to share (`Arc`).
pub struct RawTap {
    name: String,
    valve: Mutex<Option<gst::Element>>,
    listeners: AtomicUsize,
    seq: AtomicU64,
    latest: watch::Sender<Option<RawFrame>>,
}

impl RawTap {
    /// A tap with no pipeline attached yet.
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(RawTap {
            name: name.into(),
            valve: Mutex::new(None),
            listeners: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            latest: watch::channel(None).0,
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Readers listening now (the valve is open while there is one).
    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Takes frames from `pipeline`'s tap branch from now on; false when it has none.
    pub fn attach(self: &Arc<Self>, pipeline: &gst::Pipeline) -> bool {
        let (Some(valve), Some(sink)) = (
            pipeline.by_name(VALVE_NAME),
            pipeline
                .by_name(SINK_NAME)
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok()),
        ) else {
            return false;
        };
        let tap = Arc::downgrade(self);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(tap) = tap.upgrade() {
                        tap.publish(sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let mut v = self.valve.lock().unwrap();
        valve.set_property("drop", self.listeners() == 0);
        *v = Some(valve);
        true
    }

    /// Forgets the pipeline (it is being stopped); listeners wait for the next one.
    pub fn detach(&self) {
        *self.valve.lock().unwrap() = None;
        self.latest.send_replace(None);
    }

    /// Called on the tap's streaming thread for each frame let through.
    fn publish(&self, sample: gst::Sample) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.latest.send_replace(Some(RawFrame {
            sample,
            at: Instant::now(),
            seq,
        }));
        // The last listener may have left while this frame was on its way: hold no picture
        // (nor the camera's buffer) for nobody.
        if self.listeners() == 0 {
            self.latest.send_replace(None);
        }
    }

    /// Starts listening: the valve opens (if it was closed) until the listener is dropped.
    pub fn listen(self: &Arc<Self>) -> TapListener {
        let v = self.valve.lock().unwrap();
        if self.listeners.fetch_add(1, Ordering::Relaxed) == 0
            && let Some(valve) = v.as_ref()
        {
            valve.set_property("drop", false);
        }
        drop(v);
        TapListener {
            tap: self.clone(),
            rx: self.latest.subscribe(),
        }
    }

    fn leave(&self) {
        let v = self.valve.lock().unwrap();
        if self.listeners.fetch_sub(1, Ordering::Relaxed) == 1 {
            if let Some(valve) = v.as_ref() {
                valve.set_property("drop", true);
            }
            drop(v);
            self.latest.send_replace(None);
        }
    }

    /// The newest raw frame: the current one if it is fresh, else the next to come within
    /// `timeout`.
    pub async fn newest(self: &Arc<Self>, timeout: Duration) -> Result<RawFrame, TapError> {
        let mut l = self.listen();
        if let Some(f) = l.rx.borrow_and_update().clone()
            && f.at.elapsed() < FRESH
        {
            return Ok(f);
        }
        match tokio::time::timeout(timeout, l.next()).await {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(TapError::Closed),
            Err(_) => Err(TapError::NoFrame(timeout)),
        }
    }
}

/// A reader of the tap; the valve stays open while one exists.
pub struct TapListener {
    tap: Arc<RawTap>,
    rx: watch::Receiver<Option<RawFrame>>,
}

impl TapListener {
    /// The next frame (newer than the last one returned); `None` once the tap is gone. A slow
    /// reader skips frames: only the newest is kept for it.
    pub async fn next(&mut self) -> Option<RawFrame> {
        loop {
            self.rx.changed().await.ok()?;
            if let Some(f) = self.rx.borrow_and_update().clone() {
                return Some(f);
            }
        }
    }

    /// The tap listened to.
    pub fn tap(&self) -> &Arc<RawTap> {
        &self.tap
    }
}

impl Drop for TapListener {
    fn drop(&mut self) {
        self.tap.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> gst::Pipeline {
        gst::init().unwrap();
        gst::parse::launch(&format!(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=30/1 \
             ! {} ! fakesink sync=false",
            describe()
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_flow_only_while_someone_listens() {
        let p = pipeline();
        let tap = RawTap::new("t");
        assert!(tap.attach(&p));
        p.set_state(gst::State::Playing).unwrap();
        let f = tap.newest(Duration::from_secs(5)).await.unwrap();
        assert_eq!(f.size(), Some((160, 120)));
        // Nobody listens now: the valve is shut and no picture is held.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seq = tap.seq.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(tap.seq.load(Ordering::Relaxed), seq, "frames while closed");
        assert!(tap.latest.borrow().is_none());
        let mut l = tap.listen();
        let a = l.next().await.unwrap();
        let b = l.next().await.unwrap();
        assert!(b.seq > a.seq);
        drop(l);
        assert_eq!(tap.listeners(), 0);
        p.set_state(gst::State::Null).unwrap();
    }
}
