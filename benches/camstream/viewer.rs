//! Decoding viewers: what a person watching would run. `rtspsrc` → depayloader that waits for a
//! keyframe → decoder that drops corrupt output → `appsink`, recording when each picture arrived
//! and, for stamped sources, how old it was.
//!
//! The decoder runs single-threaded (`max-threads=1`): frame threading would hold pictures back
//! by a frame or two and hide the server's own latency behind the client's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::prelude::*;

use crate::rawclient::Proto;
use crate::stamp;

/// The decoding tail every viewer (and the encoder-alone pipeline) shares.
pub const DECODE: &str =
    "h264parse ! avdec_h264 output-corrupt=false max-threads=1 ! appsink name=out sync=false";

#[derive(Default)]
struct Shared {
    arrivals: Mutex<Vec<Instant>>,
    latencies_us: Mutex<Vec<i64>>,
    unreadable: AtomicU64,
    errored: AtomicBool,
    eos: AtomicBool,
}

/// A running decoding viewer.
pub struct Viewer {
    pipeline: gst::Pipeline,
    /// When it was told to play (the client's "connect").
    pub started: Instant,
    shared: Arc<Shared>,
}

impl Viewer {
    /// Connects to `url` over `proto`; with `stamps`, reads the latency stamp of every picture.
    pub fn rtsp(url: &str, proto: Proto, stamps: bool) -> Viewer {
        let desc = format!(
            "rtspsrc location={url} protocols={} latency=0 \
             ! rtph264depay wait-for-keyframe=true ! {DECODE}",
            proto.name()
        );
        Self::launch(&desc, stamps)
    }

    /// Encodes `source` with `encoder` and decodes it in this process: no RTSP, no network.
    pub fn encoder_alone(source: &str, encoder: &str) -> Viewer {
        Self::launch(&format!("{source} ! {encoder} ! {DECODE}"), true)
    }

    /// Runs a whole description ending in `DECODE`, reading stamps.
    pub fn launch_description(desc: &str) -> Viewer {
        Self::launch(desc, true)
    }

    fn launch(desc: &str, stamps: bool) -> Viewer {
        let pipeline = gst::parse::launch(desc)
            .unwrap_or_else(|e| panic!("viewer pipeline {desc}: {e}"))
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        let shared = Arc::new(Shared::default());
        let sink = pipeline
            .by_name("out")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .expect("appsink out");
        let s = shared.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let now = Instant::now();
                    let now_us = stamp::now_us();
                    s.arrivals.lock().unwrap().push(now);
                    if stamps {
                        match read_stamp(&sample) {
                            Some(t) => s
                                .latencies_us
                                .lock()
                                .unwrap()
                                .push(now_us as i64 - t as i64),
                            None => {
                                s.unreadable.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let s = shared.clone();
        pipeline
            .bus()
            .expect("bus")
            .set_sync_handler(move |_, msg| {
                match msg.view() {
                    gst::MessageView::Error(_) => s.errored.store(true, Ordering::SeqCst),
                    gst::MessageView::Eos(_) => s.eos.store(true, Ordering::SeqCst),
                    _ => {}
                }
                gst::BusSyncReply::Drop
            });
        let started = Instant::now();
        let _ = pipeline.set_state(gst::State::Playing);
        Viewer {
            pipeline,
            started,
            shared,
        }
    }

    /// Pictures decoded so far.
    pub fn frames(&self) -> usize {
        self.shared.arrivals.lock().unwrap().len()
    }

    /// When each picture was decoded.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.shared.arrivals.lock().unwrap().clone()
    }

    /// Time from play to the first decoded picture, waiting at most `timeout`.
    pub fn wait_first(&self, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.shared.arrivals.lock().unwrap().first() {
                return Some(*t - self.started);
            }
            if Instant::now() >= deadline || self.errored() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Latency samples (µs) so far, then forgets them.
    pub fn take_latencies(&self) -> Vec<i64> {
        std::mem::take(&mut *self.shared.latencies_us.lock().unwrap())
    }

    /// Pictures whose stamp could not be read.
    pub fn unreadable(&self) -> u64 {
        self.shared.unreadable.load(Ordering::Relaxed)
    }

    /// Whether the pipeline posted an error.
    pub fn errored(&self) -> bool {
        self.shared.errored.load(Ordering::SeqCst)
    }

    /// Whether the pipeline saw end-of-stream.
    pub fn eos(&self) -> bool {
        self.shared.eos.load(Ordering::SeqCst)
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn read_stamp(sample: &gst::Sample) -> Option<u64> {
    let info = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer()?, &info).ok()?;
    let stride = frame.plane_stride()[0] as usize;
    stamp::read(frame.plane_data(0).ok()?, stride)
}
