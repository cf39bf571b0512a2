//! A stream's metric handles, labelled `stream`, created once and moved into the hot paths so
//! counting a frame is an atomic add with no registry look-up.

use metrics::{Counter, Gauge, counter, gauge};

use super::hub::Hub;
use super::status::{RestartReason, State};
use crate::metrics::names;

/// Handles for one encoding (a camera's main encoding or a rendition).
#[derive(Clone)]
pub struct EncodingMetrics {
    frames: Counter,
    keyframes: Counter,
    bytes: Counter,
    fps: Gauge,
    last_frame_age: Gauge,
    stream: String,
}

impl EncodingMetrics {
    /// Handles labelled with the encoding's name.
    pub fn new(stream: &str) -> Self {
        let l = [("stream", stream.to_string())];
        EncodingMetrics {
            frames: counter!(names::FRAMES, &l),
            keyframes: counter!(names::KEYFRAMES, &l),
            bytes: counter!(names::BYTES, &l),
            fps: gauge!(names::FPS, &l),
            last_frame_age: gauge!(names::LAST_FRAME_AGE, &l),
            stream: stream.to_string(),
        }
    }

    /// Counts one encoded frame (streaming thread).
    pub fn frame(&self, size: usize, keyframe: bool) {
        self.frames.increment(1);
        self.bytes.increment(size as u64);
        if keyframe {
            self.keyframes.increment(1);
        }
    }

    /// Sets the measured frame rate and last-frame age (-1 before the first frame).
    pub fn set_flow(&self, fps: f64, last_frame_age_s: f64) {
        self.fps.set(fps);
        self.last_frame_age.set(last_frame_age_s);
    }

    /// Publishes the hub's per-output pushed and dropped counts.
    pub fn set_outputs(&self, hub: &Hub) {
        for c in hub.output_counts() {
            let l = [("stream", self.stream.clone()), ("output", c.output)];
            counter!(names::OUTPUT_DROPPED, &l).absolute(c.dropped);
            counter!(names::OUTPUT_PUSHED, &l).absolute(c.pushed);
        }
    }
}

/// Handles for a camera's supervisor.
#[derive(Clone)]
pub struct SupervisorMetrics {
    states: Vec<(&'static str, Gauge)>,
    restarts: Vec<(RestartReason, Counter)>,
}

impl SupervisorMetrics {
    /// Handles labelled with the stream's name; every state and reason is registered at once so
    /// dashboards see zeros rather than gaps.
    pub fn new(stream: &str) -> Self {
        SupervisorMetrics {
            states: State::NAMES
                .iter()
                .map(|s| {
                    (
                        *s,
                        gauge!(names::STATE, "stream" => stream.to_string(), "state" => *s),
                    )
                })
                .collect(),
            restarts: RestartReason::ALL
                .iter()
                .map(|r| {
                    (
                        *r,
                        counter!(names::RESTARTS, "stream" => stream.to_string(), "reason" => r.as_str()),
                    )
                })
                .collect(),
        }
    }

    /// Marks `state` as current.
    pub fn set_state(&self, state: &str) {
        for (name, g) in &self.states {
            g.set(if *name == state { 1.0 } else { 0.0 });
        }
    }

    /// Publishes what the stream runs on: the source found and the encoder chosen.
    pub fn set_info(stream: &str, source: &str, encoder: &str) {
        let l = [
            ("stream", stream.to_string()),
            ("source", source.to_string()),
            ("encoder", encoder.to_string()),
        ];
        gauge!(names::STREAM_INFO, &l).set(1.0);
    }

    /// Counts a restart.
    pub fn restart(&self, reason: RestartReason) {
        if let Some((_, c)) = self.restarts.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }
}
