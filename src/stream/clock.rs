//! The clock and base time that the capture and every output pipeline share, so buffers keep
//! meaningful timestamps when they cross from one pipeline to another.

use gst::prelude::*;

/// The capture clock and base time every media pipeline must share: a media created after the
/// first would otherwise see the capture's timestamps as lying in the future and stay silent.
#[derive(Debug, Clone)]
pub struct SharedTime {
    /// The clock.
    pub clock: gst::Clock,
    /// The base time.
    pub base_time: gst::ClockTime,
}

impl SharedTime {
    /// The system clock with "now" as base time.
    pub fn now() -> Self {
        let clock = gst::SystemClock::obtain();
        let base_time = clock.time();
        SharedTime { clock, base_time }
    }

    /// Applies this clock and base time to a pipeline (and stops it choosing its own).
    pub fn apply(&self, pipeline: &gst::Pipeline) {
        pipeline.use_clock(Some(&self.clock));
        pipeline.set_start_time(gst::ClockTime::NONE);
        pipeline.set_base_time(self.base_time);
    }
}
