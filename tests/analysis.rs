//! The AI frame hook against a small server in the test that implements Ollama's
//! `POST /api/generate` contract: the request carries the configured model and prompt and a
//! valid JPEG of the stream's size (decoded by ffmpeg), the answer shows in the status API and
//! reaches hooks as an `analysis` event; an endpoint that is slow or down is retried with
//! backoff, one request at a time, while the stream plays on.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Proto, Viewer, daemon, ffprobe, promtool_accepts, wait_until};

/// Reads one HTTP request (head and Content-Length body).
fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if raw.len() - split - 4 >= len {
            return Some((head, raw[split + 4..split + 4 + len].to_vec()));
        }
    }
}

/// What the fake Ollama saw.
#[derive(Default)]
struct Seen {
    requests: Vec<serde_json::Value>,
    heads: Vec<String>,
    at: Vec<Instant>,
}

/// Serves `/api/generate` like Ollama; with `answer_after` = None it never answers (slow).
fn ollama(answer_after: Option<Duration>) -> (u16, Arc<Mutex<Seen>>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (s2, m2) = (seen.clone(), max_in_flight.clone());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (seen, max, now) = (s2.clone(), m2.clone(), in_flight.clone());
            std::thread::spawn(move || {
                let Some((head, body)) = read_request(&mut conn) else {
                    return;
                };
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let count = {
                    let mut s = seen.lock().unwrap();
                    s.requests.push(v);
                    s.heads.push(head);
                    s.at.push(Instant::now());
                    s.requests.len()
                };
                match answer_after {
                    Some(delay) => {
                        std::thread::sleep(delay);
                        let reply = serde_json::json!({
                            "model": "llava",
                            "created_at": "2026-12-02T13:00:00Z",
                            "response": format!(" A test card with colour bars (answer {count}). "),
                            "done": true,
                        })
                        .to_string();
                        let _ = conn.write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                                reply.len()
                            )
                            .as_bytes(),
                        );
                    }
                    // Slow: hold the connection until the client gives up.
                    None => {
                        let mut sink = [0u8; 16];
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                        let _ = conn.read(&mut sink);
                    }
                }
                now.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, seen, max_in_flight)
}

/// Width and height of a JPEG that ffmpeg decodes without an error.
fn decode_jpeg(data: &[u8], dir: &std::path::Path) -> (i64, i64) {
    assert_eq!(&data[..2], &[0xFF, 0xD8], "JPEG start marker");
    let path = dir.join("sent.jpg");
    std::fs::write(&path, data).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "the JPEG does not decode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(v["streams"][0]["codec_name"], "mjpeg");
    (
        v["streams"][0]["width"].as_i64().unwrap(),
        v["streams"][0]["height"].as_i64().unwrap(),
    )
}

#[test]
fn the_picture_goes_to_the_model_and_the_answer_to_status_and_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen, max_in_flight) = ollama(Some(Duration::from_millis(300)));
    let answers = dir.path().join("answers.log");
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[analysis]
enabled = true
url = "http://127.0.0.1:{port}"
model = "llava:7b"
prompt = "What is in this picture?"
interval_s = 1
width = 320

[[hooks]]
on = "analysis"
run = ["sh", "-c", 'echo "$CAMSTREAM_STREAM|$CAMSTREAM_MODEL|$CAMSTREAM_ANSWER" >> {}']
"#,
            answers.display()
        ),
    )
    .unwrap();
    let d = daemon().arg("--config").arg(config.display()).start();
    assert!(
        wait_until(Duration::from_secs(20), || seen
            .lock()
            .unwrap()
            .requests
            .len()
            >= 2),
        "no requests reached the model server:\n{}",
        d.log()
    );
    let (req, head) = {
        let s = seen.lock().unwrap();
        (s.requests[0].clone(), s.heads[0].clone())
    };
    assert!(head.starts_with("POST /api/generate HTTP/1.1"), "{head}");
    assert_eq!(req["model"], "llava:7b");
    assert_eq!(req["prompt"], "What is in this picture?");
    assert_eq!(req["stream"], false);
    let images = req["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(images[0].as_str().unwrap())
        .expect("images[0] is base64");
    assert_eq!(
        decode_jpeg(&jpeg, dir.path()),
        (320, 240),
        "the stream's size"
    );

    assert!(
        wait_until(Duration::from_secs(10), || {
            d.get("/api/v1/status").json()["analysis"]["answer"]
                .as_str()
                .is_some_and(|a| a.starts_with("A test card with colour bars (answer"))
        }),
        "the answer is not in the status: {}",
        d.get("/api/v1/status").json()["analysis"]
    );
    let st = d.get("/api/v1/status").json()["analysis"].clone();
    assert_eq!(st["model"], "llava:7b");
    assert_eq!(st["stream"], "video");
    assert_eq!(st["picture"], serde_json::json!([320, 240]));
    assert!(st["duration_ms"].as_u64().unwrap() >= 300, "{st}");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            &answers
        )
        .unwrap_or_default()
        .starts_with("video|llava:7b|A test card with colour bars (answer 1)")),
        "the analysis hook did not run: {:?}",
        std::fs::read_to_string(&answers)
    );
    assert!(
        d.metric("camstream_analysis_requests_total{result=\"ok\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        d.metric("camstream_analysis_last_success_timestamp_seconds")
            .unwrap_or(0.0)
            > 1.7e9
    );
    assert!(
        wait_until(Duration::from_secs(10), || d
            .metric("camstream_hooks_runs_total{event=\"analysis\",kind=\"run\",result=\"ok\"}")
            .unwrap_or(0.0)
            >= 1.0),
        "the analysis hook's run is counted"
    );
    promtool_accepts(&d.get("/metrics").text());
    // One request at a time, one interval apart at least.
    assert_eq!(max_in_flight.load(Ordering::SeqCst), 1);
    let at = seen.lock().unwrap().at.clone();
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(900),
            "requests too close: {:?}",
            w[1] - w[0]
        );
    }
}

/// Runs the daemon against `url`, checks the stream is untouched while requests fail, and
/// returns the analysis status.
fn failing_endpoint(url: &str, timeout_s: u32) -> (serde_json::Value, common::Daemon) {
    let d = daemon()
        .set("analysis.enabled", "true")
        .set("analysis.url", url)
        .set("analysis.interval_s", "1")
        .set("analysis.timeout_s", timeout_s)
        .set("analysis.max_backoff_s", "4")
        .start();
    let v = Viewer::start(&d.url(), Proto::Tcp);
    assert!(v.wait_frames(5, Duration::from_secs(15)), "{}", d.log());
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || {
            d.get("/api/v1/status").json()["analysis"]["failed"].as_u64() >= Some(2)
        }),
        "no failures recorded:\n{}",
        d.log()
    );
    // Streaming never noticed: frames kept coming, readiness stayed, a new client plays.
    let gap = v.max_gap_since(t0);
    eprintln!("{url}: largest frame gap while requests failed {gap:?}");
    assert!(gap < Duration::from_millis(700), "largest gap {gap:?}");
    assert_eq!(d.get("/readyz").status, 200);
    assert_eq!(ffprobe(&d.url(), "tcp")["streams"][0]["width"], 320);
    let st = d.get("/api/v1/status").json()["analysis"].clone();
    assert!(st["answer"].is_null(), "{st}");
    assert!(st["consecutive_failures"].as_u64() >= Some(2), "{st}");
    assert!(
        d.metric("camstream_analysis_requests_total{result=\"failed\"}")
            .unwrap_or(0.0)
            >= 2.0
    );
    (st, d)
}

#[test]
fn a_down_endpoint_backs_off_and_leaves_streaming_untouched() {
    // A port nobody listens on.
    let port = common::free_port();
    let (st, d) = failing_endpoint(&format!("http://127.0.0.1:{port}"), 2);
    let e = st["last_error"].as_str().unwrap();
    assert!(e.contains("cannot connect"), "{e}");
    // Backoff: 1 s, 2 s, 4 s... so after the second failure the third is not immediate.
    assert!(d.wait_log("Analysis failed", Duration::from_secs(1)));
    assert!(d.log().contains("retry_s=2"), "{}", d.log());
}

#[test]
fn a_slow_endpoint_times_out_one_request_at_a_time() {
    let (port, seen, max_in_flight) = ollama(None);
    let (st, _d) = failing_endpoint(&format!("http://127.0.0.1:{port}/"), 1);
    let e = st["last_error"].as_str().unwrap();
    assert!(e.contains("no answer") && e.contains("within 1 s"), "{e}");
    assert!(seen.lock().unwrap().requests.len() >= 2);
    assert_eq!(
        max_in_flight.load(Ordering::SeqCst),
        1,
        "one request in flight"
    );
}
