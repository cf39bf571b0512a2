//! `[audio]` to the source part of the audio capture's launch description: the device, then
//! what puts its samples on the pipeline clock. A microphone runs on its own crystal; its
//! samples are re-timestamped against the shared clock (`slave-method=re-timestamp`) and
//! `audiorate` then inserts or drops samples so the sample count follows that clock: drift is
//! corrected continuously, never by a fixed offset.

use crate::config::{AudioConfig, AudioKind};

use super::AudioError;

/// Name of the source element, whatever the kind (errors name it).
pub const SOURCE_NAME: &str = "asrc";
/// Name of the element the test beep is written at (its sink pad).
pub const BEEP_NAME: &str = "beep";

/// Quotes a value for a launch description.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The raw format every source is converted to, and the encoders take.
pub fn raw_caps(c: &AudioConfig) -> String {
    format!(
        "audio/x-raw,format=S16LE,layout=interleaved,rate={},channels={}",
        c.rate, c.channels
    )
}

/// The element a kind needs and the Debian package that has it.
pub fn required_element(kind: AudioKind) -> Option<(&'static str, &'static str)> {
    match kind {
        AudioKind::None | AudioKind::Pipeline => None,
        AudioKind::Alsa => Some(("alsasrc", "gstreamer1.0-alsa")),
        AudioKind::Pulse => Some(("pulsesrc", "gstreamer1.0-pulseaudio")),
        AudioKind::Test => Some(("audiotestsrc", "gstreamer1.0-plugins-base")),
    }
}

/// Fails with the package to install when the kind's element is missing.
pub fn check(c: &AudioConfig) -> Result<(), AudioError> {
    if let Some((element, package)) = required_element(c.kind)
        && gst::ElementFactory::find(element).is_none()
    {
        return Err(AudioError::MissingElement { element, package });
    }
    Ok(())
}

/// The source part, ending in raw audio in the configured format on the pipeline clock.
pub fn describe(c: &AudioConfig) -> String {
    let raw = raw_caps(c);
    // 10 ms buffers: the beep's edge and the meter's resolution; the encoders re-frame anyway.
    let per_buffer = c.rate / 100;
    let fix = format!("audioconvert ! audioresample ! audiorate ! {raw}");
    match c.kind {
        // Without sound the capture is not built; this is the silence the gaps are filled with.
        AudioKind::None => silence(c),
        AudioKind::Alsa => {
            let device = if c.device.is_empty() {
                "default"
            } else {
                &c.device
            };
            format!(
                "alsasrc name={SOURCE_NAME} device={} slave-method=re-timestamp ! {fix}",
                quote(device)
            )
        }
        AudioKind::Pulse => {
            let device = if c.device.is_empty() {
                String::new()
            } else {
                format!(" device={}", quote(&c.device))
            };
            format!("pulsesrc name={SOURCE_NAME}{device} slave-method=re-timestamp ! {fix}")
        }
        // Silence whose samples the beep is written into, from their running time.
        AudioKind::Test => format!(
            "audiotestsrc name={SOURCE_NAME} is-live=true wave=silence samplesperbuffer={per_buffer} \
             ! {raw} ! identity name={BEEP_NAME}"
        ),
        AudioKind::Pipeline => format!("{} ! {fix}", c.pipeline),
    }
}

/// Live silence in the configured format: what the outputs get while the source restarts.
pub fn silence(c: &AudioConfig) -> String {
    format!(
        "audiotestsrc name={SOURCE_NAME} is-live=true wave=silence samplesperbuffer={} ! {}",
        c.rate / 50,
        raw_caps(c)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alsa_defaults_to_the_default_device_and_follows_the_pipeline_clock() {
        let c = AudioConfig {
            kind: AudioKind::Alsa,
            ..AudioConfig::default()
        };
        let d = describe(&c);
        assert!(d.starts_with("alsasrc name=asrc device=\"default\""), "{d}");
        assert!(d.contains("slave-method=re-timestamp"), "{d}");
        assert!(d.contains("audiorate"), "{d}");
        assert!(d.ends_with("rate=48000,channels=1"), "{d}");
    }

    #[test]
    fn test_kind_ends_at_the_beep_writer() {
        let c = AudioConfig {
            kind: AudioKind::Test,
            rate: 16_000,
            ..AudioConfig::default()
        };
        let d = describe(&c);
        assert!(d.contains("samplesperbuffer=160"), "{d}");
        assert!(d.ends_with("identity name=beep"), "{d}");
    }
}
