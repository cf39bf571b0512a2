//! Event hooks against the real daemon: a camera fault through a real path (a source element
//! that errors) runs the `camera_down` then the `camera_up` hooks, in order, with the event's
//! fields in the environment and as a webhook's JSON; a hook that hangs is killed (with what it
//! started) at its timeout while viewers keep their picture.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proto, Viewer, daemon, ffprobe, wait_until};

/// A source that errors after 30 frames (2 s at 15 fps), every time it is started.
const ERRORS: &str = "videotestsrc is-live=true ! identity error-after=30";

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Accepts webhook POSTs on loopback and keeps their bodies.
fn webhook_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then as many body bytes as Content-Length says.
            let body = loop {
                let Ok(n) = s.read(&mut buf) else { break None };
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body.to_string());
                    }
                }
            };
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            if let Some(body) = body {
                b.lock().unwrap().push(body);
            }
        }
    });
    (port, bodies)
}

#[test]
fn a_camera_fault_runs_camera_down_then_camera_up_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.log");
    let (port, posted) = webhook_server();
    let record = format!(
        "echo \"$CAMSTREAM_EVENT $CAMSTREAM_STREAM $CAMSTREAM_REASON\" >> {}",
        log.display()
    );
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[hooks]]
on = "camera_down"
run = ["sh", "-c", '{record}']

[[hooks]]
on = "camera_up"
run = ["sh", "-c", '{record}']

[[hooks]]
on = "camera_down"
webhook = "http://127.0.0.1:{port}/camstream"
"#
        ),
    )
    .unwrap();
    let d = daemon()
        .arg("--config")
        .arg(config.display())
        .set("source.kind", "pipeline")
        .set("source.pipeline", ERRORS)
        .start();
    assert!(
        wait_until(Duration::from_secs(30), || lines(&log).len() >= 2),
        "no camera_down/camera_up hooks ran: {:?}\n{}",
        lines(&log),
        d.log()
    );
    let l = lines(&log);
    assert_eq!(l[0], "camera_down video error", "{l:?}");
    assert_eq!(l[1], "camera_up video ", "{l:?}");
    // Downs and ups alternate: never two of a kind in a row.
    for w in lines(&log).windows(2) {
        assert_ne!(w[0].split(' ').next(), w[1].split(' ').next(), "{l:?}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || !posted
            .lock()
            .unwrap()
            .is_empty()),
        "the webhook got nothing"
    );
    let body: serde_json::Value = serde_json::from_str(&posted.lock().unwrap()[0]).unwrap();
    assert_eq!(body["event"], "camera_down");
    assert_eq!(body["stream"], "video");
    assert_eq!(body["reason"], "error");
    assert!(body["at_unix"].as_u64().unwrap() > 1_700_000_000);
    assert!(
        d.metric("camstream_hooks_runs_total{event=\"camera_down\",kind=\"run\",result=\"ok\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        d.metric(
            "camstream_hooks_runs_total{event=\"camera_down\",kind=\"webhook\",result=\"ok\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        d.metric("camstream_events_total{event=\"camera_up\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout_and_the_stream_is_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let (shell, child) = (dir.path().join("shell.pid"), dir.path().join("child.pid"));
    let (seen, left) = (dir.path().join("seen"), dir.path().join("left"));
    // The hook starts a child of its own and waits for it: both must go at the timeout.
    let script = format!(
        "echo \"$CAMSTREAM_STREAM $CAMSTREAM_PEER\" >> {seen}; \
         sleep 600 & echo $! > {c}.tmp; mv {c}.tmp {c}; echo $$ > {s}.tmp; mv {s}.tmp {s}; wait",
        seen = seen.display(),
        c = child.display(),
        s = shell.display()
    );
    let goodbye = format!(
        "echo \"$CAMSTREAM_EVENT $CAMSTREAM_STREAM $CAMSTREAM_PEER\" >> {}",
        left.display()
    );
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[hook_limits]
max_concurrent = 1

[[hooks]]
on = "viewer_connected"
run = ["sh", "-c", '{script}']
timeout_s = 3

[[hooks]]
on = "viewer_disconnected"
run = ["sh", "-c", '{goodbye}']
"#
        ),
    )
    .unwrap();
    let d = daemon().arg("--config").arg(config.display()).start();
    let v = Viewer::start(&d.url(), Proto::Tcp);
    assert!(
        wait_until(Duration::from_secs(10), || shell.exists() && child.exists()),
        "the hook did not start:\n{}",
        d.log()
    );
    let started = Instant::now();
    let pid = |p: &Path| -> u32 { std::fs::read_to_string(p).unwrap().trim().parse().unwrap() };
    let (sh_pid, sleep_pid) = (pid(&shell), pid(&child));
    assert!(!gone(sh_pid) && !gone(sleep_pid));
    // When the hook is killed is watched from here on its own thread, so the checks on the
    // stream below (slow on a busy machine) do not delay when the kill is seen.
    let killed = std::thread::spawn(move || {
        let seen = wait_until(Duration::from_secs(15), || gone(sh_pid) && gone(sleep_pid));
        seen.then(|| started.elapsed())
    });

    // While the hook hangs (and holds the only slot), the stream is untouched: the viewer
    // keeps decoding, and a new client (whose own hook waits) plays.
    assert!(v.wait_frames(10, Duration::from_secs(10)), "{}", d.log());
    let probe = ffprobe(&d.url(), "tcp");
    assert_eq!(probe["streams"][0]["width"], 320, "{probe}");

    let Some(took) = killed.join().unwrap() else {
        panic!(
            "the hanging hook (and its child) outlived the timeout:\n{}",
            d.log()
        );
    };
    assert!(
        took >= Duration::from_millis(2000) && took < Duration::from_secs(6),
        "killed after {took:?}, timeout 3 s"
    );
    assert!(d.wait_log("Hook command killed at its timeout", Duration::from_secs(5)));
    assert!(
        wait_until(Duration::from_secs(10), || {
            d
            .metric("camstream_hooks_runs_total{event=\"viewer_connected\",kind=\"run\",result=\"timeout\"}")
            .unwrap_or(0.0)
            >= 1.0
        }),
        "timeout counted"
    );
    // Over the whole hang, the viewer never waited long for a picture.
    let gap = v.max_gap_since(started);
    eprintln!(
        "hanging hook killed after {took:?} (timeout 3 s); largest frame gap meanwhile {gap:?}"
    );
    assert!(gap < Duration::from_millis(700), "largest gap {gap:?}");
    assert!(!v.errored());

    // The viewer events carry the stream and the peer; leaving is announced too (after the
    // second viewer_connected hook, ffprobe's, has had its slot).
    assert_eq!(lines(&seen)[0], "video 127.0.0.1");
    v.stop();
    assert!(
        wait_until(Duration::from_secs(20), || lines(&left)
            .iter()
            .filter(|l| *l == "viewer_disconnected video 127.0.0.1")
            .count()
            >= 2),
        "viewer_disconnected: {:?}\n{}",
        lines(&left),
        d.log()
    );
}

#[test]
fn check_reports_hooks_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        r#"
[[hooks]]
on = "camera_down"
run = ["/no/such/program", "x"]

[[hooks]]
on = "push_up"
run = ["sh", "-c", "true"]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(&config)
        .args(["--set", "source.kind=test", "--set", "encoder.kind=x264"])
        .args(["--set", "video.width=320", "--set", "video.height=240"])
        .args(["--set", "rtsp.port=0", "--set", "http.port=0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "FAIL hooks[0] (camera_down): \"/no/such/program\" is not an executable file"
        ),
        "{text}"
    );
    assert!(text.contains("ok   hooks[1] (push_up): runs /"), "{text}");
    assert!(!out.status.success());

    std::fs::write(&config, "[[hooks]]\nrun = [\"true\"]\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("hooks[0].on is missing"), "{err}");
}

#[test]
fn segments_and_failing_pushes_reach_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    let log = dir.path().join("events.log");
    let record = format!(
        "echo \"$CAMSTREAM_EVENT|$CAMSTREAM_STREAM|$CAMSTREAM_FILE|$CAMSTREAM_DURATION_S|$CAMSTREAM_PUSH|$CAMSTREAM_REASON\" >> {}",
        log.display()
    );
    // Nobody listens there: the push fails at once, and keeps failing.
    let dead = common::free_port();
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[record]
enabled = true
path = "{}"
segment_s = 1
part_ms = 500

[[push]]
name = "nowhere"
url = "rtsp://127.0.0.1:{dead}/x"
initial_backoff_ms = 200

[[hooks]]
on = "recording_segment"
run = ["sh", "-c", '{record}']

[[hooks]]
on = "push_down"
run = ["sh", "-c", '{record}']
"#,
            rec.display()
        ),
    )
    .unwrap();
    let d = daemon().arg("--config").arg(config.display()).start();
    let seen = |kind: &str| -> Vec<Vec<String>> {
        lines(&log)
            .iter()
            .map(|l| l.split('|').map(str::to_string).collect::<Vec<_>>())
            .filter(|f| f[0] == kind)
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || seen("recording_segment").len()
            >= 2
            && !seen("push_down").is_empty()),
        "{:?}\n{}",
        lines(&log),
        d.log()
    );
    for f in seen("recording_segment") {
        assert_eq!(f[1], "video");
        let file = Path::new(&f[2]);
        assert!(file.starts_with(&rec), "{f:?}");
        assert!(
            std::fs::metadata(file).is_ok_and(|m| m.len() > 0),
            "the segment exists: {f:?}"
        );
        let secs: f64 = f[3].parse().unwrap();
        assert!((0.5..2.5).contains(&secs), "{f:?}");
    }
    let down = &seen("push_down")[0];
    assert_eq!(
        (down[1].as_str(), down[4].as_str()),
        ("video", "nowhere"),
        "{down:?}"
    );
    assert!(!down[5].is_empty(), "a reason: {down:?}");
    // Once per outage, however many reconnections fail.
    assert!(
        d.wait_log_count("Output failed", 3, Duration::from_secs(15)),
        "the push keeps failing:\n{}",
        d.log()
    );
    assert_eq!(seen("push_down").len(), 1, "{:?}", lines(&log));
}

#[test]
fn a_push_that_comes_back_runs_push_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.log");
    let record = format!(
        "echo \"$CAMSTREAM_EVENT $CAMSTREAM_STREAM $CAMSTREAM_PUSH\" >> {}",
        log.display()
    );
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[push]]
name = "ground"
url = "srt://127.0.0.1:{port}?latency=120"
initial_backoff_ms = 200
max_backoff_ms = 1000

[[hooks]]
on = "push_down"
run = ["sh", "-c", '{record}']

[[hooks]]
on = "push_up"
run = ["sh", "-c", '{record}']
"#
        ),
    )
    .unwrap();
    let d = daemon().arg("--config").arg(config.display()).start();
    assert!(
        wait_until(Duration::from_secs(20), || !lines(&log).is_empty()),
        "no push_down:\n{}",
        d.log()
    );
    // The receiver comes up: an SRT listener (srt-tools), output thrown away.
    let mut listener = std::process::Command::new("srt-live-transmit")
        .arg(format!("srt://127.0.0.1:{port}?mode=listener"))
        .arg("file://con")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("srt-live-transmit runs (srt-tools, scripts/setup.sh --test)");
    let up = wait_until(Duration::from_secs(30), || lines(&log).len() >= 2);
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(up, "no push_up: {:?}\n{}", lines(&log), d.log());
    assert_eq!(
        lines(&log)[..2],
        ["push_down video ground", "push_up video ground"],
        "{:?}",
        lines(&log)
    );
}
