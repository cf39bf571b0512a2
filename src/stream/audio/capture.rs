//! The audio capture under `stream::restart::supervise`, with its own policy: source → raw
//! format on the pipeline clock → gain → meter → mute → one branch per codec into its hub. It
//! restarts alone when the source errors, ends or stalls (a USB microphone unplugged); during the
//! backoff a pipeline of live silence feeds the same hubs, so every output's audio track keeps
//! going and players do not stall, and the real source takes over again when it returns. Mute
//! and gain are set on the running pipeline; a new source or format restarts the audio only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gst::prelude::*;
use metrics::{Gauge, counter, gauge};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::encode::{self, AacEncoder};
use super::level::{self, Meter};
use super::source::{self, BEEP_NAME};
use super::test_signal;
use super::{Audio, AudioCodec, AudioError, AudioStatus};
use crate::config::{AudioConfig, AudioKind, SupervisorConfig};
use crate::metrics::names;
use crate::stream::backoff::Backoff;
use crate::stream::clock::SharedTime;
use crate::stream::hub::Hub;
use crate::stream::lifecycle;
use crate::stream::restart::{self, Failure, Policy, RunEnd, Supervised, Woken};
use crate::stream::status::{Health, RestartReason, State};

/// Name of the gain element.
const GAIN_NAME: &str = "gain";
/// Name of the element whose output the meter reads.
const METER_NAME: &str = "meter";
/// Name of the mute element.
const MUTE_NAME: &str = "mute";
/// Time a starting source has to deliver its first samples.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// No samples for this long after the first counts as a stall.
const STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// The audio's restart policy: quick retries capped low, so sound is back within about two
/// seconds of a device returning, and never giving up (sound must not end the process).
pub fn policy() -> Policy {
    Policy {
        backoff: Backoff::from_config(&SupervisorConfig {
            initial_backoff_ms: 300,
            max_backoff_ms: 1500,
            multiplier: 2.0,
            jitter: 0.1,
            ..SupervisorConfig::default()
        }),
        stable: Duration::from_secs(10),
        max_retries: 0,
    }
}

/// Linear gain of `db`.
fn linear(db: f64) -> f64 {
    10f64.powf(db / 20.0).clamp(0.0, 10.0)
}

/// The full description: `src` (raw audio in the configured format), gain, meter, mute, and a
/// branch per codec, each open when `open` says so.
pub fn describe(
    src: &str,
    c: &AudioConfig,
    aac: AacEncoder,
    open: impl Fn(AudioCodec) -> bool,
) -> String {
    format!(
        "{src} ! volume name={GAIN_NAME} volume={} ! identity name={METER_NAME} \
         ! volume name={MUTE_NAME} mute={} ! tee name=t \
         t. ! {} t. ! {}",
        linear(c.gain_db),
        c.mute,
        encode::branch(AudioCodec::Opus, c, aac, open(AudioCodec::Opus)),
        encode::branch(AudioCodec::Aac, c, aac, open(AudioCodec::Aac)),
    )
}

/// Parses a description into a pipeline with an appsink per codec.
pub fn build(description: &str) -> Result<gst::Pipeline, AudioError> {
    let parse_err = |error: String| AudioError::Parse {
        error,
        description: description.to_string(),
    };
    gst::parse::launch_full(description, None, gst::ParseFlags::FATAL_ERRORS)
        .map_err(|e| parse_err(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| parse_err("description is not a pipeline".into()))
}

/// Starts the supervisor of `audio` on tokio.
pub(super) fn spawn(
    audio: &Arc<Audio>,
    config: watch::Receiver<Arc<AudioConfig>>,
    status: watch::Sender<AudioStatus>,
    time: SharedTime,
    cancel: CancellationToken,
) {
    let stream = audio.stream.clone();
    let mut runner = Runner {
        hubs: [
            (AudioCodec::Opus, audio.opus.clone()),
            (AudioCodec::Aac, audio.aac.clone()),
        ],
        config,
        time,
        cancel,
        meter: Arc::new(Meter::default()),
        status: status.clone(),
        level: gauge!(names::AUDIO_LEVEL, "stream" => stream.clone()),
        stream,
    };
    tokio::spawn(async move {
        let what = format!("audio {}", runner.stream);
        restart::supervise(&what, &policy(), &mut runner, &status).await
    });
}

struct Runner {
    stream: String,
    hubs: [(AudioCodec, Arc<Hub>); 2],
    config: watch::Receiver<Arc<AudioConfig>>,
    time: SharedTime,
    cancel: CancellationToken,
    meter: Arc<Meter>,
    status: watch::Sender<AudioStatus>,
    level: Gauge,
}

/// A built pipeline whose appsinks feed the hubs.
struct Running {
    pipeline: gst::Pipeline,
}

impl Runner {
    fn failed(reason: RestartReason, message: String, since: Option<Instant>) -> RunEnd {
        RunEnd::Failed(Failure {
            reason,
            message,
            worked_for: since.map(|t| t.elapsed()),
        })
    }

    fn subscribed(&self, codec: AudioCodec) -> bool {
        self.hubs
            .iter()
            .any(|(c, h)| *c == codec && h.subscribers() > 0)
    }

    /// Builds `src` into a full pipeline, attaches the hubs and starts it.
    async fn launch(&self, src: &str, c: &AudioConfig, metered: bool) -> Result<Running, String> {
        let aac = AacEncoder::find().map_err(|e| e.to_string())?;
        encode::check_opus().map_err(|e| e.to_string())?;
        let description = describe(src, c, aac, |codec| self.subscribed(codec));
        tracing::debug!(stream = %self.stream, pipeline = %description, "Building audio pipeline");
        let pipeline = build(&description).map_err(|e| e.to_string())?;
        self.time.apply(&pipeline);
        encode::correct_priming(&pipeline, aac, c.rate);
        if metered {
            self.meter.reset();
            if let Some(e) = pipeline.by_name(METER_NAME) {
                level::attach(&e, self.meter.clone());
            }
            if c.kind == AudioKind::Test
                && let Some(e) = pipeline.by_name(BEEP_NAME)
            {
                test_signal::attach_beep(&e, c.rate, c.channels);
            }
        }
        for (codec, hub) in &self.hubs {
            let sink = pipeline
                .by_name(encode::sink_name(*codec))
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok());
            hub.set_producer(sink.as_ref());
        }
        if let Err(detail) = lifecycle::start(&pipeline).await {
            self.detach();
            lifecycle::stop(pipeline, "audio").await;
            return Err(detail);
        }
        self.status
            .send_modify(|s| s.aac_encoder = Some(aac.element()));
        Ok(Running { pipeline })
    }

    fn detach(&self) {
        for (_, hub) in &self.hubs {
            hub.set_producer(None);
        }
    }

    async fn stop(&self, running: Running, what: &str) {
        self.detach();
        lifecycle::stop(running.pipeline, what).await;
    }

    /// Opens each codec's valve while its hub has a subscriber.
    fn gate(&self, pipeline: &gst::Pipeline) {
        for codec in AudioCodec::ALL {
            if let Some(v) = pipeline.by_name(encode::valve_name(codec)) {
                let drop = !self.subscribed(codec);
                if v.property::<bool>("drop") != drop {
                    tracing::debug!(stream = %self.stream, codec = codec.as_str(), open = !drop, "Audio encoder gate");
                    v.set_property("drop", drop);
                }
            }
        }
    }

    /// Mute and gain on the running pipeline.
    fn apply_live(&self, pipeline: &gst::Pipeline, c: &AudioConfig) {
        if let Some(g) = pipeline.by_name(GAIN_NAME) {
            g.set_property("volume", linear(c.gain_db));
        }
        if let Some(m) = pipeline.by_name(MUTE_NAME) {
            m.set_property("mute", c.mute);
        }
        self.status.send_modify(|s| {
            s.mute = c.mute;
            s.gain_db = c.gain_db;
            s.rtsp_codec = c.rtsp_codec.into();
        });
    }

    /// Without sound: no producer, until the settings change.
    async fn idle(&mut self) -> RunEnd {
        self.detach();
        self.status.send_modify(|s| {
            s.health.state = State::Disabled;
            s.kind = AudioKind::None.as_str();
            s.source = None;
        });
        tokio::select! {
            changed = self.config.changed() => match changed {
                Ok(()) => RunEnd::Restart(RestartReason::Reconfigure),
                Err(_) => RunEnd::Shutdown,
            },
            _ = self.cancel.cancelled() => RunEnd::Shutdown,
        }
    }

    async fn run_pipeline(&mut self) -> RunEnd {
        let c = self.config.borrow_and_update().clone();
        if !c.enabled() {
            return self.idle().await;
        }
        self.status.send_modify(|s| {
            s.kind = c.kind.as_str();
            s.source = Some(match c.kind {
                AudioKind::Alsa | AudioKind::Pulse => format!(
                    "{} {}",
                    c.kind.as_str(),
                    if c.device.is_empty() {
                        "default"
                    } else {
                        &c.device
                    }
                ),
                other => other.as_str().to_string(),
            });
        });
        self.apply_live_status(&c);
        if let Err(e) = source::check(&c) {
            return Self::failed(RestartReason::StateChangeFailure, e.to_string(), None);
        }
        let running = match self.launch(&source::describe(&c), &c, true).await {
            Ok(r) => r,
            Err(message) => {
                tracing::error!(stream = %self.stream, error = %message, "Audio source failed to open");
                return Self::failed(RestartReason::StateChangeFailure, message, None);
            }
        };
        let pipeline = running.pipeline.clone();
        let Some(bus) = pipeline.bus() else {
            self.stop(running, "audio").await;
            return Self::failed(RestartReason::Error, "the pipeline has no bus".into(), None);
        };
        let mut messages = bus.stream();
        let t0 = Instant::now();
        let mut since: Option<Instant> = None;
        let mut last_level = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stream = self.stream.clone();
        let end = loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        break Self::failed(RestartReason::Error, "bus closed".into(), since);
                    };
                    match msg.view() {
                        gst::MessageView::Error(e) => {
                            let message = lifecycle::describe_error(e);
                            tracing::error!(stream = %stream, error = %message, "Audio source failed");
                            break Self::failed(RestartReason::Error, message, since);
                        }
                        gst::MessageView::Eos(_) => {
                            tracing::error!(stream = %stream, "Audio source ended");
                            break Self::failed(RestartReason::Eos, "the audio source ended (EOS)".into(), since);
                        }
                        gst::MessageView::Warning(w) => {
                            tracing::warn!(stream = %stream, warning = %w.error(), "Audio pipeline warning");
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    self.gate(&pipeline);
                    let age = self.meter.last_buffer_age();
                    match (since, age) {
                        (None, Some(_)) => {
                            since = Some(Instant::now());
                            tracing::info!(stream = %stream, first_samples_ms = t0.elapsed().as_millis() as u64, "Audio streaming");
                            self.status.send_modify(|s| s.health.state = State::Streaming);
                        }
                        (None, None) if t0.elapsed() >= START_TIMEOUT => {
                            let message = format!("no audio samples within {} ms", START_TIMEOUT.as_millis());
                            tracing::error!(stream = %stream, error = %message, "Audio source failed to open");
                            break Self::failed(RestartReason::StartTimeout, message, None);
                        }
                        (Some(_), Some(a)) if a >= STALL_TIMEOUT => {
                            let message = format!("no audio samples for {} ms", a.as_millis());
                            tracing::error!(stream = %stream, error = %message, "Audio source stalled");
                            break Self::failed(RestartReason::Stall, message, since);
                        }
                        _ => {}
                    }
                    if last_level.elapsed() >= Duration::from_secs(1) {
                        last_level = Instant::now();
                        let db = self.meter.take_dbfs();
                        self.level.set(db);
                        self.status.send_modify(|s| s.level_dbfs = db);
                    }
                }
                changed = self.config.changed() => {
                    if changed.is_err() {
                        break RunEnd::Shutdown;
                    }
                    let new = self.config.borrow_and_update().clone();
                    if new.capture_view() != c.capture_view() {
                        break RunEnd::Restart(RestartReason::Reconfigure);
                    }
                    self.apply_live(&pipeline, &new);
                    tracing::info!(stream = %stream, mute = new.mute, gain_db = new.gain_db, "Audio reconfigured live");
                }
                _ = self.cancel.cancelled() => break RunEnd::Shutdown,
            }
        };
        self.stop(running, "audio").await;
        self.level.set(level::SILENCE_DBFS);
        self.status
            .send_modify(|s| s.level_dbfs = level::SILENCE_DBFS);
        end
    }

    fn apply_live_status(&self, c: &AudioConfig) {
        self.status.send_modify(|s| {
            s.mute = c.mute;
            s.gain_db = c.gain_db;
            s.rtsp_codec = c.rtsp_codec.into();
        });
    }
}

impl Supervised for Runner {
    async fn run_once(&mut self) -> RunEnd {
        if self.cancel.is_cancelled() {
            return RunEnd::Shutdown;
        }
        self.run_pipeline().await
    }

    /// The backoff, with live silence in the hubs meanwhile.
    async fn wait(&mut self, delay: Duration) -> Woken {
        let c = self.config.borrow().clone();
        let filler = match self.launch(&source::silence(&c), &c, false).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!(stream = %self.stream, error = %e, "No silence during the audio restart");
                None
            }
        };
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let woken = tokio::select! {
            _ = &mut sleep => Woken::Elapsed,
            _ = self.cancel.cancelled() => Woken::Shutdown,
            changed = self.config.changed() => match changed {
                Ok(()) => Woken::RestartNow,
                Err(_) => Woken::Shutdown,
            },
        };
        if let Some(f) = filler {
            self.stop(f, "audio silence").await;
        }
        woken
    }

    fn observed(&mut self, _health: &Health, restart: Option<RestartReason>) {
        if let Some(r) = restart {
            counter!(names::AUDIO_RESTARTS, "stream" => self.stream.clone(), "reason" => r.as_str())
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_parses_with_both_branches() {
        gst::init().unwrap();
        let c = AudioConfig {
            kind: AudioKind::Test,
            gain_db: 6.0,
            mute: true,
            ..AudioConfig::default()
        };
        let Ok(aac) = AacEncoder::find() else {
            return;
        };
        let d = describe(&source::describe(&c), &c, aac, |c| c == AudioCodec::Aac);
        assert!(d.contains("mute=true"), "{d}");
        assert!(
            d.contains("name=opus_valve drop-mode=forward-sticky-events drop=true"),
            "{d}"
        );
        assert!(
            d.contains("name=aac_valve drop-mode=forward-sticky-events drop=false"),
            "{d}"
        );
        let p = build(&d).unwrap();
        for name in ["opus_sink", "aac_sink", "gain", "mute", "meter", "beep"] {
            assert!(p.by_name(name).is_some(), "{name}");
        }
        assert!((linear(6.0) - 1.995).abs() < 0.01);
    }
}
