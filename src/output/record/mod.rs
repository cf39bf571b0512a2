//! Recording: each stream's main encoding written to disk in segments, with retention, crash
//! safety and playback (see docs/recording.md). The manager here follows `[record]` through
//! `Camera::watch_config()`: it starts one supervised output pipeline (hub → `h264parse` →
//! `appsink`, the same H.264, never re-encoded) and a writer thread that owns every file
//! operation, so neither a slow nor a full disk reaches the capture or the live viewers: the hub
//! queue leaks, the appsink hands frames over without waiting, and the writer pauses by itself.

// Event clips' pre-roll ring.
pub mod clips;
pub mod export;
pub mod index;
mod mkv;
pub mod mp4;
mod nofollow;
pub mod retention;
pub mod sampled;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use metrics::{Counter, Gauge, counter, gauge};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::pipeline::{self, Spec};
use super::{Context, OutputHandle, Outputs};
use crate::config::RecordConfig;
use crate::metrics::names;
use crate::stream::camera::Camera;
use crate::stream::clock::SharedTime;
use crate::stream::restart::Policy;
use crate::stream::status::{Health, LastError, RestartReason, State, unix_now};
use crate::utc;
use mp4::AudioTrack;
use sampled::{Sampled, Sampler};
use writer::{AudioFrame, Frame, Msg, Phase, Report};

/// The name of the recorder in the stream's outputs and the hub's metric label.
pub const OUTPUT: &str = "record";
/// The recorder's AAC appsrc (fed by the stream's AAC hub) and the appsink after it.
const AUDIO_SOURCE: &str = "record_asrc";
/// The appsink of the recorder's sound.
const AUDIO_SINK: &str = "record_audio";
/// Frames the writer may lag behind before frames are dropped (about 4 s at 30 fps).
const QUEUE_FRAMES: usize = 128;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(5);

/// The folder of `stream`'s recordings.
pub fn folder(config: &RecordConfig, stream: &str) -> PathBuf {
    Path::new(&config.path).join(stream)
}

/// Starts the recording manager of `camera`; it runs until `cancel`.
pub fn start(camera: &Camera, ctx: &Context, outputs: &Outputs, cancel: &CancellationToken) {
    tokio::spawn(manage(
        camera.clone(),
        ctx.time.clone(),
        outputs.clone(),
        cancel.clone(),
    ));
}

/// The door between the appsink's streaming thread and the writer: never blocks.
struct Gate {
    tx: Mutex<Option<SyncSender<Msg>>>,
    seq: AtomicU64,
}

impl Gate {
    fn send(&self, msg: Msg) {
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            match tx.try_send(msg) {
                // A full queue: the writer sees the jump in sequence numbers and closes the
                // segment; the capture never waits for the disk.
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// The sound track of AAC caps (`audio/mpeg, mpegversion=4, stream-format=raw, codec_data`).
fn audio_track_of(caps: &gst::CapsRef) -> Option<AudioTrack> {
    let s = caps.structure(0)?;
    let data = s.get::<gst::Buffer>("codec_data").ok()?;
    let map = data.map_readable().ok()?;
    Some(AudioTrack {
        rate: s.get::<i32>("rate").ok()? as u32,
        channels: s.get::<i32>("channels").ok()? as u16,
        asc: map.as_slice().to_vec(),
    })
}

/// Hands every AAC frame of a (re)built recorder pipeline to the writer, tagged as sound.
fn attach_audio(pipeline: &gst::Pipeline, gate: &Arc<Gate>) {
    let Some(sink) = pipeline
        .by_name(AUDIO_SINK)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
    else {
        return;
    };
    let gate = gate.clone();
    let mut last: Option<(gst::Caps, Arc<AudioTrack>)> = None;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let (Some(buffer), Some(caps), Some(segment)) =
                    (sample.buffer_owned(), sample.caps_owned(), sample.segment())
                else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let track = match &last {
                    Some((c, t)) if *c == caps => t.clone(),
                    _ => {
                        let Some(t) = audio_track_of(&caps) else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        let t = Arc::new(t);
                        last = Some((caps, t.clone()));
                        t
                    }
                };
                let Some(pts) = buffer.pts().and_then(|t| {
                    segment
                        .downcast_ref::<gst::format::Time>()
                        .and_then(|s| s.to_running_time(t))
                }) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let seq = gate.seq.fetch_add(1, Ordering::Relaxed) + 1;
                gate.send(Msg::Audio(AudioFrame {
                    buffer,
                    pts: pts.nseconds(),
                    seq,
                    track,
                }));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// Hands every frame of a (re)built recorder pipeline to the writer.
fn attach(pipeline: &gst::Pipeline, gate: &Arc<Gate>, time: &SharedTime) {
    let Some(sink) = pipeline
        .by_name(OUTPUT)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
    else {
        return;
    };
    gate.send(Msg::Break("the recording pipeline was rebuilt"));
    let (gate, time) = (gate.clone(), time.clone());
    let mut sampler = Sampler::default();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let seq = gate.seq.fetch_add(1, Ordering::Relaxed) + 1;
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
                let dts = dts.unwrap_or(pts);
                gate.send(Msg::Frame(Frame {
                    buffer,
                    pts,
                    dts,
                    key,
                    utc,
                    seq,
                    track,
                }));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// The recorder's metric handles, labelled `stream`.
struct RecordMetrics {
    bytes: Counter,
    segments: Counter,
    errors: Counter,
    free: Gauge,
    oldest: Gauge,
    states: Vec<(&'static str, Gauge)>,
}

impl RecordMetrics {
    fn new(stream: &str) -> Self {
        let l = [("stream", stream.to_string())];
        RecordMetrics {
            bytes: counter!(names::RECORD_BYTES, &l),
            segments: counter!(names::RECORD_SEGMENTS, &l),
            errors: counter!(names::RECORD_ERRORS, &l),
            free: gauge!(names::RECORD_DISK_FREE, &l),
            oldest: gauge!(names::RECORD_OLDEST_AGE, &l),
            states: Phase::NAMES
                .iter()
                .map(|s| {
                    (
                        *s,
                        gauge!(names::RECORD_STATE, "stream" => stream.to_string(), "state" => *s),
                    )
                })
                .collect(),
        }
    }

    fn publish(&self, r: &Report) {
        self.bytes.absolute(r.bytes_written);
        self.segments.absolute(r.segments_written);
        self.errors.absolute(r.write_errors);
        if let Some(f) = r.disk_free_bytes {
            self.free.set(f as f64);
        }
        for (name, g) in &self.states {
            g.set(if *name == r.phase.name() { 1.0 } else { 0.0 });
        }
    }
}

/// A running recorder.
struct Recorder {
    config: RecordConfig,
    gate: Arc<Gate>,
    cancel: CancellationToken,
    pipeline: pipeline::Running,
    writer: std::thread::JoinHandle<()>,
}

impl Recorder {
    fn start(
        camera: &Camera,
        time: &SharedTime,
        config: RecordConfig,
        shared: &writer::Shared,
        current: &Arc<Mutex<Option<String>>>,
        cancel: &CancellationToken,
    ) -> std::io::Result<Recorder> {
        let hub = camera.main().hub.clone();
        let (tx, rx) = mpsc::sync_channel(QUEUE_FRAMES);
        let w = writer::Writer::new(
            &camera.name,
            folder(&config, &camera.name),
            config.clone(),
            hub.clone(),
            shared.clone(),
            current.clone(),
        );
        let writer = std::thread::Builder::new()
            .name(format!("record-{}", camera.name))
            .spawn(move || w.run(rx))?;
        let gate = Arc::new(Gate {
            tx: Mutex::new(Some(tx)),
            seq: AtomicU64::new(0),
        });
        let cancel = cancel.child_token();
        // The sound (issue #24): a second branch fed by the AAC hub, same clock and time line.
        let sound = camera.audio().map(|a| {
            crate::stream::audio::Feed::new(
                a,
                crate::stream::audio::AudioCodec::Aac,
                AUDIO_SOURCE,
                OUTPUT,
            )
        });
        let audio_branch = if sound.is_some() {
            format!(
                " appsrc name={AUDIO_SOURCE} is-live=true format=time ! queue max-size-buffers=0 \
                 max-size-bytes=0 max-size-time=1000000000 ! appsink name={AUDIO_SINK} sync=false \
                 async=false enable-last-sample=false max-buffers=64 drop=true"
            )
        } else {
            String::new()
        };
        let spec = Spec {
            output: OUTPUT.into(),
            description: format!(
                "h264parse ! video/x-h264,stream-format=avc,alignment=au ! appsink name={OUTPUT} \
                 sync=false async=false enable-last-sample=false max-buffers=16 drop=true{audio_branch}"
            ),
            shown: if sound.is_some() {
                "h264parse ! appsink + AAC appsrc ! appsink (recorder)".into()
            } else {
                "h264parse ! appsink (recorder)".into()
            },
            policy: Policy::from_config(&camera.config().supervisor),
            start_timeout: Duration::from_secs(15),
            secrets: Vec::new(),
        };
        let (g, t) = (gate.clone(), time.clone());
        let pipeline = pipeline::spawn_with(
            hub,
            time.clone(),
            spec,
            cancel.clone(),
            Box::new(|_, _| {}),
            Box::new(move |p| {
                attach(p, &g, &t);
                attach_audio(p, &g);
                if let Some(f) = &sound {
                    f.attach(p);
                }
            }),
        );
        tracing::info!(stream = %camera.name, path = %folder(&config, &camera.name).display(), format = config.format.extension(), segment_s = config.segment_s, "Recording started");
        Ok(Recorder {
            config,
            gate,
            cancel,
            pipeline,
            writer,
        })
    }

    /// Stops the pipeline, then lets the writer close its segment (bounded: a hung disk does
    /// not hold up the daemon).
    async fn stop(self, stream: &str) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pipeline.task).await;
        self.gate.tx.lock().unwrap().take();
        let writer = self.writer;
        let joined = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || writer.join()),
        )
        .await;
        if joined.is_err() {
            tracing::warn!(
                stream,
                "The recording writer did not finish within 10 s (disk blocked?)"
            );
        }
        tracing::info!(stream, "Recording stopped");
    }
}

fn health_of(
    pipeline: Option<&Health>,
    report: &Report,
    enabled: bool,
    since: &mut Option<(String, u64)>,
) -> Health {
    let mut h = pipeline.cloned().unwrap_or_default();
    if !enabled {
        h.state = State::Disabled;
    } else if h.state == State::Streaming {
        h.state = match report.phase {
            Phase::Recording => State::Streaming,
            Phase::Waiting => State::Starting,
            Phase::Paused => State::Backoff {
                attempt: 1,
                reason: RestartReason::Error,
                delay_ms: 0,
            },
            Phase::Off => State::Stopped,
        };
    }
    if let Some(e) = &report.error {
        if since.as_ref().is_none_or(|(m, _)| m != e) {
            *since = Some((e.clone(), unix_now()));
        }
        let at_unix = since.as_ref().map_or(0, |s| s.1);
        h.last_error = Some(LastError {
            reason: RestartReason::Error,
            message: e.clone(),
            at_unix,
        });
    }
    h
}

async fn manage(camera: Camera, time: SharedTime, outputs: Outputs, cancel: CancellationToken) {
    let stream = camera.name.clone();
    let metrics = RecordMetrics::new(&stream);
    let shared: writer::Shared = Arc::new(Mutex::new(Report {
        phase: Phase::Off,
        ..Report::default()
    }));
    let current: Arc<Mutex<Option<String>>> = Arc::default();
    let oldest: Arc<Mutex<Option<utc::Nanos>>> = Arc::default();
    let (health_tx, health_rx) = watch::channel(Health::default());
    let mut configs = camera.watch_config();
    let mut camera_status = camera.watch_status();
    let mut running: Option<Recorder> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut retention_tick = tokio::time::interval(RETENTION_EVERY);
    let mut error_since = None;
    let mut was_streaming = false;
    let mut registered = false;
    // Event clips: motion starts and ends go to the writer (it ignores them outside `events`).
    let mut motion = Some(camera.motion.subscribe());
    loop {
        let rc = configs.borrow_and_update().record.clone();
        if running.as_ref().map(|r| &r.config) != Some(&rc) {
            if let Some(r) = running.take() {
                r.stop(&stream).await;
            }
            if rc.enabled {
                match Recorder::start(&camera, &time, rc.clone(), &shared, &current, &cancel) {
                    Ok(r) => running = Some(r),
                    Err(e) => {
                        tracing::error!(stream = %stream, error = %e, "Cannot start the recording writer")
                    }
                }
            } else {
                shared.lock().unwrap().phase = Phase::Off;
            }
        }
        if !registered && (rc.enabled || running.is_some()) {
            registered = true;
            let (s, dir, o) = (shared.clone(), folder(&rc, &stream), oldest.clone());
            let cfg = configs.clone();
            outputs.set(OutputHandle {
                name: OUTPUT.into(),
                health: health_rx.clone(),
                detail: Arc::new(move || {
                    let r = s.lock().unwrap().clone();
                    let c = cfg.borrow().record.clone();
                    json!({
                        "recording": r.phase,
                        "error": r.error,
                        "file": r.file,
                        "path": dir.display().to_string(),
                        "format": c.format,
                        "bytes_written": r.bytes_written,
                        "segments_written": r.segments_written,
                        "write_errors": r.write_errors,
                        "frames_dropped": r.frames_dropped,
                        "disk_free_bytes": r.disk_free_bytes,
                        "oldest": o.lock().unwrap().map(utc::rfc3339),
                    })
                }),
            });
        }
        tokio::select! {
            changed = configs.changed() => if changed.is_err() { break },
            _ = cancel.cancelled() => break,
            _ = camera_status.changed() => {
                let streaming = camera_status.borrow_and_update().health.state == State::Streaming;
                if was_streaming && !streaming && let Some(r) = &running {
                    r.gate.send(Msg::Break("the camera stopped streaming"));
                }
                was_streaming = streaming;
            }
            change = async {
                match &mut motion {
                    Some(m) => m.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                use crate::stream::motion::Change;
                use tokio::sync::broadcast::error::RecvError;
                match change {
                    Ok(Change::Start { event_id, .. }) => if let Some(r) = &running {
                        // The detection's time (set before the start is sent), so the pre-roll
                        // reaches back from the motion, not from this message.
                        let at = camera.motion.state().last_start.map_or_else(utc::now, |ms| ms as i64 * 1_000_000);
                        r.gate.send(Msg::MotionStart(event_id, at));
                    },
                    Ok(Change::End { event_id, .. }) => if let Some(r) = &running {
                        let jpeg = camera.motion.jpeg().filter(|j| j.event_id == event_id).map(|j| j.data.clone());
                        r.gate.send(Msg::MotionEnd(event_id, jpeg));
                    },
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => motion = None,
                }
            }
            _ = tick.tick() => {
                let report = shared.lock().unwrap().clone();
                metrics.publish(&report);
                let ph = running.as_ref().map(|r| r.pipeline.health.borrow().clone());
                let h = health_of(ph.as_ref(), &report, rc.enabled, &mut error_since);
                health_tx.send_if_modified(|old| if *old != h { *old = h; true } else { false });
            }
            _ = retention_tick.tick() => {
                let dir = folder(&rc, &stream);
                let limits = retention::Limits::of(&rc);
                // With recording off nothing is being written, so the newest file may go too
                // (a name that matches no file protects none); while on, the file being
                // written (or, between segments, the newest) is kept.
                let cur = if rc.enabled { current.lock().unwrap().clone() } else { Some(String::new()) };
                let pass = tokio::task::spawn_blocking(move || {
                    retention::enforce(&dir, &limits, utc::now(), cur.as_deref())
                }).await;
                match pass {
                    Ok(Ok(p)) => {
                        *oldest.lock().unwrap() = p.oldest;
                        metrics.oldest.set(p.oldest.map_or(0.0, |o| (utc::now() - o) as f64 / 1e9));
                        if let Some(f) = p.free {
                            metrics.free.set(f as f64);
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(stream = %stream, error = %e, "Retention pass failed"),
                    Err(_) => {}
                }
            }
        }
    }
    if let Some(r) = running.take() {
        r.stop(&stream).await;
    }
    outputs.remove(OUTPUT);
}
