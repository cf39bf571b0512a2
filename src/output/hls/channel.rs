//! One encoding's HLS muxer and its lifecycle: started by the first request (or with the stream,
//! `mode = "always"`), fed by a supervised output pipeline (hub → `h264parse` → `appsink`, the
//! same H.264, never re-encoded), stopped after `idle_stop_s` without a request. The appsink's
//! thread is our own pipeline's, behind the hub's leaky queue: segmenting there (copies into
//! memory, no I/O) never holds up the capture.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gst::prelude::*;
use metrics::{counter, gauge};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::muxer::{Frame, Muxer};
use super::playlist;
use crate::config::HlsConfig;
use crate::metrics::names;
use crate::output::pipeline::{self, Spec};
use crate::output::record::mp4::{TIMESCALE, Track};
use crate::output::record::sampled::{Sampled, Sampler};
use crate::output::{Context, OutputHandle, Outputs};
use crate::stream::clock::SharedTime;
use crate::stream::hub::Hub;
use crate::stream::restart::Policy;
use crate::utc;

/// The appsink's name in the muxer's pipeline, and the hub's output label.
pub const OUTPUT: &str = "hls";

/// A running muxer's state, shared by the appsink thread and the HTTP handlers.
pub struct Live {
    /// The muxer's start id (in every file name).
    pub run: u64,
    /// The segmenter.
    pub muxer: Mutex<Muxer>,
    /// Bumped on every published part or segment, for the waiters.
    version: watch::Sender<u64>,
    /// Whether a keyframe was asked for the open segment (it ran long).
    asked: Mutex<Option<u64>>,
}

impl Live {
    /// Waits until `ready` holds for the segmenter, at most `limit`; says whether it did.
    /// Blocking playlist reloads and preload-hinted parts wait here.
    pub async fn wait_for(&self, limit: Duration, ready: impl Fn(&Muxer) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut rx = self.version.subscribe();
        loop {
            if ready(&self.muxer.lock().unwrap()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the muxer stopped.
                _ => return ready(&self.muxer.lock().unwrap()),
            }
        }
    }
}

struct Run {
    live: Arc<Live>,
    cancel: CancellationToken,
}

/// One encoding's HLS.
pub struct Channel {
    /// The encoding's stream name.
    pub name: String,
    /// Its hub.
    pub hub: Arc<Hub>,
    /// EXT-X-TARGETDURATION in seconds (the GOP, rounded up).
    pub target_s: u64,
    /// The settings.
    pub config: HlsConfig,
    time: SharedTime,
    policy: Policy,
    outputs: Outputs,
    camera_cancel: CancellationToken,
    run: Mutex<Option<Run>>,
    last_request: Mutex<Instant>,
    next_run: AtomicU64,
}

/// Why HLS cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum HlsError {
    /// HLS is off in the configuration.
    #[error("HLS is off (hls.mode = \"off\")")]
    Off,
    /// No segment came within the bound (camera down or no keyframe).
    #[error("no HLS segment of {0} within {1} s: is the camera streaming?")]
    NoSegment(String, u64),
}

impl Channel {
    /// A channel for one encoding; nothing runs until [`Channel::open`] (or `always`).
    pub(super) fn new(
        name: String,
        hub: Arc<Hub>,
        target_s: u64,
        ctx: &Context,
        policy: Policy,
        outputs: Outputs,
        camera_cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Channel {
            name,
            hub,
            target_s,
            config: ctx.hls.clone(),
            time: ctx.time.clone(),
            policy,
            outputs,
            camera_cancel,
            run: Mutex::new(None),
            last_request: Mutex::new(Instant::now()),
            next_run: AtomicU64::new(0),
        })
    }

    /// The running muxer, if any; counts as a request (keeps it alive).
    pub fn live(&self) -> Option<Arc<Live>> {
        *self.last_request.lock().unwrap() = Instant::now();
        self.run.lock().unwrap().as_ref().map(|r| r.live.clone())
    }

    /// The running muxer, started now if needed; waits (bounded) for its first segment.
    pub async fn open(self: &Arc<Self>) -> Result<Arc<Live>, HlsError> {
        if self.config.mode == crate::config::HlsMode::Off {
            return Err(HlsError::Off);
        }
        *self.last_request.lock().unwrap() = Instant::now();
        let live = self.start();
        // A forced keyframe starts the first segment at once. Players are given three segments
        // (about three target durations, the least a live playlist may hold): native players
        // (Chromium's, Safari's) refuse a shorter live playlist; `mode = "always"` skips the wait.
        // Under the sidecar's 15 s bound on every request.
        let limit = Duration::from_secs((4 * self.target_s + 8).min(14));
        if live.wait_for(limit, |m| m.done.len() >= 3).await {
            Ok(live)
        } else {
            Err(HlsError::NoSegment(self.name.clone(), limit.as_secs()))
        }
    }

    /// Starts the muxer unless it runs; returns it.
    pub(super) fn start(self: &Arc<Self>) -> Arc<Live> {
        let mut guard = self.run.lock().unwrap();
        if let Some(r) = guard.as_ref() {
            return r.live.clone();
        }
        let (version, _) = watch::channel(0);
        // Unique across muxer runs and daemon restarts, so cached file names never collide.
        let run = (utc::now() / 1_000_000) as u64 * 16
            + self.next_run.fetch_add(1, Ordering::Relaxed) % 16;
        let live = Arc::new(Live {
            run,
            muxer: Mutex::new(Muxer::new(
                self.config.part_ms,
                (self.target_s * 500) as u32,
                self.config.segment_count as usize,
            )),
            version,
            asked: Mutex::new(None),
        });
        let cancel = self.camera_cancel.child_token();
        let spec = Spec {
            output: format!("{OUTPUT}:{}", self.name),
            description: format!(
                "h264parse ! video/x-h264,stream-format=avc,alignment=au ! appsink name={OUTPUT} \
                 sync=false async=false enable-last-sample=false max-buffers=16 drop=true"
            ),
            shown: "h264parse ! appsink (hls)".into(),
            policy: self.policy.clone(),
            start_timeout: Duration::from_secs(15),
            secrets: Vec::new(),
        };
        let (l, t, hub) = (live.clone(), self.time.clone(), self.hub.clone());
        let target_ticks = self.target_s * u64::from(TIMESCALE);
        let running = pipeline::spawn_with(
            self.hub.clone(),
            self.time.clone(),
            spec,
            cancel.clone(),
            Box::new(|_, _| {}),
            Box::new(move |p| attach(p, &l, &t, &hub, target_ticks)),
        );
        self.hub.request_keyframe();
        let l = live.clone();
        let held = move || {
            let m = l.muxer.lock().unwrap();
            json!({
                "segments": m.done.len(),
                "held_bytes": m.held_bytes(),
                "media_sequence": m.current_msn(),
            })
        };
        self.outputs.set(OutputHandle {
            name: format!("{OUTPUT}:{}", self.name),
            health: running.health.clone(),
            detail: Arc::new(held),
        });
        gauge!(names::HLS_MUXERS, "stream" => self.name.clone()).set(1.0);
        tracing::info!(stream = %self.name, mode = ?self.config.mode, part_ms = self.config.part_ms, target_s = self.target_s, "HLS muxer started");
        *guard = Some(Run {
            live: live.clone(),
            cancel,
        });
        live
    }

    /// Stops the muxer (its memory is freed once the last response holding it is sent).
    pub(super) fn stop(&self, why: &str) {
        if let Some(r) = self.run.lock().unwrap().take() {
            r.cancel.cancel();
            self.outputs.remove(&format!("{OUTPUT}:{}", self.name));
            gauge!(names::HLS_MUXERS, "stream" => self.name.clone()).set(0.0);
            tracing::info!(stream = %self.name, why, "HLS muxer stopped");
        }
    }

    /// Stops an on-demand muxer nobody asked for within `idle_stop_s`; runs until the camera
    /// stops.
    pub(super) async fn reap(self: Arc<Self>) {
        let idle = Duration::from_secs(u64::from(self.config.idle_stop_s));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = self.camera_cancel.cancelled() => {
                    self.stop("the stream stopped");
                    return;
                }
                _ = tick.tick() => {}
            }
            let quiet = self.last_request.lock().unwrap().elapsed();
            if self.config.mode == crate::config::HlsMode::OnDemand && quiet > idle {
                self.stop("no request");
            }
        }
    }

    /// Counts a request and the bytes answered, for metrics.
    pub fn served(&self, kind: &'static str, bytes: usize) {
        counter!(names::HLS_REQUESTS, "stream" => self.name.clone(), "kind" => kind).increment(1);
        counter!(names::HLS_BYTES, "stream" => self.name.clone()).increment(bytes as u64);
    }

    /// The media playlist now.
    pub fn playlist(&self, live: &Live) -> Option<String> {
        let m = live.muxer.lock().unwrap();
        playlist::media(
            &m,
            &playlist::Media {
                run: live.run,
                target_s: self.target_s,
                part_ms: self.config.part_ms,
            },
        )
    }

    /// The newest track the muxer saw, when it runs.
    pub fn track(&self) -> Option<Arc<Track>> {
        let run = self.run.lock().unwrap();
        run.as_ref()
            .and_then(|r| r.live.muxer.lock().unwrap().track())
    }
}

/// Feeds every frame of a (re)built muxer pipeline to the segmenter.
fn attach(p: &gst::Pipeline, live: &Arc<Live>, time: &SharedTime, hub: &Arc<Hub>, target: u64) {
    let Some(sink) = p
        .by_name(OUTPUT)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
    else {
        return;
    };
    let (live, time, hub) = (live.clone(), time.clone(), hub.clone());
    let mut sampler = Sampler::default();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let Some(Sampled {
                    buffer,
                    track,
                    pts,
                    dts,
                    key,
                    utc,
                }) = sampler.read(&sample, &time)
                else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let dts = dts.unwrap_or(pts).min(pts);
                let Ok(map) = buffer.map_readable() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let frame = Frame {
                    data: Bytes::copy_from_slice(map.as_slice()),
                    pts,
                    dts,
                    key,
                    utc,
                    track,
                };
                let (published, long) = {
                    let mut m = live.muxer.lock().unwrap();
                    let published = m.push(frame);
                    // A GOP longer than the target duration: ask for a keyframe once, so the
                    // segment ends near its target.
                    let long = m.current.as_ref().and_then(|c| {
                        (c.ticks + u64::from(TIMESCALE) / 5 >= target).then_some(c.msn)
                    });
                    (published, long)
                };
                if let Some(msn) = long {
                    let mut asked = live.asked.lock().unwrap();
                    if *asked != Some(msn) {
                        *asked = Some(msn);
                        drop(asked);
                        hub.request_keyframe();
                    }
                }
                if published {
                    live.version.send_modify(|v| *v += 1);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}
