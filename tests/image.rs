//! `[image]` end to end: the real daemon streaming the test pattern, with every check made on
//! decoded pictures (snapshots decoded to RGB, RTSP frames decoded to luma), never on
//! properties: flips, rotation, a live brightness change under a playing viewer, the time
//! overlay, and the digital zoom.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, daemon, gst_init, http_request, wait_until};
use gst::prelude::*;

/// A decoded RGB picture.
struct Picture {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Picture {
    fn px(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The SMPTE bar colour at a pixel: each channel is on (75 % = 191) or off.
    fn colour(&self, x: usize, y: usize) -> &'static str {
        let [r, g, b] = self.px(x, y).map(|c| c > 110);
        match (r, g, b) {
            (true, true, true) => "white",
            (true, true, false) => "yellow",
            (false, true, true) => "cyan",
            (false, true, false) => "green",
            (true, false, true) => "magenta",
            (true, false, false) => "red",
            (false, false, true) => "blue",
            (false, false, false) => "black",
        }
    }

    /// Pixels of a rectangle where some channel differs by more than 64 (text against bars,
    /// not the encoder's noise).
    fn changed(&self, other: &Picture, x0: usize, y0: usize, x1: usize, y1: usize) -> usize {
        let mut n = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                let (a, b) = (self.px(x, y), other.px(x, y));
                if (0..3).any(|c| a[c].abs_diff(b[c]) > 64) {
                    n += 1;
                }
            }
        }
        n
    }
}

/// Decodes a JPEG with GStreamer (jpegdec) into tightly packed RGB.
fn decode_jpeg(jpeg: &[u8]) -> Picture {
    gst_init();
    let pipeline = gst::parse::launch(
        "appsrc name=src caps=image/jpeg ! jpegdec ! videoconvert \
         ! video/x-raw,format=RGB ! appsink name=sink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    src.push_buffer(gst::Buffer::from_slice(jpeg.to_vec()))
        .unwrap();
    src.end_of_stream().unwrap();
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(10))
        .expect("the snapshot decodes");
    pipeline.set_state(gst::State::Null).unwrap();
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = info.stride()[0] as usize;
    let map = sample.buffer().unwrap().map_readable().unwrap();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        rgb.extend_from_slice(&map[y * stride..y * stride + w * 3]);
    }
    Picture {
        width: w,
        height: h,
        rgb,
    }
}

fn get(d: &Daemon, path: &str) -> common::HttpResponse {
    http_request(
        d.http_port,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
}

fn snapshot(d: &Daemon) -> Picture {
    let r = get(d, "/snapshot.jpg?stream=video");
    assert_eq!(r.status, 200, "snapshot: {}", r.text());
    decode_jpeg(&r.body)
}

/// The colours of the seven bars along row `y` (bar centres across the width).
fn bars_across(p: &Picture, y: usize) -> Vec<&'static str> {
    (0..7)
        .map(|i| p.colour((2 * i + 1) * p.width / 14, y))
        .collect()
}

/// The colours of the seven bars down column `x`.
fn bars_down(p: &Picture, x: usize) -> Vec<&'static str> {
    (0..7)
        .map(|i| p.colour(x, (2 * i + 1) * p.height / 14))
        .collect()
}

const BARS: [&str; 7] = ["white", "yellow", "cyan", "green", "magenta", "red", "blue"];

/// Bearer token of the daemons under test (write endpoints need one).
const TOKEN: &str = "image-test-token";

fn start(extra: &[(&str, &str)]) -> Daemon {
    let mut b = daemon()
        .set("source.pattern", "smpte75")
        .set("http.token", TOKEN);
    for (k, v) in extra {
        b = b.set(k, v);
    }
    b.start()
}

fn patch(d: &Daemon, body: &str) -> serde_json::Value {
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
    assert_eq!(r.status, 200, "PATCH {body}: {}", r.text());
    r.json()
}

#[test]
fn hflip_reverses_the_bars_and_the_status_says_software() {
    let d = start(&[("image.hflip", "true")]);
    let p = snapshot(&d);
    assert_eq!((p.width, p.height), (320, 240));
    let mut reversed = BARS.to_vec();
    reversed.reverse();
    assert_eq!(bars_across(&p, p.height / 3), reversed);

    let status = get(&d, "/api/v1/streams/video").json();
    assert_eq!(status["image"][0]["setting"], "hflip");
    assert_eq!(status["image"][0]["backend"], "software");
    assert_eq!(status["image_software"], true);

    // Unflipped live through videoflip's video-direction: the bars return to their order.
    assert_eq!(
        patch(&d, r#"{"image": {"hflip": false}}"#)["applied"],
        "live"
    );
    assert!(
        wait_until(Duration::from_secs(10), || bars_across(&snapshot(&d), 80)
            == BARS.to_vec()),
        "bars did not return to their order"
    );
}

#[test]
fn rotation_90_makes_the_stream_h_by_w_with_bars_running_down() {
    let d = start(&[("image.rotation", "90")]);
    // What a viewer decodes.
    let probe = common::ffprobe(&d.url(), "tcp");
    let s = &probe["streams"][0];
    assert_eq!(
        (s["width"].as_i64(), s["height"].as_i64()),
        (Some(240), Some(320))
    );
    let p = snapshot(&d);
    assert_eq!((p.width, p.height), (240, 320));
    let status = get(&d, "/api/v1/streams/video").json();
    assert_eq!(
        (
            &status["encodings"][0]["width"],
            &status["encodings"][0]["height"]
        ),
        (&serde_json::json!(240), &serde_json::json!(320))
    );
    // Turned clockwise, the bars (originally left to right) run top to bottom on the right.
    let x = p.width * 3 / 4;
    assert_eq!(bars_down(&p, x), BARS.to_vec());
    // Each bar is a horizontal stripe now: one colour across.
    for (i, want) in BARS.iter().enumerate() {
        let y = (2 * i + 1) * p.height / 14;
        for x in (p.width / 3..p.width - 4).step_by(8) {
            assert_eq!(p.colour(x, y), *want, "at ({x}, {y})");
        }
    }
}

#[test]
fn roi_of_the_centre_quarter_magnifies_the_centre_bars() {
    let d = start(&[("image.roi", "[0.25, 0.25, 0.5, 0.5]")]);
    let p = snapshot(&d);
    assert_eq!((p.width, p.height), (320, 240));
    // The source's x from 80 to 240, at twice the size: yellow's right edge, cyan, green,
    // magenta, and red's left edge.
    let y = p.height / 4;
    let row: Vec<&str> = [10, 50, 140, 230, 310]
        .iter()
        .map(|x| p.colour(*x, y))
        .collect();
    assert_eq!(row, ["yellow", "cyan", "green", "magenta", "red"]);
    // A bar 320/7 ≈ 46 px wide in the source is ≈ 91 px wide here.
    let green = (0..p.width).filter(|x| p.colour(*x, y) == "green").count();
    assert!((84..=98).contains(&green), "green bar is {green} px wide");
    let status = get(&d, "/api/v1/streams/video").json();
    assert_eq!(status["image"][0]["setting"], "roi");
    assert_eq!(status["image"][0]["live"], false);
}

#[test]
fn overlay_with_seconds_changes_only_its_own_region() {
    let d = start(&[
        ("image.overlay.text", "%H:%M:%S"),
        ("image.overlay.position", "top-left"),
        ("image.overlay.font_size", "32"),
    ]);
    let a = snapshot(&d);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(2000).saturating_sub(t0.elapsed()));
    let b = snapshot(&d);
    // The text sits in the top-left corner: "HH:MM:SS" at 32 px is about 150 × 40 px.
    let inside = a.changed(&b, 0, 0, 170, 50);
    // Away from the text (and from the encoder's blocks around it), the picture is the same.
    let right = a.changed(&b, 190, 0, 320, 240);
    let below = a.changed(&b, 0, 70, 320, 240);
    eprintln!("overlay: changed pixels inside {inside}, right {right}, below {below}");
    assert!(
        inside > 40,
        "overlay region did not change: {inside} pixels"
    );
    assert!(
        right == 0 && below == 0,
        "rest changed: right {right}, below {below} pixels"
    );

    // A fixed text, live: the corner stops changing, and the camera did not restart.
    let restarts = get(&d, "/api/v1/streams/video").json()["restarts"].clone();
    assert_eq!(
        patch(&d, r#"{"image": {"overlay": {"text": "GARAGE"}}}"#)["applied"],
        "live"
    );
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || {
            snapshot(&d).changed(&b, 0, 0, 170, 50) > 40
        }),
        "the overlay text did not change"
    );
    // Past the GOP that may still hold the old text.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(t.elapsed()));
    let c = snapshot(&d);
    std::thread::sleep(Duration::from_millis(2000));
    let e = snapshot(&d);
    let fixed = c.changed(&e, 0, 0, 170, 50);
    assert!(fixed == 0, "a fixed overlay changed: {fixed} pixels");
    assert_eq!(
        get(&d, "/api/v1/streams/video").json()["restarts"],
        restarts
    );
}

/// An RTSP viewer that decodes to grey and keeps each frame's mean luma and arrival time.
struct LumaViewer {
    pipeline: gst::Pipeline,
    frames: Arc<Mutex<Vec<(Instant, f64)>>>,
    failed: Arc<AtomicBool>,
}

impl LumaViewer {
    fn start(url: &str) -> LumaViewer {
        gst_init();
        let pipeline = gst::parse::launch(&format!(
            "rtspsrc location={url} protocols=tcp latency=0 \
             ! rtph264depay wait-for-keyframe=true ! h264parse ! avdec_h264 output-corrupt=false \
             ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=out sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicBool::new(false));
        let sink = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let f = frames.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
                    let map = sample.buffer().unwrap().map_readable().unwrap();
                    let stride = info.stride()[0] as usize;
                    let (w, h) = (info.width() as usize, info.height() as usize);
                    let mut sum = 0u64;
                    for y in 0..h {
                        sum += map[y * stride..y * stride + w]
                            .iter()
                            .map(|v| u64::from(*v))
                            .sum::<u64>();
                    }
                    f.lock()
                        .unwrap()
                        .push((Instant::now(), sum as f64 / (w * h) as f64));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let fl = failed.clone();
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            if matches!(
                msg.view(),
                gst::MessageView::Error(_) | gst::MessageView::Eos(_)
            ) {
                fl.store(true, Ordering::SeqCst);
            }
            gst::BusSyncReply::Drop
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        LumaViewer {
            pipeline,
            frames,
            failed,
        }
    }

    fn count(&self) -> usize {
        self.frames.lock().unwrap().len()
    }

    /// Mean luma of the frames that arrived in `from..to`.
    fn mean(&self, from: Instant, to: Instant) -> Option<f64> {
        let f = self.frames.lock().unwrap();
        let v: Vec<f64> = f
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, l)| *l)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// The longest gap between decoded frames after `since`.
    fn max_gap_since(&self, since: Instant) -> Duration {
        let f = self.frames.lock().unwrap();
        let mut prev = since;
        let mut gap = Duration::ZERO;
        for (t, _) in f.iter().filter(|(t, _)| *t >= since) {
            gap = gap.max(*t - prev);
            prev = *t;
        }
        gap
    }
}

impl Drop for LumaViewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[test]
fn brightness_raised_live_while_a_viewer_plays() {
    let d = start(&[]);
    let v = LumaViewer::start(&d.url());
    assert!(
        wait_until(Duration::from_secs(20), || v.count() >= 20),
        "viewer got no pictures:\n{}",
        d.log()
    );
    let before_from = Instant::now();
    assert!(wait_until(Duration::from_secs(10), || v
        .mean(before_from, Instant::now())
        .is_some_and(|_| v.count() >= 35)));
    let patched_at = Instant::now();
    let before = v.mean(before_from, patched_at).unwrap();
    let status0 = get(&d, "/api/v1/streams/video").json();

    let answer = patch(&d, r#"{"image": {"brightness": 0.4}}"#);
    assert_eq!(answer["applied"], "live", "{answer}");
    // The pictures brighten in the same session.
    let brighter = wait_until(Duration::from_secs(10), || {
        let now = Instant::now();
        v.mean(now - Duration::from_millis(500), now)
            .is_some_and(|m| m > before + 25.0)
    });
    let after = v
        .mean(Instant::now() - Duration::from_millis(500), Instant::now())
        .unwrap_or(0.0);
    assert!(brighter, "mean luma {before:.1} -> {after:.1}");
    // Keep watching a while: no gap over 500 ms from just before the change.
    let until = Instant::now() + Duration::from_secs(2);
    wait_until(Duration::from_secs(3), || Instant::now() >= until);
    let gap = v.max_gap_since(patched_at - Duration::from_millis(200));
    assert!(gap < Duration::from_millis(500), "frame gap {gap:?}");
    eprintln!(
        "brightness 0 -> 0.4: mean luma {before:.1} -> {after:.1}, longest frame gap {gap:?}"
    );
    assert!(
        !v.failed.load(Ordering::SeqCst),
        "the viewer's session ended"
    );
    let status = get(&d, "/api/v1/streams/video").json();
    assert_eq!(
        status["restarts"], status0["restarts"],
        "the camera restarted"
    );
    assert_eq!(status["encodings"][0]["viewers"], 1, "{status}");
    assert_eq!(status["image"][0]["setting"], "brightness");
}

#[test]
fn controls_api_lists_each_setting_and_refuses_what_the_source_cannot_do() {
    let d = start(&[]);
    let c = get(&d, "/api/v1/streams/video/controls").json();
    assert_eq!(c["probed"], true);
    let list = c["controls"].as_array().unwrap();
    let control = |n: &str| list.iter().find(|x| x["name"] == n).unwrap().clone();
    let b = control("brightness");
    assert_eq!(b["backend"], "software");
    assert_eq!(b["live"], true);
    assert_eq!(b["range"]["min"], -1.0);
    assert_eq!(b["value"], 0.0);
    assert_eq!(control("rotation")["live"], true);
    assert_eq!(control("roi")["live"], false);
    let e = control("exposure");
    assert!(e["backend"].is_null());
    assert!(
        e["unsupported"]
            .as_str()
            .unwrap()
            .contains("no software fallback"),
        "{e}"
    );
    // The test pattern has no exposure control: refused, nothing changes.
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        br#"{"image": {"exposure": "short"}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("image.exposure"), "{}", r.text());
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        br#"{"image": {"brightness": 3}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("image.brightness = 3"), "{}", r.text());
    // A quarter turn changes the picture size: a restart, viewers kept.
    assert_eq!(
        patch(&d, r#"{"image": {"rotation": 270}}"#)["applied"],
        "restart"
    );
    assert_eq!(
        get(&d, "/api/v1/streams/video/controls").json()["controls"][2]["value"],
        270
    );
}

/// `camstream check` and the start of the daemon, for a source whose abilities are known.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(common::BIN)
        .args(args)
        .args(["--set", "rtsp.port=0", "--set", "http.port=0"])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("camstream runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn check_warns_on_software_and_fails_what_nothing_can_do() {
    let base = [
        "check",
        "--set",
        "source.kind=test",
        "--set",
        "encoder.kind=x264",
        "--set",
        "video.width=320",
        "--set",
        "video.height=240",
    ];
    let (code, out) = run(&[&base[..], &["--set", "image.rotation=90"]].concat());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warn video: image: software fallback: rotation by software"),
        "{out}"
    );
    let (code, out) = run(&[&base[..], &["--set", "image.awb=daylight"]].concat());
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("FAIL video: image: image.awb = \"daylight\" cannot be applied"),
        "{out}"
    );
    // The daemon refuses to start with it, naming the setting.
    let (code, out) = run(&[
        "--set",
        "source.kind=test",
        "--set",
        "encoder.kind=x264",
        "--set",
        "image.sharpness=3",
    ]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("image.sharpness = 3"), "{out}");
}

#[test]
fn sighup_applies_a_changed_image_section_live() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("camstream.toml");
    std::fs::write(&path, "[image]\nhflip = false\n").unwrap();
    let d = daemon()
        .set("source.pattern", "smpte75")
        .set("http.token", TOKEN)
        .arg("--config")
        .arg(path.display())
        .start();
    assert_eq!(bars_across(&snapshot(&d), 80), BARS.to_vec());
    let restarts = get(&d, "/api/v1/streams/video").json()["restarts"].clone();
    std::fs::write(&path, "[image]\nhflip = true\n").unwrap();
    d.signal("HUP");
    let mut reversed = BARS.to_vec();
    reversed.reverse();
    assert!(
        wait_until(Duration::from_secs(10), || bars_across(&snapshot(&d), 80)
            == reversed),
        "SIGHUP did not flip the picture:\n{}",
        d.log()
    );
    assert_eq!(
        get(&d, "/api/v1/streams/video").json()["restarts"],
        restarts
    );
    assert!(d.log().contains("Reconfigured live"), "{}", d.log());
}
