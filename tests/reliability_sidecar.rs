//! Abuse of the HTTP sidecar: slow-loris connections and oversized headers. They must time out
//! or be refused without touching the RTSP stream, and the sidecar must answer again afterwards.
//! The sidecar's limits (src/http.rs): 5 s to send headers, 16 KiB of headers, 64 connections.

mod common;
mod reliability_util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Proto, Viewer, daemon, http_request};
use reliability_util::{alive, assert_rising, tail};

/// Reads until the server closes or `timeout`; returns what came back and whether it closed.
fn drain(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

#[test]
fn slow_loris_times_out_without_touching_rtsp() {
    let mut d = daemon().start();
    let viewer = Viewer::start(&d.url(), Proto::Tcp);
    assert!(viewer.wait_frames(10, Duration::from_secs(20)));
    // More loris connections than the sidecar's cap, each dribbling a header byte a second.
    let n = 80;
    let t0 = Instant::now();
    let mut loris: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
            s
        })
        .collect();
    let mut closed_at: Vec<Option<Duration>> = vec![None; n];
    let mut buf = [0u8; 256];
    while closed_at.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(25) {
        for (i, s) in loris.iter_mut().enumerate() {
            if closed_at[i].is_some() {
                continue;
            }
            let _ = s.write_all(b"a");
            s.set_nonblocking(true).unwrap();
            if s.read(&mut buf).is_ok() || s.write(b"a").is_err() {
                closed_at[i] = Some(t0.elapsed());
            }
            s.set_nonblocking(false).unwrap();
        }
        assert!(alive(&mut d));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_rising(&viewer, 15, "during slow loris", &d);
    let open = closed_at.iter().filter(|c| c.is_none()).count();
    let last = closed_at
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_default();
    eprintln!(
        "slow loris: {n} connections dribbling headers; all answered or closed after {} ms ({open} still open)",
        last.as_millis()
    );
    assert_eq!(
        open, 0,
        "{open} slow-loris connections still open after 25 s"
    );
    // The 5 s header timeout, plus the wait in the kernel backlog for those over the cap.
    assert!(last < Duration::from_secs(20), "last closed after {last:?}");
    drop(loris);
    let t = Instant::now();
    assert_eq!(d.get("/healthz").status, 200, "{}", tail(&d.log(), 20));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "healthz took {:?}",
        t.elapsed()
    );
    assert!(!viewer.errored());
}

#[test]
fn oversized_headers_are_refused_without_touching_rtsp() {
    let mut d = daemon().start();
    let viewer = Viewer::start(&d.url(), Proto::Udp);
    assert!(viewer.wait_frames(10, Duration::from_secs(20)));
    let mut report = Vec::new();
    for (name, size) in [("32 KiB header", 32 << 10), ("1 MiB header", 1 << 20)] {
        let value = "v".repeat(size);
        let r = http_request(d.http_port, "GET", "/healthz", &[("X-Big", &value)], b"");
        report.push(format!("{name}: status {}", r.status));
        assert!(
            r.status == 431 || r.status == 400 || r.status == 0,
            "{name}: status {}",
            r.status
        );
    }
    // Ten thousand small header lines.
    let mut s = TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
    let mut req = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..10_000 {
        req.push_str(&format!("X-{i}: y\r\n"));
    }
    req.push_str("\r\n");
    let _ = s.write_all(req.as_bytes());
    let (resp, closed) = drain(&mut s, Duration::from_secs(10));
    let head = String::from_utf8_lossy(&resp[..resp.len().min(12)]).into_owned();
    report.push(format!("10 000 header lines: {head:?}, closed {closed}"));
    assert!(
        closed && (resp.is_empty() || head.contains("431") || head.contains("400")),
        "10 000 header lines: {head:?} closed={closed}"
    );
    eprintln!("sidecar oversize: {}", report.join("; "));
    assert!(alive(&mut d));
    assert_rising(&viewer, 15, "after oversized headers", &d);
    assert_eq!(d.get("/healthz").status, 200);
}
