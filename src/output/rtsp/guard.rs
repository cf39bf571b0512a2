//! Request shielding: checks camstream applies to every RTSP request before gst-rtsp-server acts
//! on it, so that malformed or hostile requests are refused with a status code instead of
//! reaching library code paths with a history of crashes (see docs/reliability.md).
//!
//! The checks are plain functions over strings ([`check_uri`], [`check_transport`],
//! [`check_request`]) so they can be unit-tested and fuzzed; [`install`] wires them into a
//! client's `pre-*-request` signals, which refuse a request by returning a status other than OK.
//!
//! Some input never reaches those signals: gst-rtsp-server reads request heads one byte per
//! system call on the RTSP thread, so a client that streams an endless header line or thousands
//! of header lines keeps that thread busy for seconds and starves every other client (and the
//! liveness check). A connection's first request is read and bounded by camstream itself before
//! the library sees it (`accept.rs`). For what follows, the `rtsp-guard` thread is woken by every
//! arrival of bytes on a handed-over client and cuts off one that has more than a request's
//! worth unread or has overspent its [`Budget`]; this works even while the RTSP thread is stuck
//! reading that client, but it races the library rather than gating it (docs/reliability.md).
//!
//! The same watcher drops a TCP viewer that has stopped reading: gst-rtsp-server keeps such a
//! client connected forever and queues media for it, so its socket stays full and its backlog
//! holds memory. A send queue that is full and has not moved for [`SEND_STALL`] is cut off.

use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use gst_rtsp_server::gio::prelude::*;
use gst_rtsp_server::gst_rtsp;
use gst_rtsp_server::prelude::*;

use crate::metrics::Metrics;
use crate::output::rtsp::auth::LogLimiter;
use crate::output::rtsp::ffi::{self, header, peer_ip, request_line};

/// Longest request URI accepted, in bytes. Real clients send well under 200.
pub const MAX_URI: usize = 1024;
/// Longest Transport, Session or other checked header value accepted, in bytes.
pub const MAX_HEADER: usize = 1024;

/// Why a request is refused; each maps to one RTSP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Syntax camstream does not accept (400).
    BadRequest(&'static str),
    /// A request that would make the server send media to someone else (403).
    Forbidden(&'static str),
    /// No transport on offer that camstream can serve (461).
    UnsupportedTransport(&'static str),
    /// The request URI is longer than [`MAX_URI`] (414).
    UriTooLong,
    /// A version other than RTSP/1.0 (505).
    Version,
}

impl Refusal {
    /// The status code the client receives.
    pub fn status(self) -> gst_rtsp::RTSPStatusCode {
        match self {
            Refusal::BadRequest(_) => gst_rtsp::RTSPStatusCode::BadRequest,
            Refusal::Forbidden(_) => gst_rtsp::RTSPStatusCode::Forbidden,
            Refusal::UnsupportedTransport(_) => gst_rtsp::RTSPStatusCode::UnsupportedTransport,
            Refusal::UriTooLong => gst_rtsp::RTSPStatusCode::RequestUriTooLarge,
            Refusal::Version => gst_rtsp::RTSPStatusCode::RtspVersionNotSupported,
        }
    }

    /// A short reason for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::BadRequest(r) | Refusal::Forbidden(r) | Refusal::UnsupportedTransport(r) => r,
            Refusal::UriTooLong => "request URI too long",
            Refusal::Version => "not RTSP/1.0",
        }
    }
}

/// The request methods the guard distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// OPTIONS.
    Options,
    /// DESCRIBE.
    Describe,
    /// SETUP.
    Setup,
    /// PLAY.
    Play,
    /// PAUSE.
    Pause,
    /// TEARDOWN.
    Teardown,
    /// GET_PARAMETER.
    GetParameter,
    /// SET_PARAMETER.
    SetParameter,
    /// ANNOUNCE or RECORD: never served, camstream only plays.
    Record,
}

/// What the guard looks at in one request.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The request URI as sent.
    pub uri: &'a str,
    /// The Transport header, if any.
    pub transport: Option<&'a str>,
    /// The Session header, if any.
    pub session: Option<&'a str>,
    /// The CSeq header, if any.
    pub cseq: Option<&'a str>,
    /// Whether the request line said RTSP/1.0.
    pub version_1_0: bool,
    /// The peer's IP address as the connection sees it.
    pub peer: &'a str,
}

/// Checks one request; `Ok` lets gst-rtsp-server handle it.
pub fn check_request(method: Method, req: &Request<'_>) -> Result<(), Refusal> {
    if method == Method::Record {
        return Err(Refusal::BadRequest("camstream does not accept recordings"));
    }
    if !req.version_1_0 {
        // gst-rtsp-server 1.22 aborts ("free(): invalid size") when an RTSP/2.0 OPTIONS is
        // refused from its pre-request signal, so OPTIONS of any version is left to it; it
        // answers them harmlessly.
        if method == Method::Options {
            return Ok(());
        }
        return Err(Refusal::Version);
    }
    // The library reads a non-numeric CSeq as 0 and answers it; a client that sends one is
    // broken or probing.
    match req.cseq {
        Some(c) if !c.is_empty() && c.len() <= 10 && c.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return Err(Refusal::BadRequest("CSeq missing or not a number")),
    }
    check_uri(req.uri)?;
    if let Some(s) = req.session {
        check_session(s)?;
    }
    if method == Method::Setup {
        match req.transport {
            Some(t) => check_transport(t, req.peer)?,
            None => return Err(Refusal::UnsupportedTransport("SETUP without Transport")),
        }
    }
    Ok(())
}

/// Checks a Session header value: an identifier of safe characters, then optional parameters.
pub fn check_session(value: &str) -> Result<(), Refusal> {
    if value.len() > MAX_HEADER {
        return Err(Refusal::BadRequest("Session header too long"));
    }
    let id = value.split(';').next().unwrap_or("").trim();
    if id.is_empty() || id.len() > 128 {
        return Err(Refusal::BadRequest("bad session identifier"));
    }
    // RFC 2326 §3.4: alphanumerics and a few safe punctuation marks.
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"$-_.+".contains(&b))
    {
        return Err(Refusal::BadRequest("bad session identifier"));
    }
    Ok(())
}

/// Checks a request URI: `*`, an absolute `rtsp://` URI or an absolute path, without control
/// characters, empty or dot segments, or escapes that hide a dot, slash or control character.
pub fn check_uri(uri: &str) -> Result<(), Refusal> {
    if uri.len() > MAX_URI {
        return Err(Refusal::UriTooLong);
    }
    if uri == "*" {
        return Ok(());
    }
    // URIs are ASCII (RFC 3986); anything else must arrive %-escaped.
    if uri.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'\\') {
        return Err(Refusal::BadRequest(
            "control character, space, backslash or non-ASCII byte in URI",
        ));
    }
    let path = match split_scheme(uri) {
        Some(rest) => match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        },
        None if uri.starts_with('/') => uri,
        None => {
            return Err(Refusal::BadRequest(
                "URI is neither rtsp:// nor an absolute path",
            ));
        }
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    if decoded.iter().any(|&b| b < b' ' || b == 0x7f || b == b'\\') {
        return Err(Refusal::BadRequest("escaped control character in URI path"));
    }
    // Compare the decoded and raw forms: an escaped slash would change the segments.
    if decoded.iter().filter(|&&b| b == b'/').count() != path.bytes().filter(|&b| b == b'/').count()
    {
        return Err(Refusal::BadRequest("escaped slash in URI path"));
    }
    let mut segments = decoded.split(|&b| b == b'/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        // One trailing slash is normal: clients append it to the Content-Base.
        if seg.is_empty() && !last {
            return Err(Refusal::BadRequest("empty segment in URI path"));
        }
        if seg == b"." || seg == b".." {
            return Err(Refusal::BadRequest("dot segment in URI path"));
        }
    }
    Ok(())
}

/// The part of `uri` after `rtsp://` (or rtspu/rtsps), case-insensitively.
fn split_scheme(uri: &str) -> Option<&str> {
    for scheme in ["rtsp://", "rtsps://", "rtspu://"] {
        // Compared as bytes: slicing the str could split a multi-byte character (found by
        // fuzzing; a panic here would abort inside a GLib callback).
        let prefix = uri.as_bytes().get(..scheme.len());
        if prefix.is_some_and(|p| p.eq_ignore_ascii_case(scheme.as_bytes())) {
            return Some(&uri[scheme.len()..]);
        }
    }
    None
}

fn percent_decode(s: &str) -> Result<Vec<u8>, Refusal> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(Refusal::BadRequest("malformed %-escape in URI"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Checks a SETUP's Transport header against what camstream serves (unicast RTP/AVP over UDP
/// or interleaved TCP, or multicast from its own pool) and refuses a destination other than the
/// requesting peer, which would turn the server into a traffic reflector.
pub fn check_transport(value: &str, peer: &str) -> Result<(), Refusal> {
    if value.len() > MAX_HEADER {
        return Err(Refusal::BadRequest("Transport header too long"));
    }
    let mut usable = false;
    for spec in value.split(',') {
        // A reflector request is refused whichever profile carries it, even one skipped below.
        for p in spec.split(';') {
            if let Some((n, v)) = p.split_once('=')
                && n.trim().eq_ignore_ascii_case("destination")
                && !v.trim().is_empty()
                && !v.trim().eq_ignore_ascii_case(peer)
            {
                return Err(Refusal::Forbidden("destination other than the client"));
            }
        }
        let mut parts = spec.split(';').map(str::trim);
        let profile = parts.next().unwrap_or("").to_ascii_uppercase();
        let tcp = match profile.as_str() {
            "RTP/AVP" | "RTP/AVP/UDP" => false,
            "RTP/AVP/TCP" => true,
            // Other profiles are skipped by the library; only their absence of a usable one is
            // an error.
            _ => {
                continue;
            }
        };
        for p in parts {
            let (name, val) = match p.split_once('=') {
                Some((n, v)) => (n.trim().to_ascii_lowercase(), v.trim()),
                None => (p.to_ascii_lowercase(), ""),
            };
            match name.as_str() {
                "interleaved" => {
                    if !tcp {
                        return Err(Refusal::BadRequest("interleaved channels over UDP"));
                    }
                    range(val, 0, 255).ok_or(Refusal::BadRequest("bad interleaved channels"))?;
                }
                "client_port" | "port" => {
                    range(val, 1, 65535).ok_or(Refusal::BadRequest("bad client_port"))?;
                }
                "ttl" => {
                    number(val, 0, 255).ok_or(Refusal::BadRequest("bad ttl"))?;
                }
                "ssrc"
                    if val.is_empty() || val.len() > 8 || u32::from_str_radix(val, 16).is_err() =>
                {
                    return Err(Refusal::BadRequest("bad ssrc"));
                }
                "mode" => {
                    let m = val.trim_matches('"');
                    if !m.eq_ignore_ascii_case("play") {
                        return Err(Refusal::UnsupportedTransport("only mode=PLAY is served"));
                    }
                }
                _ => {}
            }
        }
        usable = true;
    }
    if usable {
        Ok(())
    } else {
        Err(Refusal::UnsupportedTransport(
            "no RTP/AVP transport offered",
        ))
    }
}

fn number(s: &str, min: u32, max: u32) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| (min..=max).contains(n))
}

/// `a` or `a-b` with both in `min..=max` and `b >= a`.
fn range(s: &str, min: u32, max: u32) -> Option<(u32, u32)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (number(a, min, max)?, number(b, min, max)?);
            (b >= a).then_some((a, b))
        }
        None => number(s, min, max).map(|a| (a, a)),
    }
}

/// Runs [`check_request`] on the request in `ctx`.
fn verdict(
    client: &gst_rtsp_server::RTSPClient,
    ctx: &gst_rtsp_server::RTSPContext,
    method: Method,
) -> gst_rtsp::RTSPStatusCode {
    let Some(msg) = ctx.request() else {
        return gst_rtsp::RTSPStatusCode::Ok;
    };
    let (uri, version_1_0) = request_line(msg).unwrap_or_default();
    let transport = header(msg, gst_rtsp::RTSPHeaderField::Transport);
    let session = header(msg, gst_rtsp::RTSPHeaderField::Session);
    let cseq = header(msg, gst_rtsp::RTSPHeaderField::Cseq);
    let peer = peer_ip(client);
    let req = Request {
        uri: &uri,
        transport: transport.as_deref(),
        session: session.as_deref(),
        cseq: cseq.as_deref(),
        version_1_0,
        peer: &peer,
    };
    match check_request(method, &req) {
        Ok(()) => gst_rtsp::RTSPStatusCode::Ok,
        Err(refusal) => {
            // Debug, not warn: a hostile client must not be able to flood the log.
            tracing::debug!(peer = %peer, ?method, reason = refusal.reason(), "Refused RTSP request");
            refusal.status()
        }
    }
}

/// How much more than one request a client may send in a burst once its connection is handed
/// to the library, as a multiple of `rtsp.max_request_bytes`: a head and a body, with room for
/// a few pipelined requests and RTCP reports.
pub const BURST_REQUESTS: u64 = 4;

/// The receive buffer given to every handed-over client socket. A viewer sends a few hundred
/// bytes of requests and RTCP at a time; the cap bounds what the library can still read from a
/// flooding client after the watcher has cut it off.
pub const RECEIVE_BUFFER: usize = 32 * 1024;

/// How often each client's send queue is looked at for a stall.
pub const STALL_PERIOD: Duration = Duration::from_secs(1);
/// Unsent bytes in a client's socket at which a send queue that does not move counts as
/// stalled; an idle control connection has none.
pub const STALL_BYTES: usize = 16 * 1024;
/// How long a full send queue may stand still before the client is dropped. Real viewers on a
/// poor link still drain something every few hundred milliseconds.
pub const SEND_STALL: Duration = Duration::from_secs(5);

/// Tracks whether a client's send queue is standing still; returns true when it has been full
/// and unchanged for [`SEND_STALL`] (counted in looks of [`STALL_PERIOD`]).
pub fn send_stalled(unsent: usize, last: &mut usize, still: &mut u32) -> bool {
    if unsent >= STALL_BYTES && unsent == *last {
        *still = still.saturating_add(1);
    } else {
        *still = 0;
    }
    *last = unsent;
    STALL_PERIOD.saturating_mul(*still) >= SEND_STALL
}

/// The bytes a handed-over client may send: a token bucket holding `burst` bytes, refilled at
/// `rate` bytes per second. Real clients send a request now and then and an RTCP report every
/// few seconds; a client that streams bytes at the server empties it within one burst.
#[derive(Debug, Clone)]
pub struct Budget {
    burst: f64,
    rate: f64,
    level: f64,
    seen: u64,
    at: std::time::Instant,
}

impl Budget {
    /// A full bucket for a client whose byte counter stands at `received`.
    pub fn new(max_request_bytes: usize, received: u64, now: std::time::Instant) -> Self {
        let burst = (max_request_bytes as u64 * BURST_REQUESTS) as f64;
        Budget {
            burst,
            rate: max_request_bytes as f64,
            level: burst,
            seen: received,
            at: now,
        }
    }

    /// Spends what arrived since the last call (`received` is the connection's running total);
    /// true when the client has sent more than its budget.
    pub fn spend(&mut self, received: u64, now: std::time::Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.level = (self.level + dt * self.rate).min(self.burst);
        self.level -= received.saturating_sub(self.seen) as f64;
        self.seen = self.seen.max(received);
        self.level < 0.0
    }
}

/// Whether a client is flooding: more than a burst's worth of bytes sits unread (the RTSP
/// thread would read it one byte per system call), or it has overspent its [`Budget`].
pub fn flooding(unread: usize, allowance: usize, over_budget: bool) -> bool {
    unread > allowance * BURST_REQUESTS as usize || over_budget
}

/// A TLS record carries up to 16 KiB (plus overhead), and a handshake several records: over
/// TLS the watcher counts ciphertext, so its per-request allowance is at least this.
pub const TLS_ALLOWANCE: usize = 18 * 1024;

/// What the watcher needs, set once when the server starts.
struct Watcher {
    runtime: tokio::runtime::Handle,
    /// Bytes one request may take on the wire: `rtsp.max_request_bytes`, or [`TLS_ALLOWANCE`].
    allowance: usize,
    metrics: Metrics,
    log: LogLimiter,
}

static WATCHER: OnceLock<Watcher> = OnceLock::new();

/// Starts the `rtsp-guard` thread (once per process) with the request limit every handed-over
/// client is held to. Until this runs, [`install`] applies the request checks only.
pub fn start_watcher(max_request_bytes: u32, tls: bool, metrics: Metrics) {
    if WATCHER.get().is_some() {
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the RTSP flood watcher");
            return;
        }
    };
    let handle = runtime.handle().clone();
    let spawned = std::thread::Builder::new()
        .name("rtsp-guard".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "Cannot start the RTSP flood watcher");
        return;
    }
    let _ = WATCHER.set(Watcher {
        runtime: handle,
        allowance: if tls {
            (max_request_bytes as usize).max(TLS_ALLOWANCE)
        } else {
            max_request_bytes as usize
        },
        metrics,
        log: LogLimiter::new(5, Duration::from_secs(60)),
    });
}

/// Cuts a connection under the library: shut down both ways, then read away what is queued so
/// the library's next read finds end-of-stream instead of more flood.
fn cut(stream: tokio::net::TcpStream) {
    use std::io::Read;
    let Ok(mut s) = stream.into_std() else {
        return;
    };
    let _ = s.shutdown(std::net::Shutdown::Both);
    let mut scratch = vec![0u8; 64 * 1024];
    // Bounded: a peer still sending is reset by the kernel once both directions are shut.
    for _ in 0..64 {
        match s.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Watches one handed-over client until it closes: woken by every arrival of bytes (no
/// sampling), and once per [`STALL_PERIOD`] for the send queue.
async fn watch(
    socket: std::net::TcpStream,
    peer: String,
    mut closed: tokio::sync::oneshot::Receiver<()>,
) {
    let Some(w) = WATCHER.get() else {
        return;
    };
    let Ok(stream) = tokio::net::TcpStream::from_std(socket) else {
        return;
    };
    let received = |s: &tokio::net::TcpStream| ffi::bytes_received(s.as_fd());
    let mut budget = Budget::new(
        w.allowance,
        received(&stream).unwrap_or(0),
        std::time::Instant::now(),
    );
    let mut tick = tokio::time::interval(STALL_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_unsent, mut still) = (0, 0);
    loop {
        tokio::select! {
            _ = &mut closed => return,
            ready = stream.readable() => {
                if ready.is_err() {
                    return;
                }
                let unread = ffi::unread(stream.as_fd());
                let over = received(&stream)
                    .is_some_and(|r| budget.spend(r, std::time::Instant::now()));
                if flooding(unread, w.allowance, over) {
                    w.metrics.rtsp_rejected("request_too_large");
                    if let Some(suppressed) = w.log.allow(std::time::Instant::now()) {
                        tracing::warn!(peer = %peer, unread, suppressed, "Cut off an RTSP client flooding the server with request bytes");
                    }
                    cut(stream);
                    return;
                }
                // Edge-triggered: clearing the readiness (without reading: the bytes are the
                // library's) means the next wake-up comes with the next bytes that arrive.
                let _ = stream.try_io(tokio::io::Interest::READABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
            }
            _ = tick.tick() => {
                if send_stalled(ffi::unsent(stream.as_fd()), &mut last_unsent, &mut still) {
                    tracing::warn!(peer = %peer, "Dropped an RTSP client that stopped reading");
                    cut(stream);
                    return;
                }
            }
        }
    }
}

/// Puts a client's socket under the watcher until the client closes. The watcher holds a
/// duplicate of the socket: its own descriptor number cannot be reused while it is held, so a
/// cut from the watcher thread can never hit an unrelated file, even while the RTSP thread is
/// busy inside the library.
fn watch_client(client: &gst_rtsp_server::RTSPClient) {
    let Some(w) = WATCHER.get() else {
        return;
    };
    let Some(socket) = ffi::client_socket(client) else {
        return;
    };
    let Ok(fd) = socket.fd().try_clone_to_owned() else {
        return;
    };
    ffi::set_receive_buffer(fd.as_fd(), RECEIVE_BUFFER);
    let (tx, rx) = tokio::sync::oneshot::channel();
    w.runtime
        .spawn(watch(TcpStream::from(fd), peer_ip(client), rx));
    // The duplicate would keep the TCP connection open after the library closes its own
    // descriptor, so the watch must end as soon as the client does.
    let tx = Mutex::new(Some(tx));
    client.connect_closed(move |_| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
    });
}

/// Hooks the request checks and the flood watch into a newly connected client.
pub fn install(client: &gst_rtsp_server::RTSPClient) {
    watch_client(client);
    client.connect_pre_options_request(|c, ctx| verdict(c, ctx, Method::Options));
    client.connect_pre_describe_request(|c, ctx| verdict(c, ctx, Method::Describe));
    client.connect_pre_setup_request(|c, ctx| verdict(c, ctx, Method::Setup));
    client.connect_pre_play_request(|c, ctx| verdict(c, ctx, Method::Play));
    client.connect_pre_pause_request(|c, ctx| verdict(c, ctx, Method::Pause));
    client.connect_pre_teardown_request(|c, ctx| verdict(c, ctx, Method::Teardown));
    client.connect_pre_get_parameter_request(|c, ctx| verdict(c, ctx, Method::GetParameter));
    client.connect_pre_set_parameter_request(|c, ctx| verdict(c, ctx, Method::SetParameter));
    client.connect_pre_announce_request(|c, ctx| verdict(c, ctx, Method::Record));
    client.connect_pre_record_request(|c, ctx| verdict(c, ctx, Method::Record));
}

/// Runs the guard over one raw request head, as the fuzz target and its stable smoke test do,
/// and checks what an accepted request must satisfy. Panics on a violated invariant.
pub fn fuzz_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or("");
    let mut parts = line.splitn(3, ' ');
    let method = match parts.next().unwrap_or("") {
        "OPTIONS" => Method::Options,
        "DESCRIBE" => Method::Describe,
        "SETUP" => Method::Setup,
        "PLAY" => Method::Play,
        "PAUSE" => Method::Pause,
        "TEARDOWN" => Method::Teardown,
        "GET_PARAMETER" => Method::GetParameter,
        "SET_PARAMETER" => Method::SetParameter,
        _ => Method::Record,
    };
    let uri = parts.next().unwrap_or("");
    let version_1_0 = parts.next() == Some("RTSP/1.0");
    let (mut transport, mut session, mut cseq) = (None, None, None);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "transport" => transport = Some(v),
            "session" => session = Some(v),
            "cseq" => cseq = Some(v),
            _ => {}
        }
    }
    let req = Request {
        uri,
        transport,
        session,
        cseq,
        version_1_0,
        peer: "127.0.0.1",
    };
    let verdict = check_request(method, &req);
    if let Err(r) = verdict {
        // Every refusal is an error status the client can read.
        assert!(r.status() != gst_rtsp::RTSPStatusCode::Ok && !r.reason().is_empty());
    }
    if verdict.is_ok() && version_1_0 {
        assert!(uri.len() <= MAX_URI, "accepted an overlong URI");
        assert!(
            !uri.bytes().any(|b| b < b' '),
            "accepted a control character"
        );
        if uri != "*" {
            let rest = split_scheme(uri).unwrap_or(uri);
            let path = if uri.starts_with('/') {
                uri
            } else {
                rest.find('/').map_or("/", |i| &rest[i..])
            };
            let path = path.split(['?', '#']).next().unwrap_or("");
            let decoded = percent_decode(path).expect("accepted a malformed escape");
            let segments: Vec<&[u8]> = decoded.split(|&b| b == b'/').collect();
            assert!(
                !segments.iter().any(|s| *s == b".." || *s == b"."),
                "accepted a dot segment: {uri:?}"
            );
        }
        if method == Method::Setup {
            let t = transport.expect("accepted SETUP without Transport");
            let third_party = t.split([',', ';']).any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p.strip_prefix("destination=")
                    .is_some_and(|v| !v.trim().is_empty() && v.trim() != "127.0.0.1")
            });
            assert!(!third_party, "accepted a third-party destination: {t:?}");
        }
    }
    if let Some(t) = transport {
        let _ = check_transport(t, "127.0.0.1");
    }
    if let Some(s) = session {
        let _ = check_session(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        for ok in [
            "*",
            "rtsp://127.0.0.1:8554/video",
            "rtsp://127.0.0.1:8554/video/",
            "rtsp://127.0.0.1:8554/video/stream=0",
            "RTSP://cam.local/video?x=1",
            "/video",
            "rtsp://host",
        ] {
            assert_eq!(check_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "rtsp://h//video",
            "rtsp://h/video/../video",
            "rtsp://h/%2e%2e/video",
            "rtsp://h/video%2fx",
            "rtsp://h/video%00",
            "rtsp://h/video%zz",
            "rtsp://h/video%2",
            "rtsp://h/a b",
            "rtsp://h/./video",
            "video",
            "",
            "rtsp://h/vi\\deo",
            "rtsp:\u{fffd}\u{fffd}",
            "rtsp://h/vid\u{e9}o",
        ] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_uri(&format!("rtsp://h/{}", "a".repeat(MAX_URI))),
            Err(Refusal::UriTooLong)
        );
    }

    #[test]
    fn transports() {
        let peer = "127.0.0.1";
        for ok in [
            "RTP/AVP;unicast;client_port=5000-5001",
            "RTP/AVP/TCP;unicast;interleaved=0-1",
            "RTP/AVP/UDP;unicast;client_port=5000-5001;mode=\"PLAY\"",
            "RTP/AVP;multicast;ttl=16",
            "RTP/SAVP;unicast;client_port=1-2,RTP/AVP;unicast;client_port=5000-5001",
            "RTP/AVP;unicast;client_port=5000-5001;destination=127.0.0.1",
            "RTP/AVP;unicast;client_port=5000-5001;ssrc=DEADBEEF",
        ] {
            assert_eq!(check_transport(ok, peer), Ok(()), "{ok}");
        }
        type Want = fn(Refusal) -> bool;
        let cases: &[(&str, Want)] = &[
            ("RTP/AVP/TCP;interleaved=256-257", |r| {
                matches!(r, Refusal::BadRequest(_))
            }),
            ("RTP/AVP/TCP;interleaved=-1", |r| {
                matches!(r, Refusal::BadRequest(_))
            }),
            ("RTP/AVP/TCP;interleaved=5-3", |r| {
                matches!(r, Refusal::BadRequest(_))
            }),
            ("RTP/AVP;client_port=0-1", |r| {
                matches!(r, Refusal::BadRequest(_))
            }),
            ("RTP/AVP;client_port=65536-65537", |r| {
                matches!(r, Refusal::BadRequest(_))
            }),
            ("RTP/AVP;client_port=+5", |r| {
                matches!(r, Refusal::BadRequest(_))
            }),
            ("RTP/AVP;client_port=5000-5001;destination=10.1.2.3", |r| {
                matches!(r, Refusal::Forbidden(_))
            }),
            (
                "RTP/SAVP;destination=10.1.2.3,RTP/AVP;client_port=5000-5001",
                |r| matches!(r, Refusal::Forbidden(_)),
            ),
            ("RTP/SAVP;unicast;client_port=5000-5001", |r| {
                matches!(r, Refusal::UnsupportedTransport(_))
            }),
            ("", |r| matches!(r, Refusal::UnsupportedTransport(_))),
            ("RTP/AVP;unicast;client_port=5000-5001;mode=record", |r| {
                matches!(r, Refusal::UnsupportedTransport(_))
            }),
            ("RTP/AVP;ssrc=123456789", |r| {
                matches!(r, Refusal::BadRequest(_))
            }),
            ("RTP/AVP;interleaved=0-1", |r| {
                matches!(r, Refusal::BadRequest(_))
            }),
        ];
        for (t, want) in cases {
            let got = check_transport(t, peer).unwrap_err();
            assert!(want(got), "{t}: {got:?}");
        }
        assert!(check_transport(&";".repeat(MAX_HEADER + 1), peer).is_err());
    }

    #[test]
    fn sessions() {
        assert_eq!(check_session("AbC-12.3_$+;timeout=60"), Ok(()));
        for bad in ["", ";timeout=5", "a b", "x\u{1}", &"a".repeat(129)] {
            assert!(check_session(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests() {
        let base = Request {
            uri: "rtsp://127.0.0.1/video/stream=0",
            transport: Some("RTP/AVP/TCP;unicast;interleaved=0-1"),
            session: None,
            cseq: Some("3"),
            version_1_0: true,
            peer: "127.0.0.1",
        };
        assert_eq!(check_request(Method::Setup, &base), Ok(()));
        for cseq in [None, Some(""), Some("abc"), Some("-1"), Some("12345678901")] {
            let r = Request {
                cseq,
                ..base.clone()
            };
            assert!(check_request(Method::Options, &r).is_err(), "{cseq:?}");
        }
        let v2 = Request {
            version_1_0: false,
            ..base.clone()
        };
        assert_eq!(check_request(Method::Describe, &v2), Err(Refusal::Version));
        let v2_options = Request {
            cseq: Some("x"),
            ..v2.clone()
        };
        assert_eq!(check_request(Method::Options, &v2_options), Ok(()));
        let no_transport = Request {
            transport: None,
            ..base.clone()
        };
        assert!(check_request(Method::Setup, &no_transport).is_err());
        assert_eq!(check_request(Method::Play, &no_transport), Ok(()));
        assert!(check_request(Method::Record, &base).is_err());
        let bad_session = Request {
            session: Some("x y"),
            ..base
        };
        assert!(check_request(Method::Play, &bad_session).is_err());
    }

    #[test]
    fn unread_bytes_over_a_burst_are_a_flood() {
        let burst = 4096 * BURST_REQUESTS as usize;
        assert!(!flooding(burst, 4096, false));
        assert!(flooding(burst + 1, 4096, false));
        assert!(flooding(0, 4096, true));
    }

    #[test]
    fn budget_allows_bursts_and_refills_but_not_a_stream() {
        let t0 = std::time::Instant::now();
        let limit = 4096;
        let mut b = Budget::new(limit, 1000, t0);
        // A burst of BURST_REQUESTS requests at once is allowed...
        let burst = 1000 + limit as u64 * BURST_REQUESTS;
        assert!(!b.spend(burst, t0));
        // ...one more byte is not, until time refills the bucket.
        assert!(b.spend(burst + 1, t0));
        let mut b = Budget::new(limit, 0, t0);
        let mut total = 0;
        // A request per second, for an hour, never runs out.
        for s in 1..3600u64 {
            total += limit as u64;
            assert!(!b.spend(total, t0 + Duration::from_secs(s)));
        }
        // A stream of 64 KiB every 100 ms runs out within a second.
        let mut b = Budget::new(limit, 0, t0);
        let over = (1..=10u64)
            .position(|i| b.spend(i * 65536, t0 + Duration::from_millis(100 * i)))
            .expect("a stream of bytes must overspend");
        assert_eq!(over, 0);
    }

    #[test]
    fn send_stall_needs_a_full_queue_standing_still() {
        let looks = (SEND_STALL.as_millis() / STALL_PERIOD.as_millis()) as usize;
        let (mut last, mut still) = (0, 0);
        // Draining, however slowly, never counts.
        for i in 0..looks * 3 {
            assert!(!send_stalled(STALL_BYTES + i % 2, &mut last, &mut still));
        }
        // An empty queue never counts.
        for _ in 0..looks * 3 {
            assert!(!send_stalled(0, &mut last, &mut still));
        }
        let mut fired = None;
        for i in 0..looks * 2 {
            if send_stalled(200_000, &mut last, &mut still) {
                fired = Some(i);
                break;
            }
        }
        assert_eq!(fired, Some(looks));
    }
}
