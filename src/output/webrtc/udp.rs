//! The one UDP socket every WebRTC viewer shares, and the task that owns every session's str0m
//! state. A packet (or an ICE-TCP message, see `tcp`) goes to the session that `accepts` it
//! (STUN by its ICE credentials, the rest by the browser's address), frames from the sessions'
//! feeds are written into their str0m instances, and each instance's output (media, RTCP, DTLS,
//! STUN answers) leaves the way its browser came in. Sessions that never connect, or whose browser falls silent, are freed here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, counter, gauge};
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Registry;
use super::session::{Feed, Frame, Kind};
use super::tcp::TcpEvent;
use crate::metrics::names;
use crate::stream::hub::Hub;

/// Keyframe requests from one browser passed on at most this often (a lossy link sends PLIs in
/// bursts; the encoder needs one).
const KEYFRAME_REQUEST_GAP: Duration = Duration::from_millis(500);
/// A gap between two frames' timestamps beyond which the timeline is taken to have restarted.
const MAX_FRAME_GAP_NS: u64 = 5_000_000_000;
/// The step used across such a restart (a frame at 30 fps).
const FALLBACK_FRAME_NS: u64 = 33_333_333;
/// The step used across a restart of the sound's timeline (one 20 ms Opus frame).
const FALLBACK_AUDIO_NS: u64 = 20_000_000;
/// Sound older than the newest picture by more than this is not sent: a restarted audio
/// capture may first hand over a burst of stale packets, which a browser would buffer (its
/// sound would then lag by as much).
const STALE_AUDIO_NS: u64 = 300_000_000;
/// How far in the past the first frame's wallclock is put: str0m's sender reports need every
/// frame's wallclock to lie in the past, and a later frame may arrive sooner after its
/// capture than the first did.
const WALLCLOCK_MARGIN: Duration = Duration::from_secs(1);
/// How often handshake and silence limits are checked.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// A new session for the task, answered and subscribed.
pub(super) struct NewSession {
    /// Key in the registry and in frames.
    pub key: u64,
    /// Stream name.
    pub stream: String,
    /// Its str0m instance, after the answer.
    pub rtc: Rtc,
    /// The host candidates advertised to the browser.
    pub locals: Vec<SocketAddr>,
    /// Its hub subscription.
    pub feed: Feed,
    /// Its audio hub subscription, when the stream has sound and the browser takes it.
    pub audio_feed: Option<Feed>,
    /// The hub, for keyframe requests.
    pub hub: Arc<Hub>,
}

/// What the HTTP side asks of the task.
pub(super) enum Command {
    /// Take over a session.
    Add(Box<NewSession>),
    /// Free a session (a WHEP DELETE).
    Remove(u64),
}

/// Limits the task enforces.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Longest time from answer to connected.
    pub handshake: Duration,
    /// Longest silence from a connected browser.
    pub silence: Duration,
}

/// Where str0m's output goes: the UDP socket, or a browser's ICE-TCP connection.
struct Net {
    udp: Option<UdpSocket>,
    /// ICE-TCP connections: their send queue and, once a message from it matched a session,
    /// that session's key. Removing an entry closes the connection.
    tcp: HashMap<SocketAddr, (mpsc::Sender<Vec<u8>>, Option<u64>)>,
}

impl Net {
    /// Sends one message; false when it could not go (a full buffer or queue, a gone peer),
    /// which the protocols above recover from like a lost packet.
    fn send(&self, t: &str0m::net::Transmit) -> bool {
        match t.proto {
            Protocol::Udp => self
                .udp
                .as_ref()
                .is_some_and(|u| u.try_send_to(&t.contents, t.destination).is_ok()),
            Protocol::Tcp => self
                .tcp
                .get(&t.destination)
                .is_some_and(|(tx, _)| tx.try_send(t.contents.to_vec()).is_ok()),
            _ => false,
        }
    }
}

struct Session {
    stream: String,
    rtc: Rtc,
    locals: Vec<SocketAddr>,
    feed: Option<Feed>,
    audio_feed: Option<Feed>,
    hub: Arc<Hub>,
    created: Instant,
    last_rx: Instant,
    next_timeout: Instant,
    connected: bool,
    mid: Option<Mid>,
    pt: Option<Pt>,
    waiting_keyframe: bool,
    last_seq: u64,
    last_keyframe_request: Option<Instant>,
    /// The last frame written: its pts and the media time it was sent with (ns).
    last_time: Option<(u64, u64)>,
    /// The audio track (its mid once str0m added it).
    audio: AudioTrack,
    /// Instant that pts 0 corresponds to, shared by both tracks: each frame's wallclock is
    /// derived from its pts through it, so the sender reports of the picture and of the sound
    /// map their RTP times onto one timeline and the browser can line them up.
    wallclock_zero: Option<Instant>,
    end: Option<&'static str>,
    bytes: Counter,
    frames: Counter,
    keyframe_requests: Counter,
}

impl Session {
    fn new(n: NewSession, now: Instant) -> Self {
        let label = [("stream", n.stream.clone())];
        Session {
            bytes: counter!(names::WEBRTC_BYTES, &label),
            frames: counter!(names::WEBRTC_FRAMES, &label),
            keyframe_requests: counter!(names::WEBRTC_KEYFRAME_REQUESTS, &label),
            stream: n.stream,
            rtc: n.rtc,
            locals: n.locals,
            feed: Some(n.feed),
            audio_feed: n.audio_feed,
            hub: n.hub,
            created: now,
            last_rx: now,
            next_timeout: now,
            connected: false,
            mid: None,
            pt: None,
            waiting_keyframe: true,
            last_seq: 0,
            last_keyframe_request: None,
            last_time: None,
            audio: AudioTrack {
                frames: counter!(names::WEBRTC_AUDIO_PACKETS, &label),
                stale: counter!(names::WEBRTC_AUDIO_STALE, &label),
                ..AudioTrack::default()
            },
            wallclock_zero: None,
            end: None,
        }
    }

    /// Runs str0m until it waits for time or input, sending what it produced.
    fn drive(&mut self, net: &Net) {
        loop {
            if !self.rtc.is_alive() {
                self.end.get_or_insert("closed");
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // A full socket buffer loses this datagram, like the network would; the
                    // task never waits on one viewer.
                    if net.send(&t) {
                        self.bytes.increment(t.contents.len() as u64);
                    }
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(e) => {
                    tracing::debug!(stream = %self.stream, error = %e, "WebRTC session failed");
                    self.end.get_or_insert("closed");
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                self.waiting_keyframe = true;
                tracing::info!(stream = %self.stream, after_ms = self.created.elapsed().as_millis() as u64, "WebRTC viewer connected");
                self.hub.request_keyframe();
            }
            Event::MediaAdded(m) => match m.kind {
                MediaKind::Video => self.mid = Some(m.mid),
                MediaKind::Audio => self.audio.mid = Some(m.mid),
            },
            Event::KeyframeRequest(_) => {
                let now = Instant::now();
                if self
                    .last_keyframe_request
                    .is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_GAP)
                {
                    self.last_keyframe_request = Some(now);
                    self.keyframe_requests.increment(1);
                    self.hub.request_keyframe();
                }
            }
            Event::IceConnectionStateChange(s) => {
                tracing::debug!(stream = %self.stream, state = ?s, "WebRTC ICE state");
                if s == IceConnectionState::Disconnected && self.connected {
                    // The browser stopped answering consent checks: its tab is gone or its
                    // network is. Sending on would be sending into the void.
                    self.end.get_or_insert("closed");
                }
            }
            _ => {}
        }
    }

    /// The wallclock of a frame with `pts_ns`: one mapping for both tracks, never in the future.
    fn wallclock(&mut self, pts_ns: u64, now: Instant) -> Instant {
        let pts = Duration::from_nanos(pts_ns);
        let at = |zero: Instant| zero.checked_add(pts);
        match self.wallclock_zero.and_then(at) {
            Some(w) if w <= now => w,
            // The first frame, or one that came sooner after its capture than the margin
            // allows: the mapping moves (once, for both tracks) so this frame lies in the past.
            _ => {
                let w = now.checked_sub(WALLCLOCK_MARGIN).unwrap_or(now);
                self.wallclock_zero = w.checked_sub(pts);
                w
            }
        }
    }

    fn write(&mut self, f: Frame) {
        if f.kind == Kind::Audio {
            return self.write_audio(f);
        }
        let gap = f.seq != self.last_seq + 1;
        self.last_seq = f.seq;
        let Some(mid) = self.mid.filter(|_| self.connected) else {
            return;
        };
        if gap {
            self.waiting_keyframe = true;
        }
        if self.waiting_keyframe {
            if !f.keyframe {
                return;
            }
            self.waiting_keyframe = false;
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = self
            .pt
            .or_else(|| writer.payload_params().next().map(|p| p.pt()))
        else {
            return;
        };
        self.pt = Some(pt);
        // Media time follows the frames' timestamps but never goes back or leaps: a camera
        // restart starts a new timeline, which the browser's jitter buffer must not see.
        let media_ns = match self.last_time {
            Some((pts, sent)) if f.pts_ns > pts && f.pts_ns - pts < MAX_FRAME_GAP_NS => {
                sent + (f.pts_ns - pts)
            }
            Some((_, sent)) => sent + FALLBACK_FRAME_NS,
            None => f.pts_ns,
        };
        self.last_time = Some((f.pts_ns, media_ns));
        let rtp_time = MediaTime::new(media_ns / 100_000 * 9, Frequency::NINETY_KHZ);
        let wallclock = self.wallclock(f.pts_ns, Instant::now());
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        match writer.write(pt, wallclock, rtp_time, f.data) {
            Ok(()) => self.frames.increment(1),
            Err(e) => tracing::debug!(stream = %self.stream, error = %e, "WebRTC frame not sent"),
        }
    }

    /// Sends one Opus packet. Sound needs no keyframe: it starts with the first packet after
    /// the connection and a lost packet is only a gap.
    fn write_audio(&mut self, f: Frame) {
        let Some(mid) = self.audio.mid.filter(|_| self.connected) else {
            return;
        };
        // Both tracks run on one clock, whose running time never goes back: a packet not
        // later than the last one sent, or well behind the picture, is stale.
        let behind = self
            .last_time
            .is_some_and(|(video, _)| video > f.pts_ns + STALE_AUDIO_NS);
        let repeated = self.audio.last_time.is_some_and(|(pts, _)| f.pts_ns <= pts);
        if behind || repeated {
            self.audio.stale.increment(1);
            return;
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = self
            .audio
            .pt
            .or_else(|| writer.payload_params().next().map(|p| p.pt()))
        else {
            return;
        };
        self.audio.pt = Some(pt);
        let media_ns = self.audio.media_ns(f.pts_ns);
        // Opus's RTP clock is 48 kHz whatever the capture rate.
        let rtp_time = MediaTime::new(media_ns / 1_000 * 48 / 1_000, Frequency::FORTY_EIGHT_KHZ);
        let wallclock = self.wallclock(f.pts_ns, Instant::now());
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        match writer.write(pt, wallclock, rtp_time, f.data) {
            Ok(()) => self.audio.frames.increment(1),
            Err(e) => tracing::debug!(stream = %self.stream, error = %e, "WebRTC audio not sent"),
        }
    }

    /// The local address a datagram from `source` arrived at, as str0m needs it. The socket is
    /// bound to one port on every address, so the address is inferred from the candidates this
    /// session advertised: loopback for loopback, otherwise the first of the same family.
    fn local_for(&self, source: SocketAddr) -> SocketAddr {
        let same = || {
            self.locals
                .iter()
                .filter(move |l| l.is_ipv4() == source.is_ipv4())
        };
        same()
            .find(|l| l.ip().is_loopback() == source.ip().is_loopback())
            .or_else(|| same().next())
            .or(self.locals.first())
            .copied()
            .unwrap_or(source)
    }
}

/// Runs the socket and every session until `cancel`.
pub(super) async fn run(
    udp: Option<UdpSocket>,
    mut tcp: mpsc::Receiver<TcpEvent>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut frames: mpsc::Receiver<Frame>,
    registry: Registry,
    limits: Limits,
    cancel: CancellationToken,
) {
    let mut sessions: HashMap<u64, Session> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let mut net = Net {
        udp,
        tcp: HashMap::new(),
    };
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
    loop {
        let wake = sessions
            .values()
            .map(|s| s.next_timeout)
            .min()
            .unwrap_or(next_housekeeping)
            .min(next_housekeeping);
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = recv(&net.udp, &mut buf) => match r {
                Ok((n, source)) => {
                    let local = net.udp.as_ref().and_then(|u| u.local_addr().ok());
                    if let Some(local) = local {
                        receive(&mut sessions, &net, Protocol::Udp, &buf[..n], source, local);
                    }
                }
                Err(e) => {
                    // ICMP port unreachable from a gone browser surfaces here on Linux.
                    tracing::trace!(error = %e, "WebRTC socket receive");
                }
            },
            Some(e) = tcp.recv() => match e {
                TcpEvent::Open { peer, tx, .. } => {
                    net.tcp.insert(peer, (tx, None));
                }
                TcpEvent::Data { peer, local, data } => {
                    let bound = net.tcp.get(&peer).and_then(|(_, k)| *k);
                    let to = receive(&mut sessions, &net, Protocol::Tcp, &data, peer, local);
                    match (bound, to) {
                        // A connection belongs to the session its first message matched.
                        (None, Some(key)) => {
                            if let Some(e) = net.tcp.get_mut(&peer) {
                                e.1 = Some(key);
                            }
                        }
                        (Some(_), _) => {}
                        // A connection whose message matches no live session's credentials
                        // holds no slot: it is closed.
                        (None, None) => {
                            net.tcp.remove(&peer);
                            counter!(names::ICE_TCP_REFUSED, "reason" => "no_session").increment(1);
                        }
                    }
                }
                TcpEvent::Closed { peer } => {
                    net.tcp.remove(&peer);
                }
            },
            c = commands.recv() => match c {
                Some(Command::Add(n)) => {
                    let key = n.key;
                    let mut s = Session::new(*n, Instant::now());
                    s.drive(&net);
                    sessions.insert(key, s);
                }
                Some(Command::Remove(key)) => {
                    if let Some(s) = sessions.get_mut(&key) {
                        s.end.get_or_insert("deleted");
                        s.rtc.disconnect();
                    }
                }
                None => break,
            },
            Some(f) = frames.recv() => {
                if let Some(s) = sessions.get_mut(&f.session) {
                    s.write(f);
                    s.drive(&net);
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        for s in sessions.values_mut() {
            if s.next_timeout <= now && s.end.is_none() {
                if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(stream = %s.stream, error = %e, "WebRTC session failed");
                    s.end = Some("closed");
                    continue;
                }
                s.drive(&net);
            }
        }
        if now >= next_housekeeping {
            next_housekeeping = now + HOUSEKEEPING;
            {
                // Connected sessions no longer count against the per-address handshake cap.
                let mut r = registry.lock().unwrap_or_else(|e| e.into_inner());
                for (key, s) in &sessions {
                    if s.connected
                        && let Some(e) = r.get_mut(key)
                    {
                        e.pending = false;
                    }
                }
            }
            for s in sessions.values_mut() {
                if !s.connected && now.duration_since(s.created) > limits.handshake {
                    s.end.get_or_insert("handshake_timeout");
                } else if s.connected && now.duration_since(s.last_rx) > limits.silence {
                    s.end.get_or_insert("timeout");
                }
            }
        }
        let ended: Vec<u64> = sessions
            .iter()
            .filter(|(_, s)| s.end.is_some())
            .map(|(k, _)| *k)
            .collect();
        for key in ended {
            if let Some(s) = sessions.remove(&key) {
                free(s, key, &registry);
            }
            // Its ICE-TCP connections end with it.
            net.tcp.retain(|_, (_, k)| *k != Some(key));
        }
    }
    for (key, mut s) in sessions.drain() {
        s.end.get_or_insert("shutdown");
        free(s, key, &registry);
    }
}

/// The next datagram, or never when UDP is off.
async fn recv(udp: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match udp {
        Some(u) => u.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Hands a message to the session that accepts it; returns that session's key.
fn receive(
    sessions: &mut HashMap<u64, Session>,
    net: &Net,
    proto: Protocol,
    data: &[u8],
    source: SocketAddr,
    local: SocketAddr,
) -> Option<u64> {
    let input = |destination: SocketAddr| -> Option<Input<'_>> {
        let contents = DatagramRecv::try_from(data).ok()?;
        Some(Input::Receive(
            Instant::now(),
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        ))
    };
    let probe = input(local)?;
    let (key, s) = sessions
        .iter_mut()
        .find(|(_, s)| s.end.is_none() && s.rtc.accepts(&probe))?;
    let key = *key;
    // str0m matches the destination against the candidates it advertised: a socket bound to
    // every address cannot tell it (nor can one behind a NAT), so it is inferred.
    let destination = if s.locals.contains(&local) {
        local
    } else {
        s.local_for(source)
    };
    let input = input(destination)?;
    s.last_rx = Instant::now();
    if let Err(e) = s.rtc.handle_input(input) {
        tracing::debug!(stream = %s.stream, error = %e, "WebRTC input refused");
        s.end.get_or_insert("closed");
        return Some(key);
    }
    s.drive(net);
    Some(key)
}

fn free(mut s: Session, key: u64, registry: &Registry) {
    let reason = s.end.unwrap_or("closed");
    tracing::info!(stream = %s.stream, reason, connected = s.connected, "WebRTC viewer left");
    counter!(names::WEBRTC_CLOSED, "stream" => s.stream.clone(), "reason" => reason).increment(1);
    let left = {
        let mut r = registry.lock().unwrap();
        r.remove(&key);
        r.values().filter(|e| e.stream == s.stream).count()
    };
    gauge!(names::WEBRTC_VIEWERS, "stream" => s.stream.clone()).set(left as f64);
    // Stopping the feeds' pipelines may wait on their streaming threads: not on this task.
    let feeds = (s.feed.take(), s.audio_feed.take());
    if feeds.0.is_some() || feeds.1.is_some() {
        tokio::task::spawn_blocking(move || drop(feeds));
    }
}

/// A session's audio track: where str0m put it and the timeline its packets are sent on.
struct AudioTrack {
    mid: Option<Mid>,
    pt: Option<Pt>,
    /// The last packet written: its pts and the media time it was sent with (ns).
    last_time: Option<(u64, u64)>,
    frames: Counter,
    stale: Counter,
}

impl Default for AudioTrack {
    fn default() -> Self {
        AudioTrack {
            mid: None,
            pt: None,
            last_time: None,
            frames: Counter::noop(),
            stale: Counter::noop(),
        }
    }
}

impl AudioTrack {
    /// The media time for a packet with `pts_ns`: it follows the packets' timestamps but never
    /// goes back or leaps, so a restarted microphone (a new timeline) is one gap-free step for
    /// the browser's jitter buffer, as the picture's is.
    fn media_ns(&mut self, pts_ns: u64) -> u64 {
        let media_ns = match self.last_time {
            Some((pts, sent)) if pts_ns > pts && pts_ns - pts < MAX_FRAME_GAP_NS => {
                sent + (pts_ns - pts)
            }
            Some((_, sent)) => sent + FALLBACK_AUDIO_NS,
            None => pts_ns,
        };
        self.last_time = Some((pts_ns, media_ns));
        media_ns
    }
}
