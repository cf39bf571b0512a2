//! Access control as clients and operators see it: RTSP Digest and Basic, password files and
//! the seeds' variables, malformed credentials from a raw client, RTSPS, the viewer cap, the
//! request size limit, the HTTP bearer token, and secrets kept out of logs and status.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, Proto, Viewer, daemon, ffprobe, http_request, raw_exchange, wait_until};

const PASSWORD: &str = "Corr3ct-Horse";

fn with_user(methods: &str) -> Daemon {
    daemon()
        .set("auth.username", "alice")
        .set("auth.password", PASSWORD)
        .set("auth.methods", methods)
        .start()
}

fn creds(user: &str, pw: &str) -> String {
    format!("user-id={user} user-pw={pw}")
}

/// Status line of the reply to one request on a fresh connection.
fn status_of(port: u16, request: &str) -> String {
    let r = raw_exchange(port, request.as_bytes(), Duration::from_secs(3));
    String::from_utf8_lossy(&r)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn describe(port: u16, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    status_of(
        port,
        &format!(
            "DESCRIBE rtsp://127.0.0.1:{port}/video RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n{auth}\r\n"
        ),
    )
}

fn assert_refused_viewer(d: &Daemon, extra: &str) {
    let v = Viewer::start_with(&d.url(), Proto::Tcp, extra);
    assert!(
        wait_until(Duration::from_secs(10), || v.errored()),
        "viewer with {extra:?} was not refused"
    );
    assert_eq!(v.frames(), 0, "a refused viewer decoded frames");
}

#[test]
fn digest_refuses_wrong_credentials_and_admits_right_ones() {
    let d = with_user("[\"digest\"]");
    assert!(describe(d.rtsp_port, None).contains("401"));
    assert_refused_viewer(&d, "");
    assert_refused_viewer(&d, &creds("alice", "wrong"));
    assert_refused_viewer(&d, &creds("mallory", PASSWORD));
    let v = Viewer::start_with(&d.url(), Proto::Tcp, &creds("alice", PASSWORD));
    assert!(v.wait_frames(10, Duration::from_secs(20)), "{}", d.log());
    // The challenge offers Digest only.
    let r = raw_exchange(
        d.rtsp_port,
        format!(
            "DESCRIBE rtsp://127.0.0.1:{}/video RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            d.rtsp_port
        )
        .as_bytes(),
        Duration::from_secs(2),
    );
    let text = String::from_utf8_lossy(&r);
    assert!(text.contains("WWW-Authenticate: Digest"), "{text}");
    assert!(!text.contains("WWW-Authenticate: Basic"), "{text}");
    // Failed logins are counted and logged with the peer, never with the password.
    assert!(d.metric("camstream_auth_failures_total") >= Some(2.0));
    assert!(d.wait_log("RTSP login refused", Duration::from_secs(5)));
    assert!(d.log().contains("peer=\"127.0.0.1\""));
    assert!(!d.log().contains(PASSWORD), "password in log");
    assert!(!d.log().contains("wrong"), "tried password in log");
}

#[test]
fn basic_works_and_ffprobe_uses_url_credentials() {
    let d = with_user("[\"basic\"]");
    assert!(describe(d.rtsp_port, None).contains("401"));
    assert_refused_viewer(&d, &creds("alice", "nope"));
    let v = Viewer::start_with(&d.url(), Proto::Tcp, &creds("alice", PASSWORD));
    assert!(v.wait_frames(10, Duration::from_secs(20)));
    let url = format!("rtsp://alice:{PASSWORD}@127.0.0.1:{}/video", d.rtsp_port);
    assert_eq!(ffprobe(&url, "tcp")["streams"][0]["codec_name"], "h264");
    assert!(
        d.log()
            .contains("Basic authentication is offered without TLS")
    );
    let basic = "Basic YWxpY2U6Q29ycjNjdC1Ib3JzZQ=="; // alice:Corr3ct-Horse
    assert!(describe(d.rtsp_port, Some(basic)).contains("200"));
}

#[test]
fn password_file_and_seed_variables() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("rtsp-password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let d = daemon()
        .set("auth.username", "bob")
        .set("auth.password_file", pw.display())
        .start();
    let v = Viewer::start_with(&d.url(), Proto::Tcp, &creds("bob", PASSWORD));
    assert!(v.wait_frames(5, Duration::from_secs(20)));
    assert_refused_viewer(&d, &creds("bob", "x"));
    drop(d);

    let d = daemon()
        .env("RTSP_AUTH", "true")
        .env("RTSP_USERNAME", "seed")
        .env("RTSP_PASSWORD", PASSWORD)
        .set("http.token", "admin-t0ken")
        .start();
    assert_refused_viewer(&d, "");
    let v = Viewer::start_with(&d.url(), Proto::Udp, &creds("seed", PASSWORD));
    assert!(v.wait_frames(5, Duration::from_secs(20)));
    // The seeds' account closes status to visitors too; the admin token sees the configuration.
    assert_eq!(d.get("/api/v1/status").status, 401);
    let status = http_request(
        d.http_port,
        "GET",
        "/api/v1/status",
        &[("Authorization", "Bearer admin-t0ken")],
        b"",
    )
    .text();
    assert!(!status.contains(PASSWORD), "password in status: {status}");
    assert!(status.contains("<redacted>"));
}

#[test]
fn malformed_authorization_headers_get_errors_and_viewers_keep_playing() {
    let d = with_user("[\"digest\", \"basic\"]");
    let v = Viewer::start_with(&d.url(), Proto::Tcp, &creds("alice", PASSWORD));
    assert!(v.wait_frames(5, Duration::from_secs(20)));
    let long = format!("Basic {}", "A".repeat(64 * 1024));
    let cases: Vec<String> = vec![
        "".into(),
        "Basic".into(),
        "Basic ".into(),
        "Basic !!!!not-base64!!!!".into(),
        "Basic YWxpY2U=".into(), // "alice", no colon
        "Basic Og==".into(),     // ":"
        long,
        "Digest".into(),
        "Digest username=\"alice\"".into(),
        "Digest username=\"alice\", realm=\"camstream\"".into(),
        "Digest username=\"alice\", realm=\"camstream\", nonce=\"0000\", uri=\"/video\", response=\"00000000000000000000000000000000\"".into(),
        "Digest ,,,,====\"\"\"".into(),
        "Bearer abc".into(),
        "\u{1}\u{2}\u{3}".into(),
    ];
    for (i, c) in cases.iter().enumerate() {
        let s = describe(d.rtsp_port, Some(c));
        assert!(
            s.is_empty() || s.contains(" 4") || s.contains(" 5"),
            "case {i}: got {s:?}"
        );
        assert!(!s.contains(" 200"), "case {i} was admitted");
    }
    // A stale nonce: take a real challenge, answer it with a made-up nonce.
    let s = describe(
        d.rtsp_port,
        Some(
            "Digest username=\"alice\", realm=\"camstream\", nonce=\"deadbeefdeadbeef\", uri=\"rtsp://127.0.0.1/video\", response=\"0123456789abcdef0123456789abcdef\"",
        ),
    );
    assert!(s.contains("401"), "{s}");
    let before = v.frames();
    assert!(
        v.wait_frames(before + 10, Duration::from_secs(10)),
        "viewer stalled"
    );
    assert!(!v.errored());
    assert_eq!(d.get("/healthz").status, 200);
}

#[test]
fn rtsps_serves_tls_clients_and_refuses_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg("/CN=127.0.0.1")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let d = daemon()
        .set("tls.cert_file", cert.display())
        .set("tls.key_file", key.display())
        .start();
    assert!(d.log().contains("rtsps://"), "{}", d.log());
    let url = format!("rtsps://127.0.0.1:{}/video", d.rtsp_port);
    let v = Viewer::start_with(&url, Proto::Tcp, "tls-validation-flags=0");
    assert!(v.wait_frames(10, Duration::from_secs(20)), "{}", d.log());
    assert_eq!(v.size(), Some((320, 240)));
    // Plain RTSP on the TLS port gets no RTSP answer.
    let s = status_of(
        d.rtsp_port,
        "OPTIONS rtsp://127.0.0.1/video RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    );
    assert!(!s.starts_with("RTSP/1.0"), "plain client answered: {s:?}");
    // rtspsrc gives up on a silent server after its TCP timeout (20 s by default): shorten it.
    let plain = Viewer::start_with(&d.url(), Proto::Tcp, "tcp-timeout=3000000");
    assert!(wait_until(Duration::from_secs(15), || plain.errored()));
    assert_eq!(plain.frames(), 0);
    // UDP is not offered over TLS.
    let udp = Viewer::start_with(&url, Proto::Udp, "tls-validation-flags=0");
    assert!(wait_until(Duration::from_secs(15), || udp.errored()
        || udp.frames() > 0));
    assert_eq!(udp.frames(), 0, "media went over UDP beside TLS");
}

#[test]
fn viewer_cap_refuses_the_next_viewer_cleanly() {
    let d = daemon().set("rtsp.max_viewers", 2).start();
    let a = Viewer::start(&d.url(), Proto::Tcp);
    let b = Viewer::start(&d.url(), Proto::Udp);
    assert!(a.wait_frames(5, Duration::from_secs(20)));
    assert!(b.wait_frames(5, Duration::from_secs(20)));
    let c = Viewer::start(&d.url(), Proto::Tcp);
    assert!(
        wait_until(Duration::from_secs(10), || c.errored()),
        "third viewer admitted"
    );
    assert_eq!(c.frames(), 0);
    assert!(d.wait_log("Viewer limit reached", Duration::from_secs(5)));
    assert_eq!(
        d.metric("camstream_rtsp_rejected_total{reason=\"max_viewers\"}"),
        Some(1.0)
    );
    let (fa, fb) = (a.frames(), b.frames());
    assert!(a.wait_frames(fa + 10, Duration::from_secs(10)));
    assert!(b.wait_frames(fb + 10, Duration::from_secs(10)));
    // A raw SETUP over the cap gets 503.
    let port = d.rtsp_port;
    let s = status_of(
        port,
        &format!(
            "SETUP rtsp://127.0.0.1:{port}/video/stream=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        ),
    );
    assert!(s.contains("503"), "{s}");
}

#[test]
fn oversized_bodies_are_refused_and_memory_stays_flat() {
    let d = daemon().set("rtsp.max_request_bytes", 4096).start();
    let v = Viewer::start(&d.url(), Proto::Tcp);
    assert!(v.wait_frames(5, Duration::from_secs(20)));
    let rss0 = d.rss_kib();
    let body = vec![b'x'; 256 * 1024];
    for _ in 0..20 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", d.rtsp_port)) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let head = format!(
            "SET_PARAMETER rtsp://127.0.0.1/video RTSP/1.0\r\nCSeq: 1\r\nContent-Type: text/parameters\r\nContent-Length: {}\r\n\r\n",
            100 * 1024 * 1024
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&body);
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(!reply.contains(" 200"), "oversized body accepted: {reply}");
    }
    let rss1 = d.rss_kib();
    println!("RSS before {rss0} KiB, after 20 oversized bodies {rss1} KiB");
    assert!(rss1 < rss0 + 8 * 1024, "RSS grew from {rss0} to {rss1} KiB");
    let f = v.frames();
    assert!(v.wait_frames(f + 10, Duration::from_secs(10)));
}

#[test]
fn idle_connections_are_closed() {
    let d = daemon().set("rtsp.idle_timeout_s", 2).start();
    let mut s = TcpStream::connect(("127.0.0.1", d.rtsp_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the server to close the idle connection");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    // The line is logged before the close; the harness reads the log on its own thread.
    assert!(d.wait_log("Closing idle connection", Duration::from_secs(5)));
}

#[test]
fn bearer_token_guards_api_and_snapshot_only() {
    let d = daemon().set("http.token", "t0ken-xyz").start();
    for path in ["/api/v1/status", "/snapshot.jpg"] {
        let r = d.get(path);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = http_request(
            d.http_port,
            "GET",
            path,
            &[("Authorization", "Bearer wrong")],
            b"",
        );
        assert_eq!(r.status, 401, "{path}");
        let r = http_request(
            d.http_port,
            "GET",
            path,
            &[("Authorization", "Bearer t0ken-xyz")],
            b"",
        );
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(d.get("/readyz").status, 200);
    assert_eq!(d.get("/metrics").status, 200);
    let r = http_request(
        d.http_port,
        "GET",
        "/api/v1/status",
        &[("Authorization", "Bearer t0ken-xyz")],
        b"",
    );
    assert!(!r.text().contains("t0ken-xyz"), "token in status");
    assert!(!d.log().contains("t0ken-xyz"), "token in log");
}

#[test]
fn protected_metrics_and_a_separate_api_listener() {
    let api_port = common::free_port();
    let d = daemon()
        .set("http.token", "abc123")
        .set("http.protect_metrics", true)
        .set("http.api_address", "127.0.0.1")
        .set("http.api_port", api_port)
        .start();
    assert_eq!(d.get("/metrics").status, 401);
    assert_eq!(d.get("/healthz").status, 200);
    // The API lives only on its own listener.
    assert_eq!(d.get("/api/v1/status").status, 404);
    let auth = [("Authorization", "Bearer abc123")];
    assert_eq!(
        http_request(api_port, "GET", "/api/v1/status", &auth, b"").status,
        200
    );
    assert_eq!(
        http_request(api_port, "GET", "/metrics", &auth, b"").status,
        404
    );
}
