//! Attacks on the picture's heavier doors while an RTSP viewer and a WebRTC viewer play and a
//! prober asks `/healthz` every 100 ms (tests/reliability_util/siege.rs): a slow reader of a
//! long export, 20 parallel exports of a six-hour range, and a PLAY loop at 50/s. Each runs for
//! 20 s; each asserts `/healthz` p99 ≤ 100 ms, every viewer ≥ 99 % of frames, RSS growth
//! ≤ 20 MiB, the daemon alive and its file descriptors back to the baseline, and prints its row.
//!
//! `cargo test --test hostile_media -- --test-threads=1 --nocapture`

mod common;
mod media_util;
mod reliability_util;
// The harness is net's (tests/reliability_util/siege.rs), taken unchanged from branch net.
#[path = "reliability_util/siege.rs"]
mod siege;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use media_util::{long_recording, rfc3339};
use reliability_util::Raw;
use siege::{Siege, builder, print_table};

/// How long each attack runs.
const ATTACK: Duration = Duration::from_secs(20);

/// A siege whose daemon serves a six-hour recording (120 segments of 5 s, 3 minutes apart);
/// returns it with the export path of the whole range.
fn siege_with_recording(dir: &std::path::Path) -> (Siege, String) {
    let first = long_recording(dir, 120, 180);
    let s = Siege::start(
        builder()
            .set("record.path", dir.display())
            .set("record.min_free_mb", "0"),
    );
    let path = format!(
        "/recordings/video.mp4?start={}&duration=21600",
        rfc3339(first)
    );
    (s, path)
}

#[test]
fn a_slow_reader_of_a_long_export() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, path) = siege_with_recording(dir.path());
    let w = s.window("export read at 1 KiB/s");
    let mut c = TcpStream::connect(("127.0.0.1", s.d.http_port)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let t0 = Instant::now();
    let mut got = 0usize;
    let mut closed = false;
    let mut buf = [0u8; 1024];
    while t0.elapsed() < ATTACK {
        match c.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got += n,
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let active =
        s.d.metric("camstream_recording_exports_active")
            .unwrap_or(0.0);
    drop(c);
    let f = s.close(
        w,
        format!(
            "read {got} B in {:.0} s; {}; export slots in use {active}",
            t0.elapsed().as_secs_f64(),
            if closed {
                "closed by the daemon"
            } else {
                "still open"
            }
        ),
    );
    print_table(std::slice::from_ref(&f));
    f.check();
    assert!(
        crate::common::wait_until(Duration::from_secs(10), || s
            .d
            .metric("camstream_recording_exports_active")
            == Some(0.0)),
        "the slow reader's export slot was not freed"
    );
}

#[test]
fn twenty_parallel_exports_of_six_hours() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, path) = siege_with_recording(dir.path());
    let w = s.window("20 parallel 6-hour exports");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused, bytes) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let port = s.d.http_port;
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (stop, ok, refused, bytes, path) = (
                stop.clone(),
                ok.clone(),
                refused.clone(),
                bytes.clone(),
                path.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let _ = write!(
                        c,
                        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                    );
                    c.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    let mut head = [0u8; 12];
                    if c.read_exact(&mut head).is_err() {
                        continue;
                    }
                    if &head[9..12] == b"503" {
                        refused.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    ok.fetch_add(1, Ordering::Relaxed);
                    let mut buf = vec![0u8; 64 * 1024];
                    while !stop.load(Ordering::Relaxed) {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                bytes.fetch_add(n as u64, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(ATTACK);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let rejected =
        s.d.metric("camstream_recording_exports_rejected_total")
            .unwrap_or(0.0);
    let f = s.close(
        w,
        format!(
            "{} exports served, {} refused (503; metric {rejected}), {:.0} MB sent",
            ok.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed) as f64 / 1e6
        ),
    );
    print_table(std::slice::from_ref(&f));
    f.check();
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the export cap never bit"
    );
}

#[test]
fn a_play_loop_at_50_per_second() {
    let mut s = Siege::start(builder());
    let keyframes = |s: &Siege| {
        s.d.metric("camstream_keyframes_total{stream=\"video\"}")
            .expect("the keyframe counter")
    };
    let mut raw = Raw::connect(&s.d);
    let (session, _) = raw.play("RTP/AVP/TCP;unicast;interleaved=0-1", true);
    let w = s.window("PLAY loop at 50/s");
    let k0 = keyframes(&s);
    let t0 = Instant::now();
    let mut plays = 0u32;
    let mut rtts = Vec::new();
    while t0.elapsed() < ATTACK {
        let url = raw.url.clone();
        let sent = Instant::now();
        raw.ok("PLAY", &url, &[&format!("Session: {session}")]);
        rtts.push(sent.elapsed().as_secs_f64() * 1000.0);
        plays += 1;
        let next = t0 + Duration::from_millis(20) * plays;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let secs = t0.elapsed().as_secs_f64();
    let keys = keyframes(&s) - k0;
    drop(raw);
    let coalesced =
        s.d.metric("camstream_keyframe_requests_total{stream=\"video\",result=\"coalesced\"}")
            .unwrap_or(0.0);
    let f = s.close(
        w,
        format!(
            "{plays} PLAYs ({:.0}/s, answer p50 {:.1} ms, p99 {:.1} ms), {keys} keyframes ({:.2}/s), {coalesced} coalesced",
            f64::from(plays) / secs,
            siege::percentile(&rtts, 50.0),
            siege::percentile(&rtts, 99.0),
            keys / secs
        ),
    );
    print_table(std::slice::from_ref(&f));
    f.check();
    // The camera's own keyframes (every 2 s at 15 fps by default), at most 1/s forced, the burst.
    assert!(
        keys <= secs * 1.5 + 5.0,
        "{keys} keyframes in {secs:.1} s: the budget did not hold"
    );
    assert!(f64::from(plays) / secs >= 45.0, "the loop ran too slowly");
}
