//! The daemon outlives whoever reads its logs: stdout and stderr on a pipe whose reader exits
//! after the first line (`camstream 2>&1 | head -1`), or whose reader stops reading, must not
//! kill the daemon or stall streaming. The daemon's log cannot be read here, so its ports are
//! found through /proc.

mod common;
mod reliability_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Proto, Viewer, daemon, http_request, listening_ports, metric_value, wait_until};

/// A daemon whose stdout and stderr both go to the write end of `pipe`.
struct Piped {
    child: Child,
    rtsp: u16,
    http: u16,
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_rtsp(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    let mut b = [0u8; 8];
    matches!(s.read(&mut b), Ok(n) if b[..n].starts_with(b"RTSP/"))
}

fn spawn_piped(writer: std::io::PipeWriter) -> Piped {
    let mut cmd = daemon().command();
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    cmd.env("NO_COLOR", "1");
    let child = cmd.spawn().expect("spawn camstream");
    let pid = child.id();
    let mut ports = Vec::new();
    // Both listeners are bound before the daemon starts streaming; 30 s for a loaded machine.
    assert!(
        wait_until(Duration::from_secs(30), || {
            ports = listening_ports(pid);
            ports.len() >= 2
        }),
        "the daemon never listened on two ports: {ports:?}"
    );
    let rtsp = *ports.iter().find(|p| is_rtsp(**p)).expect("an RTSP port");
    let http = *ports.iter().find(|p| **p != rtsp).expect("an HTTP port");
    Piped { child, rtsp, http }
}

fn dropped_lines(http: u16) -> f64 {
    let r = http_request(http, "GET", "/metrics", &[], b"");
    metric_value(&r.text(), "camstream_log_lines_dropped_total").unwrap_or(-1.0)
}

fn encoded(http: u16) -> f64 {
    let r = http_request(http, "GET", "/metrics", &[], b"");
    metric_value(
        &r.text(),
        "camstream_frames_encoded_total{stream=\"video\"}",
    )
    .unwrap_or(0.0)
}

/// A viewer decodes 10 s of frames: at least 95 % of those the daemon encoded meanwhile, and
/// at least half the nominal 15 fps (a loaded machine may encode fewer; a stalled daemon none).
fn assert_streams_10_s(url: &str, http: u16) {
    let v = Viewer::start(url, Proto::Tcp);
    assert!(
        v.wait_frames(1, Duration::from_secs(30)),
        "the viewer never decoded a frame"
    );
    let (f0, e0) = (v.frames(), encoded(http));
    std::thread::sleep(Duration::from_secs(10));
    let e = encoded(http) - e0;
    // Frames encoded in the window reach the viewer within a moment.
    wait_until(Duration::from_secs(3), || (v.frames() - f0) as f64 >= e);
    let n = v.frames() - f0;
    eprintln!("viewer decoded {n} frames in 10 s; the daemon encoded {e} (15 fps)");
    assert!(e >= 75.0, "the daemon encoded only {e} frames in 10 s");
    assert!(n as f64 >= 0.95 * e, "the viewer decoded {n} of {e} frames");
    assert!(!v.errored());
}

fn assert_terminates_cleanly(d: &mut Piped) {
    let t0 = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status();
    let mut status = None;
    assert!(wait_until(Duration::from_secs(15), || {
        status = d.child.try_wait().ok().flatten();
        status.is_some()
    }));
    let status = status.unwrap();
    eprintln!("SIGTERM: {status} after {} ms", t0.elapsed().as_millis());
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn a_log_reader_that_exits_after_one_line_does_not_kill_the_daemon() {
    let (reader, writer) = std::io::pipe().unwrap();
    let first = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(reader).read_line(&mut line);
        // The reader is dropped here, as `head -1` exits.
        line
    });
    let mut d = spawn_piped(writer);
    let line = first.join().unwrap();
    eprintln!("the reader saw: {}", line.trim_end());
    let url = format!("rtsp://127.0.0.1:{}/video", d.rtsp);
    assert_streams_10_s(&url, d.http);
    assert_eq!(
        http_request(d.http, "GET", "/healthz", &[], b"").status,
        200
    );
    let dropped = dropped_lines(d.http);
    eprintln!("log lines dropped: {dropped}");
    assert!(dropped > 0.0, "no dropped line counted: {dropped}");
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon died");
    assert_terminates_cleanly(&mut d);
}

#[test]
fn a_log_reader_that_stops_reading_does_not_stall_the_daemon() {
    // The reader stays open and never reads: the pipe fills (64 KiB) and every write to it
    // would block.
    let (reader, writer) = std::io::pipe().unwrap();
    let mut d = spawn_piped(writer);
    // Each connection logs two lines: fill the pipe several times over.
    for _ in 0..1500 {
        let _ = TcpStream::connect(("127.0.0.1", d.rtsp)).map(|mut s| {
            let _ = s.write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n");
            let mut b = [0u8; 256];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.read(&mut b);
        });
    }
    let url = format!("rtsp://127.0.0.1:{}/video", d.rtsp);
    assert_streams_10_s(&url, d.http);
    let t0 = Instant::now();
    assert_eq!(
        http_request(d.http, "GET", "/healthz", &[], b"").status,
        200
    );
    eprintln!("/healthz in {} ms", t0.elapsed().as_millis());
    let dropped = dropped_lines(d.http);
    eprintln!("log lines dropped: {dropped}");
    assert!(dropped > 0.0, "no dropped line counted: {dropped}");
    assert_terminates_cleanly(&mut d);
    drop(reader);
}
