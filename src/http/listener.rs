//! The sidecar's listener: accepts every connection at once and bounds what each may hold, so
//! that idle, slow or numerous clients cannot keep `/healthz` from answering (a Kubernetes
//! liveness probe that times out restarts the pod and every viewer loses the stream).
//!
//! A connection lives in two phases:
//! - **pending**, from accept until its first request head is read: the TLS handshake (with
//!   `http.tls`) and the head must arrive within [`HEADER_TIMEOUT`] of accept. Pending
//!   connections cost a task, an fd and at most [`MAX_HEADER_BYTES`]; when [`MAX_OPEN`]
//!   connections are open, or one address has [`MAX_PENDING_PER_ADDRESS`] pending, the oldest
//!   pending one (of that address) is closed to make room: an idle socket is the cheapest thing
//!   to let go, and a real client sends its request at once.
//! - **serving**: `/healthz` and `/readyz` are answered without a slot (one request, then the
//!   connection closes); anything else takes one of [`MAX_CONNECTIONS`] slots, at most
//!   [`MAX_PER_ADDRESS`] per address, or gets 503 with `Retry-After`.
//!
//! Only HTTP/1.1 is spoken (no h2c: an HTTP/2 preface is a malformed HTTP/1 request). On a
//! kept-alive connection hyper's header timer ([`HEADER_TIMEOUT`]) starts when it waits for the
//! next request, which makes it the keep-alive idle timeout. A connection on which no byte moves
//! either way for [`IDLE_TIMEOUT`] is closed: the write timeout for a reader that stopped reading
//! (and a bound on anything else that stalls).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::names;
use crate::output::rtsp::auth::LogLimiter;

/// Time from accept to a complete first request head (TLS handshake included).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No byte read or written for this long closes a connection (keep-alive idle, stalled reader).
/// Longer than the request timeout, so a slow handler is answered first.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections open at once (pending and serving); beyond, the oldest pending one is closed.
pub const MAX_OPEN: usize = 512;
/// Pending connections (no request yet) one address may hold; beyond, its oldest one that has
/// been pending for [`EVICT_AFTER`] is closed.
pub const MAX_PENDING_PER_ADDRESS: usize = 64;
/// A pending connection younger than this is not closed for the per-address cap: in a connect
/// burst a real client's request may not have been read yet (the hard [`MAX_OPEN`] cap still
/// closes the oldest).
pub const EVICT_AFTER: Duration = Duration::from_millis(250);
/// Serving slots for everything but the probes.
pub const MAX_CONNECTIONS: usize = 64;
/// Serving slots one address may hold.
pub const MAX_PER_ADDRESS: usize = 16;
/// Read buffer per connection, which bounds request headers (larger gets 431).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Request extension: what the listener knows about the request's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (`http.tls`): cookies then get `Secure`, and a password
    /// does not cross the network in clear.
    pub tls: bool,
}

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate or key could not be loaded.
    #[error("HTTPS: cannot load {what} {path:?}: {source}")]
    Load {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: String,
        /// What OpenSSL said.
        source: openssl::error::ErrorStack,
    },
    /// The key does not match the certificate, or OpenSSL refused the setup.
    #[error("HTTPS: {0}")]
    Setup(openssl::error::ErrorStack),
}

/// An HTTPS acceptor from `[tls]`'s PEM certificate chain and key (TLS 1.2 and later).
pub fn acceptor(cert_file: &str, key_file: &str) -> Result<Arc<SslAcceptor>, TlsError> {
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(TlsError::Setup)?;
    b.set_certificate_chain_file(cert_file)
        .map_err(|source| TlsError::Load {
            what: "certificate",
            path: cert_file.to_string(),
            source,
        })?;
    b.set_private_key_file(key_file, SslFiletype::PEM)
        .map_err(|source| TlsError::Load {
            what: "private key",
            path: key_file.to_string(),
            source,
        })?;
    b.check_private_key().map_err(TlsError::Setup)?;
    // Only HTTP/1.1 is served: say so in ALPN so a client never tries h2 here.
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x08http/1.1", client)
            .ok_or(openssl::ssl::AlpnError::NOACK)
    });
    Ok(Arc::new(b.build()))
}

/// Why a connection was closed or refused early, as counted in
/// `camstream_http_connections_refused_total{reason}`.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// No complete request head within [`HEADER_TIMEOUT`] of accept.
    HeaderTimeout,
    /// Closed while pending to make room (open cap or per-address pending cap).
    Evicted,
    /// Every serving slot taken.
    Busy,
    /// The address holds [`MAX_PER_ADDRESS`] serving slots.
    PerAddress,
    /// Request head larger than [`MAX_HEADER_BYTES`].
    TooLarge,
    /// TLS handshake failed.
    Tls,
    /// No byte moved for [`IDLE_TIMEOUT`].
    Idle,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::Evicted => "evicted",
            Refusal::Busy => "busy",
            Refusal::PerAddress => "per_address",
            Refusal::TooLarge => "too_large",
            Refusal::Tls => "tls",
            Refusal::Idle => "idle_timeout",
        }
    }
}

/// Every `reason` label of the refusal counter, registered at 0 so dashboards see them.
pub const REFUSAL_REASONS: &[&str] = &[
    "header_timeout",
    "evicted",
    "busy",
    "per_address",
    "too_large",
    "tls",
    "idle_timeout",
];

/// The listener's bookkeeping, shared by its connections.
struct Book {
    /// Pending connections by accept order: address and the token that closes it.
    pending: BTreeMap<u64, (IpAddr, Instant, CancellationToken)>,
    /// Open connections (pending and serving).
    open: usize,
    /// Serving slots taken, in all and per address.
    serving: usize,
    serving_by: HashMap<IpAddr, usize>,
}

/// Shared by every connection of one listener.
struct Ctx {
    app: Router,
    tls: Option<Arc<SslAcceptor>>,
    book: Mutex<Book>,
    next: AtomicU64,
    log: LogLimiter,
}

impl Ctx {
    fn refused(&self, why: Refusal, peer: SocketAddr) {
        metrics::counter!(names::HTTP_REFUSED, "reason" => why.label()).increment(1);
        if let Some(suppressed) = self.log.allow(Instant::now()) {
            tracing::warn!(
                %peer,
                reason = why.label(),
                suppressed,
                "HTTP connection closed by a sidecar limit (docs/reliability.md)"
            );
        }
    }

    /// Registers a new pending connection; returns its id and token, and the tokens of the
    /// connections to close to make room for it.
    fn admit(&self, ip: IpAddr) -> (u64, CancellationToken, Vec<CancellationToken>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mut evict = Vec::new();
        let now = Instant::now();
        let mine = b.pending.values().filter(|(a, _, _)| *a == ip).count();
        let stale = |at: &Instant| now.duration_since(*at) >= EVICT_AFTER;
        if mine >= MAX_PENDING_PER_ADDRESS
            && let Some(k) = b
                .pending
                .iter()
                .find(|(_, (a, at, _))| *a == ip && stale(at))
                .map(|(k, _)| *k)
            && let Some((_, _, t)) = b.pending.remove(&k)
        {
            evict.push(t);
        } else if b.open >= MAX_OPEN
            && let Some((_, (_, _, t))) = b.pending.pop_first()
        {
            evict.push(t);
        }
        b.open += 1;
        b.pending.insert(id, (ip, now, token.clone()));
        metrics::gauge!(names::HTTP_OPEN).set(b.open as f64);
        (id, token, evict)
    }

    /// The connection's head was read: it leaves the pending set.
    fn served(&self, id: u64) {
        let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        b.pending.remove(&id);
    }

    fn closed(&self, id: u64) {
        let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        b.pending.remove(&id);
        b.open = b.open.saturating_sub(1);
        metrics::gauge!(names::HTTP_OPEN).set(b.open as f64);
    }

    /// Takes a serving slot for `ip`, or says why not.
    fn slot(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        if b.serving >= MAX_CONNECTIONS {
            return Err(Refusal::Busy);
        }
        let mine = b.serving_by.entry(ip).or_insert(0);
        if *mine >= MAX_PER_ADDRESS {
            return Err(Refusal::PerAddress);
        }
        *mine += 1;
        b.serving += 1;
        Ok(Slot {
            ctx: self.clone(),
            ip,
        })
    }
}

/// A serving slot, given back on drop.
struct Slot {
    ctx: Arc<Ctx>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut b = self.ctx.book.lock().unwrap_or_else(|e| e.into_inner());
        b.serving = b.serving.saturating_sub(1);
        if let Some(n) = b.serving_by.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                b.serving_by.remove(&self.ip);
            }
        }
    }
}

/// Closes the connection's books when its task ends, however it ends.
struct Open {
    ctx: Arc<Ctx>,
    id: u64,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.ctx.closed(self.id);
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets in-flight requests finish for a
/// moment. With `tls`, every connection is HTTPS.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<SslAcceptor>>,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(Ctx {
        app,
        tls,
        book: Mutex::new(Book {
            pending: BTreeMap::new(),
            open: 0,
            serving: 0,
            serving_by: HashMap::new(),
        }),
        next: AtomicU64::new(0),
        log: LogLimiter::new(5, Duration::from_secs(60)),
    });
    for r in REFUSAL_REASONS {
        metrics::counter!(names::HTTP_REFUSED, "reason" => *r).absolute(0);
    }
    let graceful = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let (id, token, evict) = ctx.admit(peer.ip());
        for t in evict {
            t.cancel();
        }
        let ctx = ctx.clone();
        let graceful = graceful.clone();
        tasks.spawn(async move {
            let _open = Open {
                ctx: ctx.clone(),
                id,
            };
            tokio::select! {
                _ = connection(stream, peer, id, &ctx, graceful) => {}
                _ = token.cancelled() => ctx.refused(Refusal::Evicted, peer),
            }
        });
    }
    tasks.close();
    graceful.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(300), tasks.wait()).await;
}

/// One connection: TLS, the first head under the deadline, then hyper.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    ctx: &Arc<Ctx>,
    graceful: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + HEADER_TIMEOUT;
    match &ctx.tls {
        None => serve_stream(stream, peer, id, ctx, deadline, graceful).await,
        Some(acceptor) => {
            let Ok(ssl) = Ssl::new(acceptor.context()) else {
                return;
            };
            let Ok(mut s) = SslStream::new(ssl, stream) else {
                return;
            };
            match tokio::time::timeout_at(deadline, Pin::new(&mut s).accept()).await {
                Ok(Ok(())) => serve_stream(s, peer, id, ctx, deadline, graceful).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                    ctx.refused(Refusal::Tls, peer);
                }
                Err(_) => ctx.refused(Refusal::HeaderTimeout, peer),
            }
        }
    }
}

/// What the first request head says.
struct Head {
    /// Bytes read so far (the head and whatever followed it).
    bytes: Vec<u8>,
    /// `/healthz` or `/readyz`.
    probe: bool,
}

/// Reads until the end of the first request head.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<Option<Head>, Refusal> {
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|_| Refusal::HeaderTimeout)?;
        if n == 0 {
            return Ok(None);
        }
        let from = bytes.len().saturating_sub(3);
        bytes.extend_from_slice(&chunk[..n]);
        if bytes[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            let probe = is_probe(&bytes);
            return Ok(Some(Head { bytes, probe }));
        }
        if bytes.len() > MAX_HEADER_BYTES {
            return Err(Refusal::TooLarge);
        }
    }
}

/// Whether a request line asks for `/healthz` or `/readyz` (GET or HEAD).
fn is_probe(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    matches!(method, b"GET" | b"HEAD") && matches!(path, b"/healthz" | b"/readyz")
}

/// A canned refusal written before hyper takes the connection.
fn canned(status: &str, message: &str) -> Vec<u8> {
    let body = serde_json::to_string(&super::body::ErrorBody { error: message })
        .unwrap_or_else(|_| String::from("{}"));
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Retry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve_stream<S>(
    mut s: S,
    peer: SocketAddr,
    id: u64,
    ctx: &Arc<Ctx>,
    deadline: tokio::time::Instant,
    graceful: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head = match tokio::time::timeout_at(deadline, read_head(&mut s)).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return,
        Ok(Err(Refusal::TooLarge)) => {
            ctx.refused(Refusal::TooLarge, peer);
            let _ = s
                .write_all(&canned(
                    "431 Request Header Fields Too Large",
                    "request headers larger than 16 KiB",
                ))
                .await;
            return;
        }
        Ok(Err(_)) => return,
        Err(_) => {
            ctx.refused(Refusal::HeaderTimeout, peer);
            return;
        }
    };
    ctx.served(id);
    let slot = if head.probe {
        None
    } else {
        match ctx.slot(peer.ip()) {
            Ok(slot) => Some(slot),
            Err(why) => {
                ctx.refused(why, peer);
                let msg = match why {
                    Refusal::PerAddress => "too many connections from this address",
                    _ => "every HTTP connection slot is taken",
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    s.write_all(&canned("503 Service Unavailable", msg)),
                )
                .await;
                return;
            }
        }
    };
    let last = Arc::new(AtomicU64::new(0));
    let born = Instant::now();
    let io = Watched {
        inner: s,
        prefix: head.bytes,
        at: 0,
        last: last.clone(),
        born,
    };
    let inner = hyper_util::service::TowerToHyperService::new(ctx.app.clone());
    let connection = Connection {
        peer,
        tls: ctx.tls.is_some(),
    };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(connection);
        hyper::service::Service::call(&inner, req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        // A probe gets one answer and the connection closes: it held no slot.
        .keep_alive(!head.probe);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = graceful.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                let idle = born.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if idle >= IDLE_TIMEOUT {
                    ctx.refused(Refusal::Idle, peer);
                    break;
                }
            }
        }
    }
    drop(slot);
}

/// The connection's stream: replays the bytes read for the first head, and notes when a byte
/// last moved either way.
struct Watched<S> {
    inner: S,
    prefix: Vec<u8>,
    at: usize,
    last: Arc<AtomicU64>,
    born: Instant,
}

impl<S> Watched<S> {
    fn moved(&self) {
        self.last
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            self.moved();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_recognised_by_request_line_only() {
        assert!(is_probe(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(is_probe(b"GET /readyz?verbose HTTP/1.1\r\n\r\n"));
        assert!(is_probe(b"HEAD /healthz HTTP/1.1\r\n\r\n"));
        assert!(!is_probe(b"POST /healthz HTTP/1.1\r\n\r\n"));
        assert!(!is_probe(b"GET /healthzz HTTP/1.1\r\n\r\n"));
        assert!(!is_probe(
            b"GET /api/v1/status HTTP/1.1\r\nX: /healthz\r\n\r\n"
        ));
        assert!(!is_probe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    }
}
