//! Helpers shared by the reliability suites: a raw RTSP client that can send anything and reads
//! responses with deadlines, and checks that the daemon is alive and its viewers still decode.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::{Daemon, Viewer, wait_until};

pub use crate::common::rtsp_wire::Response;
use crate::common::rtsp_wire::{self, Item};

/// What came back for a request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// The server closed (or reset) the connection without a response.
    Closed,
    /// Nothing within the deadline, connection still open.
    Silent,
}

impl Outcome {
    /// An error status or a close.
    pub fn refused(&self) -> bool {
        match self {
            Outcome::Status(s) => *s >= 400,
            Outcome::Closed => true,
            Outcome::Silent => false,
        }
    }
}

/// A raw RTSP connection.
pub struct Raw {
    /// The socket.
    pub s: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
    /// The base URL, e.g. rtsp://127.0.0.1:port/video.
    pub url: String,
    closed: bool,
    /// Interleaved frames read while waiting for responses.
    pub frames: u64,
}

impl Raw {
    /// Connects to the daemon's RTSP port.
    pub fn connect(d: &Daemon) -> Raw {
        match TcpStream::connect(("127.0.0.1", d.rtsp_port)) {
            Ok(s) => Self::with_stream(s, &d.url()),
            Err(e) => panic!("connect RTSP: {e}\n{}", tail(&d.log(), 30)),
        }
    }

    /// Connects to `port`.
    pub fn connect_port(port: u16, url: &str) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect RTSP");
        Self::with_stream(s, url)
    }

    fn with_stream(s: TcpStream, url: &str) -> Raw {
        s.set_nodelay(true).ok();
        Raw {
            s,
            buf: Vec::new(),
            cseq: 0,
            url: url.to_string(),
            closed: false,
            frames: 0,
        }
    }

    /// Sends bytes; false when the peer is gone.
    pub fn send(&mut self, data: &[u8]) -> bool {
        self.s.write_all(data).is_ok()
    }

    /// Sends a request with a fresh CSeq and the given extra header lines.
    pub fn send_request(&mut self, method: &str, uri: &str, headers: &[&str]) -> bool {
        self.cseq += 1;
        let mut req = format!("{method} {uri} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        self.send(req.as_bytes())
    }

    /// Sends a request and reads its response.
    pub fn request(&mut self, method: &str, uri: &str, headers: &[&str]) -> Outcome {
        if !self.send_request(method, uri, headers) {
            return Outcome::Closed;
        }
        self.outcome(Duration::from_secs(5))
    }

    /// Sends a request and returns the full response (panics on anything else).
    pub fn ok(&mut self, method: &str, uri: &str, headers: &[&str]) -> Response {
        assert!(
            self.send_request(method, uri, headers),
            "{method}: send failed"
        );
        match self.read_response(Duration::from_secs(5)) {
            Ok(r) if r.status == 200 => r,
            other => panic!("{method} {uri}: {other:?}"),
        }
    }

    /// Reads the next response as an outcome.
    pub fn outcome(&mut self, timeout: Duration) -> Outcome {
        match self.read_response(timeout) {
            Ok(r) => Outcome::Status(r.status),
            Err(o) => o,
        }
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), Outcome> {
        if self.closed {
            return Err(Outcome::Closed);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Outcome::Silent);
        }
        self.s
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .ok();
        let mut tmp = [0u8; 16384];
        match self.s.read(&mut tmp) {
            Ok(0) => {
                self.closed = true;
                Err(Outcome::Closed)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Ok(())
            }
            Err(_) => {
                self.closed = true;
                Err(Outcome::Closed)
            }
        }
    }

    /// Reads one response, skipping interleaved `$` frames.
    pub fn read_response(&mut self, timeout: Duration) -> Result<Response, Outcome> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(item) = rtsp_wire::take(&mut self.buf) {
                match item {
                    Item::Frame { .. } => self.frames += 1,
                    Item::Response(r) => return Ok(r),
                }
            }
            self.fill(deadline)?;
        }
    }

    /// Reads until the server closes or `timeout` passes; true when it closed.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.buf.clear();
            match self.fill(deadline) {
                Err(Outcome::Closed) => return true,
                Err(_) => return false,
                Ok(()) => {}
            }
        }
    }

    /// DESCRIBE, SETUP with `transport` and (optionally) PLAY; returns the session id and the
    /// SETUP response.
    pub fn play(&mut self, transport: &str, play: bool) -> (String, Response) {
        let url = self.url.clone();
        self.ok("DESCRIBE", &url, &["Accept: application/sdp"]);
        let t = format!("Transport: {transport}");
        let setup = self.ok("SETUP", &format!("{url}/stream=0"), &[&t]);
        let session = setup.session().expect("SETUP gives a session");
        if play {
            self.ok("PLAY", &url, &[&format!("Session: {session}")]);
        }
        (session, setup)
    }
}

/// Whether the daemon process is still running.
pub fn alive(d: &mut Daemon) -> bool {
    d.wait_exit(Duration::ZERO).is_none()
}

/// Waits until `v` decodes `n` more pictures than it had; panics with `what` otherwise.
pub fn assert_rising(v: &Viewer, n: u64, what: &str, d: &Daemon) {
    let before = v.frames();
    assert!(
        v.wait_frames(before + n, Duration::from_secs(10)),
        "{what}: the attached viewer stopped decoding ({} frames, was {before})\n{}",
        v.frames(),
        tail(&d.log(), 40)
    );
}

/// The last `n` lines of a log.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Playing viewers as the daemon reports them.
pub fn viewers_active(d: &Daemon) -> f64 {
    d.metric("camstream_viewers_active{stream=\"video\"}")
        .unwrap_or(-1.0)
}

/// RTSP sessions alive in the server's pool.
pub fn sessions(d: &Daemon) -> f64 {
    d.metric("camstream_rtsp_sessions").unwrap_or(-1.0)
}

/// Connected clients in the status API.
pub fn clients_listed(d: &Daemon) -> usize {
    let r = d.get("/api/v1/status");
    if r.status != 200 {
        return usize::MAX;
    }
    r.json()["viewers"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(usize::MAX)
}

/// Waits until `f` holds; returns whether it did.
pub fn eventually(timeout: Duration, f: impl FnMut() -> bool) -> bool {
    wait_until(timeout, f)
}

/// A UDP socket pair on consecutive free loopback ports for RTP and RTCP.
pub fn udp_pair() -> (UdpSocket, UdpSocket, u16) {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p.is_multiple_of(2)
            && let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1))
        {
            return (a, b, p);
        }
    }
    panic!("no consecutive UDP ports")
}

/// A deterministic pseudo-random byte stream (xorshift), so failures reproduce.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
