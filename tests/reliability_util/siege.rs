//! The hostile-network harness: one daemon with RTSP and WebRTC, an RTSP viewer and a WebRTC
//! (WHEP, str0m) viewer that count the frames they receive, a prober asking `/healthz` every
//! 100 ms and recording its latencies, and the daemon's RSS and open file descriptors from /proc.
//!
//! An attack runs inside a [`Window`]: `let w = siege.window("name");`, attack for ≥ 20 s, stop
//! the attack, then `let f = siege.close(w);` measures what the viewers and the prober saw during
//! the window, waits for the file descriptors to come back to the window's baseline, and returns
//! [`Figures`]; `f.check()` asserts the issue's bounds and `print_table` prints every row.
//!
//! Include it beside the shared helpers:
//! ```ignore
//! mod common;
//! #[path = "reliability_util/siege.rs"]
//! mod siege;
//! ```
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, RtcConfig};

use crate::common::{Daemon, DaemonBuilder, Proto, Viewer, daemon, http_request};

/// The camera's frame rate in every siege (frames expected = rate × window).
pub const FPS: u32 = 15;
/// `/healthz` p99 bound during an attack.
pub const HEALTHZ_P99_MS: f64 = 100.0;
/// Share of the expected frames every viewer must receive during an attack.
pub const MIN_FRAME_SHARE: f64 = 0.99;
/// RSS growth bound during an attack.
pub const MAX_RSS_GROWTH_KIB: u64 = 20 * 1024;
/// How long file descriptors may take to come back to the baseline after an attack.
pub const FD_SETTLE: Duration = Duration::from_secs(20);
/// A probe that gets no answer within this counts as this latency (and fails the p99).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Raises the soft limit on open files to `want` (bounded by the hard limit), so the test process
/// (and the daemon it spawns, which inherits it) can hold the attack's sockets.
pub fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let hard = cur.maximum.unwrap_or(u64::MAX);
    let soft = cur.current.unwrap_or(u64::MAX);
    if soft >= want {
        return soft;
    }
    let new = want.min(hard);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(new),
            maximum: cur.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(new)
}

/// The daemon settings of a siege: the test camera at [`FPS`], WebRTC over UDP and ICE-TCP.
pub fn builder() -> DaemonBuilder {
    daemon()
        .set("video.fps", FPS)
        .set("webrtc.transports", "[\"udp\", \"tcp\"]")
}

/// A WHEP viewer built on str0m: posts an offer, runs ICE/DTLS/SRTP over UDP from `bind`, counts
/// the video frames it receives.
pub struct WhepViewer {
    frames: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
    /// The WHEP resource (`Location`), for DELETE.
    pub resource: Option<String>,
}

/// What a WHEP offer got back.
#[derive(Debug)]
pub struct Posted {
    /// HTTP status.
    pub status: u16,
    /// `Location` header.
    pub location: Option<String>,
    /// `Retry-After` header.
    pub retry_after: Option<String>,
    /// Body (the SDP answer, or the error's JSON).
    pub body: String,
}

/// Posts `offer` to `/whep/{stream}` from a socket bound to `from` (e.g. 127.0.0.7).
pub fn post_offer_from(http_port: u16, from: IpAddr, stream: &str, offer: &str) -> Posted {
    let failed = |body: String| Posted {
        status: 0,
        location: None,
        retry_after: None,
        body,
    };
    let sock = match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    if let Err(e) = sock.bind(&SocketAddr::new(from, 0).into()) {
        return failed(format!("bind {from}: {e}"));
    }
    let dst = SocketAddr::from(([127, 0, 0, 1], http_port));
    if let Err(e) = sock.connect_timeout(&dst.into(), Duration::from_secs(3)) {
        return failed(format!("connect: {e}"));
    }
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let req = format!(
        "POST /whep/{stream} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return failed("write".into());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return failed(text);
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    Posted {
        status,
        location: header("location"),
        retry_after: header("retry-after"),
        body: body.to_string(),
    }
}

/// A str0m offer (recvonly H.264 video) with a host candidate at `local`, and its engine.
pub fn make_offer(local: SocketAddr) -> (str0m::Rtc, str0m::change::SdpPendingOffer, String) {
    let mut rtc = RtcConfig::new()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .build(Instant::now());
    let cand = Candidate::host(local, "udp").expect("host candidate");
    rtc.add_local_candidate(cand);
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().expect("an offer");
    let sdp = offer.to_sdp_string();
    (rtc, pending, sdp)
}

impl WhepViewer {
    /// Posts an offer for `stream` from 127.0.0.1 and plays in a thread; panics if refused.
    pub fn start(http_port: u16, stream: &str) -> WhepViewer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let local = socket.local_addr().expect("local addr");
        let (mut rtc, pending, sdp) = make_offer(local);
        let posted = post_offer_from(http_port, IpAddr::from([127, 0, 0, 1]), stream, &sdp);
        assert_eq!(posted.status, 201, "WHEP offer refused: {posted:?}");
        let answer = str0m::change::SdpAnswer::from_sdp_string(&posted.body).expect("SDP answer");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        let frames = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let thread = {
            let (frames, connected, stop, error) = (
                frames.clone(),
                connected.clone(),
                stop.clone(),
                error.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 2000];
                while !stop.load(Ordering::Relaxed) {
                    let timeout = loop {
                        match rtc.poll_output() {
                            Ok(Output::Timeout(t)) => break t,
                            Ok(Output::Transmit(t)) => {
                                let _ = socket.send_to(&t.contents, t.destination);
                            }
                            Ok(Output::Event(Event::MediaData(_))) => {
                                frames.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Output::Event(Event::IceConnectionStateChange(s))) => {
                                if s == IceConnectionState::Disconnected {
                                    *error.lock().unwrap() = Some("ICE disconnected".into());
                                    return;
                                }
                            }
                            Ok(Output::Event(Event::Connected)) => {
                                connected.store(true, Ordering::Relaxed)
                            }
                            Ok(Output::Event(_)) => {}
                            Err(e) => {
                                *error.lock().unwrap() = Some(e.to_string());
                                return;
                            }
                        }
                    };
                    let wait = timeout
                        .saturating_duration_since(Instant::now())
                        .clamp(Duration::from_millis(1), Duration::from_millis(100));
                    socket.set_read_timeout(Some(wait)).ok();
                    buf.resize(2000, 0);
                    let input = match socket.recv_from(&mut buf) {
                        Ok((n, source)) => {
                            let Ok(contents) = buf[..n].try_into() else {
                                continue;
                            };
                            Input::Receive(
                                Instant::now(),
                                Receive {
                                    proto: Protocol::Udp,
                                    source,
                                    destination: local,
                                    contents,
                                },
                            )
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            Input::Timeout(Instant::now())
                        }
                        Err(e) => {
                            *error.lock().unwrap() = Some(e.to_string());
                            return;
                        }
                    };
                    if let Err(e) = rtc.handle_input(input) {
                        *error.lock().unwrap() = Some(e.to_string());
                        return;
                    }
                }
            })
        };
        WhepViewer {
            frames,
            connected,
            stop,
            error,
            thread: Some(thread),
            resource: posted.location,
        }
    }

    /// Video frames received so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Waits until `n` frames were received.
    pub fn wait_frames(&self, n: u64, timeout: Duration) -> bool {
        crate::common::wait_until(timeout, || self.frames() >= n)
    }

    /// Why the engine stopped, if it did.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }
}

impl Drop for WhepViewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `/healthz` probe: the time to a complete response, or `None` on failure or timeout.
pub fn probe_once(port: u16) -> Option<Duration> {
    let t0 = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), PROBE_TIMEOUT)
            .ok()?;
    s.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let ok = raw.starts_with(b"HTTP/1.1 200");
    (ok && t0.elapsed() <= PROBE_TIMEOUT).then(|| t0.elapsed())
}

/// When each probe was sent and how long its answer took (`None`: failed).
type Samples = Arc<Mutex<Vec<(Instant, Option<Duration>)>>>;

/// Asks `/healthz` every 100 ms; also samples the daemon's RSS.
pub struct Prober {
    samples: Samples,
    rss: Arc<Mutex<Vec<(Instant, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts probing `port` of the daemon `pid`.
    pub fn start(port: u16, pid: u32) -> Prober {
        let samples: Samples = Arc::new(Mutex::new(Vec::new()));
        let rss = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, rss, stop) = (samples.clone(), rss.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let r = probe_once(port);
                    samples.lock().unwrap().push((at, r));
                    rss.lock().unwrap().push((at, rss_kib(pid)));
                    next += Duration::from_millis(100);
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
        };
        Prober {
            samples,
            rss,
            stop,
            thread: Some(thread),
        }
    }

    /// Probe latencies (ms; a failure counts as [`PROBE_TIMEOUT`]) taken in `[from, to]`.
    pub fn latencies(&self, from: Instant, to: Instant) -> Vec<f64> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, r)| r.unwrap_or(PROBE_TIMEOUT).as_secs_f64() * 1000.0)
            .collect()
    }

    /// Highest RSS sampled in `[from, to]`.
    pub fn peak_rss(&self, from: Instant, to: Instant) -> u64 {
        self.rss
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The `p`-th percentile (0–100) of `v`, nearest rank.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// A running siege: the daemon and its audience.
pub struct Siege {
    /// The daemon (public so attacks can read its ports and log).
    pub d: Daemon,
    /// The RTSP viewer (TCP interleaved).
    pub rtsp: Viewer,
    /// The WebRTC viewer.
    pub webrtc: WhepViewer,
    /// The `/healthz` prober.
    pub prober: Prober,
}

/// An open measurement window.
pub struct Window {
    name: String,
    start: Instant,
    rtsp0: u64,
    webrtc0: u64,
    rss0: u64,
    fds0: usize,
}

/// What one attack did to the daemon.
#[derive(Debug, Clone)]
pub struct Figures {
    /// The attack.
    pub name: String,
    /// Window length.
    pub seconds: f64,
    /// Probes in the window.
    pub probes: usize,
    /// Failed probes (no 200 within [`PROBE_TIMEOUT`]).
    pub probe_failures: usize,
    /// `/healthz` p50 (ms).
    pub p50_ms: f64,
    /// `/healthz` p99 (ms).
    pub p99_ms: f64,
    /// `/healthz` slowest (ms).
    pub max_ms: f64,
    /// Frames expected per viewer (rate × window).
    pub expected: f64,
    /// RTSP viewer frames in the window.
    pub rtsp_frames: u64,
    /// WebRTC viewer frames in the window.
    pub webrtc_frames: u64,
    /// Highest RSS in the window minus RSS at its start (KiB; negative counts as 0).
    pub rss_growth_kib: u64,
    /// Open fds at the window's start.
    pub fds_before: usize,
    /// Open fds once settled after the attack.
    pub fds_after: usize,
    /// Whether the daemon was still running.
    pub alive: bool,
    /// The attack's own figure (reply size, rate, refusals...).
    pub note: String,
}

impl Figures {
    /// Asserts the issue's bounds, naming the attack and the figure that failed.
    pub fn check(&self) {
        let n = &self.name;
        assert!(self.alive, "{n}: the daemon died");
        assert!(
            self.p99_ms <= HEALTHZ_P99_MS,
            "{n}: /healthz p99 {:.1} ms > {HEALTHZ_P99_MS} ms ({} of {} probes failed)",
            self.p99_ms,
            self.probe_failures,
            self.probes
        );
        let min = (self.expected * MIN_FRAME_SHARE).floor() as u64;
        assert!(
            self.rtsp_frames >= min,
            "{n}: RTSP viewer got {} frames, expected ≥ {min} of {:.0}",
            self.rtsp_frames,
            self.expected
        );
        assert!(
            self.webrtc_frames >= min,
            "{n}: WebRTC viewer got {} frames, expected ≥ {min} of {:.0}",
            self.webrtc_frames,
            self.expected
        );
        assert!(
            self.rss_growth_kib <= MAX_RSS_GROWTH_KIB,
            "{n}: RSS grew {} KiB > {MAX_RSS_GROWTH_KIB} KiB",
            self.rss_growth_kib
        );
        assert!(
            self.fds_after <= self.fds_before,
            "{n}: {} fds after, {} before",
            self.fds_after,
            self.fds_before
        );
    }

    /// One table row.
    pub fn row(&self) -> String {
        format!(
            "| {:<34} | {:>4.0} | {:>6.1} | {:>6.1} | {:>7.1} | {:>4}/{:<4} | {:>4}/{:<4} | {:>6} | {:>4}→{:<4} | {} |",
            self.name,
            self.seconds,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.rtsp_frames,
            self.expected.round(),
            self.webrtc_frames,
            self.expected.round(),
            self.rss_growth_kib,
            self.fds_before,
            self.fds_after,
            self.note
        )
    }
}

/// Prints the figures as a Markdown table (for docs/reliability.md).
pub fn print_table(rows: &[Figures]) {
    eprintln!(
        "\n| attack | s | healthz p50 ms | p99 ms | max ms | RTSP frames | WebRTC frames | RSS +KiB | fds | note |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        eprintln!("{}", r.row());
    }
    eprintln!();
}

impl Siege {
    /// Starts a daemon from `b` (see [`builder`]), both viewers and the prober, and waits until
    /// both viewers receive frames.
    pub fn start(b: DaemonBuilder) -> Siege {
        raise_nofile(8192);
        let d = b.start();
        let rtsp = Viewer::start(&d.url(), Proto::Tcp);
        let webrtc = WhepViewer::start(d.http_port, "video");
        assert!(
            rtsp.wait_frames(2 * u64::from(FPS), Duration::from_secs(20)),
            "RTSP viewer plays nothing\n{}",
            d.log()
        );
        assert!(
            webrtc.wait_frames(2 * u64::from(FPS), Duration::from_secs(20)),
            "WebRTC viewer plays nothing ({:?})\n{}",
            webrtc.error(),
            d.log()
        );
        let prober = Prober::start(d.http_port, d.pid());
        Siege {
            d,
            rtsp,
            webrtc,
            prober,
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.d.pid()
    }

    /// Opens a measurement window for the attack `name`.
    pub fn window(&self, name: &str) -> Window {
        Window {
            name: name.to_string(),
            start: Instant::now(),
            rtsp0: self.rtsp.frames(),
            webrtc0: self.webrtc.frames(),
            rss0: rss_kib(self.pid()),
            fds0: fd_count(self.pid()),
        }
    }

    /// Closes `w` (call once the attack has stopped): frames, probe latencies and RSS over the
    /// window; then waits up to [`FD_SETTLE`] for the fds to come back to the window's start.
    pub fn close(&mut self, w: Window, note: impl Into<String>) -> Figures {
        let end = Instant::now();
        let seconds = (end - w.start).as_secs_f64();
        let rtsp_frames = self.rtsp.frames() - w.rtsp0;
        let webrtc_frames = self.webrtc.frames() - w.webrtc0;
        let lat = self.prober.latencies(w.start, end);
        let failures = lat
            .iter()
            .filter(|l| **l >= PROBE_TIMEOUT.as_secs_f64() * 1000.0)
            .count();
        let peak = self.prober.peak_rss(w.start, end).max(rss_kib(self.pid()));
        let pid = self.pid();
        crate::common::wait_until(FD_SETTLE, || fd_count(pid) <= w.fds0);
        let alive = self.d.wait_exit(Duration::ZERO).is_none();
        Figures {
            name: w.name,
            seconds,
            probes: lat.len(),
            probe_failures: failures,
            p50_ms: percentile(&lat, 50.0),
            p99_ms: percentile(&lat, 99.0),
            max_ms: lat.iter().copied().fold(0.0, f64::max),
            // The first and last frame of the window may fall either side of its edges.
            expected: (seconds * f64::from(FPS) - 1.0).max(0.0),
            rtsp_frames,
            webrtc_frames,
            rss_growth_kib: peak.saturating_sub(w.rss0),
            fds_before: w.fds0,
            fds_after: fd_count(pid),
            alive,
            note: note.into(),
        }
    }
}

/// Opens `n` TCP connections to `port` that never send a byte (the ones refused are not kept).
pub fn idle_sockets(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(2),
            )
            .ok()
        })
        .collect()
}

/// Runs `step` every `every` for `duration` (the attack's body), keeping its state alive.
pub fn hold(duration: Duration, every: Duration, mut step: impl FnMut()) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        step();
        std::thread::sleep(every.min(end.saturating_duration_since(Instant::now())));
    }
}

/// A WHEP GET-style request helper: one request with `Connection: close` (re-exported so attacks
/// need only this module).
pub fn request(port: u16, method: &str, path: &str, body: &[u8]) -> crate::common::HttpResponse {
    http_request(port, method, path, &[], body)
}
