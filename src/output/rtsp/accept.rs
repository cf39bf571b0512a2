//! camstream's own RTSP acceptor. gst-rtsp-server reads request heads one byte per system call
//! on the RTSP thread and has no limit on their size, so a client that sends a megabyte of
//! header keeps every other client waiting while the library reads it. Here camstream listens
//! itself, reads each new connection's first request head with ordinary bulk reads, refuses a
//! head over `rtsp.max_request_bytes` having read at most that many bytes plus one, and only
//! then hands the connection and the head to the server (`transfer_connection`). Everything runs
//! on the RTSP thread's GLib context, event-driven and non-blocking.
//!
//! Over TLS the first bytes are a ClientHello, not a request: the acceptor only checks (without
//! reading) that they start a TLS handshake and hands the connection over with nothing read;
//! the library then runs the handshake. Later requests, and TLS requests, are the watcher's
//! (`guard.rs`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use gst::glib;
use gst_rtsp_server::gio;
use gst_rtsp_server::gio::prelude::*;
use gst_rtsp_server::prelude::*;

use crate::metrics::Metrics;
use crate::output::rtsp::auth::LogLimiter;
use crate::output::rtsp::ffi;

/// Why the acceptor could not start.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The listening socket could not be created, bound or put to listen.
    #[error("{0}")]
    Socket(#[from] glib::Error),
}

/// What the acceptor enforces.
#[derive(Debug, Clone)]
pub struct AcceptConfig {
    /// Address to listen on.
    pub address: IpAddr,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Listen backlog.
    pub backlog: i32,
    /// Largest first request head read before refusing, in bytes.
    pub max_request_bytes: usize,
    /// How long a new connection may take to send its first request (or TLS handshake).
    pub first_request_timeout: Duration,
    /// Connections at once, pending ones included.
    pub max_connections: usize,
    /// Whether the port serves RTSPS.
    pub tls: bool,
}

impl AcceptConfig {
    /// The acceptor's settings from `[rtsp]`: a new connection gets the idle timeout to send
    /// its first request.
    pub fn new(rtsp: &crate::config::RtspConfig, tls: bool) -> Self {
        AcceptConfig {
            address: rtsp.address,
            port: rtsp.port,
            // A short backlog makes a burst of reconnecting viewers wait for SYN retries (a
            // second each) or be lost.
            backlog: rtsp.max_connections.min(4096) as i32,
            max_request_bytes: rtsp.max_request_bytes as usize,
            first_request_timeout: Duration::from_secs(u64::from(rtsp.idle_timeout_s)),
            max_connections: rtsp.max_connections as usize,
            tls,
        }
    }
}

/// How the front of a new connection's bytes reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// A complete request (or HTTP tunnel) head ending at this offset.
    Complete(usize),
    /// No end of head yet.
    Partial {
        /// Whether the first line has ended (so a refusal is about headers, not the URI).
        line_ended: bool,
    },
    /// An interleaved `$` frame before any request: nothing to serve it for.
    Data,
}

/// Finds the end of the first request head: an empty line after the request line, where a line
/// ends in CRLF, LF or CR as gst-rtsp-server accepts. Leading line breaks are skipped, as the
/// library does.
pub fn scan_head(buf: &[u8]) -> Head {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    if buf.get(start) == Some(&b'$') {
        return Head::Data;
    }
    let (mut i, mut line_start, mut line_ended) = (start, start, false);
    while i < buf.len() {
        let len = match buf[i] {
            b'\r' => match buf.get(i + 1) {
                // A CR at the end could be the first half of a CRLF.
                None => return Head::Partial { line_ended },
                Some(b'\n') => 2,
                Some(_) => 1,
            },
            b'\n' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        if i == line_start && i > start {
            return Head::Complete(i + len);
        }
        i += len;
        line_start = i;
        line_ended = true;
    }
    Head::Partial { line_ended }
}

/// Whether the first bytes of a connection can start a TLS handshake record (content type 22,
/// protocol major version 3).
pub fn looks_like_tls(first: &[u8]) -> bool {
    match first {
        [] => false,
        [0x16] => true,
        [0x16, 0x03, ..] => true,
        _ => false,
    }
}

/// A connection whose first request has not arrived yet.
struct Pending {
    socket: gio::Socket,
    ip: String,
    port: u16,
    buf: Vec<u8>,
    read: glib::Source,
    timer: glib::Source,
}

impl Pending {
    fn drop_sources(&self) {
        self.read.destroy();
        self.timer.destroy();
    }
}

struct State {
    cfg: AcceptConfig,
    ctx: glib::MainContext,
    server: glib::WeakRef<gst_rtsp_server::RTSPServer>,
    connected: Box<dyn Fn() -> usize>,
    metrics: Metrics,
    pending: RefCell<HashMap<u64, Pending>>,
    next: Cell<u64>,
    log: LogLimiter,
}

thread_local! {
    /// Set while a TLS connection is being handed over, for the client-connected handler.
    static HANDING_TLS: Cell<bool> = const { Cell::new(false) };
}

/// The running acceptor; stops listening and drops pending connections when dropped.
pub struct Acceptor {
    listener: glib::Source,
    state: Rc<State>,
    port: u16,
}

impl Acceptor {
    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.listener.destroy();
        for (_, p) in self.state.pending.borrow_mut().drain() {
            p.drop_sources();
            let _ = p.socket.close();
        }
    }
}

/// Binds the listening socket and starts accepting on `ctx`, which must be the context the
/// server's clients run on (the calling thread must own it). `connected` counts the clients
/// the server already holds.
pub fn start(
    server: &gst_rtsp_server::RTSPServer,
    ctx: &glib::MainContext,
    cfg: AcceptConfig,
    connected: impl Fn() -> usize + 'static,
    metrics: Metrics,
) -> Result<Acceptor, AcceptError> {
    let family = if cfg.address.is_ipv4() {
        gio::SocketFamily::Ipv4
    } else {
        gio::SocketFamily::Ipv6
    };
    let listener = gio::Socket::new(family, gio::SocketType::Stream, gio::SocketProtocol::Tcp)?;
    listener.set_listen_backlog(cfg.backlog);
    let address = gio::InetSocketAddress::new(&gio::InetAddress::from(cfg.address), cfg.port);
    listener.bind(&address, true)?;
    listener.listen()?;
    listener.set_blocking(false);
    let port = listener
        .local_address()?
        .downcast::<gio::InetSocketAddress>()
        .map(|a| a.port())
        .unwrap_or(cfg.port);
    // transfer_connection skips the connection-time auth check that the library's own accept
    // runs, and that check is what puts TLS on a connection: run it here, before the client
    // is attached and reads anything.
    server.connect_client_connected(|server, client| {
        if HANDING_TLS.get() && !ffi::connect_check(server, client) {
            tracing::debug!(peer = %ffi::peer_ip(client), "RTSPS connection refused by the connection check");
            client.close();
        }
    });
    let state = Rc::new(State {
        cfg,
        ctx: ctx.clone(),
        server: server.downgrade(),
        connected: Box::new(connected),
        metrics,
        pending: RefCell::new(HashMap::new()),
        next: Cell::new(0),
        log: LogLimiter::new(5, Duration::from_secs(60)),
    });
    let st = state.clone();
    let source = gio::prelude::SocketExtManual::create_source(
        &listener,
        glib::IOCondition::IN,
        None::<&gio::Cancellable>,
        Some("rtsp-accept"),
        glib::Priority::DEFAULT,
        move |l, _| {
            // A bounded batch per wake-up, so a connect storm cannot hold the loop.
            for _ in 0..64 {
                match l.accept(None::<&gio::Cancellable>) {
                    Ok(socket) => on_accept(&st, socket),
                    Err(e) if e.matches(gio::IOErrorEnum::WouldBlock) => break,
                    Err(e) => {
                        // EMFILE and the like: the connection waits in the backlog.
                        tracing::warn!(error = %e, "Could not accept an RTSP connection");
                        break;
                    }
                }
            }
            glib::ControlFlow::Continue
        },
    );
    source.attach(Some(ctx));
    Ok(Acceptor {
        listener: source,
        state,
        port,
    })
}

fn peer_of(socket: &gio::Socket) -> (String, u16) {
    socket
        .remote_address()
        .ok()
        .and_then(|a| a.downcast::<gio::InetSocketAddress>().ok())
        .map(|a| (a.address().to_str().to_string(), a.port()))
        .unwrap_or_default()
}

fn on_accept(st: &Rc<State>, socket: gio::Socket) {
    let (ip, port) = peer_of(&socket);
    let open = st.pending.borrow().len() + (st.connected)();
    // At the cap, a connection that has not sent its first request yet is the cheapest to let
    // go: the oldest one makes room, so idle sockets cannot lock out a viewer who asks at once.
    let oldest = (open >= st.cfg.max_connections)
        .then(|| st.pending.borrow().keys().min().copied())
        .flatten();
    if let Some(old) = oldest {
        let p = st.pending.borrow_mut().remove(&old);
        if let Some(p) = p {
            if let Some(suppressed) = st.log.allow(std::time::Instant::now()) {
                tracing::warn!(peer = %p.ip, max = st.cfg.max_connections, suppressed, "Connection limit reached; closing the oldest connection that sent no request");
            }
            st.metrics.rtsp_rejected("evicted");
            p.drop_sources();
            let _ = p.socket.close();
        }
    } else if open >= st.cfg.max_connections {
        if let Some(suppressed) = st.log.allow(std::time::Instant::now()) {
            tracing::warn!(peer = %ip, max = st.cfg.max_connections, suppressed, "Connection limit reached; closing");
        }
        st.metrics.rtsp_rejected("max_connections");
        let _ = socket.close();
        return;
    }
    socket.set_blocking(false);
    let id = st.next.get();
    st.next.set(id + 1);
    let weak = Rc::downgrade(st);
    let read = gio::prelude::SocketExtManual::create_source(
        &socket,
        glib::IOCondition::IN | glib::IOCondition::HUP | glib::IOCondition::ERR,
        None::<&gio::Cancellable>,
        Some("rtsp-first-request"),
        glib::Priority::DEFAULT,
        move |_, _| {
            if let Some(st) = weak.upgrade() {
                on_readable(&st, id);
            }
            glib::ControlFlow::Continue
        },
    );
    // The source runs on this thread's context only; the guard satisfies the Send bound.
    let weak = glib::thread_guard::ThreadGuard::new(Rc::downgrade(st));
    let timer = glib::timeout_source_new(
        st.cfg.first_request_timeout,
        Some("rtsp-first-request-timeout"),
        glib::Priority::DEFAULT,
        move || {
            if let Some(st) = weak.get_ref().upgrade()
                && let Some(p) = st.pending.borrow_mut().remove(&id)
            {
                // Rate-capped: a thousand idle sockets must not write a thousand lines.
                if let Some(suppressed) = st.log.allow(std::time::Instant::now()) {
                    tracing::info!(peer = %p.ip, suppressed, "Closing idle connection");
                }
                st.metrics.rtsp_rejected("idle_timeout");
                p.drop_sources();
                let _ = p.socket.close();
            }
            glib::ControlFlow::Break
        },
    );
    read.attach(Some(&st.ctx));
    timer.attach(Some(&st.ctx));
    st.pending.borrow_mut().insert(
        id,
        Pending {
            socket,
            ip,
            port,
            buf: Vec::new(),
            read,
            timer,
        },
    );
}

/// What to do with a pending connection after its latest bytes.
enum Next {
    Wait,
    Close,
    Refuse(&'static str, &'static str),
    HandOver(CString),
}

fn on_readable(st: &Rc<State>, id: u64) {
    let next = {
        let mut pending = st.pending.borrow_mut();
        let Some(p) = pending.get_mut(&id) else {
            return;
        };
        if st.cfg.tls {
            first_bytes_tls(p)
        } else {
            first_request(p, st.cfg.max_request_bytes)
        }
    };
    if matches!(next, Next::Wait) {
        return;
    }
    let Some(p) = st.pending.borrow_mut().remove(&id) else {
        return;
    };
    p.drop_sources();
    match next {
        Next::Wait => {}
        Next::Close => {
            let _ = p.socket.close();
        }
        Next::Refuse(status, metric) => {
            tracing::debug!(peer = %p.ip, status, "Refused a first RTSP request");
            st.metrics.rtsp_rejected(metric);
            if !status.is_empty() {
                let reply = format!("RTSP/1.0 {status}\r\nConnection: close\r\n\r\n");
                let _ =
                    p.socket
                        .send_with_blocking(reply.as_bytes(), false, None::<&gio::Cancellable>);
            }
            let _ = p.socket.close();
        }
        Next::HandOver(initial) => hand_over(st, p, &initial),
    }
}

/// Reads what has arrived of the first request, up to one byte over the limit.
fn first_request(p: &mut Pending, limit: usize) -> Next {
    let mut eof = false;
    loop {
        let have = p.buf.len();
        let room = (limit + 1).saturating_sub(have);
        if room == 0 {
            break;
        }
        p.buf.resize(have + room, 0);
        let got =
            p.socket
                .receive_with_blocking(&mut p.buf[have..], false, None::<&gio::Cancellable>);
        match got {
            Ok(0) => {
                // A client may half-close after its request; the head is still served.
                p.buf.truncate(have);
                eof = true;
                break;
            }
            Ok(n) => p.buf.truncate(have + n),
            Err(e) => {
                p.buf.truncate(have);
                if e.matches(gio::IOErrorEnum::WouldBlock) {
                    break;
                }
                return Next::Close;
            }
        }
    }
    // A request head is text: control characters other than line breaks and tabs (binary
    // garbage, NULs the library could not take) are refused without waiting for more.
    if p.buf
        .iter()
        .any(|&b| (b < b' ' && !matches!(b, b'\r' | b'\n' | b'\t')) || b == 0x7f)
    {
        return Next::Refuse("400 Bad Request", "bad_request");
    }
    match scan_head(&p.buf) {
        Head::Data => Next::Refuse("400 Bad Request", "bad_request"),
        Head::Complete(end) if end <= limit => match CString::new(p.buf.clone()) {
            // The library takes the bytes as a C string; a request head is text.
            Ok(initial) => Next::HandOver(initial),
            Err(_) => Next::Refuse("400 Bad Request", "bad_request"),
        },
        _ if eof => Next::Close,
        Head::Complete(_) | Head::Partial { .. } if p.buf.len() <= limit => Next::Wait,
        Head::Partial { line_ended: false } => {
            Next::Refuse("414 Request-URI Too Large", "request_too_large")
        }
        _ => Next::Refuse("400 Bad Request", "request_too_large"),
    }
}

/// Checks, without reading, that a connection to the RTSPS port starts a TLS handshake.
fn first_bytes_tls(p: &mut Pending) -> Next {
    let mut first = [0u8; 2];
    // Peeked through a short-lived duplicate: the bytes stay for the library's TLS handshake.
    let peeked = p
        .socket
        .fd()
        .try_clone_to_owned()
        .map(std::net::TcpStream::from)
        .and_then(|s| s.peek(&mut first));
    match peeked {
        Ok(0) => Next::Close,
        Ok(n) if looks_like_tls(&first[..n]) => Next::HandOver(CString::default()),
        Ok(_) => Next::Refuse("", "bad_request"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Wait,
        Err(_) => Next::Close,
    }
}

/// `IPPROTO_TCP` and `TCP_NODELAY` (the same on every Unix camstream runs on).
const IPPROTO_TCP: i32 = 6;
const TCP_NODELAY: i32 = 1;

fn hand_over(st: &State, p: Pending, initial: &CString) {
    let Some(server) = st.server.upgrade() else {
        let _ = p.socket.close();
        return;
    };
    // The library's own accepted sockets are in blocking mode (GLib polls for it); its
    // connection code expects that.
    p.socket.set_blocking(true);
    // Interleaved RTP is many small writes per frame right after a response the client has not
    // acknowledged yet: with Nagle's algorithm the kernel holds them until the client's delayed
    // ACK (40 ms on Linux), so a joiner's first keyframe would arrive a frame or two late.
    if let Err(e) = p.socket.set_option(IPPROTO_TCP, TCP_NODELAY, 1) {
        tracing::debug!(peer = %p.ip, error = %e, "Could not turn off Nagle's algorithm");
    }
    HANDING_TLS.set(st.cfg.tls);
    let ok = ffi::transfer_connection(&server, p.socket, &p.ip, p.port, initial);
    HANDING_TLS.set(false);
    if !ok {
        tracing::warn!(peer = %p.ip, "gst-rtsp-server refused a connection handed over");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let c = |s: &[u8]| scan_head(s);
        assert_eq!(
            c(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
            Head::Complete(31)
        );
        assert_eq!(c(b"OPTIONS * RTSP/1.0\nCSeq: 1\n\n"), Head::Complete(28));
        assert_eq!(
            c(b"\r\n\r\nOPTIONS * RTSP/1.0\r\n\r\nX"),
            Head::Complete(26)
        );
        assert_eq!(
            c(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r"),
            Head::Partial { line_ended: true }
        );
        assert_eq!(
            c(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n"),
            Head::Partial { line_ended: true }
        );
        assert_eq!(
            c(b"OPTIONS rtsp://h/aaaaaaaa"),
            Head::Partial { line_ended: false }
        );
        // A folded header line is not an empty line.
        assert_eq!(
            c(b"OPTIONS * RTSP/1.0\r\nX: a\r\n b\r\n\r\n"),
            Head::Complete(32)
        );
        assert_eq!(c(b"$\x00\x00\x08abcdefgh"), Head::Data);
        assert_eq!(c(b"\r\n"), Head::Partial { line_ended: false });
        assert_eq!(c(b""), Head::Partial { line_ended: false });
    }

    #[test]
    fn tls_detection() {
        assert!(looks_like_tls(&[0x16, 0x03]));
        assert!(looks_like_tls(&[0x16]));
        assert!(!looks_like_tls(b"OP"));
        assert!(!looks_like_tls(&[0x16, 0x01]));
        assert!(!looks_like_tls(&[]));
    }
}
