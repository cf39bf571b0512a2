//! ICE-TCP (RFC 6544): the media port's TCP side, for networks that pass no UDP. Browsers
//! connect (active), camstream listens (passive) on the same port number. Each connection
//! carries RFC 4571 frames (a 16-bit length, then one STUN, DTLS, RTP or RTCP message), which
//! are handed to the UDP task as if they were datagrams, and answers go back framed the same way.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Messages queued for one connection before more are dropped (a stalled browser).
const SEND_QUEUE: usize = 512;

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

/// Accepts connections until `cancel`, at most `max` at once; a connection silent for `idle`
/// is closed.
pub(super) async fn listen(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    max: usize,
    idle: Duration,
    cancel: CancellationToken,
) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = cancel.cancelled() => return,
        };
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
        let events = events.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            connection(stream, peer, events, idle, cancel).await;
            drop(permit);
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
        loop {
            match tokio::time::timeout(idle, rd.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let mut data = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if rd.read_exact(&mut data).await.is_err() {
                return;
            }
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
