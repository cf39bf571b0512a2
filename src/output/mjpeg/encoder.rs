//! One shared JPEG encoder: raw frames from the camera's tap, at most `fps` a second, scaled to
//! one size and encoded once for every client of that size. Its pipeline (`appsrc → convert →
//! scale → JPEG encoder → appsink`) runs off the capture, so a slow encode only skips frames;
//! the newest JPEG waits in a one-slot `watch` that each client reads at its own pace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use gst::prelude::*;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::MjpegError;
use crate::metrics::names;
use crate::stream::tap::RawTap;

/// One JPEG picture, shared by every client (a reference count, not a copy).
#[derive(Debug)]
pub struct JpegFrame {
    /// The JPEG bytes.
    pub data: Bytes,
    /// Its number from this encoder; a client that sees a gap skipped those pictures.
    pub seq: u64,
}

/// The JPEG encoder element in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegElement {
    /// `v4l2jpegenc` (Raspberry Pi 0–4 hardware JPEG).
    V4l2,
    /// `jpegenc` (libjpeg-turbo, software).
    Software,
}

impl JpegElement {
    /// The element factory name.
    pub fn element(self) -> &'static str {
        match self {
            JpegElement::V4l2 => "v4l2jpegenc",
            JpegElement::Software => "jpegenc",
        }
    }

    /// Its launch fragment at `quality` (1–100).
    fn fragment(self, quality: u32) -> String {
        match self {
            JpegElement::V4l2 => {
                format!("v4l2jpegenc extra-controls=\"controls,compression_quality={quality}\"")
            }
            JpegElement::Software => format!("jpegenc quality={quality}"),
        }
    }
}

/// The JPEG encoder to use: `v4l2jpegenc` when a short test encode passes, else `jpegenc`.
/// Probed once per process (blocking, at most a few seconds; call it off the async workers).
pub fn element() -> JpegElement {
    static CHOSEN: OnceLock<JpegElement> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        if gst::ElementFactory::find("v4l2jpegenc").is_none() {
            return JpegElement::Software;
        }
        match test_encode(JpegElement::V4l2) {
            Ok(()) => {
                tracing::info!("MJPEG uses the hardware JPEG encoder v4l2jpegenc");
                JpegElement::V4l2
            }
            Err(e) => {
                tracing::info!(reason = %e, "MJPEG uses jpegenc: v4l2jpegenc failed its test encode");
                JpegElement::Software
            }
        }
    })
}

/// Encodes a few frames with `element`, to prove the driver behind it works.
fn test_encode(element: JpegElement) -> Result<(), String> {
    let desc = format!(
        "videotestsrc num-buffers=3 ! video/x-raw,format=I420,width=320,height=240 ! {} \
         ! fakesink",
        element.fragment(80)
    );
    let pipeline = gst::parse::launch(&desc).map_err(|e| e.to_string())?;
    let bus = pipeline.bus().ok_or("pipeline has no bus")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("cannot start a test encode: {e}"))?;
    let result = match bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(3),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(msg) => match msg.view() {
            gst::MessageView::Eos(_) => Ok(()),
            gst::MessageView::Error(e) => Err(e.error().to_string()),
            _ => Err("unexpected message".into()),
        },
        None => Err("a 3-frame test encode did not finish within 3 s".into()),
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// What an encoder is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Spec {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Most pictures a second.
    pub fps: u32,
    /// JPEG quality.
    pub quality: u32,
}

/// A running shared encoder; it stops when the last client drops its `Arc`.
pub struct SharedEncoder {
    stream: String,
    pipeline: gst::Pipeline,
    cancel: CancellationToken,
    out: watch::Sender<Option<Arc<JpegFrame>>>,
}

impl SharedEncoder {
    /// Builds and starts an encoder fed from `tap` (blocking: sets a small pipeline playing,
    /// and the first call probes the hardware encoder).
    pub fn start(
        stream: &str,
        tap: &Arc<RawTap>,
        spec: Spec,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<Self>, MjpegError> {
        let element = element();
        let desc = format!(
            "appsrc name=src is-live=true format=time block=false max-buffers=2 \
             leaky-type=downstream \
             ! videoconvert ! videoscale ! video/x-raw,width={},height={},pixel-aspect-ratio=1/1 \
             ! {} ! appsink name=sink sync=false max-buffers=1 drop=true enable-last-sample=false",
            spec.width,
            spec.height,
            element.fragment(spec.quality)
        );
        let failed = |e: String| MjpegError::Encoder(e);
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| failed(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| failed("not a pipeline".into()))?;
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| failed("no appsrc".into()))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| failed("no appsink".into()))?;
        let (out, _) = watch::channel(None);
        let encoded =
            metrics::counter!(names::MJPEG_FRAMES_ENCODED, "stream" => stream.to_string());
        let tx = out.clone();
        let seq = AtomicU64::new(0);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
                    encoded.increment(1);
                    tx.send_replace(Some(Arc::new(JpegFrame {
                        data: Bytes::copy_from_slice(map.as_slice()),
                        seq: n,
                    })));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| failed(format!("cannot start the JPEG encoder: {e}")))?;
        let cancel = CancellationToken::new();
        runtime.spawn(feed(tap.listen(), src, spec.fps, cancel.clone()));
        metrics::gauge!(names::MJPEG_ENCODERS, "stream" => stream.to_string()).increment(1.0);
        tracing::info!(stream = %stream, size = %format!("{}x{}", spec.width, spec.height), fps = spec.fps, encoder = element.element(), "MJPEG encoder started");
        Ok(Arc::new(SharedEncoder {
            stream: stream.to_string(),
            pipeline,
            cancel,
            out,
        }))
    }

    /// A receiver of the newest JPEG.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<JpegFrame>>> {
        self.out.subscribe()
    }
}

impl Drop for SharedEncoder {
    fn drop(&mut self) {
        self.cancel.cancel();
        metrics::gauge!(names::MJPEG_ENCODERS, "stream" => self.stream.clone()).decrement(1.0);
        tracing::info!(stream = %self.stream, "MJPEG encoder stopped: no client left");
        // Stopping a pipeline waits for its streaming thread; not on an async worker.
        let p = self.pipeline.clone();
        let stop = move || {
            let _ = p.set_state(gst::State::Null);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(stop);
            }
            Err(_) => stop(),
        }
    }
}

/// Decides which raw frames are encoded so that at most `fps` a second are, evenly: a frame
/// is taken when it is due (a quarter interval early counts, for capture jitter), and the next
/// is due one interval after the last due time, so the long-run rate is exact.
#[derive(Debug)]
pub struct RateCap {
    interval: Duration,
    due: Option<Instant>,
}

impl RateCap {
    /// A cap of `fps` frames a second.
    pub fn new(fps: u32) -> Self {
        RateCap {
            interval: Duration::from_secs_f64(1.0 / f64::from(fps.max(1))),
            due: None,
        }
    }

    /// Whether a frame arriving at `at` is taken.
    pub fn take(&mut self, at: Instant) -> bool {
        if let Some(due) = self.due
            && at + self.interval / 4 < due
        {
            return false;
        }
        self.due = Some(match self.due {
            // Behind by more than an interval (a gap, a restart): start over from now.
            Some(due) if at < due + self.interval => due + self.interval,
            _ => at + self.interval,
        });
        true
    }
}

/// Pushes the tap's frames into the encoder at the capped rate until `cancel`.
async fn feed(
    mut frames: crate::stream::tap::TapListener,
    src: gst_app::AppSrc,
    fps: u32,
    cancel: CancellationToken,
) {
    let mut cap = RateCap::new(fps);
    loop {
        let frame = tokio::select! {
            f = frames.next() => f,
            _ = cancel.cancelled() => return,
        };
        let Some(frame) = frame else { return };
        if !cap.take(frame.at) {
            continue;
        }
        // A leaky appsrc: a busy encoder loses the oldest frame, never blocks this task.
        if src.push_sample(&frame.sample).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(source_fps: u32, cap_fps: u32, jitter_ms: i64) -> usize {
        let t0 = Instant::now();
        let mut cap = RateCap::new(cap_fps);
        let period = 1_000_000 / i64::from(source_fps);
        (0..source_fps * 10)
            .filter(|i| {
                let j = if i % 2 == 0 { jitter_ms } else { -jitter_ms } * 1000;
                let us = (i64::from(*i) * period + j).max(0) as u64;
                cap.take(t0 + Duration::from_micros(us))
            })
            .count()
    }

    #[test]
    fn the_cap_keeps_the_rate_it_is_given() {
        // Ten seconds of frames.
        assert_eq!(rate(30, 15, 0), 150);
        assert_eq!(rate(30, 15, 4), 150);
        assert_eq!(rate(15, 15, 5), 150);
        assert!(
            (195..=201).contains(&rate(30, 20, 2)),
            "{}",
            rate(30, 20, 2)
        );
        assert_eq!(rate(10, 15, 3), 100, "a slower camera keeps its own rate");
    }
}
