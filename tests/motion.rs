//! Motion detection (issue 25) with the real binary on scenes built from GStreamer elements:
//! a ball that appears at a known frame is detected within 500 ms; a brightness ramp and steps,
//! sensor noise, one-picture flickers and motion inside an excluded zone raise nothing. The
//! peak picture is served as JPEG, the event reaches hooks with its fields, and switching
//! detection on and off goes through PATCH.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, daemon, http_request, wait_until};

/// The operator's token for PATCH.
const TOKEN: &str = "motion-test-token-0123456789";
/// Frame rate of every scene.
const FPS: u32 = 10;
/// The frame the ball appears at (3 s).
const BALL_FRAME: u64 = 30;

/// A black picture; a ball (videotestsrc's, moving) drawn from frame `BALL_FRAME` on: its
/// source's first buffer is stamped 3 s, so the compositor shows it from that frame exactly.
fn ball_scene() -> String {
    format!(
        "videotestsrc is-live=true pattern=black ! video/x-raw,width=320,height=180,framerate={FPS}/1 ! c. \
         videotestsrc pattern=ball timestamp-offset=3000000000 ! video/x-raw,width=320,height=180,framerate={FPS}/1 ! c. \
         compositor name=c background=black"
    )
}

fn scene_daemon(fragment: &str, extra: &[(&str, &str)]) -> Daemon {
    let mut b = daemon()
        .set("source.kind", "pipeline")
        .set("source.pipeline", fragment)
        .set("video.width", 320)
        .set("video.height", 180)
        .set("video.fps", FPS)
        .set("encoder.keyframe_interval", FPS)
        .set("motion.enabled", true)
        .set("http.token", TOKEN);
    for (k, v) in extra {
        b = b.set(k, v);
    }
    b.start()
}

/// A GET with the token (a configured token closes the API to anonymous visitors).
fn get(d: &Daemon, path: &str) -> common::HttpResponse {
    http_request(
        d.http_port,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
}

fn stream(d: &Daemon) -> serde_json::Value {
    get(d, "/api/v1/streams/video").json()
}

fn patch(d: &Daemon, body: &str) -> (u16, serde_json::Value) {
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {TOKEN}")),
        ],
        body.as_bytes(),
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

fn events(d: &Daemon) -> f64 {
    d.metric("camstream_motion_events_total{stream=\"video\"}")
        .unwrap_or(-1.0)
}

#[test]
fn a_ball_entering_at_a_known_frame_is_detected_within_500_ms() {
    let d = scene_daemon(&ball_scene(), &[]);
    // The encoded-frame count tells when the ball's frame left the camera; the state tells
    // when motion began. Both are read in one answer, every 10 ms.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut first_ball, mut detected) = (None, None);
    while Instant::now() < deadline && detected.is_none() {
        let s = stream(&d);
        let now = Instant::now();
        let encoded = s["frames"]["encoded"].as_u64().unwrap_or(0);
        if first_ball.is_none() && encoded > BALL_FRAME {
            first_ball = Some(now);
        }
        if s["motion"]["active"] == true {
            detected = Some(now);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (Some(first_ball), Some(detected)) = (first_ball, detected) else {
        panic!(
            "no detection (ball seen: {first_ball:?}):\n{}\n{}",
            stream(&d)["motion"],
            d.log()
        );
    };
    let latency = detected.saturating_duration_since(first_ball);
    let s = stream(&d);
    eprintln!(
        "figures: motion detected {} ms after the ball's first frame was encoded (motion.fps 5, \
         min_duration_ms 200); event {}, score {}",
        latency.as_millis(),
        s["motion"]["event_id"],
        s["motion"]["score"]
    );
    assert!(latency < Duration::from_millis(500), "latency {latency:?}");
    assert!(
        detected >= first_ball,
        "detected before the ball appeared: a false start"
    );
    // The peak picture, with its event.
    let r = get(&d, "/api/v1/streams/video/motion.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..2], &[0xff, 0xd8], "a JPEG");
    assert_eq!(
        r.header("x-motion-event-id"),
        s["motion"]["event_id"].as_str()
    );
    assert_eq!(events(&d), 1.0);
    assert_eq!(
        d.metric("camstream_motion_active{stream=\"video\"}"),
        Some(1.0)
    );
}

#[test]
fn motion_ends_after_the_cooldown_and_hooks_see_both_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events");
    // The ball stops (its source ends) 2 s after it appears; the picture then stands still.
    let fragment = format!(
        "videotestsrc is-live=true pattern=black ! video/x-raw,width=320,height=180,framerate={FPS}/1 ! c. \
         videotestsrc pattern=ball timestamp-offset=1000000000 num-buffers=20 ! video/x-raw,width=320,height=180,framerate={FPS}/1 ! c. \
         compositor name=c background=black"
    );
    let run = format!(
        "[\"sh\", \"-c\", \"env | grep ^CAMSTREAM_ | sort | paste -s -d ' ' >> {}\"]",
        out.display()
    );
    let hooks = format!("[{{on=\"motion_start\", run={run}}}, {{on=\"motion_end\", run={run}}}]");
    let d = scene_daemon(
        &fragment,
        &[("motion.cooldown_ms", "1000"), ("hooks", hooks.as_str())],
    );
    assert!(
        wait_until(Duration::from_secs(15), || {
            std::fs::read_to_string(&out).is_ok_and(|s| s.lines().count() >= 2)
        }),
        "hooks did not see start and end: {:?}\n{}",
        std::fs::read_to_string(&out),
        d.log()
    );
    let lines = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert!(
        lines[0].contains("CAMSTREAM_EVENT=motion_start"),
        "{lines:?}"
    );
    assert!(lines[1].contains("CAMSTREAM_EVENT=motion_end"), "{lines:?}");
    for l in &lines[..2] {
        assert!(l.contains("CAMSTREAM_EVENT_ID=video-"), "{l}");
        assert!(l.contains("CAMSTREAM_SCORE=0."), "{l}");
        assert!(l.contains("CAMSTREAM_ZONE=all"), "{l}");
    }
    assert!(lines[1].contains("CAMSTREAM_DURATION_MS="), "{}", lines[1]);
    let s = stream(&d);
    assert_eq!(s["motion"]["active"], false);
    assert!(s["motion"]["last_end"].as_u64() >= s["motion"]["last_start"].as_u64());
}

/// Runs a scene that must not trigger for `secs`, with every frame analysed; returns the
/// pictures analysed.
fn stays_quiet(
    name: &str,
    fragment: &str,
    extra: &[(&str, &str)],
    secs: u64,
    during: impl Fn(&Daemon, f64),
) -> u64 {
    let mut all = vec![("motion.fps", "10")];
    all.extend_from_slice(extra);
    let d = scene_daemon(fragment, &all);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        during(&d, t0.elapsed().as_secs_f64());
        assert_eq!(
            events(&d),
            0.0,
            "{name}: a false motion event: {}\n{}",
            stream(&d)["motion"],
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = stream(&d)["motion"].clone();
    let analysed = m["frames_analysed"].as_u64().unwrap_or(0);
    eprintln!(
        "figures: {name}: 0 events over {secs} s, {analysed} pictures analysed, {} dropped",
        m["frames_dropped"]
    );
    assert!(analysed >= secs * u64::from(FPS) / 2, "{name}: {m}");
    analysed
}

/// Seconds each scene that must not trigger runs: 20 in the suite; `CAMSTREAM_MOTION_QUIET_S=100`
/// gives the issue's five minutes over the three scenes.
fn quiet_secs() -> u64 {
    std::env::var("CAMSTREAM_MOTION_QUIET_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// A still picture (`smpte` has a block of noise, which is rightly motion; smpte100 has none).
const STILL: &str =
    "videotestsrc is-live=true pattern=smpte100 ! video/x-raw,width=320,height=180,framerate=10/1";

#[test]
fn a_brightness_ramp_and_light_switched_on_do_not_trigger() {
    // The ramp goes through the camera's own brightness control (videobalance, live), as
    // auto-exposure would; then two steps, the lights going on and off.
    stays_quiet("brightness", STILL, &[], quiet_secs(), |d, t| {
        // Every 20 s the same ramp and steps again, however long the run.
        let t = t % 20.0;
        let b = if t < 12.0 {
            -0.3 + 0.05 * t
        } else if t < 16.0 {
            0.4
        } else {
            -0.2
        };
        let (code, body) = patch(d, &format!("{{\"image\":{{\"brightness\":{b:.3}}}}}"));
        assert_eq!(code, 200, "{body}");
    });
}

#[test]
fn sensor_noise_and_one_picture_flickers_do_not_trigger() {
    // Noise over the whole picture (snow at 15 %), and a flash of one picture in a corner at
    // every 4 s (4, 8, 12 and 16 s in the suite's 20 s run).
    let secs = quiet_secs();
    let mut fragment = format!(
        "{STILL} ! c. videotestsrc is-live=true pattern=snow ! video/x-raw,width=320,height=180,framerate=10/1 ! c. "
    );
    let corners = [
        "sink_{}::xpos=20",
        "sink_{}::xpos=200",
        "sink_{}::ypos=100",
        "sink_{}::xpos=120 sink_{}::ypos=60",
    ];
    let mut placed = String::new();
    for (i, t) in (4..secs).step_by(4).enumerate() {
        fragment.push_str(&format!(
            "videotestsrc pattern=white num-buffers=1 timestamp-offset={}000000000 \
             ! video/x-raw,width=80,height=60,framerate=10/1 ! c.sink_{} ",
            t,
            i + 2
        ));
        placed.push(' ');
        placed.push_str(&corners[i % corners.len()].replace("{}", &(i + 2).to_string()));
    }
    fragment.push_str(&format!("compositor name=c sink_1::alpha=0.15{placed}"));
    stays_quiet("noise and flicker", &fragment, &[], secs, |_, _| {});
}

#[test]
fn motion_only_inside_an_excluded_zone_does_not_trigger() {
    let fragment = format!(
        "{STILL} ! c. videotestsrc is-live=true pattern=ball ! video/x-raw,width=120,height=68,framerate=10/1 ! c. \
         compositor name=c"
    );
    stays_quiet(
        "excluded zone",
        &fragment,
        &[(
            "motion.zones",
            "[{points=[[0.0,0.0],[0.45,0.0],[0.45,0.45],[0.0,0.45]], mode=\"exclude\"}]",
        )],
        quiet_secs(),
        |_, _| {},
    );
}

#[test]
fn detection_switches_on_and_off_through_patch() {
    let d = scene_daemon(&ball_scene(), &[("motion.enabled", "false")]);
    assert_eq!(stream(&d)["motion"]["enabled"], false);
    let (code, body) = patch(&d, r#"{"motion":{"enabled":true}}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"], "restart", "the branch is added: {body}");
    assert!(
        wait_until(Duration::from_secs(15), || stream(&d)["motion"]["active"]
            == true),
        "{}",
        d.log()
    );
    // Off is live (a valve) and ends the running event.
    let (code, body) = patch(&d, r#"{"motion":{"enabled":false}}"#);
    assert_eq!(
        (code, body["applied"].as_str()),
        (200, Some("live")),
        "{body}"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        let m = &stream(&d)["motion"];
        m["active"] == false && m["enabled"] == false
    }));
    // Sizes are not live; a bad value names its key.
    let (code, body) = patch(&d, r#"{"motion":{"width":320}}"#);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("motion.width"),
        "{body}"
    );
    let (code, body) = patch(&d, r#"{"motion":{"sensitivity":2}}"#);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("motion.sensitivity"),
        "{body}"
    );
}

/// `record.mode = "events"`: a clip starts at a keyframe at least `pre_s` before the detection,
/// plays, ends after the post-roll; an RTSP viewer watching meanwhile loses nothing.
#[test]
fn an_event_clip_has_its_preroll_from_a_keyframe_and_viewers_lose_nothing() {
    common::gst_init();
    let dir = tempfile::tempdir().unwrap();
    // The ball shows from 6 s to 8 s; before, a still picture the ring keeps.
    let fragment = format!(
        "{STILL} ! c. videotestsrc pattern=ball timestamp-offset=6000000000 num-buffers=20 \
         ! video/x-raw,width=320,height=180,framerate={FPS}/1 ! c. compositor name=c"
    );
    let d = scene_daemon(
        &fragment,
        &[
            ("record.enabled", "true"),
            ("record.mode", "\"events\""),
            ("record.path", &format!("\"{}\"", dir.path().display())),
            ("record.pre_s", "2"),
            ("record.post_s", "1"),
            ("motion.cooldown_ms", "1000"),
        ],
    );
    let v = common::Viewer::start(&d.url(), common::Proto::Tcp);
    assert!(v.wait_frames(5, Duration::from_secs(10)), "viewer plays");
    let watched = Instant::now();
    let rtsp_dropped = || {
        d.metric("camstream_output_dropped_buffers_total{stream=\"video\",output=\"rtsp\"}")
            .unwrap_or(-1.0)
    };
    let dropped_before = rtsp_dropped();
    let folder = dir.path().join("video");
    let finished = || {
        d.metric("camstream_recording_segments_total{stream=\"video\"}")
            .unwrap_or(0.0)
            >= 1.0
    };
    assert!(
        wait_until(Duration::from_secs(25), finished),
        "no clip finished: {}\n{}",
        stream(&d)["motion"],
        d.log()
    );
    let gap = v.max_gap_since(watched);
    let frames = v.frames();
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    assert_eq!(files.len(), 1, "one clip: {files:?}");
    let clip = &files[0];
    let stem = clip.file_stem().unwrap().to_str().unwrap();
    let clip_start_ms = camstream::utc::parse_basic(stem).expect("a UTC name") / 1_000_000;
    let m = stream(&d)["motion"].clone();
    let detected_ms = m["last_start"].as_i64().expect("a start");
    let preroll_ms = detected_ms - clip_start_ms;
    // ffprobe: the first frame is a keyframe, the clip decodes, its length.
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=key_frame,pict_type:format=duration",
            "-of",
            "json",
        ])
        .arg(clip)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probed = j["frames"].as_array().cloned().unwrap_or_default();
    let duration: f64 = j["format"]["duration"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    eprintln!(
        "figures: clip {} starts {preroll_ms} ms before the detection (pre_s 2), {} frames, \
         {duration:.2} s, first frame key_frame={} pict_type={}; RTSP viewer: {frames} pictures, \
         longest gap {gap:?} while the clip was written",
        clip.display(),
        probed.len(),
        probed
            .first()
            .map_or(serde_json::Value::Null, |f| f["key_frame"].clone()),
        probed
            .first()
            .map_or(serde_json::Value::Null, |f| f["pict_type"].clone()),
    );
    assert!(preroll_ms >= 2000, "pre-roll {preroll_ms} ms");
    assert_eq!(
        probed.first().map(|f| f["key_frame"].as_i64()),
        Some(Some(1))
    );
    // The motion lasts about 2 s: pre-roll (2–3 s), motion, cooldown and post-roll.
    assert!((4.0..12.0).contains(&duration), "{duration}");
    assert_eq!(
        probed.len() as f64,
        (duration * f64::from(FPS)).round(),
        "every frame decodes"
    );
    // Nothing lost: each picture the viewer decoded follows the one before by one frame
    // interval (a lost picture leaves a step of two). The hub's drop count for the RTSP output
    // is reported beside it.
    let dropped = rtsp_dropped() - dropped_before;
    let pts = v.pts();
    let frame_ns = 1_000_000_000 / u64::from(FPS);
    let lost: u64 = pts
        .windows(2)
        .map(|w| (w[1].saturating_sub(w[0]) + frame_ns / 2) / frame_ns)
        .map(|steps| steps.saturating_sub(1))
        .sum();
    eprintln!(
        "figures: RTSP viewer decoded {} pictures, {lost} lost; the hub dropped {dropped} for \
         the RTSP output",
        pts.len()
    );
    // The clip is written on the recorder's own thread from its own subscription, so it cannot
    // take pictures from the viewer; on a loaded 2-core machine a viewer loses the odd picture
    // with recording off as well (seen at load 12: gaps of 0.2-0.8 s), so one or two are load,
    // not the clip. A clip that held the hub or the capture would cost far more than that.
    assert!(
        lost <= 2,
        "the viewer lost {lost} pictures while the clip was written"
    );
    assert!(gap < Duration::from_secs(2), "the viewer stalled {gap:?}");
    assert!(!v.errored());
    // The listing names the clip's event and its thumbnail (the event's peak picture).
    let list = get(&d, "/api/v1/recordings?stream=video").json();
    let ev = &list["events"][0];
    assert_eq!(ev["event_id"], m["event_id"], "{list}");
    assert_eq!(
        ev["segment"].as_str(),
        clip.file_name().and_then(|n| n.to_str())
    );
    let thumb = get(&d, ev["thumbnail"].as_str().unwrap_or("/none"));
    assert_eq!(thumb.status, 200, "{}", ev["thumbnail"]);
    assert_eq!(&thumb.body[..2], &[0xff, 0xd8], "a JPEG");
    assert_eq!(
        get(&d, "/recordings/video/events/nope.jpg").status,
        404,
        "no such event"
    );
}
