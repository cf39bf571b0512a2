//! Lightweight RTSP viewers: DESCRIBE/SETUP/PLAY by hand, then read RTP and throw it away,
//! counting packets and frames (packets with the marker bit). A hundred of them cost the bench
//! far less than a hundred decoders, so the server, not the clients, is what gets measured.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which lower transport a viewer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// RTP interleaved on the RTSP connection.
    Tcp,
    /// RTP over unicast UDP.
    Udp,
}

impl Proto {
    /// Lower-case name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

pub use crate::rtsp_wire::Response;
use crate::rtsp_wire::{self, Item};

/// Counters one viewer's reader thread updates.
#[derive(Debug, Default)]
pub struct Counters {
    /// RTP packets received.
    pub packets: AtomicU64,
    /// RTP packets with the marker bit: one per frame for H.264.
    pub frames: AtomicU64,
    /// RTP payload bytes.
    pub bytes: AtomicU64,
    /// 0 connecting, 1 playing, 2 failed.
    pub state: AtomicU8,
    /// Why it failed, if it did.
    pub error: std::sync::Mutex<Option<String>>,
}

const PLAYING: u8 = 1;
const FAILED: u8 = 2;

/// An RTSP connection with its own read buffer, so responses and interleaved data can share it.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
}

impl Conn {
    fn connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            cseq: 0,
        })
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn request(&mut self, method: &str, url: &str, extra: &str) -> std::io::Result<Response> {
        self.cseq += 1;
        let req = format!(
            "{method} {url} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: camstream-bench\r\n{extra}\r\n",
            self.cseq
        );
        self.stream.write_all(req.as_bytes())?;
        loop {
            if let Some(r) = self.take_response() {
                return Ok(r);
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Removes one complete response from the buffer, skipping any interleaved frames before it.
    fn take_response(&mut self) -> Option<Response> {
        loop {
            match rtsp_wire::take(&mut self.buf)? {
                Item::Frame { .. } => continue,
                Item::Response(r) => return Some(r),
            }
        }
    }
}

/// One DESCRIBE on a fresh connection; the status code, or `None` when nothing answered.
pub fn describe_once(port: u16) -> Option<u16> {
    let mut c = Conn::connect(port).ok()?;
    let url = format!("rtsp://127.0.0.1:{port}/video");
    c.request("DESCRIBE", &url, "Accept: application/sdp\r\n")
        .ok()
        .map(|r| r.status)
}

/// The control URL of the first media in an SDP, resolved against the content base.
fn control_url(base: &str, sdp: &str) -> String {
    let control = sdp
        .lines()
        .filter(|l| l.starts_with("m=") || l.starts_with("a=control:"))
        .skip_while(|l| !l.starts_with("m="))
        .find_map(|l| l.strip_prefix("a=control:"))
        .unwrap_or("")
        .trim();
    if control.starts_with("rtsp://") {
        control.to_string()
    } else if base.ends_with('/') {
        format!("{base}{control}")
    } else {
        format!("{base}/{control}")
    }
}

/// Binds an even RTP port and the RTCP port after it, as RTP/AVP over UDP expects.
fn udp_pair() -> std::io::Result<(UdpSocket, UdpSocket)> {
    for _ in 0..200 {
        let rtp = UdpSocket::bind("127.0.0.1:0")?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            return Ok((rtp, rtcp));
        }
    }
    Err(std::io::Error::other("no free even/odd UDP port pair"))
}

fn count_rtp(packet: &[u8], c: &Counters) {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return;
    }
    c.packets.fetch_add(1, Ordering::Relaxed);
    c.bytes
        .fetch_add(packet.len() as u64 - 12, Ordering::Relaxed);
    if packet[1] & 0x80 != 0 {
        c.frames.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs one viewer until `stop`: handshake, then read and count.
fn run(
    port: u16,
    proto: Proto,
    c: &Counters,
    stop: &AtomicBool,
    sock: &std::sync::Mutex<Option<TcpStream>>,
) -> std::io::Result<()> {
    let mut conn = Conn::connect(port)?;
    *sock.lock().unwrap() = conn.stream.try_clone().ok();
    let url = format!("rtsp://127.0.0.1:{port}/video");
    let d = conn.request("DESCRIBE", &url, "Accept: application/sdp\r\n")?;
    if d.status != 200 {
        return Err(std::io::Error::other(format!("DESCRIBE {}", d.status)));
    }
    let base = d.header("content-base").unwrap_or(&url).to_string();
    let setup_url = control_url(&base, &d.body_text());
    let udp = match proto {
        Proto::Udp => Some(udp_pair()?),
        Proto::Tcp => None,
    };
    let transport = match &udp {
        Some((rtp, _)) => {
            let p = rtp.local_addr()?.port();
            format!("RTP/AVP;unicast;client_port={}-{}", p, p + 1)
        }
        None => "RTP/AVP/TCP;unicast;interleaved=0-1".to_string(),
    };
    let s = conn.request("SETUP", &setup_url, &format!("Transport: {transport}\r\n"))?;
    if s.status != 200 {
        return Err(std::io::Error::other(format!("SETUP {}", s.status)));
    }
    let session = s
        .header("session")
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .to_string();
    let p = conn.request(
        "PLAY",
        &base,
        &format!("Session: {session}\r\nRange: npt=0-\r\n"),
    )?;
    if p.status != 200 {
        return Err(std::io::Error::other(format!("PLAY {}", p.status)));
    }
    c.state.store(PLAYING, Ordering::SeqCst);
    match udp {
        Some((rtp, _rtcp)) => {
            // The RTCP socket stays bound so the server's sender reports are not answered with
            // ICMP port-unreachable; nothing reads it.
            rtp.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut pkt = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                match rtp.recv(&mut pkt) {
                    Ok(n) => count_rtp(&pkt[..n], c),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        None => {
            conn.stream
                .set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut pos = 0;
            while !stop.load(Ordering::Relaxed) {
                // Parse in place and compact once per read: draining per packet would be
                // quadratic in the backlog at 2 Mb/s.
                loop {
                    let b = &conn.buf[pos..];
                    if b.len() < 4 {
                        break;
                    }
                    if b[0] != b'$' {
                        // An RTSP message (a response or a server request) in the stream.
                        match b.windows(4).position(|w| w == b"\r\n\r\n") {
                            Some(end) => pos += end + 4,
                            None => break,
                        }
                        continue;
                    }
                    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
                    if b.len() < 4 + len {
                        break;
                    }
                    if b[1] == 0 {
                        count_rtp(&b[4..4 + len], c);
                    }
                    pos += 4 + len;
                }
                conn.buf.drain(..pos);
                pos = 0;
                match conn.fill() {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// A running lightweight viewer.
pub struct RawViewer {
    /// Its counters.
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    sock: Arc<std::sync::Mutex<Option<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl RawViewer {
    /// Starts a viewer on its own small thread; it connects in the background.
    pub fn start(port: u16, proto: Proto) -> RawViewer {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let sock = Arc::new(std::sync::Mutex::new(None));
        let (c, s, k) = (counters.clone(), stop.clone(), sock.clone());
        let thread = std::thread::Builder::new()
            .name("raw-viewer".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                if let Err(e) = run(port, proto, &c, &s, &k) {
                    *c.error.lock().unwrap() = Some(e.to_string());
                    c.state.store(FAILED, Ordering::SeqCst);
                }
            })
            .expect("spawn viewer thread");
        RawViewer {
            counters,
            stop,
            sock,
            thread: Some(thread),
        }
    }

    /// Whether PLAY succeeded.
    pub fn playing(&self) -> bool {
        self.counters.state.load(Ordering::SeqCst) == PLAYING
    }

    /// Whether the handshake or the stream failed.
    pub fn failed(&self) -> bool {
        self.counters.state.load(Ordering::SeqCst) == FAILED
    }

    /// Why it failed, if it did.
    pub fn error(&self) -> Option<String> {
        self.counters.error.lock().unwrap().clone()
    }

    /// Frames so far.
    pub fn frames(&self) -> u64 {
        self.counters.frames.load(Ordering::Relaxed)
    }

    /// Packets so far.
    pub fn packets(&self) -> u64 {
        self.counters.packets.load(Ordering::Relaxed)
    }

    /// Asks the thread to stop without waiting; closing the socket wakes a blocked read.
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.sock.lock().unwrap().as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for RawViewer {
    fn drop(&mut self) {
        self.signal_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Adds viewers to `group` until it holds `n`, then waits (bounded) until all play.
/// Returns how many are playing.
pub fn grow(group: &mut Vec<RawViewer>, n: usize, port: u16, proto: Proto) -> usize {
    while group.len() < n {
        group.push(RawViewer::start(port, proto));
        // Pacing the handshakes keeps the server's accept path from being the thing measured.
        std::thread::sleep(Duration::from_millis(4));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && group.iter().any(|v| !v.playing() && !v.failed()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    group.iter().filter(|v| v.playing()).count()
}

/// Stops every viewer in `group`, all at once, then joins them.
pub fn stop_all(group: &mut Vec<RawViewer>) {
    for v in group.iter() {
        v.signal_stop();
    }
    group.clear();
}
