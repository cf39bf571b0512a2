//! Camera faults through real paths (a source that errors, ends, stalls, or does not exist), as
//! a connected viewer and an operator see them; and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{Proto, Viewer, daemon, wait_until};

const ERRORS: &str = "videotestsrc is-live=true ! identity error-after=30";
const ENDS: &str = "videotestsrc is-live=true num-buffers=30";
const STALLS: &str = "videotestsrc num-buffers=30 is-live=true ! c. \
                      videotestsrc is-live=true ! valve drop=true ! c. concat name=c";

/// Starts a daemon on a faulty source with a viewer attached, waits for two restarts with
/// `reason`, and checks that the viewer decodes fresh frames after each without reconnecting.
fn viewer_rides_through(fragment: &str, reason: &str, extra: &[(&str, &str)]) {
    let mut b = daemon()
        .set("source.kind", "pipeline")
        .set("source.pipeline", fragment);
    for (k, v) in extra {
        b = b.set(k, v);
    }
    let d = b.start();
    let v = Viewer::start(&d.url(), Proto::Tcp);
    assert!(v.wait_frames(5, Duration::from_secs(15)), "{}", d.log());
    for restart in 1..=2 {
        assert!(
            d.wait_log_count("Restarting in", restart, Duration::from_secs(20)),
            "no restart {restart}:\n{}",
            d.log()
        );
        let before = v.frames();
        assert!(
            v.wait_frames(before + 5, Duration::from_secs(15)),
            "viewer got no frames after restart {restart} ({} total):\n{}",
            v.frames(),
            d.log()
        );
    }
    assert!(!v.errored() && !v.saw_eos(), "the viewer's stream broke");
    let sample =
        format!("camstream_pipeline_restarts_total{{stream=\"video\",reason=\"{reason}\"}}");
    let restarts = d.metric(&sample).unwrap_or(0.0);
    assert!(restarts >= 2.0, "{sample} = {restarts}");
    assert_eq!(d.count_log("Client disconnected"), 0, "{}", d.log());
}

#[test]
fn source_error_restarts_and_viewer_resumes() {
    viewer_rides_through(ERRORS, "error", &[]);
}

#[test]
fn source_eos_restarts_and_viewer_resumes() {
    viewer_rides_through(ENDS, "eos", &[]);
}

#[test]
fn silent_stall_is_detected_and_restarted() {
    viewer_rides_through(STALLS, "stall", &[("supervisor.stall_timeout_ms", "1000")]);
}

#[test]
fn stall_turns_readiness_off_then_on_while_liveness_stays_up() {
    let d = daemon()
        .set("source.kind", "pipeline")
        .set("source.pipeline", STALLS)
        .set("supervisor.stall_timeout_ms", "1500")
        .start();
    assert_eq!(d.get("/readyz").status, 200);
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || d.get("/readyz").status == 503),
        "readyz never turned 503"
    );
    // 30 frames at 15 fps = 2 s of picture, then the stall window (1.5 s), plus a margin.
    assert!(t0.elapsed() < Duration::from_millis(2000 + 1500 + 1500));
    let body = d.get("/readyz").json();
    assert_eq!(body["checks"]["rtsp_listening"], true);
    assert_eq!(body["checks"]["camera_streaming"], false);
    assert_eq!(
        d.get("/healthz").status,
        200,
        "liveness must not follow the camera"
    );
    assert!(
        wait_until(Duration::from_secs(10), || d.get("/readyz").status == 200),
        "readyz did not recover:\n{}",
        d.log()
    );
    assert!(d.log().contains("Pipeline stalled"));
}

#[test]
fn missing_device_is_not_a_crash_and_backs_off() {
    let d = daemon()
        .set("source.kind", "v4l2")
        .set("source.device", "/dev/video99")
        .no_wait()
        .start();
    assert!(
        d.wait_log_count("Restarting in", 3, Duration::from_secs(20)),
        "{}",
        d.log()
    );
    assert!(d.log().contains("Camera failed to open"));
    assert!(d.log().contains("/dev/video99"));
    // Backoff grows: the announced delays are increasing (jitter is ±20 %, growth 2×).
    let delays: Vec<f64> = d
        .log()
        .lines()
        .filter_map(|l| l.split("Restarting in ").nth(1))
        .filter_map(|r| r.split('s').next()?.parse().ok())
        .collect();
    assert!(delays.len() >= 3 && delays[2] > delays[0], "{delays:?}");
    // The RTSP server stays up while the camera is down, and says so in readiness.
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(d.get("/readyz").status, 503);
    let r = common::raw_exchange(
        d.rtsp_port,
        b"OPTIONS rtsp://127.0.0.1/video RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        Duration::from_secs(2),
    );
    assert!(String::from_utf8_lossy(&r).starts_with("RTSP/1.0 200"));
}

#[test]
fn max_retries_exits_non_zero() {
    let mut d = daemon()
        .set("source.kind", "pipeline")
        .set("source.pipeline", ERRORS)
        .set("supervisor.max_retries", 2)
        .set("supervisor.initial_backoff_ms", 100)
        .start();
    let status = d
        .wait_exit(Duration::from_secs(40))
        .expect("daemon should give up");
    assert!(!status.success(), "exit status {status:?}");
    assert_eq!(status.code(), Some(1));
    assert!(
        d.wait_log("Max retries exceeded", Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert_eq!(d.count_log("Pipeline crashed"), 3, "{}", d.log());
}

#[test]
fn sigterm_with_a_viewer_exits_zero_within_two_seconds() {
    let mut d = daemon().start();
    let v = Viewer::start(&d.url(), Proto::Tcp);
    assert!(v.wait_frames(5, Duration::from_secs(15)));
    let (status, took) = d.terminate();
    let status = status.expect("daemon exited");
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    // The viewer's connection was closed by the server.
    assert!(wait_until(Duration::from_secs(5), || v.errored() || v.saw_eos()));
}

#[test]
fn attempts_reset_after_a_stable_period() {
    // Streams 2 s (30 frames at 15 fps) before each error: longer than the stable period, so
    // every restart is attempt 1 and the delay never grows.
    let d = daemon()
        .set("source.kind", "pipeline")
        .set("source.pipeline", ERRORS)
        .set("supervisor.stable_period_ms", 1000)
        .start();
    assert!(
        d.wait_log_count("Restarting in", 3, Duration::from_secs(30)),
        "{}",
        d.log()
    );
    assert_eq!(
        d.count_log("(attempt 1)"),
        d.count_log("Restarting in"),
        "{}",
        d.log()
    );
    drop(d);
    // With a stable period longer than the streaming spells, attempts accumulate.
    let d = daemon()
        .set("source.kind", "pipeline")
        .set("source.pipeline", ERRORS)
        .set("supervisor.stable_period_ms", 60000)
        .start();
    assert!(
        d.wait_log("(attempt 3)", Duration::from_secs(30)),
        "{}",
        d.log()
    );
}
