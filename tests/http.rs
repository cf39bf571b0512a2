//! The HTTP sidecar against the running daemon, with a real HTTP client and real viewers.

mod common;

use std::time::{Duration, Instant};

use common::{Proto, Viewer, daemon, http_request, promtool_accepts, wait_until};

#[test]
fn metrics_pass_promtool_and_count_while_a_viewer_plays() {
    let d = daemon().start();
    let m = |s: &str| d.metric(s).unwrap_or_else(|| panic!("no sample {s}"));
    assert_eq!(m("camstream_viewers_active{stream=\"video\"}"), 0.0);
    let before = (
        m("camstream_frames_encoded_total{stream=\"video\"}"),
        m("camstream_rtp_packets_sent_total{stream=\"video\"}"),
        m("camstream_rtp_bytes_sent_total{stream=\"video\"}"),
    );
    let v = Viewer::start(&d.url(), Proto::Tcp);
    assert!(v.wait_frames(20, Duration::from_secs(20)));
    assert!(wait_until(Duration::from_secs(5), || m(
        "camstream_viewers_active{stream=\"video\"}"
    ) == 1.0));
    assert!(m("camstream_frames_encoded_total{stream=\"video\"}") > before.0);
    assert!(m("camstream_rtp_packets_sent_total{stream=\"video\"}") > before.1 + 20.0);
    assert!(m("camstream_rtp_bytes_sent_total{stream=\"video\"}") > before.2 + 1000.0);
    assert!(m("camstream_client_connections_total") >= 1.0);
    assert!(m("camstream_keyframes_total{stream=\"video\"}") >= 1.0);
    let fps = m("camstream_frames_per_second{stream=\"video\"}");
    assert!((10.0..=20.0).contains(&fps), "fps {fps}");
    assert!(m("camstream_last_frame_age_seconds{stream=\"video\"}") < 1.0);
    assert_eq!(
        m("camstream_pipeline_state{stream=\"video\",state=\"streaming\"}"),
        1.0
    );
    let text = d.get("/metrics").text();
    assert!(text.contains("camstream_build_info{"), "{text}");
    assert!(text.contains("encoder=\"x264enc\""), "{text}");

    // promtool (Debian package prometheus) validates the exposition format.
    promtool_accepts(&text);

    v.stop();
    drop(v);
    assert!(
        wait_until(Duration::from_secs(10), || m(
            "camstream_viewers_active{stream=\"video\"}"
        ) == 0.0),
        "viewers_active did not return to 0"
    );
}

#[test]
fn status_shows_state_viewers_and_config() {
    // The configuration and viewer addresses are for admins: the admin token reads them.
    let d = daemon().set("http.token", "admin-t0ken").start();
    let admin = |d: &common::Daemon| {
        common::http_request(
            d.http_port,
            "GET",
            "/api/v1/status",
            &[("Authorization", "Bearer admin-t0ken")],
            b"",
        )
        .json()
    };
    let v = Viewer::start(&d.url(), Proto::Udp);
    assert!(v.wait_frames(5, Duration::from_secs(20)));
    let s = admin(&d);
    assert_eq!(s["state"], "streaming", "{s}");
    assert_eq!(s["h264_level"], "1.3", "{s}");
    assert_eq!(s["encoder"], "x264enc");
    assert!(s["source"].as_str().unwrap().contains("test pattern"));
    assert_eq!(s["config"]["video"]["width"], 320);
    assert_eq!(s["restarts"], 0);
    let viewers = s["viewers"].as_array().unwrap();
    assert_eq!(viewers.len(), 1, "{s}");
    assert_eq!(viewers[0]["address"], "127.0.0.1");
    assert_eq!(viewers[0]["transport"], "udp");
    assert_eq!(viewers[0]["playing"], true);
    // Bytes sent grow while it plays: at 500 kbit/s, well over 10 kB within a few seconds.
    let sent = |d: &common::Daemon| admin(d)["viewers"][0]["bytes_sent"].as_u64().unwrap();
    let b0 = sent(&d);
    assert!(wait_until(Duration::from_secs(10), || sent(&d) > b0 + 10_000));
    assert!(s["uptime_s"].is_u64());
}

#[test]
fn error_fault_shows_in_readiness_metrics_and_status() {
    let d = daemon()
        .set("source.kind", "pipeline")
        .set(
            "source.pipeline",
            "videotestsrc is-live=true ! identity error-after=45",
        )
        .set("supervisor.initial_backoff_ms", 1500)
        .set("supervisor.max_backoff_ms", 3000)
        .start();
    assert_eq!(d.get("/readyz").status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || d.get("/readyz").status == 503),
        "{}",
        d.log()
    );
    assert_eq!(d.get("/healthz").status, 200);
    let restarts = d.metric("camstream_pipeline_restarts_total{stream=\"video\",reason=\"error\"}");
    assert!(restarts >= Some(1.0), "{restarts:?}");
    let s = d.get("/api/v1/status").json();
    assert_eq!(s["last_error"]["reason"], "error", "{s}");
    assert!(
        s["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("identity")
    );
    assert!(wait_until(Duration::from_secs(10), || d
        .get("/readyz")
        .status
        == 200));
}

#[test]
fn snapshot_is_a_jpeg_of_the_stream_and_does_not_disturb_viewers() {
    let d = daemon().start();
    let v = Viewer::start(&d.url(), Proto::Tcp);
    assert!(v.wait_frames(5, Duration::from_secs(20)));
    let f0 = v.frames();
    let t0 = Instant::now();
    // Several concurrent requests, a few rounds.
    for _ in 0..3 {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let port = d.http_port;
                std::thread::spawn(move || http_request(port, "GET", "/snapshot.jpg", &[], b""))
            })
            .collect();
        for h in handles {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("content-type"), Some("image/jpeg"));
            assert_eq!(jpeg_size(&r.body), Some((320, 240)));
        }
    }
    let r = d.get("/snapshot.jpg?width=160");
    assert_eq!(r.status, 200);
    assert_eq!(jpeg_size(&r.body), Some((160, 120)));
    // The viewer kept its rate while snapshots were made.
    let elapsed = t0.elapsed().as_secs_f64().max(1.0);
    let deadline = t0 + Duration::from_secs_f64(elapsed.max(2.0));
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rate = (v.frames() - f0) as f64 / t0.elapsed().as_secs_f64();
    assert!(rate > 13.0, "viewer rate {rate} fps during snapshots");
}

#[test]
fn bad_requests_get_the_right_status() {
    let d = daemon().start();
    assert_eq!(d.get("/nope").status, 404);
    assert_eq!(d.get("/api/v2/status").status, 404);
    assert_eq!(
        http_request(d.http_port, "POST", "/healthz", &[], b"x").status,
        405
    );
    assert_eq!(
        http_request(d.http_port, "DELETE", "/metrics", &[], b"").status,
        405
    );
    assert_eq!(d.get("/snapshot.jpg?width=abc").status, 400);
    assert_eq!(d.get("/snapshot.jpg?width=99999").status, 400);
    assert_eq!(d.get("/snapshot.jpg?height=10").status, 400);
    let long = format!("/metrics?{}", "a".repeat(5000));
    assert_eq!(d.get(&long).status, 400);
    let huge = "x".repeat(64 * 1024);
    let r = http_request(d.http_port, "GET", "/healthz", &[("X-Big", &huge)], b"");
    assert!(r.status == 431 || r.status == 0, "status {}", r.status);
    // Still serving after all that.
    assert_eq!(d.get("/healthz").status, 200);
}

#[test]
fn snapshot_before_the_first_frame_is_503() {
    let d = daemon()
        .set("source.kind", "v4l2")
        .set("source.device", "/dev/video99")
        .no_wait()
        .start();
    let r = d.get("/snapshot.jpg");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("no frame yet"));
}

/// Width and height from a JPEG's SOF marker.
fn jpeg_size(b: &[u8]) -> Option<(u16, u16)> {
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    while i + 9 < b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if (0xC0..=0xC3).contains(&marker) {
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]);
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]);
            return Some((w, h));
        }
        i += 2 + len;
    }
    None
}
