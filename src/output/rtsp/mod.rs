//! The RTSP output: gst-rtsp-server on its own thread with a private GLib main context, one
//! shared media per mount (a stream or rendition) whose `appsrc` subscribes to that encoding's
//! hub, and the viewer book-keeping that logs, metrics and the status API read. Mounts are added
//! and removed at run time as streams come and go.
//!
//! Everything here runs on the GLib thread; callbacks never block. Other threads talk to it
//! through [`RtspServer`], which only queues work onto that context.

pub mod accept;
// Audio (issue #24).
mod audio;
pub mod auth;
pub mod ffi;
pub mod guard;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use gst::glib;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;
use gst_rtsp_server::{RTSPFilterResult, gst_rtsp};
use serde::Serialize;

use crate::access::Access;
use crate::config::{Config, RtspConfig, Transport};
use crate::metrics::{Metrics, MountMetrics};
use crate::stream::camera::Encoding;
use crate::stream::clock::SharedTime;
use crate::stream::hub::{Hub, SubscriberSettings};
use auth::AuthError;
use ffi::{header, peer_ip};

/// Why the RTSP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    /// The address could not be bound (in use, or not an address of this host).
    #[error("cannot listen for RTSP on {address}:{port}: {reason}")]
    Bind {
        /// Address.
        address: IpAddr,
        /// Port.
        port: u16,
        /// What went wrong.
        reason: String,
    },
    /// The GLib thread ended before reporting.
    #[error("the RTSP thread died while starting")]
    ThreadDied,
    /// Access control could not be set up.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// One connected RTSP client, as the status API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Viewer {
    /// Peer address.
    pub address: String,
    /// The stream it set up ("" before SETUP).
    pub stream: String,
    /// Lower transport from its last SETUP: tcp, udp or multicast ("" before SETUP).
    pub transport: String,
    /// When it connected (seconds since the Unix epoch).
    pub connected_at_unix: u64,
    /// Whether it is playing now.
    pub playing: bool,
    /// Whether it holds a session (has done SETUP); such clients count against the viewer cap.
    pub has_session: bool,
    /// RTP bytes sent to it: what the shared payloader produced while it was playing (a slow
    /// TCP viewer whose backlog was dropped received less).
    pub bytes_sent: u64,
    /// When it last sent a request (idle connections are closed).
    #[serde(skip)]
    pub last_request: Instant,
    /// The payloader's byte count when it last started playing.
    #[serde(skip)]
    play_mark: Option<u64>,
    /// Whether `viewer_connected` was published for it (at its first PLAY).
    #[serde(skip)]
    announced: bool,
}

/// Connected clients, keyed by the client object's address (stable while it lives).
#[derive(Debug, Default)]
pub struct Viewers {
    clients: Mutex<HashMap<usize, Viewer>>,
    /// RTP bytes out of each stream's shared payloader since start-up.
    rtp_bytes: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
}

impl Viewers {
    /// All connected clients, with their bytes sent up to now.
    pub fn list(&self) -> Vec<Viewer> {
        self.clients
            .lock()
            .unwrap()
            .values()
            .map(|v| {
                let mut v = v.clone();
                if let Some(mark) = v.play_mark {
                    v.bytes_sent += self.rtp_bytes(&v.stream).saturating_sub(mark);
                }
                v
            })
            .collect()
    }

    /// The connected clients of one stream.
    pub fn of_stream(&self, stream: &str) -> Vec<Viewer> {
        let mut l = self.list();
        l.retain(|v| v.stream == stream);
        l
    }

    fn counter(&self, stream: &str) -> Arc<std::sync::atomic::AtomicU64> {
        self.rtp_bytes
            .lock()
            .unwrap()
            .entry(stream.to_string())
            .or_default()
            .clone()
    }

    fn rtp_bytes(&self, stream: &str) -> u64 {
        self.counter(stream)
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks a client as playing or not, keeping its byte count.
    fn set_playing(&self, key: usize, playing: bool) {
        let stream = self
            .clients
            .lock()
            .unwrap()
            .get(&key)
            .map(|v| v.stream.clone())
            .unwrap_or_default();
        let now = self.rtp_bytes(&stream);
        self.update(key, |v| {
            if let Some(mark) = v.play_mark.take() {
                v.bytes_sent += now.saturating_sub(mark);
            }
            if playing {
                v.play_mark = Some(now);
            }
            v.playing = playing;
            v.last_request = Instant::now();
        });
    }

    /// Number of clients playing `stream`.
    pub fn playing(&self, stream: &str) -> usize {
        self.clients
            .lock()
            .unwrap()
            .values()
            .filter(|v| v.playing && v.stream == stream)
            .count()
    }

    /// Number of connected clients.
    pub fn connected(&self) -> usize {
        self.clients.lock().unwrap().len()
    }

    /// Clients holding a session, other than `except`.
    fn with_session(&self, except: usize) -> usize {
        self.clients
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, v)| **k != except && v.has_session)
            .count()
    }

    fn update(&self, key: usize, f: impl FnOnce(&mut Viewer)) {
        if let Some(v) = self.clients.lock().unwrap().get_mut(&key) {
            f(v);
        }
    }
}

/// A running RTSP server.
pub struct RtspServer {
    ctx: glib::MainContext,
    main_loop: glib::MainLoop,
    server: gst_rtsp_server::RTSPServer,
    thread: Mutex<Option<JoinHandle<()>>>,
    done: Mutex<std::sync::mpsc::Receiver<()>>,
    port: u16,
    viewers: Arc<Viewers>,
    /// The GLib loop's pulse, read by probes.
    pulse: Arc<Pulse>,
    clients: Arc<ClientCtx>,
    factory: FactorySettings,
}

/// What every mount's factory is built from.
struct FactorySettings {
    config: RtspConfig,
    tls: bool,
    /// The one check, when access control is on (accounts, TLS or closed to visitors).
    access: Option<Arc<Access>>,
    time: SharedTime,
}

fn protocols(transports: &[Transport]) -> gst_rtsp::RTSPLowerTrans {
    let mut p = gst_rtsp::RTSPLowerTrans::empty();
    for t in transports {
        p |= match t {
            Transport::Tcp => gst_rtsp::RTSPLowerTrans::TCP,
            Transport::Udp => gst_rtsp::RTSPLowerTrans::UDP,
            Transport::Multicast => gst_rtsp::RTSPLowerTrans::UDP_MCAST,
        };
    }
    p
}

/// The lower transport a SETUP asks for.
fn transport_of(ctx: &gst_rtsp_server::RTSPContext) -> Option<&'static str> {
    let h = header(ctx.request()?, gst_rtsp::RTSPHeaderField::Transport)?.to_ascii_lowercase();
    Some(if h.contains("/tcp") {
        "tcp"
    } else if h.contains("multicast") {
        "multicast"
    } else {
        "udp"
    })
}

/// Counts RTP packets and bytes leaving the payloader. The payloader pushes buffer lists, so a
/// buffer-only probe would miss most packets.
fn count_rtp(
    media_bin: &gst::Bin,
    metrics: MountMetrics,
    bytes: Arc<std::sync::atomic::AtomicU64>,
) {
    let Some(pay) = media_bin.by_name("pay0") else {
        return;
    };
    let Some(pad) = pay.static_pad("src") else {
        return;
    };
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            let (packets, total) = match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => (1, b.size()),
                Some(gst::PadProbeData::BufferList(l)) => {
                    (l.len(), l.iter().map(|b| b.size()).sum())
                }
                _ => return gst::PadProbeReturn::Ok,
            };
            metrics.rtp_sent(packets as u64, total as u64);
            bytes.fetch_add(total as u64, std::sync::atomic::Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        },
    );
}

/// Makes every sink of a media pipeline send as soon as data arrives. The capture already paces
/// frames; a syncing RTP sink would hold each packet until its timestamp plus the latency
/// forwarded from the capture (about a frame interval), adding ~20-30 ms for nothing.
/// rtsp-stream creates its sinks when transports are set up and sets their `sync` after adding
/// them, at a moment that races the media's first buffers: turning it off once (when added, or
/// on the first buffer) left some media syncing for their whole life, and every viewer of such a
/// daemon, a late joiner's first picture included, one or two frame intervals late. So `sync` is
/// turned off whenever anyone turns it on.
fn unsync_sinks(pipeline: &gst::Pipeline) {
    pipeline.connect_deep_element_added(|_, _, element| {
        if !element.element_flags().contains(gst::ElementFlags::SINK)
            || !element.has_property("sync")
        {
            return;
        }
        element.set_property("sync", false);
        element.connect_notify(Some("sync"), |e, _| {
            if e.property::<bool>("sync") {
                e.set_property("sync", false);
            }
        });
    });
}

fn build_factory(
    config: &RtspConfig,
    tls: bool,
    hub: Arc<Hub>,
    time: SharedTime,
    metrics: MountMetrics,
    bytes: Arc<std::sync::atomic::AtomicU64>,
    sound: Option<Arc<crate::stream::audio::Audio>>,
) -> gst_rtsp_server::RTSPMediaFactory {
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    let codec = audio::codec_of(sound.as_ref());
    factory.set_launch(&audio::launch(codec));
    factory.set_shared(true);
    factory.set_suspend_mode(gst_rtsp_server::RTSPSuspendMode::None);
    factory.set_latency(0);
    // Over TLS only interleaved TCP is protected; UDP media would leak the picture.
    factory.set_protocols(if tls {
        gst_rtsp::RTSPLowerTrans::TCP
    } else {
        protocols(&config.transports)
    });
    if config.transports.contains(&Transport::Multicast) {
        let pool = gst_rtsp_server::RTSPAddressPool::new();
        if let Err(e) = pool.add_range("239.255.42.0", "239.255.42.255", 5000, 5999, 16) {
            tracing::warn!(error = %e, "Could not set up the multicast address pool");
        }
        factory.set_address_pool(Some(&pool));
    }
    factory.connect_media_configure(move |_, media| {
        let element = media.element();
        match element
            .parent()
            .and_then(|p| p.downcast::<gst::Pipeline>().ok())
        {
            Some(pipeline) => {
                time.apply(&pipeline);
                unsync_sinks(&pipeline);
            }
            None => tracing::warn!("RTSP media has no pipeline; its clock cannot be shared"),
        }
        let Some(bin) = element.downcast_ref::<gst::Bin>() else {
            return;
        };
        count_rtp(bin, metrics.clone(), bytes.clone());
        let Some(appsrc) = bin
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        else {
            tracing::error!("RTSP media has no appsrc named src");
            return;
        };
        // The subscription lives as long as the media is prepared; dropping it unlinks.
        let subscription = Mutex::new(Some(
            hub.subscribe(&appsrc, SubscriberSettings::new("rtsp")),
        ));
        // Audio (issue #24): the sound's track, subscribed for as long as the video's.
        let sound = sound
            .as_ref()
            .zip(codec)
            .and_then(|(a, c)| audio::subscribe(bin, a, c));
        let sound = Mutex::new(sound);
        media.connect_unprepared(move |_| {
            subscription.lock().unwrap().take();
            sound.lock().unwrap().take();
        });
    });
    factory
}

/// The path of an RTSP URL, without query.
fn url_path(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let path = &rest[rest.find('/')?..];
    Some(path.split('?').next().unwrap_or(path).to_string())
}

/// A mounted encoding.
struct Mount {
    name: String,
    hub: Arc<Hub>,
    metrics: MountMetrics,
}

/// What every client handler needs.
struct ClientCtx {
    viewers: Arc<Viewers>,
    mounts: Mutex<HashMap<String, Mount>>,
    metrics: Metrics,
    limits: RtspConfig,
}

impl ClientCtx {
    /// The mount a request is for: its URL path, or a prefix of it (clients add "/stream=0").
    fn mount_of(
        &self,
        ctx: &gst_rtsp_server::RTSPContext,
    ) -> Option<(String, Arc<Hub>, MountMetrics)> {
        let path = url_path(&ctx.uri()?.request_uri())?;
        let mounts = self.mounts.lock().unwrap();
        let mut best: Option<&str> = None;
        for k in mounts.keys() {
            let hit = path == *k || path.starts_with(&format!("{k}/"));
            if hit && best.is_none_or(|b| k.len() > b.len()) {
                best = Some(k);
            }
        }
        best.and_then(|k| mounts.get(k))
            .map(|m| (m.name.clone(), m.hub.clone(), m.metrics.clone()))
    }

    fn refresh_viewers(&self) {
        for m in self.mounts.lock().unwrap().values() {
            m.metrics.set_viewers(self.viewers.playing(&m.name));
        }
    }
}

fn on_client(client: &gst_rtsp_server::RTSPClient, c: &Arc<ClientCtx>) {
    let (viewers, metrics) = (&c.viewers, &c.metrics);
    let session_timeout = c.limits.session_timeout_s;
    let key = client.as_ptr() as usize;
    let address = peer_ip(client);
    if viewers.connected() >= c.limits.max_connections as usize {
        tracing::warn!(peer = %address, max = c.limits.max_connections, "Connection limit reached; closing");
        metrics.rtsp_rejected("max_connections");
        client.close();
        return;
    }
    tracing::info!(peer = %address, "Client connected");
    guard::install(client);
    metrics.client_connected();
    viewers.clients.lock().unwrap().insert(
        key,
        Viewer {
            address: address.clone(),
            stream: String::new(),
            transport: String::new(),
            connected_at_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            playing: false,
            has_session: false,
            bytes_sent: 0,
            last_request: Instant::now(),
            play_mark: None,
            announced: false,
        },
    );
    // Any request counts as activity for the idle timeout.
    let touch = move |v: &std::sync::Weak<Viewers>| {
        if let Some(v) = v.upgrade() {
            v.update(key, |viewer| viewer.last_request = Instant::now());
        }
    };
    macro_rules! on_request {
        ($($connect:ident),*) => {$(
            let v = Arc::downgrade(viewers);
            client.$connect(move |_, _| touch(&v));
        )*};
    }
    on_request!(
        connect_options_request,
        connect_describe_request,
        connect_get_parameter_request,
        connect_set_parameter_request
    );
    let (v, m, max, peer) = (
        Arc::downgrade(viewers),
        metrics.clone(),
        c.limits.max_viewers,
        address.clone(),
    );
    client.connect_pre_setup_request(move |_, _| {
        let Some(v) = v.upgrade() else {
            return gst_rtsp::RTSPStatusCode::Ok;
        };
        let mine = v
            .clients
            .lock()
            .unwrap()
            .get(&key)
            .is_some_and(|c| c.has_session);
        if !mine && v.with_session(key) >= max as usize {
            tracing::warn!(peer = %peer, max, "Viewer limit reached; refusing SETUP");
            m.rtsp_rejected("max_viewers");
            return gst_rtsp::RTSPStatusCode::ServiceUnavailable;
        }
        gst_rtsp::RTSPStatusCode::Ok
    });
    client.connect_new_session(move |_, session| {
        session.set_timeout(session_timeout);
    });
    let w = Arc::downgrade(c);
    client.connect_setup_request(move |_, ctx| {
        if let Some(c) = w.upgrade() {
            let t = transport_of(ctx);
            let stream = c.mount_of(ctx).map(|(name, ..)| name);
            c.viewers.update(key, |viewer| {
                viewer.has_session = true;
                viewer.last_request = Instant::now();
                if let Some(t) = t {
                    viewer.transport = t.to_string();
                }
                if let Some(s) = stream {
                    viewer.stream = s;
                }
            });
        }
    });
    let w = Arc::downgrade(c);
    client.connect_play_request(move |_, ctx| {
        let Some(c) = w.upgrade() else { return };
        // The response is already on its way; the IDR asked for now reaches the new viewer
        // one frame interval later instead of at the next scheduled keyframe.
        if let Some((name, hub, _)) = c.mount_of(ctx) {
            hub.request_keyframe();
            let mut first = None;
            c.viewers.update(key, |viewer| {
                viewer.stream = name;
                if !viewer.announced {
                    viewer.announced = true;
                    first = Some((viewer.stream.clone(), viewer.address.clone()));
                }
            });
            // A viewer is someone who watches: announced at its first PLAY, not at connect.
            if let Some((stream, peer)) = first {
                crate::events::publish(
                    crate::events::Event::new(crate::events::HookEvent::ViewerConnected, &stream)
                        .with("peer", peer),
                );
            }
        }
        c.viewers.set_playing(key, true);
        c.refresh_viewers();
    });
    let w = Arc::downgrade(c);
    client.connect_pause_request(move |_, _| {
        if let Some(c) = w.upgrade() {
            c.viewers.set_playing(key, false);
            c.refresh_viewers();
        }
    });
    let w = Arc::downgrade(c);
    client.connect_teardown_request(move |_, _| {
        if let Some(c) = w.upgrade() {
            c.viewers.set_playing(key, false);
            c.viewers.update(key, |viewer| viewer.has_session = false);
            c.refresh_viewers();
        }
    });
    let w = Arc::downgrade(c);
    client.connect_closed(move |_| {
        tracing::info!(peer = %address, "Client disconnected");
        let gone = w.upgrade().and_then(|c| {
            let v = c.viewers.clients.lock().unwrap().remove(&key);
            c.refresh_viewers();
            v
        });
        if let Some(v) = gone.filter(|v| v.announced) {
            crate::events::publish(
                crate::events::Event::new(crate::events::HookEvent::ViewerDisconnected, &v.stream)
                    .with("peer", &address),
            );
        }
    });
}

/// Closes connections that hold no session and have sent no request for `idle`.
fn close_idle(server: &gst_rtsp_server::RTSPServer, c: &ClientCtx, idle: Duration) {
    let mut idle_clients = Vec::new();
    server.client_filter(Some(&mut |_, client| {
        let key = client.as_ptr() as usize;
        let is_idle = c
            .viewers
            .clients
            .lock()
            .unwrap()
            .get(&key)
            .is_some_and(|v| !v.has_session && v.last_request.elapsed() >= idle);
        if is_idle {
            idle_clients.push(client.clone());
        }
        RTSPFilterResult::Keep
    }));
    for client in idle_clients {
        tracing::info!(peer = %peer_ip(&client), "Closing idle connection");
        c.metrics.rtsp_rejected("idle_timeout");
        client.close();
    }
}

impl RtspServer {
    /// Binds the server and starts its GLib thread. Returns once the port is bound (or not).
    /// Blocks until the GLib thread reports; call it from a blocking context.
    pub fn start(
        full: &Config,
        access: Arc<Access>,
        time: SharedTime,
        metrics: Metrics,
    ) -> Result<Self, RtspError> {
        let config = full.rtsp.clone();
        let factory_config = config.clone();
        let tls = full.tls.enabled();
        let refused =
            crate::logins::RefusedLogins::new(crate::access::Door::Rtsp, "RTSP login refused");
        let on_failure: auth::FailureHook =
            Arc::new(move |peer: &str, user: &str| refused.refused(peer, user));
        // Built here (not on the GLib thread) so a bad certificate fails start-up with its reason.
        let auth = auth::build(full, &access, on_failure)?;
        let access_for_mounts = auth.is_some().then_some(access);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let viewers = Arc::new(Viewers::default());
        let thread_viewers = viewers.clone();
        let pulse = Arc::new(Pulse::new());
        let thread_pulse = pulse.clone();
        let thread = std::thread::Builder::new()
            .name("rtsp-glib".into())
            .spawn(move || {
                let ctx = glib::MainContext::new();
                let main_loop = glib::MainLoop::new(Some(&ctx), false);
                let result = ctx.with_thread_default(|| {
                    let server = gst_rtsp_server::RTSPServer::new();
                    server.set_content_length_limit(config.max_request_bytes);
                    if let Some(pool) = server.session_pool() {
                        pool.set_max_sessions(config.max_sessions);
                    }
                    if let Some(a) = &auth {
                        server.set_auth(Some(a));
                    }
                    let ctx_data = Arc::new(ClientCtx {
                        viewers: thread_viewers.clone(),
                        mounts: Mutex::new(HashMap::new()),
                        metrics: metrics.clone(),
                        limits: config.clone(),
                    });
                    let c = ctx_data.clone();
                    let reported = ctx_data.clone();
                    server.connect_client_connected(move |_, client| on_client(client, &c));
                    // camstream accepts connections itself and hands them over once their
                    // first request is read and bounded (accept.rs); the server never listens.
                    guard::start_watcher(config.max_request_bytes, tls, metrics.clone());
                    let counted = thread_viewers.clone();
                    let acceptor = match accept::start(
                        &server,
                        &ctx,
                        accept::AcceptConfig::new(&config, tls),
                        move || counted.connected(),
                        metrics.clone(),
                    ) {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = ready_tx.send(Err(RtspError::Bind {
                                address: config.address,
                                port: config.port,
                                reason: e.to_string(),
                            }));
                            return;
                        }
                    };
                    // gst-rtsp-server expires neither sessions nor silent connections by itself.
                    let pool = server.session_pool();
                    let weak_server = server.downgrade();
                    let idle = Duration::from_secs(u64::from(config.idle_timeout_s));
                    let cleanup = glib::timeout_source_new_seconds(
                        1,
                        None,
                        glib::Priority::DEFAULT,
                        move || {
                            if let Some(pool) = &pool {
                                pool.cleanup();
                                ctx_data.metrics.set_sessions(pool.n_sessions());
                            }
                            if let Some(server) = weak_server.upgrade() {
                                close_idle(&server, &ctx_data, idle);
                            }
                            glib::ControlFlow::Continue
                        },
                    );
                    cleanup.attach(Some(&ctx));
                    // The loop's pulse: probes read its age instead of waiting for a round
                    // trip through this thread, which a busy CPU can delay by a scheduler tick
                    // or two without the loop being stuck.
                    let beating = thread_pulse.clone();
                    let pulse = glib::timeout_source_new(
                        PULSE_INTERVAL,
                        None,
                        glib::Priority::DEFAULT,
                        move || {
                            beating.beat();
                            glib::ControlFlow::Continue
                        },
                    );
                    pulse.attach(Some(&ctx));
                    let port = acceptor.port();
                    let _ = ready_tx.send(Ok((
                        server.clone(),
                        main_loop.clone(),
                        ctx.clone(),
                        port,
                        reported,
                    )));
                    main_loop.run();
                    cleanup.destroy();
                    pulse.destroy();
                    drop(acceptor);
                });
                if let Err(e) = result {
                    tracing::error!(error = %e, "Could not own the RTSP main context");
                }
                let _ = done_tx.send(());
            })
            .map_err(|_| RtspError::ThreadDied)?;
        match ready_rx.recv() {
            Ok(Ok((server, main_loop, ctx, port, clients))) => Ok(RtspServer {
                ctx,
                main_loop,
                server,
                thread: Mutex::new(Some(thread)),
                done: Mutex::new(done_rx),
                port,
                viewers,
                pulse,
                clients,
                factory: FactorySettings {
                    config: factory_config,
                    tls,
                    access: access_for_mounts,
                    time,
                },
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(RtspError::ThreadDied),
        }
    }

    /// Serves `encoding` (of the stream `camera`) at its mount path, from now on (runs on the
    /// GLib thread).
    pub fn mount(&self, camera: &str, encoding: &Encoding) {
        self.mount_with_audio(camera, encoding, None);
    }

    /// [`RtspServer::mount`], with the stream's sound as a second track when `sound` is given
    /// (its `rtsp_codec` as of now).
    pub fn mount_with_audio(
        &self,
        camera: &str,
        encoding: &Encoding,
        sound: Option<Arc<crate::stream::audio::Audio>>,
    ) {
        let f = &self.factory;
        let metrics = self.clients.metrics.mount(&encoding.name);
        let factory = build_factory(
            &f.config,
            f.tls,
            encoding.hub.clone(),
            f.time.clone(),
            metrics.clone(),
            self.viewers.counter(&encoding.name),
            sound,
        );
        if let Some(access) = &f.access {
            auth::allow(&factory, access, camera, &encoding.name);
        }
        self.clients.mounts.lock().unwrap().insert(
            encoding.mount.clone(),
            Mount {
                name: encoding.name.clone(),
                hub: encoding.hub.clone(),
                metrics,
            },
        );
        let (server, path) = (self.server.clone(), encoding.mount.clone());
        self.ctx.invoke(move || {
            if let Some(m) = server.mount_points() {
                m.add_factory(&path, factory);
            }
        });
    }

    /// Stops serving `path`: new requests get 404 and its viewers are disconnected.
    pub fn unmount(&self, path: &str) {
        let removed = self.clients.mounts.lock().unwrap().remove(path);
        let name = removed.map(|m| m.name).unwrap_or_default();
        let (server, path, viewers) = (self.server.clone(), path.to_string(), self.viewers.clone());
        self.ctx.invoke(move || {
            if let Some(m) = server.mount_points() {
                m.remove_factory(&path);
            }
            // Viewers of a removed stream would otherwise keep a silent session.
            let keys: Vec<usize> = viewers
                .clients
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, v)| v.stream == name)
                .map(|(k, _)| *k)
                .collect();
            server.client_filter(Some(&mut |_, client| {
                if keys.contains(&(client.as_ptr() as usize)) {
                    client.close();
                }
                RTSPFilterResult::Keep
            }));
        });
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connected clients.
    pub fn viewers(&self) -> Arc<Viewers> {
        self.viewers.clone()
    }

    /// A cheap handle that checks whether the GLib loop still runs callbacks.
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            ctx: self.ctx.clone(),
            pulse: self.pulse.clone(),
        }
    }

    /// Closes every client and stops the GLib thread, waiting at most `timeout`.
    pub fn stop(&self, timeout: Duration) {
        let server = self.server.clone();
        let main_loop = self.main_loop.clone();
        self.ctx.invoke(move || {
            server.client_filter(Some(&mut |_, client| {
                client.close();
                RTSPFilterResult::Remove
            }));
            main_loop.quit();
        });
        let deadline = Instant::now() + timeout;
        let stopped = self
            .done
            .lock()
            .unwrap()
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok();
        if stopped && let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        } else {
            tracing::warn!("RTSP thread did not stop in time; leaving it");
        }
    }
}

/// Checks that the RTSP GLib loop still dispatches: liveness and the systemd watchdog use it.
#[derive(Clone)]
pub struct Heartbeat {
    ctx: glib::MainContext,
    pulse: Arc<Pulse>,
}

/// How often the GLib loop records that it still dispatches.
const PULSE_INTERVAL: Duration = Duration::from_millis(200);

/// When the GLib loop last ran its pulse callback, in milliseconds since `start`.
#[derive(Debug)]
struct Pulse {
    start: Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Pulse {
    fn new() -> Self {
        Pulse {
            start: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

impl Heartbeat {
    /// True when the loop ran its pulse within `max_age`: answered at once, without waiting on
    /// the loop's thread (for probes, which must stay fast on a busy machine).
    pub fn recent(&self, max_age: Duration) -> bool {
        self.pulse.age() <= max_age
    }

    /// True when the loop ran a trivial callback within `timeout`.
    pub async fn beat(&self, timeout: Duration) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ctx.invoke(move || {
            let _ = tx.send(());
        });
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }
}
