//! The capture supervisor: keeps one capture pipeline running, and rebuilds it with backoff when
//! it errors, ends, fails to start, or silently stops delivering frames. Runs on tokio, never on
//! a GStreamer streaming thread; publishes its state on a `watch` channel.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use gst::prelude::*;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::output::rtsp::SharedTime;
use crate::output::snapshot::GopCache;
use crate::stream::backoff::Backoff;
use crate::stream::capture::{self, Encoder, FrameStats};
use crate::stream::hub::Fanout;

/// Why the capture pipeline was restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// An element posted an error.
    Error,
    /// The source ended.
    Eos,
    /// The pipeline could not be built or started (camera missing, device busy, bad fragment).
    StateChangeFailure,
    /// No encoded frame within the stall timeout.
    Stall,
    /// No first frame within the start timeout.
    StartTimeout,
}

impl RestartReason {
    /// Every reason, for pre-registering metrics.
    pub const ALL: &'static [RestartReason] = &[
        RestartReason::Error,
        RestartReason::Eos,
        RestartReason::StateChangeFailure,
        RestartReason::Stall,
        RestartReason::StartTimeout,
    ];

    /// The label value used in metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Error => "error",
            RestartReason::Eos => "eos",
            RestartReason::StateChangeFailure => "state_change_failure",
            RestartReason::Stall => "stall",
            RestartReason::StartTimeout => "start_timeout",
        }
    }
}

/// The supervisor's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Building the pipeline and waiting for its first frame.
    Starting,
    /// Frames are flowing.
    Streaming,
    /// Waiting before the next restart.
    Backoff {
        /// Consecutive failures so far.
        attempt: u32,
        /// What failed.
        reason: RestartReason,
        /// The delay chosen, in ms.
        delay_ms: u64,
    },
    /// Shut down, or gave up after too many failures.
    Stopped,
}

impl State {
    /// Name used in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Streaming => "streaming",
            State::Backoff { .. } => "backoff",
            State::Stopped => "stopped",
        }
    }
}

/// The most recent failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastError {
    /// What kind.
    pub reason: RestartReason,
    /// The message, with GStreamer's debug string where there was one.
    pub message: String,
    /// When (seconds since the Unix epoch).
    pub at_unix: u64,
}

/// What the supervisor publishes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// Current state.
    #[serde(flatten)]
    pub state: State,
    /// Restarts since start-up.
    pub restarts: u64,
    /// The last failure, if any.
    pub last_error: Option<LastError>,
    /// The source in use, e.g. "test pattern smpte".
    pub source: Option<String>,
    /// The encoder element in use.
    pub encoder: String,
}

/// How the supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Shutdown,
    /// `max_retries` failures in a row.
    MaxRetriesExceeded,
}

/// A pipeline run that ended in failure.
struct Failure {
    reason: RestartReason,
    message: String,
    streamed_for: Option<Duration>,
}

/// Everything the supervisor needs.
pub struct Supervisor {
    /// The configuration.
    pub config: Arc<Config>,
    /// The encoder chosen at start-up.
    pub encoder: Encoder,
    /// Where frames go.
    pub fanout: Arc<Fanout>,
    /// Frame counters.
    pub stats: Arc<FrameStats>,
    /// Clock and base time shared with the RTSP media.
    pub time: SharedTime,
    /// Metrics handles.
    pub metrics: Metrics,
    /// Where state is published.
    pub status: watch::Sender<Status>,
    /// Access units kept for snapshots.
    pub gop: Arc<GopCache>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Error text from a GStreamer error message, with its source element and debug string.
fn describe_error(err: &gst::message::Error) -> String {
    let src = err
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_else(|| "?".into());
    match err.debug() {
        Some(debug) => format!("{} (from {src}; debug: {debug})", err.error()),
        None => format!("{} (from {src})", err.error()),
    }
}

/// Stops a pipeline off the async threads; a wedged driver cannot hang the supervisor.
async fn stop_pipeline(pipeline: gst::Pipeline) {
    let stop = tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
    });
    if tokio::time::timeout(Duration::from_secs(3), stop)
        .await
        .is_err()
    {
        tracing::error!("Capture pipeline did not stop within 3 s; abandoning it");
    }
}

impl Supervisor {
    fn publish(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(f);
        let name = self.status.borrow().state.name();
        self.metrics.set_state(name);
    }

    /// Runs until shutdown is signalled (the receiver sees `true` or its sender drops) or
    /// `max_retries` is exceeded.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Exit {
        let sup = &self.config.supervisor;
        let backoff = Backoff::from_config(sup);
        let stable = Duration::from_millis(sup.stable_period_ms);
        let mut attempt: u32 = 0;
        loop {
            self.publish(|s| s.state = State::Starting);
            let failure = match self.run_once(&mut shutdown).await {
                None => break,
                Some(f) => f,
            };
            if failure.streamed_for.is_some_and(|d| d >= stable) {
                attempt = 0;
            }
            attempt += 1;
            self.metrics.restart(failure.reason);
            let last = LastError {
                reason: failure.reason,
                message: failure.message,
                at_unix: unix_now(),
            };
            if sup.max_retries > 0 && attempt > sup.max_retries {
                tracing::error!(
                    failures = attempt,
                    max_retries = sup.max_retries,
                    reason = failure.reason.as_str(),
                    "Max retries exceeded"
                );
                self.publish(|s| {
                    s.state = State::Stopped;
                    s.last_error = Some(last);
                });
                return Exit::MaxRetriesExceeded;
            }
            let delay = backoff.delay(attempt, rand::random::<f64>());
            tracing::warn!(
                reason = failure.reason.as_str(),
                attempt,
                delay_ms = delay.as_millis() as u64,
                "Restarting in {:.1}s (attempt {attempt})",
                delay.as_secs_f64()
            );
            self.publish(|s| {
                s.restarts += 1;
                s.last_error = Some(last);
                s.state = State::Backoff {
                    attempt,
                    reason: failure.reason,
                    delay_ms: delay.as_millis() as u64,
                };
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = wait_shutdown(&mut shutdown) => break,
            }
        }
        self.publish(|s| s.state = State::Stopped);
        Exit::Shutdown
    }

    /// One pipeline lifetime. `None` means shutdown was requested.
    async fn run_once(&self, shutdown: &mut watch::Receiver<bool>) -> Option<Failure> {
        let open_failed = |message: String| {
            tracing::error!(error = %message, "Camera failed to open");
            Some(Failure {
                reason: RestartReason::StateChangeFailure,
                message,
                streamed_for: None,
            })
        };
        let config = self.config.clone();
        // Device discovery can take a moment; keep it off the async workers.
        let source =
            match tokio::task::spawn_blocking(move || capture::resolve_source(&config)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return open_failed(e.to_string()),
                Err(e) => return open_failed(format!("source discovery panicked: {e}")),
            };
        let source_name = source.to_string();
        self.publish(|s| s.source = Some(source_name.clone()));
        let description = capture::describe(&self.config, &source, self.encoder);
        tracing::debug!(pipeline = %description, "Building capture pipeline");
        let pipeline = match capture::build(&description) {
            Ok(p) => p,
            Err(e) => return open_failed(e.to_string()),
        };
        self.time.apply(&pipeline);
        let (metrics, gop) = (self.metrics.clone(), self.gop.clone());
        gop.clear();
        capture::attach_frame_probe(&pipeline, self.stats.clone(), move |buffer, key| {
            metrics.frame(buffer.size(), key);
            gop.push(buffer, key);
        });
        let Some(appsink) = pipeline
            .by_name(capture::SINK_NAME)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        else {
            return open_failed("capture pipeline has no appsink".into());
        };
        let bus = pipeline.bus().expect("a pipeline has a bus");
        let mut messages = bus.stream();
        self.fanout.set_producer(Some(&appsink));

        let p = pipeline.clone();
        let started = tokio::task::spawn_blocking(move || p.set_state(gst::State::Playing)).await;
        if !matches!(started, Ok(Ok(_))) {
            let detail = bus
                .pop_filtered(&[gst::MessageType::Error])
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(e) => Some(describe_error(e)),
                    _ => None,
                })
                .unwrap_or_else(|| "the pipeline refused to start".into());
            self.fanout.set_producer(None);
            stop_pipeline(pipeline).await;
            return open_failed(detail);
        }

        let sup = &self.config.supervisor;
        let stall = Duration::from_millis(sup.stall_timeout_ms);
        let start_timeout = Duration::from_millis(sup.start_timeout_ms);
        let frames_before = self.stats.frames();
        let t0 = Instant::now();
        let mut streaming_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(
            (stall / 5).clamp(Duration::from_millis(20), Duration::from_millis(250)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let failure = loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        break Failure { reason: RestartReason::Error, message: "bus closed".into(), streamed_for: streaming_since.map(|t| t.elapsed()) };
                    };
                    match msg.view() {
                        gst::MessageView::Error(e) => {
                            let message = describe_error(e);
                            if streaming_since.is_some() {
                                tracing::error!(error = %e.error(), debug = e.debug().as_deref().unwrap_or(""), "Pipeline crashed");
                            } else {
                                tracing::error!(error = %message, "Camera failed to open");
                            }
                            break Failure { reason: RestartReason::Error, message, streamed_for: streaming_since.map(|t| t.elapsed()) };
                        }
                        gst::MessageView::Eos(_) => {
                            tracing::error!(error = "end of stream", "Pipeline crashed");
                            break Failure { reason: RestartReason::Eos, message: "the source ended (EOS)".into(), streamed_for: streaming_since.map(|t| t.elapsed()) };
                        }
                        gst::MessageView::Warning(w) => {
                            tracing::warn!(warning = %w.error(), debug = w.debug().as_deref().unwrap_or(""), "Capture pipeline warning");
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    match streaming_since {
                        None if self.stats.frames() > frames_before => {
                            streaming_since = Some(Instant::now());
                            tracing::info!(source = %source_name, encoder = self.encoder.element(), first_frame_ms = t0.elapsed().as_millis() as u64, "Streaming");
                            self.publish(|s| s.state = State::Streaming);
                        }
                        None if t0.elapsed() >= start_timeout => {
                            let message = format!("no frame within the start timeout ({} ms)", sup.start_timeout_ms);
                            tracing::error!(error = %message, "Camera failed to open");
                            break Failure { reason: RestartReason::StartTimeout, message, streamed_for: None };
                        }
                        Some(since) => {
                            let age = self.stats.last_frame_age().unwrap_or(Duration::MAX);
                            if age >= stall {
                                let message = format!("no encoded frame for {} ms", age.as_millis());
                                tracing::error!(error = %message, "Pipeline stalled");
                                break Failure { reason: RestartReason::Stall, message, streamed_for: Some(since.elapsed()) };
                            }
                        }
                        None => {}
                    }
                }
                _ = wait_shutdown(shutdown) => {
                    self.fanout.set_producer(None);
                    stop_pipeline(pipeline).await;
                    return None;
                }
            }
        };
        self.fanout.set_producer(None);
        // A snapshot during the restart must say "no frame", not show the last good picture.
        self.gop.clear();
        stop_pipeline(pipeline).await;
        Some(failure)
    }
}

/// Resolves when shutdown is requested: the value turns `true` or the sender is dropped.
pub async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
