//! Motion detection on the raw picture, before the encoder: a branch of the capture (`tee →
//! leaky queue → valve → videorate → videoscale → videoconvert → small I420 → appsink`, so the
//! camera opens once and nothing decodes H.264), a bounded hand-off to one worker thread per
//! camera (a picture that arrives while the worker is busy is dropped and counted, never
//! waited for), the pure [`detector`], and the per-stream handle the rest of the daemon reads:
//! state for the status, the peak picture as JPEG, and the starts and ends as [`Change`]s (the
//! top-level `motion` module publishes them on the event bus).

pub mod detector;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::prelude::*;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use self::detector::{Detector, Transition};
use crate::config::StreamConfig;
use crate::config::motion::MotionConfig;
use crate::metrics::names;

/// Name of the motion branch's appsink.
pub const SINK_NAME: &str = "motion_sink";
/// Name of the valve that switches the branch off while the capture runs.
pub const VALVE_NAME: &str = "motion_valve";
/// How many times larger than the analysed picture the branch delivers it (at most 640 wide):
/// the analysis averages blocks of that size, and the peak JPEG is made from the larger one.
fn scale(m: &MotionConfig) -> u32 {
    (640 / m.width).clamp(1, 4)
}
/// Most JPEGs made per second while an event's peak keeps rising.
const JPEG_EVERY: Duration = Duration::from_millis(500);

/// The capture branch for `stream`'s detector, starting at the tee named `split`; empty when
/// detection is off. The queue leaks so the branch never holds up the encoder or the camera.
pub fn branch(stream: &StreamConfig) -> String {
    let m = &stream.motion;
    if !m.enabled {
        return String::new();
    }
    // Never larger than the camera's picture.
    let k = scale(m).min((stream.video.width / m.width).max(1));
    format!(
        " split. ! queue leaky=downstream max-size-buffers=1 max-size-bytes=0 max-size-time=0 \
         ! valve name={VALVE_NAME} drop=false drop-mode=forward-sticky-events ! videorate drop-only=true ! videoscale \
         ! videoconvert ! video/x-raw,format=I420,width={},height={},framerate={}/1 \
         ! appsink name={SINK_NAME} max-buffers=1 drop=true sync=false",
        m.width * k,
        m.height * k,
        m.fps
    )
}

/// What of `[motion]` the capture pipeline is built from: nothing while detection is off.
pub fn capture_key(m: &MotionConfig) -> Option<(u32, u32, u32)> {
    m.enabled.then_some((m.width, m.height, m.fps))
}

/// A start or an end of motion, for the event bus.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Motion began.
    Start {
        /// Event id, unique in this process's life (`<stream>-<unix ms>`).
        event_id: String,
        /// Changed fraction of the analysed area.
        score: f64,
        /// The include zone with the most change, or "all".
        zone: String,
    },
    /// Motion ended.
    End {
        /// The id its start carried.
        event_id: String,
        /// Highest score of the event.
        score: f64,
        /// The zone of its start.
        zone: String,
        /// From the first to the last change, ms.
        duration_ms: u64,
    },
}

/// Motion state as the status API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MotionState {
    /// Whether detection runs.
    pub enabled: bool,
    /// Whether an event runs.
    pub active: bool,
    /// The running (or last) event's id.
    pub event_id: Option<String>,
    /// Unix ms of the last start.
    pub last_start: Option<u64>,
    /// Unix ms of the last end.
    pub last_end: Option<u64>,
    /// Changed fraction of the last analysed picture.
    pub score: f64,
    /// Pictures analysed.
    pub frames_analysed: u64,
    /// Pictures skipped because the worker was busy.
    pub frames_dropped: u64,
}

/// The peak picture of the last (or running) event.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionJpeg {
    /// JPEG bytes.
    pub data: Vec<u8>,
    /// The event it belongs to.
    pub event_id: String,
    /// Its score.
    pub score: f64,
    /// Unix ms when it was taken.
    pub at_unix_ms: u64,
}

/// One stream's detector as everything else sees it. Cheap to share (`Arc`).
pub struct Motion {
    stream: String,
    state: watch::Sender<MotionState>,
    changes: broadcast::Sender<Change>,
    jpeg: Mutex<Option<Arc<MotionJpeg>>>,
    frames: SyncSender<gst::Sample>,
    analysed: AtomicU64,
    dropped: AtomicU64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Motion {
    /// Starts the worker of stream `config`'s detector; it follows `config` (enabled, zones,
    /// thresholds) and ends with `cancel`.
    pub fn start(
        config: watch::Receiver<Arc<StreamConfig>>,
        cancel: CancellationToken,
    ) -> Arc<Motion> {
        let stream = config.borrow().name.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        let motion = Arc::new(Motion {
            stream: stream.clone(),
            state: watch::channel(MotionState {
                enabled: config.borrow().motion.enabled,
                ..MotionState::default()
            })
            .0,
            changes: broadcast::channel(64).0,
            jpeg: Mutex::new(None),
            frames: tx,
            analysed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let _ = metrics::counter!(names::MOTION_EVENTS, "stream" => stream.clone());
        let _ = metrics::counter!(names::MOTION_DROPPED, "stream" => stream.clone());
        let _ = metrics::counter!(names::MOTION_FRAMES, "stream" => stream.clone());
        metrics::gauge!(names::MOTION_ACTIVE, "stream" => stream.clone()).set(0.0);
        metrics::gauge!(names::MOTION_SCORE, "stream" => stream.clone()).set(0.0);
        let worker = Worker {
            motion: Arc::downgrade(&motion),
            config,
            cancel,
            frames: rx,
        };
        if let Err(e) = std::thread::Builder::new()
            .name(format!("motion-{stream}"))
            .spawn(move || worker.run())
        {
            tracing::error!(stream = %stream, error = %e, "Motion detection cannot start its thread");
        }
        motion
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The state now.
    pub fn state(&self) -> MotionState {
        let mut s = self.state.borrow().clone();
        s.frames_analysed = self.analysed.load(Ordering::Relaxed);
        s.frames_dropped = self.dropped.load(Ordering::Relaxed);
        s
    }

    /// A receiver of every state change (active, score...).
    pub fn watch(&self) -> watch::Receiver<MotionState> {
        self.state.subscribe()
    }

    /// A receiver of every start and end from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The last event's peak picture, if any event happened since start.
    pub fn jpeg(&self) -> Option<Arc<MotionJpeg>> {
        self.jpeg.lock().ok().and_then(|j| j.clone())
    }

    /// Feeds the capture pipeline's motion appsink (if it has one) to this detector. Runs on
    /// the branch's streaming thread: it hands the picture over or drops it, never waits.
    pub fn attach(self: &Arc<Self>, pipeline: &gst::Pipeline) {
        let Some(sink) = pipeline
            .by_name(SINK_NAME)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        else {
            return;
        };
        let weak = Arc::downgrade(self);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(m) = weak.upgrade() {
                        match m.frames.try_send(sample) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                m.dropped.fetch_add(1, Ordering::Relaxed);
                                metrics::counter!(names::MOTION_DROPPED, "stream" => m.stream.clone())
                                    .increment(1);
                            }
                            Err(TrySendError::Disconnected(_)) => {}
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }

    /// Switches the running branch on or off (`false` when the pipeline has no branch, so the
    /// caller restarts the capture to add it).
    pub fn set_live(pipeline: &gst::Pipeline, enabled: bool) -> bool {
        match pipeline.by_name(VALVE_NAME) {
            Some(v) => {
                v.set_property("drop", !enabled);
                true
            }
            None => !enabled,
        }
    }

    fn publish(&self, change: Change) {
        let now = unix_ms();
        match &change {
            Change::Start { event_id, .. } => {
                metrics::counter!(names::MOTION_EVENTS, "stream" => self.stream.clone())
                    .increment(1);
                metrics::gauge!(names::MOTION_ACTIVE, "stream" => self.stream.clone()).set(1.0);
                self.state.send_modify(|s| {
                    s.active = true;
                    s.event_id = Some(event_id.clone());
                    s.last_start = Some(now);
                });
            }
            Change::End { .. } => {
                metrics::gauge!(names::MOTION_ACTIVE, "stream" => self.stream.clone()).set(0.0);
                self.state.send_modify(|s| {
                    s.active = false;
                    s.last_end = Some(now);
                });
            }
        }
        // Nobody listening is not an error.
        let _ = self.changes.send(change);
    }
}

/// The worker thread's side.
struct Worker {
    motion: std::sync::Weak<Motion>,
    config: watch::Receiver<Arc<StreamConfig>>,
    cancel: CancellationToken,
    frames: mpsc::Receiver<gst::Sample>,
}

/// The picture a sample holds, as a `w`×`h` grey picture (mean of each `k`×`k` block of Y).
fn grey(sample: &gst::Sample, w: usize, h: usize) -> Option<Vec<u8>> {
    let caps = sample.caps()?;
    let info = gst_video::VideoInfo::from_caps(caps).ok()?;
    let buffer = sample.buffer()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).ok()?;
    let (fw, fh) = (info.width() as usize, info.height() as usize);
    let k = (fw / w).min(fh / h).max(1);
    if fw < w * k || fh < h * k {
        return None;
    }
    let stride = frame.plane_stride()[0] as usize;
    let y = frame.plane_data(0).ok()?;
    let mut out = vec![0u8; w * h];
    let n = (k * k) as u32;
    for oy in 0..h {
        for ox in 0..w {
            let mut sum = 0u32;
            for dy in 0..k {
                let row = (oy * k + dy) * stride + ox * k;
                sum += y
                    .get(row..row + k)?
                    .iter()
                    .map(|&v| u32::from(v))
                    .sum::<u32>();
            }
            out[oy * w + ox] = (sum / n) as u8;
        }
    }
    Some(out)
}

/// The sample's picture as JPEG (GStreamer's converter: the jpegenc already installed for
/// snapshots).
fn jpeg(sample: &gst::Sample) -> Option<Vec<u8>> {
    let caps = gst::Caps::builder("image/jpeg").build();
    let out =
        gst_video::convert_sample(sample, &caps, Some(gst::ClockTime::from_seconds(2))).ok()?;
    let map = out.buffer()?.map_readable().ok()?;
    Some(map.as_slice().to_vec())
}

impl Worker {
    fn run(mut self) {
        let mut detector: Option<(Detector, (u32, u32))> = None;
        let mut config = self.config.borrow_and_update().motion.clone();
        let epoch = Instant::now();
        let mut event: Option<String> = None;
        let mut last_jpeg: Option<Instant> = None;
        let mut pending_peak: Option<(gst::Sample, f64)> = None;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let Some(motion) = self.motion.upgrade() else {
                return;
            };
            if self.config.has_changed().unwrap_or(false) {
                config = self.config.borrow_and_update().motion.clone();
                motion.state.send_modify(|s| s.enabled = config.enabled);
                match &mut detector {
                    Some((d, size)) if *size == (config.width, config.height) => {
                        d.reconfigure(&config)
                    }
                    _ => detector = None,
                }
            }
            let now_ms = epoch.elapsed().as_millis() as u64;
            if !config.enabled {
                // Switched off during an event: it ends now.
                if let Some((d, _)) = &mut detector
                    && let Some(t) = d.finish(now_ms)
                {
                    finish(&motion, &mut event, t);
                }
                detector = None;
            }
            drop(motion);
            let sample = match self.frames.recv_timeout(Duration::from_millis(250)) {
                Ok(s) => s,
                Err(RecvTimeoutError::Timeout) => {
                    // The camera stopped sending (restart, switched off): time still passes,
                    // so a running event ends after its cooldown.
                    if let Some(motion) = self.motion.upgrade()
                        && let Some((d, _)) = &mut detector
                        && d.active()
                        && let Some(t) = d.idle(epoch.elapsed().as_millis() as u64)
                    {
                        finish(&motion, &mut event, t);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let Some(motion) = self.motion.upgrade() else {
                return;
            };
            if !config.enabled {
                continue;
            }
            let (w, h) = (config.width as usize, config.height as usize);
            let Some(picture) = grey(&sample, w, h) else {
                continue;
            };
            let (d, _) = detector.get_or_insert_with(|| {
                (Detector::new(&config, w, h), (config.width, config.height))
            });
            let t = epoch.elapsed().as_millis() as u64;
            let a = d.analyse(&picture, t);
            motion.analysed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::MOTION_FRAMES, "stream" => motion.stream.clone()).increment(1);
            metrics::gauge!(names::MOTION_SCORE, "stream" => motion.stream.clone()).set(a.score);
            motion.state.send_if_modified(|s| {
                let changed = (s.score - a.score).abs() > 1e-4;
                s.score = a.score;
                changed
            });
            match a.transition {
                Some(Transition::Start { score, zone }) => {
                    let id = format!("{}-{}", motion.stream, unix_ms());
                    event = Some(id.clone());
                    // The start goes out first (encoding the picture takes a few tens of ms);
                    // the event's first picture follows at once, `MotionJpeg::event_id` says
                    // whose it is.
                    motion.publish(Change::Start {
                        event_id: id.clone(),
                        score: round(score),
                        zone,
                    });
                    store_jpeg(&motion, &sample, &id, score);
                    last_jpeg = Some(Instant::now());
                    pending_peak = None;
                }
                Some(end @ Transition::End { .. }) => {
                    if let (Some((s, score)), Some(id)) = (pending_peak.take(), &event) {
                        store_jpeg(&motion, &s, id, score);
                    }
                    finish(&motion, &mut event, end);
                }
                None if a.peak => {
                    if last_jpeg.is_some_and(|l| l.elapsed() < JPEG_EVERY) {
                        pending_peak = Some((sample, a.score));
                    } else if let Some(id) = &event {
                        store_jpeg(&motion, &sample, id, a.score);
                        last_jpeg = Some(Instant::now());
                        pending_peak = None;
                    }
                }
                None => {
                    if let (Some((s, score)), Some(id)) = (&pending_peak, &event)
                        && last_jpeg.is_none_or(|l| l.elapsed() >= JPEG_EVERY)
                    {
                        store_jpeg(&motion, s, id, *score);
                        last_jpeg = Some(Instant::now());
                        pending_peak = None;
                    }
                }
            }
        }
    }
}

fn round(score: f64) -> f64 {
    (score * 10_000.0).round() / 10_000.0
}

fn store_jpeg(motion: &Motion, sample: &gst::Sample, event_id: &str, score: f64) {
    match jpeg(sample) {
        Some(data) => {
            if let Ok(mut j) = motion.jpeg.lock() {
                *j = Some(Arc::new(MotionJpeg {
                    data,
                    event_id: event_id.to_string(),
                    score: round(score),
                    at_unix_ms: unix_ms(),
                }));
            }
        }
        None => tracing::debug!(stream = %motion.stream, "Motion picture not encoded as JPEG"),
    }
}

fn finish(motion: &Motion, event: &mut Option<String>, t: Transition) {
    if let Transition::End {
        peak_score,
        zone,
        duration_ms,
    } = t
    {
        motion.publish(Change::End {
            event_id: event.take().unwrap_or_default(),
            score: round(peak_score),
            zone,
            duration_ms,
        });
    }
}
