//! ONVIF events (issue 25): Home Assistant's ONVIF library (onvif-zeep-async, in the venv
//! tests/onvif/setup-venv.sh makes) finds the event service in GetCapabilities, subscribes with
//! a PullPoint as HA does, and receives IsMotion true then false from a scene whose ball moves
//! and then stops; wrong credentials are refused.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

use common::daemon;

const USER: &str = "nvr";
const PASSWORD: &str = "pa ss&<word>";
const FPS: u32 = 10;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Makes the venvs once per test binary.
fn setup() {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        let status = Command::new("bash")
            .arg(root().join("tests/onvif/setup-venv.sh"))
            .status()
            .expect("bash runs");
        assert!(status.success(), "tests/onvif/setup-venv.sh failed");
    });
}

fn ha_events(port: u16, user: &str, password: &str, secs: u32) -> serde_json::Value {
    let out = Command::new("timeout")
        .arg(format!("{}", secs + 40))
        .arg(root().join("target/onvif-ha-venv/bin/python"))
        .arg(root().join("tests/onvif/ha_events.py"))
        .args([
            "127.0.0.1",
            &port.to_string(),
            user,
            password,
            &secs.to_string(),
        ])
        .output()
        .expect("python runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ha_events.py printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn home_assistants_client_receives_motion_true_then_false() {
    setup();
    // Black, then a moving ball from 8 s (time for the client to subscribe) for 2 s; then the
    // picture stands still and motion ends after the 1 s cooldown.
    let scene = format!(
        "videotestsrc is-live=true pattern=black ! video/x-raw,width=320,height=180,framerate={FPS}/1 ! c. \
         videotestsrc pattern=ball timestamp-offset=8000000000 num-buffers=20 ! video/x-raw,width=320,height=180,framerate={FPS}/1 ! c. \
         compositor name=c background=black"
    );
    let d = daemon()
        .set("source.kind", "pipeline")
        .set("source.pipeline", scene)
        .set("video.width", 320)
        .set("video.height", 180)
        .set("video.fps", FPS)
        .set("encoder.keyframe_interval", FPS)
        .set("motion.enabled", true)
        .set("motion.cooldown_ms", 1000)
        .set("onvif.enabled", true)
        .set("onvif.discovery", false)
        .set("auth.username", USER)
        .set("auth.password", PASSWORD)
        .start();
    let got = ha_events(d.http_port, USER, PASSWORD, 30);
    assert!(got["refused"].is_null(), "{got}\n{}", d.log());
    assert_eq!(got["capabilities"]["pullpoint"], true, "{got}");
    assert!(
        got["capabilities"]["events_xaddr"]
            .as_str()
            .is_some_and(|a| a.ends_with("/onvif/events_service")),
        "{got}"
    );
    assert_eq!(got["fixed_topic_set"], true, "{got}");
    assert_eq!(got["renewed"], true, "{got}");
    let messages = got["messages"].as_array().cloned().unwrap_or_default();
    let cell: Vec<(&str, &str)> = messages
        .iter()
        .filter(|m| m["topic"] == "tns1:RuleEngine/CellMotionDetector/Motion")
        .map(|m| {
            assert_eq!(m["name"], "IsMotion", "{m}");
            assert_eq!(
                m["source"]["VideoSourceConfigurationToken"], "source_config_video",
                "{m}"
            );
            assert!(m["source"]["Rule"].is_string(), "{m}");
            (
                m["value"].as_str().unwrap_or(""),
                m["op"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let first_true = cell.iter().position(|(v, _)| *v == "true");
    let false_after = first_true.and_then(|i| cell[i..].iter().position(|(v, _)| *v == "false"));
    assert!(
        first_true.is_some() && false_after.is_some(),
        "no IsMotion true then false: {cell:?}\n{}",
        d.log()
    );
    // The state at subscription and synchronisation is `Initialized`, changes `Changed`.
    assert_eq!(cell[0].1, "Initialized", "{cell:?}");
    assert!(
        cell.iter().any(|(v, op)| *v == "true" && *op == "Changed"),
        "{cell:?}"
    );
    let alarm: Vec<&serde_json::Value> = messages
        .iter()
        .filter(|m| m["topic"] == "tns1:VideoSource/MotionAlarm")
        .collect();
    assert!(
        alarm.iter().any(|m| m["name"] == "State"
            && m["value"] == "true"
            && m["source"]["Source"] == "source_video"),
        "{alarm:?}"
    );
    eprintln!("figures: onvif-zeep-async pulled IsMotion {cell:?}");

    let refused = ha_events(d.http_port, USER, "wrong", 1);
    assert!(
        refused["refused"].as_str().is_some_and(|r| !r.is_empty()),
        "{refused}"
    );
}
