//! Bad configuration is refused before anything starts, with exit code 2 and the offending key
//! or value in the message; `camstream check` names what is missing.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};

use common::BIN;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("timeout");
    c.arg("60").arg(BIN).args(args);
    c.env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_refused(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    assert!(
        text(o).contains(needle),
        "expected {needle:?} in:\n{}",
        text(o)
    );
}

/// A config file in a temp dir, kept alive by the returned guard.
fn config_file(body: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("camstream.toml");
    std::fs::write(&path, body).unwrap();
    let p = path.to_string_lossy().into_owned();
    (dir, p)
}

#[test]
fn unknown_key_in_file_names_key_and_file() {
    let (_d, path) = config_file("[video]\nwidht = 640\n");
    let o = run(&["--config", &path], &[]);
    assert_refused(&o, "widht");
    assert!(text(&o).contains("TOML file"), "{}", text(&o));
}

#[test]
fn unknown_environment_key_names_the_variable_layer() {
    let o = run(&["--source", "test"], &[("CAMSTREAM_VIDEO__COLOUR", "red")]);
    assert_refused(&o, "colour");
    assert!(text(&o).contains("CAMSTREAM_"), "{}", text(&o));
}

#[test]
fn bad_values_exit_2_with_the_key() {
    assert_refused(&run(&["--width", "641"], &[]), "video.width");
    assert_refused(&run(&["--height", "0"], &[]), "video.height");
    assert_refused(&run(&["--fps", "500"], &[]), "video.fps");
    assert_refused(&run(&["--set", "rtsp.mount="], &[]), "rtsp.mount");
    assert_refused(
        &run(
            &[
                "--set",
                "encoder.level=3",
                "--width",
                "1920",
                "--height",
                "1080",
            ],
            &[],
        ),
        "too low",
    );
    assert_refused(&run(&[], &[("STREAM_FPS", "0")]), "video.fps");
    assert_refused(&run(&["--source", "webcam"], &[]), "webcam");
    assert_refused(
        &run(&["--config", "/nonexistent/c.toml"], &[]),
        "/nonexistent/c.toml",
    );
}

#[test]
fn port_in_use_exits_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let http = common::free_port().to_string();
    let o = run(
        &[
            "--source",
            "test",
            "--rtsp-address",
            "127.0.0.1",
            "--rtsp-port",
            &port,
            "--http-port",
            &http,
        ],
        &[],
    );
    assert_refused(&o, &format!("rtsp.port = {port}"));
    let rtsp = common::free_port().to_string();
    let o = run(
        &[
            "--source",
            "test",
            "--rtsp-address",
            "127.0.0.1",
            "--rtsp-port",
            &rtsp,
            "--set",
            "http.address=127.0.0.1",
            "--http-port",
            &port,
        ],
        &[],
    );
    assert_refused(&o, &format!("http.port = {port}"));
}

#[test]
fn check_names_a_missing_element_and_its_package() {
    // No libcamera on this machine: check must say what to install.
    let o = run(
        &["check", "--source", "libcamera", "--encoder", "x264"],
        &[],
    );
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("libcamerasrc"), "{t}");
    assert!(t.contains("gstreamer1.0-libcamera"), "{t}");
}

#[test]
fn check_passes_for_the_test_pattern_and_shows_layers() {
    let (rtsp, http) = (
        common::free_port().to_string(),
        common::free_port().to_string(),
    );
    let o = run(
        &[
            "check",
            "--source",
            "test",
            "--encoder",
            "x264",
            "--rtsp-port",
            &rtsp,
            "--http-port",
            &http,
        ],
        &[("STREAM_WIDTH", "640"), ("STREAM_HEIGHT", "480")],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("width = 640") && t.contains("height = 480"),
        "{t}"
    );
    assert!(t.contains("test encode"), "{t}");
    assert!(t.contains("H.264 level 3 (derived)"), "{t}");
    assert!(t.contains("all ") && t.contains("checks passed"), "{t}");
}

#[test]
fn check_with_a_missing_v4l2_device_fails() {
    let o = run(
        &["check", "--source", "v4l2", "--device", "/dev/video99"],
        &[],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o).contains("/dev/video99 does not exist"),
        "{}",
        text(&o)
    );
}

#[test]
fn auto_source_without_a_camera_says_so_clearly() {
    let o = run(&["check", "--source", "auto"], &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o).contains("no camera found"), "{}", text(&o));
    assert!(text(&o).contains("source.kind = \"test\""), "{}", text(&o));
}
