//! `[audio]` / `[streams.audio]`: a stream's sound — where it comes from (an ALSA or PulseAudio
//! device, the test beep, or a launch fragment), its format, its gain and mute, and which codec
//! RTSP carries. Off (`kind = "none"`) by default. How it is captured and encoded is decided by
//! `stream::audio`.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::rules::in_range;

/// Where a stream's sound comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioKind {
    /// No sound. Default.
    #[default]
    None,
    /// `alsasrc` on `device` (e.g. `hw:1,0`, `plughw:1,0`, `default`).
    Alsa,
    /// `pulsesrc` on `device` (empty: the server's default source), where a sound server runs.
    Pulse,
    /// A beep once a second, at the instant the test picture flashes (`source.kind = "test"`).
    Test,
    /// An operator-given GStreamer launch fragment producing raw audio.
    Pipeline,
}

impl AudioKind {
    /// The name used in the configuration, the status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AudioKind::None => "none",
            AudioKind::Alsa => "alsa",
            AudioKind::Pulse => "pulse",
            AudioKind::Test => "test",
            AudioKind::Pipeline => "pipeline",
        }
    }
}

/// The codec of the RTSP audio track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspAudioCodec {
    /// AAC-LC (MPEG4-GENERIC): what NVRs and ffmpeg expect. Default.
    #[default]
    Aac,
    /// Opus.
    Opus,
}

/// `[audio]`: a stream's sound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// Source kind. Default `none` (no sound).
    pub kind: AudioKind,
    /// ALSA device for `alsa` (default `default`), PulseAudio source name for `pulse` (default
    /// empty: the server's default source).
    pub device: String,
    /// Launch fragment for `pipeline`; its last element must output raw audio. Default empty.
    pub pipeline: String,
    /// Sample rate in Hz the sound is captured and encoded at: 8000, 12000, 16000, 24000 or
    /// 48000 (rates Opus and AAC both take). Default 48000.
    pub rate: u32,
    /// Channels, 1 or 2. Default 1.
    pub channels: u32,
    /// Gain in dB, -60 to 20, applied before encoding; live through PATCH. Default 0.
    pub gain_db: f64,
    /// Silence instead of the sound (the track stays); live through PATCH. Default false.
    pub mute: bool,
    /// Codec of the RTSP track: `aac` or `opus`. Default `aac`.
    pub rtsp_codec: RtspAudioCodec,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            kind: AudioKind::None,
            device: String::new(),
            pipeline: String::new(),
            rate: 48_000,
            channels: 1,
            gain_db: 0.0,
            mute: false,
            rtsp_codec: RtspAudioCodec::Aac,
        }
    }
}

/// Sample rates both encoders accept.
pub const AUDIO_RATES: [u32; 5] = [8000, 12_000, 16_000, 24_000, 48_000];

impl AudioConfig {
    /// Whether the stream has sound.
    pub fn enabled(&self) -> bool {
        self.kind != AudioKind::None
    }

    /// The settings the capture pipeline is built from (`mute` and `gain_db` are live).
    pub fn capture_view(&self) -> impl PartialEq + '_ {
        (
            self.kind,
            &self.device,
            &self.pipeline,
            self.rate,
            self.channels,
        )
    }

    /// Ranges and the settings each kind needs; `p` is the key prefix (e.g. `streams[a].audio.`).
    pub fn validate(&self, p: &str) -> Result<(), ConfigError> {
        if !AUDIO_RATES.contains(&self.rate) {
            return Err(ConfigError::Invalid(format!(
                "{p}rate = {} is not a rate Opus and AAC both take (8000, 12000, 16000, 24000 or 48000)",
                self.rate
            )));
        }
        in_range(&format!("{p}channels"), self.channels, 1, 2)?;
        in_range(&format!("{p}gain_db"), self.gain_db, -60.0, 20.0)?;
        if self.kind == AudioKind::Pipeline && self.pipeline.trim().is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{p}kind = \"pipeline\" needs {p}pipeline (a launch fragment producing raw audio, \
                 e.g. \"audiotestsrc is-live=true\")"
            )));
        }
        // A device name goes into a launch description: no quotes or pipeline syntax.
        if self
            .device
            .chars()
            .any(|c| c.is_control() || matches!(c, '"' | '\'' | '!' | '\\' | ' '))
        {
            return Err(ConfigError::Invalid(format!(
                "{p}device = {:?} must be a device name such as \"hw:1,0\", \"plughw:1,0\" or \"default\"",
                self.device
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid() {
        let a = AudioConfig::default();
        assert!(!a.enabled());
        a.validate("audio.").unwrap();
    }

    #[test]
    fn refuses_bad_values_with_the_key() {
        let e = |a: AudioConfig| a.validate("audio.").unwrap_err().to_string();
        assert!(
            e(AudioConfig {
                rate: 44_100,
                ..Default::default()
            })
            .contains("audio.rate = 44100")
        );
        assert!(
            e(AudioConfig {
                channels: 3,
                ..Default::default()
            })
            .contains("audio.channels = 3")
        );
        assert!(
            e(AudioConfig {
                gain_db: 50.0,
                ..Default::default()
            })
            .contains("audio.gain_db = 50")
        );
        assert!(
            e(AudioConfig {
                kind: AudioKind::Pipeline,
                ..Default::default()
            })
            .contains("audio.pipeline")
        );
        assert!(
            e(AudioConfig {
                kind: AudioKind::Alsa,
                device: "hw:1 ! fakesrc".into(),
                ..Default::default()
            })
            .contains("audio.device")
        );
    }
}
