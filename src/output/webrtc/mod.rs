//! Browser viewing over WebRTC (WHEP): str0m (sans-IO, pure Rust) answers each browser's offer,
//! one UDP socket carries every viewer's media, and each viewer is a hub subscriber of its own,
//! so the browser gets the hub's H.264 without a re-encode.
//!
//! - [`whep`]: profiles, the offer and the answer.
//! - [`session`]: a viewer's hub subscription.
//! - [`udp`]: the socket and the task that owns every session.
//! - [`tcp`]: ICE-TCP connections on the same port number, fed into that task.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, gauge};
use str0m::config::CryptoProvider;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{IceTransport, WebrtcConfig};
use crate::metrics::names;
use crate::stream::hub::Hub;

pub mod session;
pub mod tcp;
pub mod udp;
pub mod whep;

pub use whep::OfferError;

/// Frames waiting for the UDP task, over all sessions.
const FRAME_QUEUE: usize = 1024;

/// Why the WebRTC server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebrtcError {
    /// The UDP port could not be bound.
    #[error(
        "cannot listen for WebRTC media on UDP {addr}: {source} (set webrtc.udp_port, or webrtc.enabled = false)"
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The ICE-TCP port could not be bound (with UDP off).
    #[error(
        "cannot listen for WebRTC media on TCP {addr}: {source} (set webrtc.udp_port, or webrtc.transports)"
    )]
    BindTcp {
        /// Address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Why an offer got no session.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    /// The offer cannot be served (bad, wrong profile, no picture yet).
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// `webrtc.max_viewers` sessions exist.
    #[error("{0} WebRTC viewers are watching, the most webrtc.max_viewers allows")]
    Full(u32),
    /// A per-source or anonymous cap was reached; try again later.
    #[error("{0}; try again in a few seconds")]
    Busy(&'static str),
    /// No address to advertise.
    #[error(
        "no address to offer the browser: the request's Host is a name that does not resolve; set webrtc.additional_hosts"
    )]
    NoAddress,
    /// The hub subscription failed.
    #[error(transparent)]
    Feed(#[from] session::FeedError),
    /// The server is shutting down.
    #[error("the WebRTC server is stopping")]
    Stopped,
}

/// A registered session, as the HTTP side sees it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Its public id (in the WHEP resource URL).
    pub id: String,
    /// Stream name.
    pub stream: String,
    /// The address the offer came from, when known.
    pub source: Option<IpAddr>,
    /// Offered without credentials.
    pub anonymous: bool,
    /// Still connecting (ICE and DTLS not done); the media task clears it.
    pub pending: bool,
}

/// Sessions by key, shared by the HTTP side and the UDP task.
pub(crate) type Registry = Arc<Mutex<HashMap<u64, Entry>>>;

/// An answered offer.
pub struct Created {
    /// The session id, for `Location: /whep/{stream}/{id}`.
    pub id: String,
    /// The SDP answer.
    pub sdp: String,
}

/// The WebRTC server: the media port (one UDP socket, an ICE-TCP listener), the task that owns
/// every session, and the table of sessions.
pub struct Server {
    config: WebrtcConfig,
    local: SocketAddr,
    crypto: Arc<CryptoProvider>,
    commands: mpsc::UnboundedSender<udp::Command>,
    frames: mpsc::Sender<session::Frame>,
    registry: Registry,
    next: AtomicU64,
    transports: whep::Transports,
}

impl Server {
    /// Binds the media port (UDP, and TCP for ICE-TCP) and starts the tasks, which run until
    /// `cancel`.
    pub async fn start(
        config: &WebrtcConfig,
        cancel: CancellationToken,
    ) -> Result<Arc<Server>, WebrtcError> {
        let want_udp = config.transports.contains(&IceTransport::Udp);
        let want_tcp = config.transports.contains(&IceTransport::Tcp);
        let mut addr = SocketAddr::new(config.address, config.udp_port);
        let udp = if want_udp {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| WebrtcError::Bind { addr, source })?;
            // ICE-TCP takes the same port number (the one chosen, with udp_port = 0).
            addr = socket
                .local_addr()
                .map_err(|source| WebrtcError::Bind { addr, source })?;
            Some(socket)
        } else {
            None
        };
        let tcp = if want_tcp {
            match TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                // Without UDP, TCP is the only way in: that is fatal. Beside UDP it is a
                // fallback, so its absence is logged and browsers use UDP.
                Err(source) if udp.is_none() => {
                    return Err(WebrtcError::BindTcp { addr, source });
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "ICE-TCP off: its TCP port could not be opened");
                    None
                }
            }
        } else {
            None
        };
        let local = match (&udp, &tcp) {
            (Some(u), _) => u.local_addr(),
            (None, Some(t)) => t.local_addr(),
            (None, None) => Ok(addr),
        }
        .map_err(|source| WebrtcError::Bind { addr, source })?;
        let transports = whep::Transports {
            udp: udp.is_some(),
            tcp: tcp.is_some(),
        };
        describe_gauge!(
            names::WEBRTC_VIEWERS,
            "WebRTC viewers connected or connecting, by stream"
        );
        describe_counter!(
            names::WEBRTC_SESSIONS,
            "WebRTC sessions created (offers answered), by stream"
        );
        describe_counter!(
            names::WEBRTC_CLOSED,
            "WebRTC sessions freed, by stream and reason"
        );
        describe_counter!(names::WEBRTC_REJECTED, "WHEP offers refused, by reason");
        describe_counter!(
            names::WEBRTC_BYTES,
            "Bytes sent to WebRTC viewers (UDP or ICE-TCP), by stream"
        );
        describe_counter!(
            names::WEBRTC_FRAMES,
            "Frames handed to WebRTC viewers, by stream"
        );
        describe_counter!(
            names::WEBRTC_KEYFRAME_REQUESTS,
            "Browser keyframe requests (PLI/FIR) passed to the encoder, by stream"
        );
        describe_counter!(
            names::WEBRTC_AUDIO_PACKETS,
            "Opus packets handed to WebRTC viewers, by stream"
        );
        describe_counter!(
            names::WEBRTC_AUDIO_STALE,
            "Opus packets not sent to WebRTC viewers because they were stale, by stream"
        );
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (frames, frames_rx) = mpsc::channel(FRAME_QUEUE);
        let registry: Registry = Arc::default();
        let limits = udp::Limits {
            handshake: Duration::from_secs(config.handshake_timeout_s.into()),
            silence: Duration::from_secs(config.session_timeout_s.into()),
        };
        let (tcp_tx, tcp_rx) = mpsc::channel(FRAME_QUEUE);
        if let Some(listener) = tcp {
            tokio::spawn(tcp::listen(
                listener,
                tcp_tx,
                (config.max_viewers as usize).saturating_mul(2),
                limits.silence.max(limits.handshake),
                cancel.clone(),
            ));
        }
        tokio::spawn(udp::run(
            udp,
            tcp_rx,
            commands_rx,
            frames_rx,
            registry.clone(),
            limits,
            cancel,
        ));
        tracing::info!(
            address = %local,
            ice_udp = transports.udp,
            ice_tcp = transports.tcp,
            "WebRTC (WHEP) media port open"
        );
        Ok(Arc::new(Server {
            config: config.clone(),
            local,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            commands,
            frames,
            registry,
            next: AtomicU64::new(1),
            transports,
        }))
    }

    /// WebRTC viewers of `stream` (connected or connecting).
    pub fn viewers(&self, stream: &str) -> usize {
        self.registry
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.stream == stream)
            .count()
    }

    /// The host candidates for a browser that reached the HTTP server at `host`.
    fn locals(&self, host: Option<IpAddr>) -> Vec<SocketAddr> {
        let port = self.local.port();
        let mut ips: Vec<IpAddr> = Vec::new();
        if self.local.ip().is_unspecified() {
            ips.extend(host);
        } else {
            ips.push(self.local.ip());
        }
        ips.extend(self.config.additional_hosts.iter().copied());
        let mut out: Vec<SocketAddr> = Vec::new();
        for ip in ips {
            // The socket is IPv4 when bound to 0.0.0.0, IPv6 when bound to an IPv6 address.
            if ip.is_unspecified() || ip.is_ipv4() != self.local.is_ipv4() {
                continue;
            }
            let a = SocketAddr::new(ip, port);
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// Answers `offer` for the stream of `hub`, with the camera's Opus hub `audio` when it has
    /// sound (sent when the browser's offer takes audio). `host` is the address the browser
    /// reached the HTTP server at; it is advertised with `webrtc.additional_hosts`.
    pub async fn create(
        &self,
        hub: Arc<Hub>,
        audio: Option<Arc<Hub>>,
        offer: String,
        host: Option<IpAddr>,
        source: Option<IpAddr>,
        anonymous: bool,
    ) -> Result<Created, WhepError> {
        let stream = hub.name().to_string();
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:032x}", rand::random::<u128>());
        {
            let mut r = self.registry.lock().unwrap();
            if r.len() >= self.config.max_viewers as usize {
                reject("max_viewers");
                return Err(WhepError::Full(self.config.max_viewers));
            }
            if anonymous
                && r.values().filter(|e| e.anonymous).count() >= self.config.max_anonymous as usize
            {
                reject("max_anonymous");
                limit_bites("webrtc.max_anonymous", source);
                return Err(WhepError::Busy(
                    "every session for viewers without credentials is taken (webrtc.max_anonymous)",
                ));
            }
            if source.is_some()
                && r.values()
                    .filter(|e| e.pending && e.source == source)
                    .count()
                    >= self.config.max_pending_per_address as usize
            {
                reject("pending_per_address");
                limit_bites("webrtc.max_pending_per_address", source);
                return Err(WhepError::Busy(
                    "too many sessions still connecting from this address (webrtc.max_pending_per_address)",
                ));
            }
            // Held from now on, so concurrent offers cannot pass the limit together.
            r.insert(
                key,
                Entry {
                    id: id.clone(),
                    stream: stream.clone(),
                    source,
                    anonymous,
                    pending: true,
                },
            );
        }
        let made = self.prepare(hub, audio, key, offer, host).await;
        let new = match made {
            Ok(n) => n,
            Err(e) => {
                self.registry.lock().unwrap().remove(&key);
                reject(match &e {
                    WhepError::Offer(OfferError::Profile { .. }) => "profile",
                    WhepError::Offer(OfferError::NoPicture(_)) => "no_picture",
                    WhepError::Offer(_) => "bad_offer",
                    _ => "error",
                });
                return Err(e);
            }
        };
        let sdp = new.1;
        if self
            .commands
            .send(udp::Command::Add(Box::new(new.0)))
            .is_err()
        {
            self.registry.lock().unwrap().remove(&key);
            return Err(WhepError::Stopped);
        }
        counter!(names::WEBRTC_SESSIONS, "stream" => stream.clone()).increment(1);
        gauge!(names::WEBRTC_VIEWERS, "stream" => stream.clone()).set(self.viewers(&stream) as f64);
        Ok(Created { id, sdp })
    }

    async fn prepare(
        &self,
        hub: Arc<Hub>,
        audio: Option<Arc<Hub>>,
        key: u64,
        offer: String,
        host: Option<IpAddr>,
    ) -> Result<(udp::NewSession, String), WhepError> {
        let locals = self.locals(host);
        if locals.is_empty() {
            return Err(WhepError::NoAddress);
        }
        let crypto = self.crypto.clone();
        let frames = self.frames.clone();
        let transports = self.transports;
        // Making a DTLS certificate and starting a pipeline take a moment: off the runtime.
        tokio::task::spawn_blocking(move || {
            let stream = hub.name().to_string();
            let caps = hub.caps();
            let answered = whep::answer(
                &offer,
                &stream,
                caps.as_ref(),
                audio.is_some(),
                &locals,
                transports,
                &crypto,
            )?;
            let feed = session::start(&hub, key, session::Kind::Video, frames.clone())?;
            // A browser that offered no audio gets the picture only.
            let audio_feed = match audio.filter(|_| answered.audio) {
                Some(a) => Some(session::start(&a, key, session::Kind::Audio, frames)?),
                None => None,
            };
            Ok((
                udp::NewSession {
                    key,
                    stream,
                    rtc: answered.rtc,
                    locals,
                    feed,
                    audio_feed,
                    hub,
                },
                answered.sdp,
            ))
        })
        .await
        .map_err(|_| WhepError::Stopped)?
    }

    /// Frees the session `id` of `stream` (a WHEP DELETE); false when there is none.
    pub fn delete(&self, stream: &str, id: &str) -> bool {
        let key = self
            .registry
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| e.id == id && e.stream == stream)
            .map(|(k, _)| *k);
        match key {
            Some(k) => self.commands.send(udp::Command::Remove(k)).is_ok(),
            None => false,
        }
    }
}

/// Logs that an offer limit refused someone, at most a few lines a minute.
fn limit_bites(limit: &'static str, source: Option<IpAddr>) {
    static LOG: std::sync::LazyLock<crate::output::rtsp::auth::LogLimiter> =
        std::sync::LazyLock::new(|| {
            crate::output::rtsp::auth::LogLimiter::new(5, Duration::from_secs(60))
        });
    if let Some(suppressed) = LOG.allow(std::time::Instant::now()) {
        tracing::warn!(
            limit,
            ?source,
            suppressed,
            "WHEP offer refused by a limit (docs/reliability.md)"
        );
    }
}

/// Counts a refused offer.
pub fn reject(reason: &'static str) {
    counter!(names::WEBRTC_REJECTED, "reason" => reason).increment(1);
}
