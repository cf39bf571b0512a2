//! A stream's sound: captured once in its own pipeline under its own restart loop (a
//! microphone that fails restarts alone; the video never stops), on the same clock and base
//! time as the video capture, and encoded once per codec into a hub per codec that outputs
//! subscribe to exactly like the video's. While the source is down, live silence keeps every
//! subscriber's track going, so players never stall.
//!
//! Files: `source` (config → launch fragment), `encode` (the codec branches), `capture` (the
//! supervised pipeline), `level` (loudness and liveness), `test_signal` (the flash and beep).

pub mod capture;
pub mod encode;
pub mod level;
pub mod source;
pub mod test_signal;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::clock::SharedTime;
use super::hub::{Hub, SubscriberSettings, Subscription};
use super::status::{HasHealth, Health};
use crate::config::{AudioConfig, RtspAudioCodec};

/// An audio codec an output can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    /// Opus, raw packets of 20 ms (`audio/x-opus,channel-mapping-family=0`): WebRTC, RTSP on
    /// request.
    Opus,
    /// AAC-LC, raw access units with `codec_data` (`audio/mpeg,mpegversion=4,
    /// stream-format=raw`): RTSP, recordings, every push.
    Aac,
}

impl AudioCodec {
    /// Both codecs.
    pub const ALL: [AudioCodec; 2] = [AudioCodec::Opus, AudioCodec::Aac];

    /// The name used in status, logs and hub names.
    pub fn as_str(self) -> &'static str {
        match self {
            AudioCodec::Opus => "opus",
            AudioCodec::Aac => "aac",
        }
    }
}

impl From<RtspAudioCodec> for AudioCodec {
    fn from(c: RtspAudioCodec) -> Self {
        match c {
            RtspAudioCodec::Aac => AudioCodec::Aac,
            RtspAudioCodec::Opus => AudioCodec::Opus,
        }
    }
}

/// Why the sound cannot be captured.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// A needed GStreamer element is not installed.
    #[error("GStreamer element {element} is missing (install the Debian package {package})")]
    MissingElement {
        /// The element factory name.
        element: &'static str,
        /// The package that provides it.
        package: &'static str,
    },
    /// The description did not parse (usually a bad `audio.pipeline` fragment or device).
    #[error("cannot build the audio pipeline: {error} (pipeline: {description})")]
    Parse {
        /// GStreamer's message.
        error: String,
        /// The description that failed.
        description: String,
    },
}

/// How an audio change was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AudioChange {
    /// Nothing changed.
    Unchanged,
    /// Set on the running pipeline (mute, gain).
    Live,
    /// The audio capture restarts; the video and every session stay.
    Restart,
}

/// What the status API shows of a stream's sound.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioStatus {
    /// The capture's state and restarts.
    #[serde(flatten)]
    pub health: Health,
    /// `audio.kind`.
    pub kind: &'static str,
    /// The source as opened (e.g. `alsa hw:1,0`), once it was.
    pub source: Option<String>,
    /// The AAC encoder element in use.
    pub aac_encoder: Option<&'static str>,
    /// The codec of the RTSP track.
    pub rtsp_codec: AudioCodec,
    /// Whether it is muted.
    pub mute: bool,
    /// The gain in dB.
    pub gain_db: f64,
    /// RMS level over the last second after the gain, before mute (dBFS).
    pub level_dbfs: f64,
}

impl HasHealth for AudioStatus {
    fn health(&self) -> &Health {
        &self.health
    }
    fn health_mut(&mut self) -> &mut Health {
        &mut self.health
    }
}

/// A stream's sound at run time: a hub per codec, its settings and its status. Exists for every
/// stream; without sound (`kind = "none"`) its hubs never get a producer.
pub struct Audio {
    stream: String,
    opus: Arc<Hub>,
    aac: Arc<Hub>,
    config: watch::Sender<Arc<AudioConfig>>,
    status: watch::Receiver<AudioStatus>,
}

impl Audio {
    /// The hub of `codec`: encoded buffers with PTS in running time of the shared clock
    /// ([`SharedTime`]), the same timeline as the video hub's, so any output can subscribe and
    /// mux both. The encoder behind it runs only while the hub has a subscriber.
    pub fn hub(&self, codec: AudioCodec) -> Arc<Hub> {
        match codec {
            AudioCodec::Opus => self.opus.clone(),
            AudioCodec::Aac => self.aac.clone(),
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<AudioConfig> {
        self.config.borrow().clone()
    }

    /// Whether the stream has sound (`audio.kind` is not `none`).
    pub fn enabled(&self) -> bool {
        self.config.borrow().enabled()
    }

    /// The codec of the RTSP track.
    pub fn rtsp_codec(&self) -> AudioCodec {
        self.config.borrow().rtsp_codec.into()
    }

    /// The current status.
    pub fn status(&self) -> AudioStatus {
        self.status.borrow().clone()
    }

    /// Takes new settings: mute and gain are set on the running pipeline, a new source or
    /// format restarts the audio capture alone. Says which.
    pub fn reconfigure(&self, new: &AudioConfig) -> AudioChange {
        let change = classify(&self.config(), new);
        if change != AudioChange::Unchanged {
            self.config.send_replace(Arc::new(new.clone()));
        }
        change
    }
}

/// What going from `old` to `new` takes: mute and gain are live, the rest restarts the audio.
fn classify(old: &AudioConfig, new: &AudioConfig) -> AudioChange {
    if old == new {
        AudioChange::Unchanged
    } else if old.capture_view() == new.capture_view() {
        AudioChange::Live
    } else {
        AudioChange::Restart
    }
}

/// Keeps an output pipeline's audio `appsrc` subscribed to a hub across the pipeline's
/// rebuilds: [`Feed::attach`] on every newly built pipeline (an output's `on_built`) replaces
/// the previous subscription; dropping the feed unsubscribes.
pub struct Feed {
    audio: Arc<Audio>,
    codec: AudioCodec,
    appsrc: &'static str,
    output: String,
    current: std::sync::Mutex<Option<Subscription>>,
}

impl Feed {
    /// A feed of `codec` into the appsrc named `appsrc`, counted under the output label
    /// `output`.
    pub fn new(audio: Arc<Audio>, codec: AudioCodec, appsrc: &'static str, output: &str) -> Self {
        Feed {
            audio,
            codec,
            appsrc,
            output: output.to_string(),
            current: std::sync::Mutex::new(None),
        }
    }

    /// Subscribes `pipeline`'s appsrc (nothing when it has none), ending the previous one.
    pub fn attach(&self, pipeline: &gst::Pipeline) {
        use gst::prelude::*;
        let sub = pipeline
            .by_name(self.appsrc)
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .map(|src| {
                self.audio
                    .hub(self.codec)
                    .subscribe(&src, SubscriberSettings::new(self.output.clone()))
            });
        if let Ok(mut c) = self.current.lock() {
            *c = sub;
        }
    }
}

/// Starts the sound of stream `stream`: its supervisor runs until `cancel` (idle while
/// `kind = "none"`). `supervisor` supplies the backoff cap; audio never gives up.
pub fn start(
    stream: &str,
    config: AudioConfig,
    time: SharedTime,
    cancel: CancellationToken,
) -> Arc<Audio> {
    let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
    let status = AudioStatus {
        health: Health::default(),
        kind: config.kind.as_str(),
        source: None,
        aac_encoder: None,
        rtsp_codec: config.rtsp_codec.into(),
        mute: config.mute,
        gain_db: config.gain_db,
        level_dbfs: level::SILENCE_DBFS,
    };
    let (status_tx, status_rx) = watch::channel(status);
    let audio = Arc::new(Audio {
        stream: stream.to_string(),
        opus: Hub::new(format!("{stream}:opus")),
        aac: Hub::new(format!("{stream}:aac")),
        config: config_tx,
        status: status_rx,
    });
    capture::spawn(&audio, config_rx, status_tx, time, cancel);
    audio
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AudioKind;

    #[test]
    fn mute_and_gain_are_live_and_the_rest_restarts_the_audio() {
        let old = AudioConfig {
            kind: AudioKind::Test,
            ..AudioConfig::default()
        };
        assert_eq!(classify(&old, &old.clone()), AudioChange::Unchanged);
        let live = AudioConfig {
            mute: true,
            gain_db: -6.0,
            ..old.clone()
        };
        assert_eq!(classify(&old, &live), AudioChange::Live);
        for new in [
            AudioConfig {
                kind: AudioKind::Alsa,
                ..old.clone()
            },
            AudioConfig {
                rate: 16_000,
                ..old.clone()
            },
            AudioConfig {
                channels: 2,
                ..old.clone()
            },
        ] {
            assert_eq!(classify(&old, &new), AudioChange::Restart, "{new:?}");
        }
    }
}
