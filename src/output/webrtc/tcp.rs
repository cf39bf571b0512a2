//! ICE-TCP (RFC 6544): the media port's TCP side, for networks that pass no UDP. Browsers
//! connect (active), camstream listens (passive) on the same port number. Each connection
//! carries RFC 4571 frames (a 16-bit length, then one STUN, DTLS, RTP or RTCP message), which
//! are handed to the UDP task as if they were datagrams, and answers go back framed the same way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages queued for one connection before more are dropped (a stalled browser).
const SEND_QUEUE: usize = 512;
/// Time for a whole frame (length prefix and message) once its first byte arrived, and for the
/// first frame after accept: a browser sends its STUN check at once.
pub(super) const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections one address may hold (a browser opens one or two per session).
pub(super) const MAX_PER_ADDRESS: usize = 8;

/// What a connection tells the media task.
pub(super) enum TcpEvent {
    /// A browser connected; `tx` takes messages to send it (unframed).
    Open {
        /// Its address.
        peer: SocketAddr,
        /// The connection's send queue.
        tx: mpsc::Sender<Vec<u8>>,
    },
    /// One framed message arrived.
    Data {
        /// From.
        peer: SocketAddr,
        /// To.
        local: SocketAddr,
        /// The message.
        data: Vec<u8>,
    },
    /// The connection ended.
    Closed {
        /// Its address.
        peer: SocketAddr,
    },
}

/// Connections open, in all and per address.
#[derive(Default)]
struct Open {
    all: usize,
    by: HashMap<IpAddr, usize>,
}

/// A connection's place in [`Open`], given back on drop.
struct Place {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|e| e.into_inner());
        o.all = o.all.saturating_sub(1);
        if let Some(n) = o.by.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.by.remove(&self.ip);
            }
        }
    }
}

/// Counts a connection closed by a limit and logs it, at most a few lines a minute.
fn refused(reason: &'static str, peer: SocketAddr) {
    static LOG: std::sync::LazyLock<crate::output::rtsp::auth::LogLimiter> =
        std::sync::LazyLock::new(|| {
            crate::output::rtsp::auth::LogLimiter::new(5, Duration::from_secs(60))
        });
    metrics::counter!(crate::metrics::names::ICE_TCP_REFUSED, "reason" => reason).increment(1);
    if let Some(suppressed) = LOG.allow(std::time::Instant::now()) {
        tracing::warn!(%peer, reason, suppressed, "ICE-TCP connection closed by a limit (docs/reliability.md)");
    }
}

/// Accepts connections until `cancel`, at most `max` at once and [`MAX_PER_ADDRESS`] per
/// address (more are closed at once, so accepting never stops); a connection silent for `idle`,
/// or slower than [`FRAME_TIMEOUT`] to send a frame, is closed. The media task closes a
/// connection whose first message matches no live session, and a session's connections when it
/// ends.
pub(super) async fn listen(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    max: usize,
    idle: Duration,
    cancel: CancellationToken,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "ICE-TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let place = {
            let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
            let mine = o.by.get(&peer.ip()).copied().unwrap_or(0);
            if o.all >= max {
                None.ok_or("full")
            } else if mine >= MAX_PER_ADDRESS {
                None.ok_or("per_address")
            } else {
                o.all += 1;
                *o.by.entry(peer.ip()).or_insert(0) += 1;
                Ok(Place {
                    open: open.clone(),
                    ip: peer.ip(),
                })
            }
        };
        let place = match place {
            Ok(p) => p,
            Err(reason) => {
                refused(reason, peer);
                drop(stream);
                continue;
            }
        };
        let events = events.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            connection(stream, peer, events, idle, cancel).await;
            drop(place);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
    idle: Duration,
    cancel: CancellationToken,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE);
    if events.send(TcpEvent::Open { peer, tx }).await.is_err() {
        return;
    }
    let writer = async move {
        while let Some(m) = rx.recv().await {
            let Ok(len) = u16::try_from(m.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(m.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&m);
            if wr.write_all(&framed).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        let mut len = [0u8; 2];
        // The first frame must come at once; later ones may wait up to `idle`.
        let mut wait = FRAME_TIMEOUT;
        loop {
            // Waiting for the first byte of a frame is idle time; from it on, the whole frame
            // (prefix and message) must arrive within FRAME_TIMEOUT.
            match tokio::time::timeout(wait, rd.read_exact(&mut len[..1])).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return,
                Err(_) => return refused("idle", peer),
            }
            let frame_deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
            let frame = async {
                rd.read_exact(&mut len[1..]).await?;
                let mut data = vec![0u8; usize::from(u16::from_be_bytes(len))];
                rd.read_exact(&mut data).await?;
                Ok::<_, std::io::Error>(data)
            };
            let data = match tokio::time::timeout_at(frame_deadline, frame).await {
                Ok(Ok(d)) => d,
                Ok(Err(_)) => return,
                Err(_) => return refused("frame_timeout", peer),
            };
            wait = idle;
            if events
                .send(TcpEvent::Data { peer, local, data })
                .await
                .is_err()
            {
                return;
            }
        }
    };
    // Whichever side ends first ends the connection; the media task then forgets it (and a
    // session that used it falls silent and is freed by its timeout).
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = cancel.cancelled() => {}
    }
    let _ = events.send(TcpEvent::Closed { peer }).await;
}

/// Runs a stranger's ICE-TCP byte stream through what it reaches before matching a session: RFC
/// 4571 framing (as the reader splits it), the demultiplexer and the STUN parser, as the fuzz
/// target and its stable smoke test do. Panics on a violated invariant.
pub fn fuzz_frames(data: &[u8]) {
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(frame) = rest.get(2..2 + len) else {
            // An incomplete frame: the reader waits for it under FRAME_TIMEOUT.
            return;
        };
        assert_eq!(frame.len(), len);
        if let Ok(d) = str0m::net::DatagramRecv::try_from(frame) {
            let _ = d;
        }
        if let Ok(m) = str0m::ice::StunMessage::parse(frame) {
            let _ = (m.split_username(), m.trans_id());
        }
        rest = &rest[2 + len..];
    }
}
