//! Prometheus metrics: every name and help text (a leaf: every layer takes its names from here),
//! and the RTSP server's handles, created once and moved into the hot paths so counting a packet
//! is an atomic add with no registry look-up. A stream's own handles live in `stream::metrics`.

use metrics::{Counter, Gauge, describe_counter, describe_gauge, gauge};

/// Every metric name, with the `camstream_` prefix.
pub mod names {
    /// Buffers an output's hub queue dropped because it was full, labels `stream`, `output`.
    pub const OUTPUT_DROPPED: &str = "camstream_output_dropped_buffers_total";
    /// Buffers pushed into an output's hub queue, labels `stream`, `output`.
    pub const OUTPUT_PUSHED: &str = "camstream_output_pushed_buffers_total";
    /// 1 for an output's current state (pushes), labels `stream`, `output`, `state`.
    pub const OUTPUT_STATE: &str = "camstream_output_state";
    /// Restarts of an output's pipeline (pushes), labels `stream`, `output`, `reason`.
    pub const OUTPUT_RESTARTS: &str = "camstream_output_restarts_total";
    /// Bytes an output's sink took (pushes: the muxed stream before the protocol's framing),
    /// labels `stream`, `output`.
    pub const OUTPUT_BYTES: &str = "camstream_output_bytes_total";
    /// Unix time of an output's last failure, 0 before the first, labels `stream`, `output`.
    pub const OUTPUT_LAST_ERROR: &str = "camstream_output_last_error_timestamp_seconds";
    /// Capture pipeline restarts, labels `stream`, `reason`.
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
    /// What a stream runs on, value 1, labels `stream`, `source`, `encoder`.
    pub const STREAM_INFO: &str = "camstream_stream_info";
    /// Build and run-time information, value 1.
    pub const BUILD_INFO: &str = "camstream_build_info";
    /// RTSP sessions alive in the server's pool (expired ones are swept every second).
    pub const SESSIONS: &str = "camstream_rtsp_sessions";
    /// Refused logins (credentials given but wrong): RTSP and the page's sign-in.
    pub const AUTH_FAILURES: &str = "camstream_auth_failures_total";
    /// RTSP connections or viewers refused or closed by a limit, label `reason`.
    pub const RTSP_REJECTED: &str = "camstream_rtsp_rejected_total";
    /// Bytes written to recording segments, label `stream`.
    pub const RECORD_BYTES: &str = "camstream_recording_bytes_total";
    /// Recording segments finished, label `stream`.
    pub const RECORD_SEGMENTS: &str = "camstream_recording_segments_total";
    /// Recording write failures (full disk, I/O errors, frames lost to a slow disk), label `stream`.
    pub const RECORD_ERRORS: &str = "camstream_recording_write_errors_total";
    /// Recording exports being sent now (all streams).
    pub const RECORD_EXPORTS_ACTIVE: &str = "camstream_recording_exports_active";
    /// Recording exports refused because every export slot was taken (503).
    pub const RECORD_EXPORTS_REJECTED: &str = "camstream_recording_exports_rejected_total";
    /// Forced keyframe requests, labels `stream`, `result` (`sent`: asked of the encoder now,
    /// `coalesced`: over the budget, served by the one scheduled at the budget's next slot),
    /// and the keyframes so scheduled (`result="scheduled"`).
    pub const KEYFRAME_REQUESTS: &str = "camstream_keyframe_requests_total";
    /// Snapshot requests, labels `stream`, `result` (`decoded`, `shared`: served by a decode
    /// already running, `cached`, `timeout`, `busy`, `failed`).
    pub const SNAPSHOTS: &str = "camstream_snapshots_total";
    /// 1 for the recorder's current state, labels `stream`, `state`.
    pub const RECORD_STATE: &str = "camstream_recording_state";
    /// Free bytes on the recording file system, label `stream`.
    pub const RECORD_DISK_FREE: &str = "camstream_recording_disk_free_bytes";
    /// Age in seconds of the oldest recording kept, label `stream`; 0 with none.
    pub const RECORD_OLDEST_AGE: &str = "camstream_recording_oldest_age_seconds";
    /// Log lines dropped because stderr was gone, failing or not keeping up.
    pub const LOG_LINES_DROPPED: &str = "camstream_log_lines_dropped_total";
    /// WebRTC viewers connected or connecting now, label `stream`.
    pub const WEBRTC_VIEWERS: &str = "camstream_webrtc_viewers";
    /// WebRTC sessions created (answered offers), label `stream`.
    pub const WEBRTC_SESSIONS: &str = "camstream_webrtc_sessions_total";
    /// WebRTC sessions freed, labels `stream`, `reason` (deleted, timeout, handshake_timeout, closed, shutdown).
    pub const WEBRTC_CLOSED: &str = "camstream_webrtc_sessions_closed_total";
    /// Offers refused, label `reason` (max_viewers, profile, bad_offer, no_picture, unauthorized).
    pub const WEBRTC_REJECTED: &str = "camstream_webrtc_rejected_total";
    /// Bytes sent to WebRTC viewers over UDP or ICE-TCP (media, RTCP, ICE, DTLS), label `stream`.
    pub const WEBRTC_BYTES: &str = "camstream_webrtc_bytes_sent_total";
    /// Frames handed to WebRTC viewers, label `stream`.
    pub const WEBRTC_FRAMES: &str = "camstream_webrtc_frames_sent_total";
    /// Keyframe requests (PLI/FIR) from browsers passed to the encoder, label `stream`.
    pub const WEBRTC_KEYFRAME_REQUESTS: &str = "camstream_webrtc_keyframe_requests_total";
    /// Events published on the event bus, label `event`.
    pub const EVENTS: &str = "camstream_events_total";
    /// Hook runs that finished, labels `event`, `kind` (run, webhook), `result` (ok, failed,
    /// timeout).
    pub const HOOK_RUNS: &str = "camstream_hooks_runs_total";
    /// Events the hooks never saw because they fell more than 256 events behind.
    pub const HOOK_EVENTS_MISSED: &str = "camstream_hooks_events_missed_total";
    /// Hook runs in progress.
    pub const HOOKS_RUNNING: &str = "camstream_hooks_running";
    /// Analysis requests finished, label `result` (ok, failed, no_picture).
    pub const ANALYSIS_REQUESTS: &str = "camstream_analysis_requests_total";
    /// Seconds the last successful analysis request took.
    pub const ANALYSIS_DURATION: &str = "camstream_analysis_last_duration_seconds";
    /// Unix time of the last successful analysis, 0 before the first.
    pub const ANALYSIS_LAST_SUCCESS: &str = "camstream_analysis_last_success_timestamp_seconds";
    /// ONVIF SOAP requests, labels `service`, `operation` (unknown ones as "other"), `result`
    /// (ok, fault, unauthorized).
    pub const ONVIF_REQUESTS: &str = "camstream_onvif_requests_total";
    /// WS-Discovery probes answered.
    pub const ONVIF_PROBES: &str = "camstream_onvif_discovery_probes_total";
    /// WS-Discovery probes not answered, label `reason` (not_ours, rate_source, rate_total).
    pub const ONVIF_PROBES_REFUSED: &str = "camstream_onvif_discovery_refused_total";
    /// HTTP connections closed or refused by a sidecar limit, label `reason`.
    pub const HTTP_REFUSED: &str = "camstream_http_connections_refused_total";
    /// HTTP connections open now (waiting for a request or being served).
    pub const HTTP_OPEN: &str = "camstream_http_connections_open";
    /// ICE-TCP connections closed by a limit, label `reason`.
    pub const ICE_TCP_REFUSED: &str = "camstream_webrtc_ice_tcp_refused_total";
    // ONVIF events and MQTT (issue #25, branch events).
    /// ONVIF PullPoint subscriptions alive now.
    pub const ONVIF_EVENT_SUBSCRIPTIONS: &str = "camstream_onvif_event_subscriptions";
    /// ONVIF event messages dropped because a subscription's queue was full.
    pub const ONVIF_EVENTS_DROPPED: &str = "camstream_onvif_events_dropped_total";
    /// 1 while the MQTT client is connected to its broker, else 0.
    pub const MQTT_CONNECTED: &str = "camstream_mqtt_connected";
    /// MQTT messages handed to the broker's connection.
    pub const MQTT_PUBLISHED: &str = "camstream_mqtt_published_total";
    /// MQTT messages dropped because the outgoing queue was full (the broker away or slow).
    pub const MQTT_DROPPED: &str = "camstream_mqtt_dropped_total";
    /// MQTT commands received, label `result` (ok, refused, invalid).
    pub const MQTT_COMMANDS: &str = "camstream_mqtt_commands_total";
    // Motion detection (stream::motion).
    /// Motion events started, by stream.
    pub const MOTION_EVENTS: &str = "camstream_motion_events_total";
    /// 1 while a stream's motion event runs, else 0.
    pub const MOTION_ACTIVE: &str = "camstream_motion_active";
    /// Changed fraction (0 to 1) of a stream's last analysed picture.
    pub const MOTION_SCORE: &str = "camstream_motion_score";
    /// Pictures the motion detector analysed, by stream.
    pub const MOTION_FRAMES: &str = "camstream_motion_frames_analysed_total";
    /// Pictures the motion detector skipped because it was still busy, by stream.
    pub const MOTION_DROPPED: &str = "camstream_motion_frames_dropped_total";

    // MJPEG (issue 28).
    /// MJPEG clients connected now, label `stream`.
    pub const MJPEG_CLIENTS: &str = "camstream_mjpeg_clients";
    /// Shared MJPEG encoders running now (one per stream and size), label `stream`.
    pub const MJPEG_ENCODERS: &str = "camstream_mjpeg_encoders";
    /// JPEG pictures the MJPEG encoders made (each once for all its clients), label `stream`.
    pub const MJPEG_FRAMES_ENCODED: &str = "camstream_mjpeg_frames_encoded_total";
    /// JPEG pictures sent to MJPEG clients, label `stream`.
    pub const MJPEG_FRAMES_SENT: &str = "camstream_mjpeg_frames_sent_total";
    /// JPEG pictures a slow MJPEG client skipped (it gets the newest instead), label `stream`.
    pub const MJPEG_FRAMES_SKIPPED: &str = "camstream_mjpeg_frames_skipped_total";
    /// MJPEG requests refused, label `reason` (max_clients, disabled, encoder).
    pub const MJPEG_REJECTED: &str = "camstream_mjpeg_rejected_total";
    // HLS (issue #28)
    /// 1 while a stream's HLS muxer runs, label `stream`.
    pub const HLS_MUXERS: &str = "camstream_hls_muxers_active";
    /// HLS requests answered, labels `stream`, `kind` (playlist, multivariant, init, segment, part).
    pub const HLS_REQUESTS: &str = "camstream_hls_requests_total";
    /// Bytes of HLS answers (playlists and media), label `stream`.
    pub const HLS_BYTES: &str = "camstream_hls_bytes_total";

    // Audio (issue #24).
    /// Loudness of a stream's sound after its gain, before mute (RMS over the last second, dBFS;
    /// -120 for digital silence), label `stream`.
    pub const AUDIO_LEVEL: &str = "camstream_audio_level_dbfs";
    /// Restarts of a stream's audio capture, labels `stream` and `reason`.
    pub const AUDIO_RESTARTS: &str = "camstream_audio_restarts_total";

    // WebRTC audio (issue #24, audioweb).
    /// Opus packets handed to WebRTC viewers, label `stream`.
    pub const WEBRTC_AUDIO_PACKETS: &str = "camstream_webrtc_audio_packets_sent_total";
    /// Opus packets not sent to WebRTC viewers because they were stale (older than the picture
    /// by > 300 ms, or not later than the last sent), label `stream`.
    pub const WEBRTC_AUDIO_STALE: &str = "camstream_webrtc_audio_stale_total";
}

/// Handles to every metric; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    connections: Counter,
    sessions: Gauge,
    rejected: Vec<(&'static str, Counter)>,
}

/// Reasons in `camstream_rtsp_rejected_total{reason=...}`.
pub const REJECT_REASONS: &[&str] = &[
    "max_viewers",
    "max_connections",
    "idle_timeout",
    "evicted",
    "request_too_large",
    "bad_request",
];

impl Metrics {
    /// Describes and registers every metric with the installed recorder (no-ops without one).
    pub fn new() -> Self {
        use names::*;
        describe_counter!(
            OUTPUT_DROPPED,
            "Buffers an output's queue dropped because it was full, by stream and output"
        );
        describe_counter!(
            OUTPUT_PUSHED,
            "Buffers pushed into an output's queue, by stream and output"
        );
        describe_gauge!(
            OUTPUT_STATE,
            "1 for an output's current state (starting, streaming, backoff, disabled, stopped)"
        );
        describe_counter!(
            OUTPUT_RESTARTS,
            "Restarts of an output's pipeline, by stream, output and reason"
        );
        describe_counter!(
            OUTPUT_BYTES,
            "Bytes an output's sink took, by stream and output"
        );
        describe_gauge!(
            OUTPUT_LAST_ERROR,
            "Unix time of an output's last failure (0: none yet), by stream and output"
        );
        // Motion detection (stream::motion).
        describe_counter!(MOTION_EVENTS, "Motion events started, by stream");
        describe_gauge!(
            MOTION_ACTIVE,
            "1 while a stream's motion event runs, else 0"
        );
        describe_gauge!(
            MOTION_SCORE,
            "Changed fraction (0 to 1) of a stream's last analysed picture"
        );
        describe_counter!(
            MOTION_FRAMES,
            "Pictures the motion detector analysed, by stream"
        );
        describe_counter!(
            MOTION_DROPPED,
            "Pictures the motion detector skipped because it was still busy, by stream"
        );
        describe_counter!(RESTARTS, "Capture pipeline restarts, by stream and reason");
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
        describe_gauge!(
            STREAM_INFO,
            "The source and encoder a stream runs on (value 1)"
        );
        describe_gauge!(SESSIONS, "RTSP sessions alive in the server's pool");
        describe_counter!(
            AUTH_FAILURES,
            "Logins refused (wrong credentials): RTSP, HTTP Basic or Bearer, and the page's sign-in"
        );
        describe_counter!(
            RTSP_REJECTED,
            "RTSP connections or viewers refused by a limit, by reason"
        );
        describe_counter!(RECORD_BYTES, "Bytes written to recording segments");
        describe_gauge!(RECORD_EXPORTS_ACTIVE, "Recording exports being sent now");
        describe_counter!(
            RECORD_EXPORTS_REJECTED,
            "Recording exports refused because every export slot was taken"
        );
        describe_counter!(
            KEYFRAME_REQUESTS,
            "Forced keyframe requests, by result (sent now, coalesced into the next slot), and the scheduled ones"
        );
        describe_counter!(SNAPSHOTS, "Snapshot requests, by result");
        // MJPEG (issue 28).
        describe_gauge!(MJPEG_CLIENTS, "MJPEG clients connected now");
        describe_gauge!(
            MJPEG_ENCODERS,
            "Shared MJPEG encoders running now (one per stream and size)"
        );
        describe_counter!(
            MJPEG_FRAMES_ENCODED,
            "JPEG pictures made by the MJPEG encoders (once for all clients of a size)"
        );
        describe_counter!(MJPEG_FRAMES_SENT, "JPEG pictures sent to MJPEG clients");
        describe_counter!(
            MJPEG_FRAMES_SKIPPED,
            "JPEG pictures slow MJPEG clients skipped (they get the newest instead)"
        );
        describe_counter!(MJPEG_REJECTED, "MJPEG requests refused, by reason");
        describe_counter!(RECORD_SEGMENTS, "Recording segments finished");
        describe_counter!(
            RECORD_ERRORS,
            "Recording write failures (full disk, I/O errors, frames lost to a slow disk)"
        );
        describe_gauge!(
            RECORD_STATE,
            "1 for the recorder's state (waiting, recording, paused, off)"
        );
        describe_gauge!(RECORD_DISK_FREE, "Free bytes on the recording file system");
        describe_gauge!(
            RECORD_OLDEST_AGE,
            "Age in seconds of the oldest recording kept (0 with none)"
        );
        describe_counter!(
            LOG_LINES_DROPPED,
            "Log lines dropped because stderr was gone, failing or not keeping up"
        );
        describe_counter!(EVENTS, "Events published on the event bus, by event");
        describe_counter!(
            HOOK_RUNS,
            "Hook runs that ended, by event, kind (run, webhook) and result (ok, failed, timeout)"
        );
        describe_gauge!(HOOKS_RUNNING, "Hook runs in progress");
        describe_counter!(
            HOOK_EVENTS_MISSED,
            "Events the hooks never saw because they fell too far behind"
        );
        describe_counter!(
            ANALYSIS_REQUESTS,
            "Frame analysis rounds, by result (ok, failed, no_picture)"
        );
        describe_gauge!(
            ANALYSIS_DURATION,
            "Seconds the last answered analysis request took"
        );
        describe_gauge!(
            ANALYSIS_LAST_SUCCESS,
            "Unix time of the last analysis answer (0: none yet)"
        );
        describe_counter!(
            ONVIF_REQUESTS,
            "ONVIF SOAP requests, by service, operation and result (ok, fault, unauthorized)"
        );
        describe_counter!(
            ONVIF_PROBES,
            "WS-Discovery probes answered with a ProbeMatch"
        );
        describe_counter!(
            ONVIF_PROBES_REFUSED,
            "WS-Discovery probes not answered, by reason (not_ours, rate_source, rate_total)"
        );
        describe_counter!(
            HTTP_REFUSED,
            "HTTP connections closed or refused by a sidecar limit, by reason"
        );
        describe_gauge!(
            HTTP_OPEN,
            "HTTP connections open (waiting for a request or being served)"
        );
        describe_counter!(
            ICE_TCP_REFUSED,
            "ICE-TCP connections closed by a limit, by reason"
        );
        // ONVIF events and MQTT (issue #25, branch events).
        describe_gauge!(
            ONVIF_EVENT_SUBSCRIPTIONS,
            "ONVIF PullPoint subscriptions alive"
        );
        describe_counter!(
            ONVIF_EVENTS_DROPPED,
            "ONVIF event messages dropped from a full subscription queue"
        );
        describe_gauge!(MQTT_CONNECTED, "1 while connected to the MQTT broker");
        describe_counter!(
            MQTT_PUBLISHED,
            "MQTT messages handed to the broker connection"
        );
        describe_counter!(
            MQTT_DROPPED,
            "MQTT messages dropped from the full outgoing queue"
        );
        describe_counter!(MQTT_COMMANDS, "MQTT commands received, by result");
        // HLS (issue #28)
        describe_gauge!(HLS_MUXERS, "1 while a stream's HLS muxer runs, by stream");
        describe_counter!(HLS_REQUESTS, "HLS requests answered, by stream and kind");
        describe_counter!(HLS_BYTES, "Bytes of HLS answers, by stream");
        // Audio (issue #24).
        describe_gauge!(
            AUDIO_LEVEL,
            "Loudness of a stream's sound after its gain, before mute (RMS over the last second, dBFS)"
        );
        describe_counter!(
            AUDIO_RESTARTS,
            "Restarts of a stream's audio capture, by stream and reason"
        );
        crate::telemetry::count_drops_in(metrics::counter!(LOG_LINES_DROPPED));
        Metrics {
            connections: metrics::counter!(CONNECTIONS),
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

    /// Counts a connection or viewer refused by a limit.
    pub fn rtsp_rejected(&self, reason: &str) {
        if let Some((_, c)) = self.rejected.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }

    /// Counts an accepted RTSP connection.
    pub fn client_connected(&self) {
        self.connections.increment(1);
    }

    /// Publishes build information.
    pub fn build_info(&self) {
        let labels = [
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("gstreamer_version", gst::version_string().to_string()),
        ];
        gauge!(names::BUILD_INFO, &labels).set(1.0);
    }

    /// Handles for one mount's RTP output and viewers.
    pub fn mount(&self, stream: &str) -> MountMetrics {
        let l = [("stream", stream.to_string())];
        MountMetrics {
            rtp_packets: metrics::counter!(names::RTP_PACKETS, &l),
            rtp_bytes: metrics::counter!(names::RTP_BYTES, &l),
            viewers: gauge!(names::VIEWERS, &l),
        }
    }
}

/// Handles for one RTSP mount, labelled `stream`.
#[derive(Clone)]
pub struct MountMetrics {
    rtp_packets: Counter,
    rtp_bytes: Counter,
    viewers: Gauge,
}

impl MountMetrics {
    /// Counts RTP output (streaming thread).
    pub fn rtp_sent(&self, packets: u64, bytes: u64) {
        self.rtp_packets.increment(packets);
        self.rtp_bytes.increment(bytes);
    }

    /// Sets the number of viewers playing this mount.
    pub fn set_viewers(&self, n: usize) {
        self.viewers.set(n as f64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
