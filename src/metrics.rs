//! Prometheus metrics: names, help texts, and handles created once at start-up and moved into
//! the hot paths, so counting a frame or a packet is an atomic add with no registry look-up.

use metrics::{Counter, Gauge, describe_counter, describe_gauge, gauge};

use crate::stream::supervisor::RestartReason;

/// Every metric name, with the `camstream_` prefix.
pub mod names {
    /// Capture pipeline restarts, label `reason`.
    pub const RESTARTS: &str = "camstream_pipeline_restarts_total";
    /// 1 for the supervisor's current state, label `state`.
    pub const STATE: &str = "camstream_pipeline_state";
    /// RTSP clients playing now.
    pub const VIEWERS: &str = "camstream_viewers_active";
    /// RTSP client connections accepted.
    pub const CONNECTIONS: &str = "camstream_client_connections_total";
    /// Encoded frames out of the capture pipeline.
    pub const FRAMES: &str = "camstream_frames_encoded_total";
    /// Encoded keyframes.
    pub const KEYFRAMES: &str = "camstream_keyframes_total";
    /// Encoded bytes.
    pub const BYTES: &str = "camstream_encoded_bytes_total";
    /// Frames per second measured over the last second.
    pub const FPS: &str = "camstream_frames_per_second";
    /// Seconds since the last encoded frame; -1 before the first.
    pub const LAST_FRAME_AGE: &str = "camstream_last_frame_age_seconds";
    /// RTP packets out of the shared payloader (each is sent to every playing viewer).
    pub const RTP_PACKETS: &str = "camstream_rtp_packets_sent_total";
    /// RTP bytes out of the shared payloader.
    pub const RTP_BYTES: &str = "camstream_rtp_bytes_sent_total";
    /// Build and run-time information, value 1.
    pub const BUILD_INFO: &str = "camstream_build_info";
    /// RTSP sessions alive in the server's pool (expired ones are swept every second).
    pub const SESSIONS: &str = "camstream_rtsp_sessions";
    /// Refused RTSP logins (credentials given but wrong).
    pub const AUTH_FAILURES: &str = "camstream_auth_failures_total";
    /// RTSP connections or viewers refused or closed by a limit, label `reason`.
    pub const RTSP_REJECTED: &str = "camstream_rtsp_rejected_total";
    /// Log lines dropped because stderr was gone, failing or not keeping up.
    pub const LOG_LINES_DROPPED: &str = "camstream_log_lines_dropped_total";
}

/// Supervisor states as exposed in `camstream_pipeline_state{state=...}`.
pub const STATES: &[&str] = &["starting", "streaming", "backoff", "stopped"];

/// Handles to every metric; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    frames: Counter,
    keyframes: Counter,
    bytes: Counter,
    rtp_packets: Counter,
    rtp_bytes: Counter,
    connections: Counter,
    viewers: Gauge,
    fps: Gauge,
    last_frame_age: Gauge,
    states: Vec<Gauge>,
    restarts: Vec<(RestartReason, Counter)>,
    auth_failures: Counter,
    sessions: Gauge,
    rejected: Vec<(&'static str, Counter)>,
}

/// Reasons in `camstream_rtsp_rejected_total{reason=...}`.
pub const REJECT_REASONS: &[&str] = &[
    "max_viewers",
    "max_connections",
    "idle_timeout",
    "request_too_large",
    "bad_request",
];

impl Metrics {
    /// Describes and registers every metric with the installed recorder (no-ops without one).
    pub fn new() -> Self {
        use names::*;
        describe_counter!(RESTARTS, "Capture pipeline restarts, by reason");
        describe_gauge!(STATE, "1 for the capture supervisor's current state");
        describe_gauge!(VIEWERS, "RTSP clients playing now");
        describe_counter!(CONNECTIONS, "RTSP client connections accepted");
        describe_counter!(FRAMES, "Encoded frames produced by the capture pipeline");
        describe_counter!(
            KEYFRAMES,
            "Encoded keyframes produced by the capture pipeline"
        );
        describe_counter!(BYTES, "Encoded bytes produced by the capture pipeline");
        describe_gauge!(FPS, "Encoded frames per second over the last second");
        describe_gauge!(LAST_FRAME_AGE, "Seconds since the last encoded frame");
        describe_counter!(
            RTP_PACKETS,
            "RTP packets out of the shared payloader (each goes to every playing viewer)"
        );
        describe_counter!(
            RTP_BYTES,
            "RTP bytes out of the shared payloader (each goes to every playing viewer)"
        );
        describe_gauge!(BUILD_INFO, "Build and run-time information (value 1)");
        describe_gauge!(SESSIONS, "RTSP sessions alive in the server's pool");
        describe_counter!(AUTH_FAILURES, "RTSP logins refused (wrong credentials)");
        describe_counter!(
            RTSP_REJECTED,
            "RTSP connections or viewers refused by a limit, by reason"
        );
        describe_counter!(
            LOG_LINES_DROPPED,
            "Log lines dropped because stderr was gone, failing or not keeping up"
        );
        crate::telemetry::count_drops_in(metrics::counter!(LOG_LINES_DROPPED));
        let restarts = RestartReason::ALL
            .iter()
            .map(|r| (*r, metrics::counter!(RESTARTS, "reason" => r.as_str())))
            .collect();
        let states = STATES
            .iter()
            .map(|s| gauge!(STATE, "state" => *s))
            .collect();
        Metrics {
            frames: metrics::counter!(FRAMES),
            keyframes: metrics::counter!(KEYFRAMES),
            bytes: metrics::counter!(BYTES),
            rtp_packets: metrics::counter!(RTP_PACKETS),
            rtp_bytes: metrics::counter!(RTP_BYTES),
            connections: metrics::counter!(CONNECTIONS),
            viewers: gauge!(VIEWERS),
            fps: gauge!(FPS),
            last_frame_age: gauge!(LAST_FRAME_AGE),
            states,
            restarts,
            auth_failures: metrics::counter!(AUTH_FAILURES),
            sessions: gauge!(SESSIONS),
            rejected: REJECT_REASONS
                .iter()
                .map(|r| (*r, metrics::counter!(RTSP_REJECTED, "reason" => *r)))
                .collect(),
        }
    }

    /// Sets the number of RTSP sessions alive.
    pub fn set_sessions(&self, n: u32) {
        self.sessions.set(f64::from(n));
    }

    /// Counts a refused login.
    pub fn auth_failure(&self) {
        self.auth_failures.increment(1);
    }

    /// Counts a connection or viewer refused by a limit.
    pub fn rtsp_rejected(&self, reason: &str) {
        if let Some((_, c)) = self.rejected.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
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

    /// Counts RTP output (streaming thread).
    pub fn rtp_sent(&self, packets: u64, bytes: u64) {
        self.rtp_packets.increment(packets);
        self.rtp_bytes.increment(bytes);
    }

    /// Counts an accepted RTSP connection.
    pub fn client_connected(&self) {
        self.connections.increment(1);
    }

    /// Sets the number of playing viewers.
    pub fn set_viewers(&self, n: usize) {
        self.viewers.set(n as f64);
    }

    /// Sets the measured frame rate and last-frame age.
    pub fn set_flow(&self, fps: f64, last_frame_age_s: f64) {
        self.fps.set(fps);
        self.last_frame_age.set(last_frame_age_s);
    }

    /// Marks `state` as the current supervisor state.
    pub fn set_state(&self, state: &str) {
        for (name, g) in STATES.iter().zip(&self.states) {
            g.set(if *name == state { 1.0 } else { 0.0 });
        }
    }

    /// Counts a restart.
    pub fn restart(&self, reason: RestartReason) {
        if let Some((_, c)) = self.restarts.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }

    /// Publishes build information once the source and encoder are known.
    pub fn build_info(&self, source: &str, encoder: &str) {
        let labels = [
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("gstreamer_version", gst::version_string().to_string()),
            ("source", source.to_string()),
            ("encoder", encoder.to_string()),
        ];
        gauge!(names::BUILD_INFO, &labels).set(1.0);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
