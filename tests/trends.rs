//! The page's trends: the daemon samples each stream's frame rate, bitrate and viewers into a
//! bounded ring (GET /api/v1/trends), and headless Chromium sees the card's trend draw the fps
//! drop of a camera fault injected here (a source that stalls after 8 s, restarted by the
//! supervisor), then the recovery. The screenshot goes to target/web-trend.png, and to
//! docs/web-trend.png when CAMSTREAM_UPDATE_SCREENSHOTS=1.

mod common;

use std::time::Duration;

use common::chromium::{browser, root};
use common::*;
use serde_json::Value;

/// 8 s of frames at 15 fps, then silence: the supervisor's stall detection restarts it.
const STALLS_AFTER_8S: &str = "videotestsrc num-buffers=120 is-live=true ! c. \
                               videotestsrc is-live=true ! valve drop=true ! c. concat name=c";

fn stalling_camera() -> Daemon {
    daemon()
        .set("source.kind", "pipeline")
        .set("source.pipeline", STALLS_AFTER_8S)
        .set("supervisor.stall_timeout_ms", "3000")
        .start()
}

/// Index of the first sample below 1 fps that follows one of at least 10 fps.
fn drop_in(fps: &[f64]) -> Option<usize> {
    let first_high = fps.iter().position(|&f| f >= 10.0)?;
    fps.iter()
        .enumerate()
        .skip(first_high)
        .find(|(_, f)| **f < 1.0)
        .map(|(i, _)| i)
}

#[test]
fn the_trend_api_keeps_the_fps_drop_of_a_stall() {
    let d = stalling_camera();
    let mut last = Value::Null;
    let dropped = wait_until(Duration::from_secs(40), || {
        last = d.get("/api/v1/trends").json();
        let fps: Vec<f64> = last["streams"]["video"]["fps"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        drop_in(&fps).is_some_and(|i| fps[i..].iter().any(|&f| f >= 10.0))
    });
    assert!(
        dropped,
        "no drop and recovery in the trend: {last}\n{}",
        d.log()
    );
    assert_eq!(last["interval_s"], 2, "{last}");
    assert_eq!(last["window_s"], 600, "{last}");
    let v = &last["streams"]["video"];
    let n = v["t"].as_array().map_or(0, Vec::len);
    for key in ["fps", "kbps", "viewers"] {
        assert_eq!(v[key].as_array().map_or(0, Vec::len), n, "{key}: {last}");
    }
    assert!(
        v["kbps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k.as_f64() > Some(10.0)),
        "no bitrate in the trend: {last}"
    );
    // The script the page draws with is served with the page.
    let js = d.get("/web/trend.js");
    assert_eq!(js.status, 200);
    assert!(js.text().contains("camstreamTrend"));
    assert!(
        d.get("/")
            .text()
            .contains("<script src=\"/web/trend.js\"></script>")
    );
}

#[test]
fn the_card_trend_shows_the_fps_drop_in_chromium() {
    let d = stalling_camera();
    let url = format!("http://127.0.0.1:{}/", d.http_port);
    let shot = root().join("target/web-trend.png");
    let r = browser(&[
        "trend",
        &url,
        "video",
        "--seconds",
        "60",
        "--recovered",
        "--screenshot",
        shot.to_str().unwrap(),
    ]);
    assert_eq!(r["ok"], true, "{r}\n{}", d.log());
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["console_errors"], serde_json::json!([]), "{r}");
    // The scale's top is at least the configured 15 fps.
    assert!(r["top"].as_f64() >= Some(15.0), "{r}");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    if std::env::var("CAMSTREAM_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        std::fs::copy(&shot, root().join("docs/web-trend.png")).expect("copy the screenshot");
    }
}
