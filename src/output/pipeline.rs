//! A supervised output pipeline: an `appsrc` subscribed to a stream's hub, then the output's own
//! elements (a muxer and a sink), rebuilt with its own backoff whenever it errors or ends. This is
//! how every output that can fail on its own (a push to a server, a recorder) runs: a dead server
//! or a full disk restarts that output alone, and its hub queue leaks rather than making the
//! capture wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gst::prelude::*;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::stream::clock::SharedTime;
use crate::stream::hub::{Hub, SubscriberSettings};
use crate::stream::lifecycle;
use crate::stream::restart::{self, Failure, Policy, RunEnd, Supervised, Woken};
use crate::stream::status::{Health, RestartReason, State};

/// Name of the `appsrc` every output pipeline starts with.
pub const SOURCE_NAME: &str = "src";

/// What an output pipeline is.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The label in logs and metrics, e.g. "push:ground" or "record".
    pub output: String,
    /// The elements after the appsrc, as a launch description (e.g. `h264parse ! flvmux !
    /// rtmp2sink location=...`). Secrets in it are never logged; use `shown` for logs.
    pub description: String,
    /// The description as logs may show it (credentials removed).
    pub shown: String,
    /// Restart policy.
    pub policy: Policy,
    /// How long the pipeline may take until a sink has taken its first buffer before it counts as
    /// failed (a server that accepts the connection but never takes data).
    pub start_timeout: Duration,
    /// Secret values in `description` (passwords, stream keys), replaced by `<redacted>` in
    /// every message logged or shown, since elements may echo their properties in errors.
    pub secrets: Vec<String>,
}

impl Spec {
    /// `text` with every secret of this output replaced by `<redacted>`.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<redacted>"))
    }
}

/// Hears every health change of an output, with the restart reason when one happened.
pub type OnHealth = Box<dyn FnMut(&Health, Option<RestartReason>) + Send>;

/// Called with each newly built pipeline before it starts, e.g. to attach callbacks to an
/// `appsink` the description names.
pub type OnBuilt = Box<dyn FnMut(&gst::Pipeline) + Send>;

/// A running output's shared counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes that reached the output's sink.
    pub bytes: AtomicU64,
}

/// A running output pipeline.
pub struct Running {
    /// Its state and history.
    pub health: watch::Receiver<Health>,
    /// Bytes sent and the like.
    pub counters: Arc<Counters>,
    /// Ends when the output stopped.
    pub task: tokio::task::JoinHandle<restart::Exit>,
}

/// Starts `spec` fed by `hub`, supervised until `cancel`. `on_health` hears every change (for
/// metrics and hooks).
pub fn spawn(
    hub: Arc<Hub>,
    time: SharedTime,
    spec: Spec,
    cancel: CancellationToken,
    on_health: OnHealth,
) -> Running {
    spawn_with(hub, time, spec, cancel, on_health, Box::new(|_| {}))
}

/// [`spawn`], with `on_built` called on every pipeline built (the first and each rebuild).
pub fn spawn_with(
    hub: Arc<Hub>,
    time: SharedTime,
    spec: Spec,
    cancel: CancellationToken,
    on_health: OnHealth,
    on_built: OnBuilt,
) -> Running {
    let (tx, rx) = watch::channel(Health::default());
    let counters = Arc::new(Counters::default());
    let mut runner = Runner {
        hub,
        time,
        spec,
        cancel,
        counters: counters.clone(),
        on_health,
        on_built,
        status: tx.clone(),
    };
    let task = tokio::spawn(async move {
        let policy = runner.spec.policy.clone();
        let what = format!("output {} of {}", runner.spec.output, runner.hub.name());
        restart::supervise(&what, &policy, &mut runner, &tx).await
    });
    Running {
        health: rx,
        counters,
        task,
    }
}

struct Runner {
    hub: Arc<Hub>,
    time: SharedTime,
    spec: Spec,
    cancel: CancellationToken,
    counters: Arc<Counters>,
    on_health: OnHealth,
    on_built: OnBuilt,
    status: watch::Sender<Health>,
}

/// Counts bytes into every sink of `pipeline`, and buffers arriving (`arrived`). Every sink
/// pad counts: sink bins such as `rtspclientsink` have request pads, not a static one.
fn watch_sinks(pipeline: &gst::Pipeline, counters: Arc<Counters>, arrived: Arc<AtomicU64>) {
    let mut it = pipeline.iterate_sinks();
    while let Ok(Some(sink)) = it.next() {
        for pad in sink.sink_pads() {
            let (c, f) = (counters.clone(), arrived.clone());
            pad.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                move |_, info| {
                    let n = match &info.data {
                        Some(gst::PadProbeData::Buffer(b)) => b.size(),
                        Some(gst::PadProbeData::BufferList(l)) => l.iter().map(|b| b.size()).sum(),
                        _ => 0,
                    };
                    c.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    f.fetch_add(1, Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                },
            );
        }
    }
}

impl Runner {
    fn fail(&self, reason: RestartReason, message: String, since: Option<Instant>) -> RunEnd {
        RunEnd::Failed(Failure {
            reason,
            message,
            worked_for: since.map(|t| t.elapsed()),
        })
    }
}

impl Supervised for Runner {
    async fn run_once(&mut self) -> RunEnd {
        if self.cancel.is_cancelled() {
            return RunEnd::Shutdown;
        }
        let (stream, output) = (self.hub.name().to_string(), self.spec.output.clone());
        let description = format!(
            "appsrc name={SOURCE_NAME} is-live=true format=time ! {}",
            self.spec.description
        );
        let pipeline =
            match gst::parse::launch_full(&description, None, gst::ParseFlags::FATAL_ERRORS)
                .map_err(|e| e.to_string())
                .and_then(|e| {
                    e.downcast::<gst::Pipeline>()
                        .map_err(|_| "not a pipeline".to_string())
                }) {
                Ok(p) => p,
                Err(e) => {
                    let message = self.spec.scrub(&format!(
                        "cannot build the output ({}): {e}",
                        self.spec.shown
                    ));
                    tracing::error!(%stream, %output, error = %message, "Output failed to start");
                    return self.fail(RestartReason::StateChangeFailure, message, None);
                }
            };
        let Some(appsrc) = pipeline
            .by_name(SOURCE_NAME)
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        else {
            return self.fail(RestartReason::StateChangeFailure, "no appsrc".into(), None);
        };
        self.time.apply(&pipeline);
        (self.on_built)(&pipeline);
        let arrived = Arc::new(AtomicU64::new(0));
        watch_sinks(&pipeline, self.counters.clone(), arrived.clone());
        let bus = pipeline.bus().expect("a pipeline has a bus");
        let mut messages = bus.stream();
        if let Err(detail) = lifecycle::start(&pipeline).await {
            let detail = self.spec.scrub(&detail);
            tracing::error!(%stream, %output, error = %detail, "Output failed to start");
            lifecycle::stop(pipeline, &output).await;
            return self.fail(RestartReason::StateChangeFailure, detail, None);
        }
        // Subscribed only once playing, and a keyframe asked for, so the output's first frame
        // is decodable and arrives within a frame interval.
        let subscription = self
            .hub
            .subscribe(&appsrc, SubscriberSettings::new(output.clone()));
        self.hub.request_keyframe();
        let t0 = Instant::now();
        let mut since: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let end = loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        break self.fail(RestartReason::Error, "bus closed".into(), since);
                    };
                    match msg.view() {
                        gst::MessageView::Error(e) => {
                            let message = self.spec.scrub(&lifecycle::describe_error(e));
                            tracing::error!(%stream, %output, error = %message, "Output failed");
                            break self.fail(RestartReason::Error, message, since);
                        }
                        gst::MessageView::Eos(_) => {
                            tracing::error!(%stream, %output, "Output ended");
                            break self.fail(RestartReason::Eos, "the output ended (EOS)".into(), since);
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    if since.is_none() {
                        // A second buffer at a sink means it took the first: a network sink
                        // holds its first buffer until connected, or fails it.
                        if arrived.load(Ordering::Relaxed) >= 2 {
                            since = Some(Instant::now());
                            tracing::info!(%stream, %output, "Output streaming");
                            self.status.send_modify(|h| h.state = State::Streaming);
                            let h = self.status.borrow().clone();
                            (self.on_health)(&h, None);
                        } else if t0.elapsed() >= self.spec.start_timeout {
                            let message = format!("no data reached the output within {} ms", self.spec.start_timeout.as_millis());
                            tracing::error!(%stream, %output, error = %message, "Output failed to start");
                            break self.fail(RestartReason::StartTimeout, message, None);
                        }
                    }
                }
                _ = self.cancel.cancelled() => break RunEnd::Shutdown,
            }
        };
        drop(subscription);
        lifecycle::stop(pipeline, &output).await;
        end
    }

    async fn wait(&mut self, delay: Duration) -> Woken {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Woken::Elapsed,
            _ = self.cancel.cancelled() => Woken::Shutdown,
        }
    }

    fn observed(&mut self, health: &Health, restart: Option<RestartReason>) {
        (self.on_health)(health, restart);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::backoff::Backoff;

    /// A live H.264 producer, as the capture is.
    fn producer() -> (gst::Pipeline, gst_app::AppSink) {
        let p = gst::parse::launch(
            "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=30/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 \
             ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! appsink name=sink max-buffers=4 drop=true",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = p
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        (p, sink)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_output_restarts_alone() {
        gst::init().unwrap();
        if gst::ElementFactory::find("x264enc").is_none() {
            return;
        }
        let (capture, sink) = producer();
        let hub = Hub::new("t");
        let time = SharedTime::now();
        time.apply(&capture);
        hub.set_producer(Some(&sink));
        let frames = Arc::new(AtomicU64::new(0));
        let f = frames.clone();
        sink.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                f.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        capture.set_state(gst::State::Playing).unwrap();
        let cancel = CancellationToken::new();
        let spec = Spec {
            output: "test".into(),
            // Fails after 10 buffers, every time it is rebuilt.
            description: "h264parse ! identity error-after=10 ! fakesink sync=false".into(),
            shown: "test".into(),
            policy: Policy {
                backoff: Backoff::from_config(&crate::config::SupervisorConfig {
                    initial_backoff_ms: 50,
                    max_backoff_ms: 100,
                    ..Default::default()
                }),
                stable: Duration::from_secs(30),
                max_retries: 0,
            },
            start_timeout: Duration::from_secs(5),
            secrets: Vec::new(),
        };
        let running = spawn(hub.clone(), time, spec, cancel.clone(), Box::new(|_, _| {}));
        let mut health = running.health.clone();
        // The `Ref` wait_for returns is dropped at once: held, it would block the runner's
        // next status update (a watch's write lock) and with it a runtime thread.
        let restarted = tokio::time::timeout(
            Duration::from_secs(20),
            health.wait_for(|h| h.restarts >= 3),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        assert!(restarted, "the output restarts on its own");
        assert!(running.counters.bytes.load(Ordering::Relaxed) > 0);
        // The capture never noticed: frames kept coming at its own rate.
        let before = frames.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while frames.load(Ordering::Relaxed) < before + 30 {
            assert!(Instant::now() < deadline, "the capture stopped producing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        let exit = tokio::time::timeout(Duration::from_secs(5), running.task).await;
        assert!(matches!(exit, Ok(Ok(restart::Exit::Shutdown))));
        assert_eq!(hub.subscribers(), 0, "the subscription is gone");
        capture.set_state(gst::State::Null).unwrap();
    }
}
