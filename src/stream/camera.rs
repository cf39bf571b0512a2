//! One camera at run time: its capture pipeline under the restart loop, the hubs of its
//! encodings, and the door live control comes through. A reconfiguration is applied to the
//! running encoder where the element takes it while playing, and otherwise by a restart with
//! reason `reconfigure`, which keeps every output attached to the hubs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gst::prelude::*;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::audio::{self, Audio, AudioChange};
use super::capture::{self, CaptureError, SINK_NAME};
use super::clock::SharedTime;
use super::encoder::{self, Encoder, Selection};
use super::hub::Hub;
use super::image::{self, Caps, Plan};
use super::libcamera_log;
use super::lifecycle;
use super::metrics::{EncodingMetrics, SupervisorMetrics};
use super::restart::{self, Exit, Failure, Policy, RunEnd, Supervised, Woken};
use super::source;
use super::status::{Health, ImageUse, RestartReason, State, Status};
use crate::config::StreamConfig;

/// How a reconfiguration was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// Nothing the capture uses changed.
    Unchanged,
    /// Set on the running pipeline; no frame was lost.
    Live,
    /// The capture restarts with reason `reconfigure`; outputs stay attached.
    Restart,
}

/// One encoding of a camera: the main one or a rendition.
#[derive(Clone)]
pub struct Encoding {
    /// Name (the stream's, or the rendition's).
    pub name: String,
    /// RTSP mount path.
    pub mount: String,
    /// Picture size and rate.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Where its frames go.
    pub hub: Arc<Hub>,
    /// Its metric handles.
    pub metrics: EncodingMetrics,
}

enum Command {
    Reconfigure(Arc<StreamConfig>, oneshot::Sender<Applied>),
}

/// A running camera, as the control API, the outputs and the status see it.
#[derive(Clone)]
pub struct Camera {
    /// The stream's name.
    pub name: String,
    /// Its encodings, main first.
    pub encodings: Vec<Encoding>,
    config: watch::Receiver<Arc<StreamConfig>>,
    status: watch::Receiver<Status>,
    commands: mpsc::Sender<Command>,
    image_caps: Arc<Mutex<Option<Arc<Caps>>>>,
    audio: Arc<Audio>,
}

/// Why a reconfiguration was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The camera's task has ended (shutdown, or it gave up).
    #[error("stream {0} is not running")]
    NotRunning(String),
}

impl Camera {
    /// The configuration in force.
    pub fn config(&self) -> Arc<StreamConfig> {
        self.config.borrow().clone()
    }

    /// A receiver that sees every configuration change (outputs follow their sections).
    pub fn watch_config(&self) -> watch::Receiver<Arc<StreamConfig>> {
        self.config.clone()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// What the source offers for `[image]` settings, once the camera has been opened.
    pub fn image_caps(&self) -> Option<Arc<Caps>> {
        self.image_caps.lock().ok().and_then(|c| c.clone())
    }

    /// Refuses image settings the opened source cannot honour (before they reach the camera).
    pub fn check_image(&self, config: &StreamConfig) -> Result<(), image::ImageError> {
        match self.image_caps() {
            Some(caps) => image::plan::plan(&config.image, &caps).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The stream's sound, when `audio.kind` is not `none`: a hub per codec
    /// ([`Audio::hub`]) on the video's timeline.
    pub fn audio(&self) -> Option<Arc<Audio>> {
        self.audio.enabled().then(|| self.audio.clone())
    }

    /// The main encoding.
    pub fn main(&self) -> &Encoding {
        &self.encodings[0]
    }

    /// The picture size `enc` (one of this camera's encodings) delivers now, rotation included
    /// (see [`StreamConfig::picture_size`]).
    pub fn picture_size(&self, enc: &Encoding) -> (u32, u32) {
        self.config()
            .picture_size(&enc.name)
            .unwrap_or((enc.width, enc.height))
    }

    /// Applies a new configuration of this stream (same name and mounts); says how.
    pub async fn reconfigure(&self, config: StreamConfig) -> Result<Applied, ControlError> {
        let (tx, rx) = oneshot::channel();
        let sound = config.audio.clone();
        self.commands
            .send(Command::Reconfigure(Arc::new(config), tx))
            .await
            .map_err(|_| ControlError::NotRunning(self.name.clone()))?;
        let video = rx
            .await
            .map_err(|_| ControlError::NotRunning(self.name.clone()))?;
        // The sound restarts on its own: the answer is the larger of the two changes.
        let sound = match self.audio.reconfigure(&sound) {
            AudioChange::Unchanged => Applied::Unchanged,
            AudioChange::Live => Applied::Live,
            AudioChange::Restart => Applied::Restart,
        };
        Ok(match (video, sound) {
            (Applied::Restart, _) | (_, Applied::Restart) => Applied::Restart,
            (Applied::Live, _) | (_, Applied::Live) => Applied::Live,
            _ => Applied::Unchanged,
        })
    }

    /// Whether frames are flowing: streaming, and the last frame younger than the stall window.
    pub fn flowing(&self) -> bool {
        let stall = Duration::from_millis(self.config().supervisor.stall_timeout_ms);
        matches!(self.status.borrow().health.state, State::Streaming)
            && self
                .main()
                .hub
                .stats()
                .last_frame_age()
                .is_some_and(|a| a < stall)
    }
}

/// Chooses the encoder for a stream (blocking: it may run test encodes).
pub fn choose_encoder(config: &StreamConfig) -> Result<Selection, CaptureError> {
    encoder::select(config)
}

/// Starts a camera: its supervisor and flow metrics run until `cancel`. The returned handle is
/// what everything else talks to; the join handle ends with the supervisor's exit.
pub fn start(
    config: StreamConfig,
    selection: Selection,
    time: SharedTime,
    cancel: CancellationToken,
) -> (Camera, tokio::task::JoinHandle<Exit>) {
    let encodings = encodings_of(&config);
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let (status_tx, status_rx) = watch::channel(Status {
        health: Health::default(),
        source: None,
        encoder: selection.encoder.element().to_string(),
        encoder_reason: selection.reason(),
        image: Vec::new(),
    });
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let name = config_rx.borrow().name.clone();
    let sound = audio::start(
        &name,
        config_rx.borrow().audio.clone(),
        time.clone(),
        cancel.child_token(),
    );
    let camera = Camera {
        name: name.clone(),
        encodings: encodings.clone(),
        config: config_rx,
        status: status_rx,
        commands: cmd_tx,
        image_caps: Arc::new(Mutex::new(None)),
        audio: sound,
    };
    let image_caps = camera.image_caps.clone();
    tokio::spawn(publish_flow(encodings.clone(), cancel.clone()));
    let mut runner = Runner {
        config: config_tx,
        encoder: selection.encoder,
        encodings,
        time,
        commands: cmd_rx,
        cancel,
        status: status_tx.clone(),
        metrics: SupervisorMetrics::new(&name),
        image: None,
        image_caps,
    };
    let task = tokio::spawn(async move {
        let policy = Policy::from_config(&runner.config.borrow().supervisor);
        restart::supervise(&format!("camera {name}"), &policy, &mut runner, &status_tx).await
    });
    (camera, task)
}

fn encodings_of(config: &StreamConfig) -> Vec<Encoding> {
    let main = Encoding {
        name: config.name.clone(),
        mount: config.mount_path(),
        width: config.video.width,
        height: config.video.height,
        fps: config.video.fps,
        hub: Hub::new(&config.name),
        metrics: EncodingMetrics::new(&config.name),
    };
    std::iter::once(main)
        .chain(config.renditions.iter().map(|r| Encoding {
            name: r.name.clone(),
            mount: r.mount_path(),
            width: r.width,
            height: r.height,
            fps: config.rendition_fps(r),
            hub: Hub::new(&r.name),
            metrics: EncodingMetrics::new(&r.name),
        }))
        .collect()
}

/// Publishes each encoding's frame rate, last-frame age and per-output counts once a second.
async fn publish_flow(encodings: Vec<Encoding>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last: Vec<(Instant, u64)> = encodings
        .iter()
        .map(|e| (Instant::now(), e.hub.stats().frames()))
        .collect();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        for (e, prev) in encodings.iter().zip(last.iter_mut()) {
            let now = (Instant::now(), e.hub.stats().frames());
            let secs = now.0.duration_since(prev.0).as_secs_f64().max(1e-3);
            let fps = (now.1 - prev.1) as f64 / secs;
            let age = e
                .hub
                .stats()
                .last_frame_age()
                .map_or(-1.0, |d| d.as_secs_f64());
            e.metrics.set_flow(fps, age);
            e.metrics.set_outputs(&e.hub);
            *prev = now;
        }
    }
}

/// The capture side of the restart loop.
struct Runner {
    config: watch::Sender<Arc<StreamConfig>>,
    encoder: Encoder,
    encodings: Vec<Encoding>,
    time: SharedTime,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    status: watch::Sender<Status>,
    metrics: SupervisorMetrics,
    /// What the source offers and the image plan of the running pipeline.
    image: Option<(Arc<Caps>, Plan)>,
    image_caps: Arc<Mutex<Option<Arc<Caps>>>>,
}

/// The settings the capture pipeline is built from; output sections are not among them, so a
/// change to an output never touches the capture.
fn capture_view(s: &StreamConfig) -> impl PartialEq + '_ {
    (
        &s.source,
        &s.video,
        &s.encoder,
        &s.supervisor,
        &s.renditions,
        &s.image,
        // The test picture flashes in step with the test beep.
        s.audio.kind == crate::config::AudioKind::Test,
    )
}

/// What a change needs: nothing, a live bitrate change, or a restart.
fn plan(old: &StreamConfig, new: &StreamConfig) -> Applied {
    if capture_view(old) == capture_view(new) {
        return Applied::Unchanged;
    }
    let mut same = new.clone();
    same.encoder.bitrate_kbps = old.encoder.bitrate_kbps;
    for (r, o) in same.renditions.iter_mut().zip(&old.renditions) {
        r.bitrate_kbps = o.bitrate_kbps;
    }
    // Image settings are live or not by their plan, which `Runner::apply_live` checks.
    same.image = old.image.clone();
    if capture_view(&same) == capture_view(old) {
        Applied::Live
    } else {
        Applied::Restart
    }
}

impl Runner {
    fn failure(&self, reason: RestartReason, message: String, since: Option<Instant>) -> RunEnd {
        RunEnd::Failed(Failure {
            reason,
            message,
            worked_for: since.map(|t| t.elapsed()),
        })
    }

    fn name(&self) -> String {
        self.config.borrow().name.clone()
    }

    /// Tries to apply `new` to the running pipeline; `Restart` when it cannot.
    fn apply_live(&mut self, pipeline: &gst::Pipeline, new: &StreamConfig) -> Applied {
        let old = self.config.borrow().clone();
        match plan(&old, new) {
            Applied::Live => {}
            other => return other,
        }
        // The image part first: when it needs a restart, nothing is set.
        let image_plan = if old.image != new.image {
            let Some((caps, current)) = &self.image else {
                return Applied::Restart;
            };
            match image::plan::plan(&new.image, caps) {
                Ok(next) if current.live_to(&next, &old.image, &new.image) => Some(next),
                _ => return Applied::Restart,
            }
        } else {
            None
        };
        let bitrates_changed = old.encoder.bitrate_kbps != new.encoder.bitrate_kbps
            || old
                .renditions
                .iter()
                .zip(&new.renditions)
                .any(|(a, b)| a.bitrate_kbps != b.bitrate_kbps);
        if bitrates_changed {
            let gop = new.encoder.keyframe_interval;
            let mut targets = vec![(capture::ENCODER_NAME.to_string(), new.encoder.bitrate_kbps)];
            for (i, r) in new.renditions.iter().enumerate() {
                targets.push((capture::rendition_encoder(i), r.bitrate_kbps));
            }
            let elements: Option<Vec<_>> = targets
                .iter()
                .map(|(n, k)| pipeline.by_name(n).map(|e| (e, *k)))
                .collect();
            let Some(elements) = elements else {
                return Applied::Restart;
            };
            if !elements
                .iter()
                .all(|(e, _)| encoder::bitrate_is_live(self.encoder, e))
            {
                return Applied::Restart;
            }
            for (e, kbps) in elements {
                encoder::set_bitrate(self.encoder, &e, kbps, gop);
            }
        }
        if let Some(next) = image_plan {
            if let Err(e) = image::apply(pipeline, &next) {
                tracing::warn!(stream = %new.name, error = %e, "Image settings not applied live; restarting");
                return Applied::Restart;
            }
            self.publish_image(&next);
            if let Some((_, current)) = &mut self.image {
                *current = next;
            }
        }
        Applied::Live
    }

    fn publish_image(&self, plan: &Plan) {
        let uses: Vec<ImageUse> = plan
            .uses
            .iter()
            .map(|u| ImageUse {
                setting: u.setting.to_string(),
                backend: u.backend.as_str().to_string(),
                live: u.live,
            })
            .collect();
        self.status.send_modify(|s| s.image = uses);
    }

    /// Takes a reconfiguration while no pipeline runs: it applies at the next start.
    fn accept_offline(&mut self, new: Arc<StreamConfig>) -> Applied {
        let applied = match plan(&self.config.borrow(), &new) {
            Applied::Unchanged => Applied::Unchanged,
            _ => Applied::Restart,
        };
        self.config.send_replace(new);
        applied
    }

    async fn run_pipeline(&mut self) -> RunEnd {
        let config = self.config.borrow().clone();
        let name = config.name.clone();
        // libcamera's lines from here on belong to this attempt (discovery opens it too).
        let attempt = Instant::now();
        let libcamera = std::sync::atomic::AtomicBool::new(
            config.source.kind == crate::config::SourceKind::Libcamera,
        );
        // libcamera's words in front of a failure: what it said since `from`.
        let explained_since = |message: String, from: Instant| {
            if libcamera.load(std::sync::atomic::Ordering::Relaxed) {
                libcamera_log::explain_failure(&message, from)
            } else {
                message
            }
        };
        let explained = |message: String| explained_since(message, attempt);
        let open_failed = |message: String| {
            let message = explained(message);
            tracing::error!(stream = %name, error = %message, "Camera failed to open");
            RunEnd::Failed(Failure {
                reason: RestartReason::StateChangeFailure,
                message,
                worked_for: None,
            })
        };
        if Encoder::from_kind(config.encoder.kind).is_some_and(|e| e != self.encoder) {
            let c = config.clone();
            match tokio::task::spawn_blocking(move || encoder::select(&c)).await {
                Ok(Ok(sel)) => {
                    self.encoder = sel.encoder;
                    self.status.send_modify(|s| {
                        s.encoder = sel.encoder.element().to_string();
                        s.encoder_reason = sel.reason();
                    });
                }
                Ok(Err(e)) => return open_failed(e.to_string()),
                Err(e) => return open_failed(format!("encoder selection panicked: {e}")),
            }
        }
        let src = config.source.clone();
        // Device discovery and reading the camera's controls can take a moment; keep them off
        // the async workers.
        let found = tokio::task::spawn_blocking(move || {
            source::resolve(&src).map(|s| {
                let caps = image::probe(&s);
                (s, caps)
            })
        })
        .await;
        let (source, caps) = match found {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return open_failed(e.to_string()),
            Err(e) => return open_failed(format!("source discovery panicked: {e}")),
        };
        let caps = Arc::new(caps);
        if let Ok(mut c) = self.image_caps.lock() {
            *c = Some(caps.clone());
        }
        let image_plan = match image::plan::plan(&config.image, &caps) {
            Ok(p) => p,
            Err(e) => return open_failed(e.to_string()),
        };
        for w in &image_plan.warnings {
            tracing::warn!(stream = %name, "{w}");
        }
        self.publish_image(&image_plan);
        libcamera.store(
            matches!(source, source::Source::Libcamera { .. }),
            std::sync::atomic::Ordering::Relaxed,
        );
        let source_name = source.to_string();
        self.status
            .send_modify(|s| s.source = Some(source_name.clone()));
        SupervisorMetrics::set_info(&name, source.kind_name(), self.encoder.element());
        let description = capture::describe_with_image(
            &config,
            &source,
            self.encoder,
            &image::software::describe(&image_plan, &config.video),
        );
        tracing::debug!(stream = %name, pipeline = %description, "Building capture pipeline");
        let pipeline = match capture::build(&description) {
            Ok(p) => p,
            Err(e) => return open_failed(e.to_string()),
        };
        self.time.apply(&pipeline);
        if matches!(source, source::Source::Test { .. })
            && config.audio.kind == crate::config::AudioKind::Test
            && let Some(src) = pipeline.by_name("src")
        {
            audio::test_signal::attach_flash(&src);
        }
        if let Err(e) = image::apply(&pipeline, &image_plan) {
            return open_failed(format!("image settings: {e}"));
        }
        self.image = Some((caps, image_plan));
        let mut sinks = Vec::new();
        for (i, e) in self.encodings.iter().enumerate() {
            let sink_name = if i == 0 {
                SINK_NAME.to_string()
            } else {
                capture::rendition_sink(i - 1)
            };
            let (metrics, gop) = (e.metrics.clone(), e.hub.gop().clone());
            gop.clear();
            capture::attach_frame_probe(
                &pipeline,
                &sink_name,
                e.hub.stats().clone(),
                move |buffer, key| {
                    metrics.frame(buffer.size(), key);
                    gop.push(buffer, key);
                },
            );
            let Some(appsink) = pipeline
                .by_name(&sink_name)
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            else {
                return open_failed(format!("capture pipeline has no appsink {sink_name}"));
            };
            sinks.push(appsink);
        }
        let bus = pipeline.bus().expect("a pipeline has a bus");
        let mut messages = bus.stream();
        for (e, sink) in self.encodings.iter().zip(&sinks) {
            e.hub.set_producer(Some(sink));
        }
        let detach = |encodings: &[Encoding]| {
            for e in encodings {
                e.hub.set_producer(None);
                // A snapshot during the restart must say "no frame", not show an old picture.
                e.hub.gop().clear();
            }
        };

        if let Err(detail) = lifecycle::start(&pipeline).await {
            detach(&self.encodings);
            lifecycle::stop(pipeline, "capture").await;
            return open_failed(detail);
        }

        let sup = config.supervisor.clone();
        let stall = Duration::from_millis(sup.stall_timeout_ms);
        let start_timeout = Duration::from_millis(sup.start_timeout_ms);
        let stats = self.encodings[0].hub.stats().clone();
        let frames_before = stats.frames();
        let t0 = Instant::now();
        let mut since: Option<Instant> = None;
        let mut tick = tokio::time::interval(
            (stall / 5).clamp(Duration::from_millis(20), Duration::from_millis(250)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let end = loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        break self.failure(RestartReason::Error, "bus closed".into(), since);
                    };
                    match msg.view() {
                        gst::MessageView::Error(e) => {
                            if libcamera.load(std::sync::atomic::Ordering::Relaxed) {
                                // libcamera logs its reason just before libcamerasrc posts the
                                // error; let the reader thread catch up.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            // A crash after hours of streaming is not explained by what
                            // libcamera said at start-up: only its last words count.
                            let from = match since {
                                Some(_) => Instant::now().checked_sub(Duration::from_secs(2)).map_or(attempt, |t| t.max(attempt)),
                                None => attempt,
                            };
                            let message = explained_since(lifecycle::describe_error(e), from);
                            if since.is_some() {
                                tracing::error!(stream = %name, error = %message, debug = e.debug().as_deref().unwrap_or(""), "Pipeline crashed");
                            } else {
                                tracing::error!(stream = %name, error = %message, "Camera failed to open");
                            }
                            break self.failure(RestartReason::Error, message, since);
                        }
                        gst::MessageView::Eos(_) => {
                            tracing::error!(stream = %name, error = "end of stream", "Pipeline crashed");
                            break self.failure(RestartReason::Eos, "the source ended (EOS)".into(), since);
                        }
                        gst::MessageView::Warning(w) => {
                            tracing::warn!(stream = %name, warning = %w.error(), debug = w.debug().as_deref().unwrap_or(""), "Capture pipeline warning");
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    match since {
                        None if stats.frames() > frames_before => {
                            since = Some(Instant::now());
                            tracing::info!(source = %source_name, stream = %name, encoder = self.encoder.element(), first_frame_ms = t0.elapsed().as_millis() as u64, "Streaming");
                            self.status.send_modify(|s| s.health.state = State::Streaming);
                            self.metrics.set_state("streaming");
                        }
                        // libcamera has said why no frame will come: no need to wait longer.
                        None if libcamera.load(std::sync::atomic::Ordering::Relaxed)
                            && t0.elapsed() >= libcamera_log::GRACE
                            && let Some(d) = libcamera_log::known_cause_since(attempt) => {
                            let message = d.to_string();
                            tracing::error!(stream = %name, error = %message, "Camera failed to open");
                            break self.failure(RestartReason::Error, message, None);
                        }
                        None if t0.elapsed() >= start_timeout => {
                            let message = explained(format!("no frame within the start timeout ({} ms)", sup.start_timeout_ms));
                            tracing::error!(stream = %name, error = %message, "Camera failed to open");
                            break self.failure(RestartReason::StartTimeout, message, None);
                        }
                        Some(_) => {
                            let age = stats.last_frame_age().unwrap_or(Duration::MAX);
                            if age >= stall {
                                let message = format!("no encoded frame for {} ms", age.as_millis());
                                tracing::error!(stream = %name, error = %message, "Pipeline stalled");
                                break self.failure(RestartReason::Stall, message, since);
                            }
                        }
                        None => {}
                    }
                }
                cmd = self.commands.recv() => {
                    let Some(Command::Reconfigure(new, reply)) = cmd else { continue };
                    let applied = self.apply_live(&pipeline, &new);
                    self.config.send_replace(new);
                    let _ = reply.send(applied);
                    match applied {
                        Applied::Live => tracing::info!(stream = %name, "Reconfigured live"),
                        Applied::Unchanged => {}
                        Applied::Restart => break RunEnd::Restart(RestartReason::Reconfigure),
                    }
                }
                _ = self.cancel.cancelled() => break RunEnd::Shutdown,
            }
        };
        detach(&self.encodings);
        lifecycle::stop(pipeline, "capture").await;
        end
    }
}

impl Supervised for Runner {
    async fn run_once(&mut self) -> RunEnd {
        if self.cancel.is_cancelled() {
            return RunEnd::Shutdown;
        }
        self.run_pipeline().await
    }

    async fn wait(&mut self, delay: Duration) -> Woken {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Woken::Elapsed,
                _ = self.cancel.cancelled() => return Woken::Shutdown,
                cmd = self.commands.recv() => {
                    let Some(Command::Reconfigure(new, reply)) = cmd else { continue };
                    let applied = self.accept_offline(new);
                    let _ = reply.send(applied);
                    if applied == Applied::Restart {
                        tracing::info!(stream = %self.name(), "Reconfigured while down; restarting now");
                        return Woken::RestartNow;
                    }
                }
            }
        }
    }

    fn observed(&mut self, health: &Health, restart: Option<RestartReason>) {
        self.metrics.set_state(health.state.name());
        if let Some(r) = restart {
            self.metrics.restart(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RenditionConfig;

    #[test]
    fn plan_separates_live_from_restart() {
        let old = StreamConfig {
            name: "cam".into(),
            renditions: vec![RenditionConfig {
                name: "low".into(),
                ..RenditionConfig::default()
            }],
            ..StreamConfig::default()
        };
        assert_eq!(plan(&old, &old.clone()), Applied::Unchanged);
        let mut b = old.clone();
        b.encoder.bitrate_kbps = 1000;
        assert_eq!(plan(&old, &b), Applied::Live);
        b.renditions[0].bitrate_kbps = 500;
        assert_eq!(plan(&old, &b), Applied::Live);
        b.encoder.keyframe_interval = 30;
        assert_eq!(plan(&old, &b), Applied::Restart);
        let mut c = old.clone();
        c.video.width = 640;
        assert_eq!(plan(&old, &c), Applied::Restart);
        let mut d = old.clone();
        d.required = false;
        assert_eq!(plan(&old, &d), Applied::Unchanged);
    }
}
