//! Several cameras and renditions, live control and SIGHUP, against the real daemon with real
//! RTSP clients (rtspsrc, ffprobe) and a real HTTP client.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Proto, Viewer, daemon, ffprobe, http_request, wait_until};

const TOKEN: &str = "s3cret-token";

/// Two test-pattern cameras, cam2's source failing after `cam2_error_after` buffers (0 = never),
/// and a 160x90 rendition of cam1 (the "detect" stream).
fn two_cameras(dir: &std::path::Path, cam2_error_after: u32, cam2_pattern: &str) -> String {
    let cam2_source = if cam2_error_after > 0 {
        format!(
            "source = {{ kind = \"pipeline\", pipeline = \"videotestsrc is-live=true pattern={cam2_pattern} ! identity error-after={cam2_error_after}\" }}"
        )
    } else {
        format!("source = {{ kind = \"test\", pattern = \"{cam2_pattern}\" }}")
    };
    let text = format!(
        r#"
[[streams]]
name = "cam1"
source = {{ kind = "test", pattern = "smpte" }}
[[streams.renditions]]
name = "cam1_low"
width = 160
height = 90
bitrate_kbps = 150

[[streams]]
name = "cam2"
{cam2_source}
"#
    );
    let path = dir.join("camstream.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn start(config: &str) -> Daemon {
    let d = daemon()
        .arg("--config")
        .arg(config)
        .set("http.token", TOKEN)
        .start();
    // `start` waits for the first stream; wait for every one.
    assert!(
        d.wait_log_count("Streaming source=", 2, Duration::from_secs(30)),
        "both cameras stream:\n{}",
        d.log()
    );
    d
}

fn url(d: &Daemon, mount: &str) -> String {
    format!("rtsp://127.0.0.1:{}/{mount}", d.rtsp_port)
}

fn patch(d: &Daemon, stream: &str, body: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let r = http_request(
        d.http_port,
        "PATCH",
        &format!("/api/v1/streams/{stream}"),
        &headers,
        body.as_bytes(),
    );
    let json = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, json)
}

fn stream_json(d: &Daemon, name: &str) -> serde_json::Value {
    let auth = format!("Bearer {TOKEN}");
    let r = http_request(
        d.http_port,
        "GET",
        &format!("/api/v1/streams/{name}"),
        &[("Authorization", auth.as_str())],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn two_cameras_and_a_rendition_play_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(&two_cameras(dir.path(), 0, "ball"));
    for (mount, w, h) in [
        ("cam1", 320, 240),
        ("cam1_low", 160, 90),
        ("cam2", 320, 240),
    ] {
        let j = ffprobe(&url(&d, mount), "tcp");
        let s = &j["streams"][0];
        assert_eq!(s["codec_name"], "h264", "{mount}: {j}");
        assert_eq!(
            (s["width"].clone(), s["height"].clone()),
            (w.into(), h.into()),
            "{mount}: {j}"
        );
    }
    let viewers: Vec<Viewer> = ["cam1", "cam1_low", "cam2"]
        .iter()
        .map(|m| Viewer::start(&url(&d, m), Proto::Tcp))
        .collect();
    for (v, m) in viewers.iter().zip(["cam1", "cam1_low", "cam2"]) {
        assert!(
            v.wait_frames(30, Duration::from_secs(30)),
            "{m}: {} frames\n{}",
            v.frames(),
            d.log()
        );
        assert!(!v.errored(), "{m} viewer errored");
    }
    assert_eq!(viewers[1].size(), Some((160, 90)));
    // Each stream has its own status entry and metrics.
    let list = stream_json(&d, "cam1");
    assert_eq!(list["state"], "streaming");
    assert_eq!(list["encodings"][1]["name"], "cam1_low");
    for s in ["cam1", "cam1_low", "cam2"] {
        let frames = d
            .metric(&format!("camstream_frames_encoded_total{{stream=\"{s}\"}}"))
            .unwrap_or(0.0);
        assert!(frames > 0.0, "{s} frames metric");
    }
    // A stream that does not exist is a 404, and one mount never answers for another.
    assert_eq!(
        http_request(
            d.http_port,
            "GET",
            "/api/v1/streams/nope",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            b""
        )
        .status,
        404
    );
}

#[test]
fn a_failing_camera_restarts_alone() {
    let dir = tempfile::tempdir().unwrap();
    // cam2 errors 20 frames (1.3 s) into every start.
    let d = start(&two_cameras(dir.path(), 20, "snow"));
    let cam1 = Viewer::start(&url(&d, "cam1"), Proto::Tcp);
    let low = Viewer::start(&url(&d, "cam1_low"), Proto::Tcp);
    assert!(cam1.wait_frames(15, Duration::from_secs(30)));
    assert!(low.wait_frames(15, Duration::from_secs(30)));
    let encoded = |s: &str| {
        d.metric(&format!("camstream_frames_encoded_total{{stream=\"{s}\"}}"))
            .unwrap_or(0.0)
    };
    let restarts = || {
        d.metric("camstream_pipeline_restarts_total{stream=\"cam2\",reason=\"error\"}")
            .unwrap_or(0.0)
    };
    let (e1, el, v1, vl, r0) = (
        encoded("cam1"),
        encoded("cam1_low"),
        cam1.frames(),
        low.frames(),
        restarts(),
    );
    let since = Instant::now();
    assert!(
        wait_until(Duration::from_secs(40), || restarts() >= r0 + 2.0),
        "cam2 restarts:\n{}",
        d.log()
    );
    // Let the last frames counted by the metric reach the viewers.
    let (e1b, elb) = (encoded("cam1"), encoded("cam1_low"));
    assert!(
        wait_until(Duration::from_secs(5), || {
            cam1.frames() - v1 >= (e1b - e1) as u64 && low.frames() - vl >= (elb - el) as u64
        }),
        "cam1 lost frames: encoded {} decoded {}; low encoded {} decoded {}",
        e1b - e1,
        cam1.frames() - v1,
        elb - el,
        low.frames() - vl
    );
    assert!(
        cam1.max_gap_since(since) < Duration::from_millis(500),
        "cam1 gap {:?}",
        cam1.max_gap_since(since)
    );
    assert_eq!(
        d.metric("camstream_pipeline_restarts_total{stream=\"cam1\",reason=\"error\"}"),
        Some(0.0)
    );
    assert_eq!(stream_json(&d, "cam1")["restarts"], 0);
}

#[test]
fn bitrate_changes_live_while_a_viewer_plays() {
    // Noise needs every bit the encoder is allowed, so the rate follows the target closely.
    let d = daemon()
        .set("source.pattern", "snow")
        .set("video.width", "640")
        .set("video.height", "360")
        .set("video.fps", "15")
        .set("encoder.bitrate_kbps", "4000")
        .set("http.token", TOKEN)
        .start();
    let v = Viewer::start(&d.url(), Proto::Tcp);
    assert!(v.wait_frames(15, Duration::from_secs(30)));
    let bytes = || {
        d.metric("camstream_encoded_bytes_total{stream=\"video\"}")
            .unwrap()
    };
    let rate = |secs: f64| {
        let (b0, t0) = (bytes(), Instant::now());
        std::thread::sleep(Duration::from_secs_f64(secs));
        (bytes() - b0) * 8.0 / 1000.0 / t0.elapsed().as_secs_f64()
    };
    let before = rate(3.0);
    assert!(
        before > 3000.0,
        "at 4000 kb/s the noise stream runs at {before:.0} kb/s"
    );

    // Without the token: refused, nothing changes.
    assert_eq!(
        patch(&d, "video", r#"{"encoder":{"bitrate_kbps":1000}}"#, None).0,
        401
    );
    // Out of range: 400 naming the field and the range.
    let (code, body) = patch(
        &d,
        "video",
        r#"{"encoder":{"bitrate_kbps":50}}"#,
        Some(TOKEN),
    );
    assert_eq!(code, 400);
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("encoder.bitrate_kbps") && msg.contains("100 to 20000"),
        "{msg}"
    );
    let (code, body) = patch(&d, "video", r#"{"encoder":{"bitrat":1000}}"#, Some(TOKEN));
    assert_eq!(code, 400, "{body}");

    let frames_before = v.frames();
    let since = Instant::now();
    let (code, body) = patch(
        &d,
        "video",
        r#"{"encoder":{"bitrate_kbps":1000}}"#,
        Some(TOKEN),
    );
    assert_eq!(
        (code, body["applied"].as_str()),
        (200, Some("live")),
        "{body}"
    );
    // The encoder's rate-control buffer drains first; then 5 s are measured.
    std::thread::sleep(Duration::from_secs(1));
    let after = rate(5.0);
    assert!(
        (750.0..=1250.0).contains(&after),
        "bitrate after the change: {after:.0} kb/s (was {before:.0})"
    );
    println!(
        "figures: bitrate {before:.0} kb/s before, {after:.0} kb/s over the 5 s after PATCH to 1000; max frame gap {:?}",
        v.max_gap_since(since)
    );
    assert!(v.frames() > frames_before + 60, "the viewer kept playing");
    assert!(!v.errored(), "the viewer's session survived");
    let gap = v.max_gap_since(since);
    assert!(gap < Duration::from_millis(500), "frame gap {gap:?}");
    assert_eq!(
        d.metric("camstream_pipeline_restarts_total{stream=\"video\",reason=\"reconfigure\"}"),
        Some(0.0),
        "a live change restarts nothing"
    );
    // A change the encoder cannot take while playing restarts it, with viewers attached.
    let (code, body) = patch(
        &d,
        "video",
        r#"{"encoder":{"keyframe_interval":15}}"#,
        Some(TOKEN),
    );
    assert_eq!(
        (code, body["applied"].as_str()),
        (200, Some("restart")),
        "{body}"
    );
    let n = v.frames();
    assert!(
        v.wait_frames(n + 30, Duration::from_secs(20)),
        "the viewer resumed after the restart"
    );
    assert_eq!(
        d.metric("camstream_pipeline_restarts_total{stream=\"video\",reason=\"reconfigure\"}"),
        Some(1.0)
    );
}

#[test]
fn writes_are_refused_without_a_configured_token() {
    let d = daemon().start();
    let (code, body) = patch(&d, "video", r#"{"encoder":{"bitrate_kbps":1000}}"#, None);
    assert_eq!(code, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("http.token"),
        "{body}"
    );
    let r = http_request(
        d.http_port,
        "POST",
        "/api/v1/streams/video/keyframe",
        &[],
        b"",
    );
    assert_eq!(r.status, 401);
    // Reads follow the old rules: open without a token.
    assert_eq!(d.get("/api/v1/streams").status, 200);
}

#[test]
fn sighup_restarts_only_the_stream_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let config = two_cameras(dir.path(), 0, "ball");
    let d = start(&config);
    let cam1 = Viewer::start(&url(&d, "cam1"), Proto::Tcp);
    assert!(cam1.wait_frames(15, Duration::from_secs(30)));
    // A bad file is refused; the old configuration stays.
    std::fs::write(&config, "[[streams]]\nname = \"Bad Name\"\n").unwrap();
    d.signal("HUP");
    assert!(
        d.wait_log("Configuration not reloaded", Duration::from_secs(10)),
        "{}",
        d.log()
    );
    // Change cam2 only.
    two_cameras(dir.path(), 0, "snow");
    let since = Instant::now();
    d.signal("HUP");
    let reconf = |s: &str| {
        d.metric(&format!(
            "camstream_pipeline_restarts_total{{stream=\"{s}\",reason=\"reconfigure\"}}"
        ))
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(15), || reconf("cam2") == 1.0),
        "{}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(15), || stream_json(
        &d, "cam2"
    )["state"]
        == "streaming"));
    assert_eq!(reconf("cam1"), 0.0, "cam1 untouched");
    assert_eq!(stream_json(&d, "cam1")["restarts"], 0);
    let n = cam1.frames();
    assert!(cam1.wait_frames(n + 15, Duration::from_secs(10)));
    assert!(cam1.max_gap_since(since) < Duration::from_millis(500));
    assert_eq!(
        stream_json(&d, "cam2")["settings"]["source"]["pattern"],
        "snow"
    );
}

#[test]
fn keyframe_request_gives_an_idr_now() {
    let d = daemon()
        .set("encoder.keyframe_interval", "300")
        .set("http.token", TOKEN)
        .start();
    let key = || {
        d.metric("camstream_keyframes_total{stream=\"video\"}")
            .unwrap()
    };
    let k0 = key();
    let auth = format!("Bearer {TOKEN}");
    let r = http_request(
        d.http_port,
        "POST",
        "/api/v1/streams/video/keyframe",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    // With a 20 s GOP, only the request explains a keyframe within 2 s.
    assert!(wait_until(Duration::from_secs(2), || key() > k0));
}
