//! A push's metric handles, labelled `stream` and `output` (`push:NAME`). Every state and
//! restart reason is registered when the push is configured, so dashboards see zeros, not gaps.

use metrics::{counter, gauge};

use super::output_name;
use crate::metrics::names;
use crate::stream::status::{Health, RestartReason, State};

/// Handles for one push.
#[derive(Clone)]
pub(super) struct PushMetrics {
    stream: String,
    output: String,
}

impl PushMetrics {
    /// Handles for push `push` of `stream`; registers every series.
    pub(super) fn new(stream: &str, push: &str) -> Self {
        let m = PushMetrics {
            stream: stream.to_string(),
            output: output_name(push),
        };
        for r in RestartReason::ALL {
            let _ = counter!(names::OUTPUT_RESTARTS, &m.labels_with("reason", r.as_str()));
        }
        let _ = counter!(names::OUTPUT_BYTES, &m.labels());
        let _ = gauge!(names::OUTPUT_LAST_ERROR, &m.labels());
        m
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("stream", self.stream.clone()),
            ("output", self.output.clone()),
        ]
    }

    fn labels_with(&self, key: &'static str, value: &str) -> [(&'static str, String); 3] {
        [
            ("stream", self.stream.clone()),
            ("output", self.output.clone()),
            (key, value.to_string()),
        ]
    }

    /// Marks `state` as current (1) and every other state 0.
    pub(super) fn set_state(&self, state: &State) {
        for s in State::NAMES {
            gauge!(names::OUTPUT_STATE, &self.labels_with("state", s)).set(if *s == state.name() {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Counts a restart.
    pub(super) fn restart(&self, reason: RestartReason) {
        counter!(
            names::OUTPUT_RESTARTS,
            &self.labels_with("reason", reason.as_str())
        )
        .increment(1);
    }

    /// Publishes the time of the last failure (0 before the first).
    pub(super) fn set_last_error(&self, health: &Health) {
        let at = health.last_error.as_ref().map_or(0, |e| e.at_unix);
        gauge!(names::OUTPUT_LAST_ERROR, &self.labels()).set(at as f64);
    }

    /// Publishes the bytes sent so far (monotonic across reconnections and replacements).
    pub(super) fn set_bytes(&self, total: u64) {
        counter!(names::OUTPUT_BYTES, &self.labels()).absolute(total);
    }
}
