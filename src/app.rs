//! The running daemon: binds the HTTP sidecar, starts the RTSP server and every stream, then
//! waits for a signal (SIGTERM/SIGINT stop, SIGHUP reloads) or for a stream to give up. Shutdown
//! is a value — one cancellation token whose children every part watches — and all parts stop in
//! parallel within a fixed bound.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError, Sources};
use crate::control::{Control, ControlError};
use crate::http::{self, HttpError};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::output::registry;
use crate::output::rtsp::{Heartbeat, RtspError, RtspServer};
use crate::stream::clock::SharedTime;
use crate::stream::restart::Exit;
use crate::stream::status::State;

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad configuration (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A stream could not start (a missing element or device, no working encoder).
    #[error(transparent)]
    Stream(#[from] ControlError),
    /// The RTSP server could not start.
    #[error(transparent)]
    Rtsp(#[from] RtspError),
    /// The HTTP sidecar could not start.
    #[error(transparent)]
    Http(#[from] HttpError),

    /// The metrics recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    /// GStreamer itself failed to initialise.
    #[error("GStreamer failed to initialise: {0}")]
    Gst(String),
}

impl AppError {
    /// The process exit code for this error: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Where the configuration came from, so SIGHUP can read it again the same way.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// File and flags.
    pub sources: Sources,
    /// The process environment at start.
    pub env: BTreeMap<String, String>,
}

/// Fails with a configuration error when `port` on `address` cannot be bound now.
fn check_port(what: &str, addr: SocketAddr) -> Result<(), ConfigError> {
    if addr.port() == 0 {
        return Ok(());
    }
    TcpListener::bind(addr).map(drop).map_err(|e| {
        ConfigError::Invalid(format!(
            "{what} = {} cannot be used on {}: {e}",
            addr.port(),
            addr.ip()
        ))
    })
}

/// Checks that need the host, not just the values: the RTSP port is free (gst-rtsp-server
/// binds it later, on its own thread; the HTTP port is bound for real before that).
pub fn preflight(config: &Config) -> Result<(), ConfigError> {
    check_port(
        "rtsp.port",
        SocketAddr::new(config.rtsp.address, config.rtsp.port),
    )
}

/// One line for systemd's STATUS: every stream's state.
fn describe(control: &Control) -> String {
    control
        .cameras()
        .iter()
        .map(|c| {
            let st = c.status();
            match &st.health.state {
                State::Backoff {
                    attempt, reason, ..
                } => format!(
                    "{}: camera down ({}), restart attempt {attempt}",
                    c.name,
                    reason.as_str()
                ),
                other => format!(
                    "{}: {}; {} restarts",
                    c.name,
                    other.name(),
                    st.health.restarts
                ),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Tells systemd the streams' states, and pings its watchdog while the GLib loop answers
/// (a wedged RTSP loop stops the pings, and systemd restarts the service).
async fn notify_systemd(
    notifier: Notifier,
    heartbeat: Heartbeat,
    control: Arc<Control>,
    shutdown: CancellationToken,
) {
    let interval = Notifier::watchdog_interval().map(|d| d / 2);
    let mut watchdog = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = watchdog.tick() => {
                if interval.is_some() && heartbeat.beat(Duration::from_secs(2)).await {
                    notifier.watchdog();
                }
            }
            _ = poll.tick() => {
                let text = describe(&control);
                if text != last {
                    notifier.status(&text);
                    last = text;
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// What a signal asks for.
enum Signal {
    Stop,
    Reload,
}

/// Signal streams; a second stop signal ends the process at once.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => { tracing::info!(signal = "SIGTERM", "Shutting down"); Signal::Stop }
            _ = self.int.recv() => { tracing::info!(signal = "SIGINT", "Shutting down"); Signal::Stop }
            _ = self.hup.recv() => { tracing::info!(signal = "SIGHUP", "Reloading the configuration"); Signal::Reload }
        }
    }

    /// After the first stop signal: the next one exits immediately.
    fn arm_second(mut self) {
        tokio::spawn(async move {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
            tracing::warn!("Second signal: exiting immediately");
            // The line is queued for stderr (telemetry.rs); exit() would drop it unwritten.
            crate::telemetry::flush(Duration::from_millis(100));
            std::process::exit(130);
        });
    }
}

/// Reads the configuration again; a bad file leaves the running one in force.
fn reread(origin: &Origin) -> Option<Config> {
    match config::load(&origin.sources, &origin.env) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "Configuration not reloaded; the running configuration stays");
            None
        }
    }
}

/// Says loudly at start-up when visitors may watch without an account.
fn warn_if_open(access: &crate::access::Access) {
    if !access.is_open() {
        return;
    }
    if access.has_users() {
        tracing::warn!(
            "access.anonymous = view: anyone who reaches this camera may watch it at every door \
             (RTSP, WebRTC, snapshots, recordings, ONVIF) without an account; accounts and \
             tokens are needed only to change settings"
        );
    } else {
        tracing::warn!(
            "No user account: anyone who reaches this camera may watch it at every door (RTSP, \
             WebRTC, snapshots, recordings, ONVIF). Set auth.username and auth.password (or \
             RTSP_USERNAME/RTSP_PASSWORD, or [[auth.users]]) to protect it"
        );
    }
}

/// The HTTP sockets, bound before anything else starts so a taken port fails fast (exit 2).
struct Bound {
    /// The main listener (everything, or probes and metrics when the API has its own).
    http: Option<tokio::net::TcpListener>,
    /// The separate API listener (`http.api_address`).
    api: Option<tokio::net::TcpListener>,
}

/// Everything that runs, for the signal loop and the shutdown.
struct Running {
    control: Arc<Control>,
    rtsp: Arc<RtspServer>,
    rtsp_running: Arc<AtomicBool>,
    notifier: Option<Notifier>,
    exit_rx: mpsc::UnboundedReceiver<(String, Exit)>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The page's sessions, pruned on reload.
    sessions: Arc<http::session::Sessions>,
}

/// Runs the daemon until a stop signal (exit code 0) or until a stream exceeds its
/// `max_retries` (1): bind, start, serve, shut down.
pub async fn run(config: Config, origin: Origin) -> Result<u8, AppError> {
    gst::init().map_err(|e| AppError::Gst(e.to_string()))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        gstreamer = %gst::version_string(),
        "camstream starting"
    );
    preflight(&config)?;
    let config = Arc::new(config);
    let bound = bind(&config).await?;
    let mut running = start(config, bound).await?;
    let code = serve(&mut running, &origin).await;
    stop(running).await;
    tracing::info!(exit_code = code, "camstream stopped");
    Ok(code)
}

/// Binds the HTTP listeners.
async fn bind(config: &Config) -> Result<Bound, AppError> {
    let http = if config.http.enabled {
        let addr = SocketAddr::new(config.http.address, config.http.port);
        let listener = http::bind(addr)
            .await
            .map_err(|e| ConfigError::Invalid(format!("http.port = {}: {e}", config.http.port)))?;
        Some(listener)
    } else {
        None
    };
    let api = if config.http.enabled && !config.http.api_address.is_empty() {
        let ip = config.http.api_address.parse().map_err(|_| {
            ConfigError::Invalid(format!("http.api_address = {:?}", config.http.api_address))
        })?;
        let addr = SocketAddr::new(ip, config.http.api_port);
        let listener = http::bind(addr).await.map_err(|e| {
            ConfigError::Invalid(format!("http.api_port = {}: {e}", config.http.api_port))
        })?;
        Some(listener)
    } else {
        None
    };
    Ok(Bound { http, api })
}

/// Starts the access rules, RTSP, every stream, the other outputs (through the registry) and
/// the HTTP sidecar.
async fn start(config: Arc<Config>, bound: Bound) -> Result<Running, AppError> {
    let streams = config.streams()?;
    let access = Arc::new(crate::access::Access::from_config(&config)?);
    warn_if_open(&access);
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| AppError::Metrics(e.to_string()))?;
    let metrics = Metrics::new();
    metrics.build_info();
    let time = SharedTime::now();

    // The RTSP thread reports once bound; wait for it off the async workers.
    let (c, a, t, m) = (
        config.clone(),
        access.clone(),
        time.clone(),
        metrics.clone(),
    );
    let rtsp = tokio::task::spawn_blocking(move || registry::start_rtsp(&c, a, t, m))
        .await
        .map_err(|e| AppError::Gst(e.to_string()))??;
    let rtsp = Arc::new(rtsp);
    let shown = if config.rtsp.address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        config.rtsp.address.to_string()
    };
    let scheme = if config.tls.enabled() {
        "rtsps"
    } else {
        "rtsp"
    };
    let first_mount = streams.first().map(|s| s.mount_path()).unwrap_or_default();
    tracing::info!(
        url = %format!("{scheme}://{shown}:{}{first_mount}", rtsp.port()),
        "RTSP server listening"
    );

    let shutdown = CancellationToken::new();
    crate::events::register_metrics();
    crate::hooks::start(&config.hooks, &config.hook_limits, shutdown.child_token());
    let (exit_tx, exit_rx) = mpsc::unbounded_channel();
    let control = Arc::new(Control::new(
        config.clone(),
        rtsp.clone(),
        time,
        shutdown.child_token(),
        exit_tx,
    ));
    for s in streams {
        let name = s.name.clone();
        let mount = s.mount_path();
        control.start_stream(s).await?;
        tracing::info!(
            stream = %name,
            url = %format!("{scheme}://{shown}:{}{mount}", rtsp.port()),
            "Stream served"
        );
    }

    let notifier = Notifier::from_env();
    if let Some(n) = &notifier {
        n.ready();
    }
    let rtsp_running = Arc::new(AtomicBool::new(true));
    let upkeep = {
        let (p, stop) = (prometheus.clone(), shutdown.child_token());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => p.run_upkeep(),
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    // Discovery advertises the port the services really listen on.
    let http_bound = bound.http.as_ref().and_then(|l| l.local_addr().ok());
    let services =
        registry::start_services(&config, access.clone(), rtsp.port(), http_bound, &shutdown)
            .await?;
    let analysis =
        crate::analysis::start(&config.analysis, control.clone(), shutdown.child_token());
    // MQTT and Home Assistant (issue #25, branch events).
    let mqtt = crate::mqtt::start(
        &config,
        access.clone(),
        control.clone(),
        shutdown.child_token(),
    )
    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let shared = http::Shared {
        onvif: services.onvif,
        analysis,
        control: control.clone(),
        heartbeat: rtsp.heartbeat(),
        prometheus,
        started: Instant::now(),
        access,
        sessions: Arc::default(),
        rtsp_running: rtsp_running.clone(),
        webrtc: services.webrtc,
    };
    let main_part = if bound.api.is_some() {
        http::Part::Public
    } else {
        http::Part::All
    };
    let mut tasks = vec![upkeep];
    tasks.extend(services.tasks);
    tasks.extend(mqtt);
    tasks.push(http::trends::spawn(shared.clone(), shutdown.child_token()));
    let https = if config.http.tls {
        let acceptor = http::listener::acceptor(&config.tls.cert_file, &config.tls.key_file)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Some(acceptor)
    } else {
        None
    };
    for (listener, part) in [(bound.http, main_part), (bound.api, http::Part::Api)] {
        let Some(listener) = listener else { continue };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, endpoints = ?part, https = config.http.tls, "HTTP sidecar listening");
        }
        let app = http::router(shared.clone(), part);
        tasks.push(tokio::spawn(http::serve(
            listener,
            app,
            https.clone(),
            shutdown.child_token(),
        )));
    }
    if let Some(n) = notifier.clone() {
        tasks.push(tokio::spawn(notify_systemd(
            n,
            rtsp.heartbeat(),
            control.clone(),
            shutdown.child_token(),
        )));
    }
    Ok(Running {
        control,
        rtsp,
        rtsp_running,
        notifier,
        exit_rx,
        shutdown,
        tasks,
        sessions: shared.sessions.clone(),
    })
}

/// Waits for a signal (SIGTERM/SIGINT stop, SIGHUP reloads) or a stream that gave up; returns
/// the exit code.
async fn serve(r: &mut Running, origin: &Origin) -> u8 {
    let mut signals = match Signals::install() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "Cannot install signal handlers");
            None
        }
    };
    let code = loop {
        let signal = async {
            match signals.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            sig = signal => match sig {
                Signal::Stop => break 0,
                Signal::Reload => {
                    if let Some(new) = reread(origin) {
                        // Sessions of accounts that are gone or changed end now (the accounts
                        // themselves change at the next restart, as the reload reports).
                        if let Ok(a) = crate::access::Access::from_config(&new) {
                            let ended = r.sessions.reload(&a);
                            if ended > 0 {
                                tracing::info!(ended, "Sessions of changed accounts ended");
                            }
                        }
                        r.control.reload(new).await;
                    }
                }
            },
            Some((name, exit)) = r.exit_rx.recv() => {
                if exit == Exit::MaxRetriesExceeded {
                    tracing::error!(stream = %name, "Stream gave up; exiting");
                    break 1;
                }
            }
        }
    };
    if let Some(s) = signals {
        s.arm_second();
    }
    code
}

/// Stops everything at once: captures, HTTP, and the RTSP server, each within its own bound
/// and all within the 2 s a service manager is promised.
async fn stop(r: Running) {
    if let Some(n) = &r.notifier {
        n.stopping();
    }
    r.rtsp_running.store(false, Ordering::Relaxed);
    r.shutdown.cancel();
    let control = r.control;
    let names: Vec<String> = control.cameras().iter().map(|c| c.name.clone()).collect();
    let stops = names.iter().map(|n| control.stop_stream(n));
    let rtsp_stop = {
        let rtsp = r.rtsp.clone();
        tokio::task::spawn_blocking(move || rtsp.stop(Duration::from_millis(400)))
    };
    let tasks = r.tasks;
    let all = async {
        futures_util::future::join_all(stops).await;
        for t in tasks {
            let _ = t.await;
        }
        let _ = rtsp_stop.await;
    };
    if tokio::time::timeout(Duration::from_millis(1800), all)
        .await
        .is_err()
    {
        tracing::warn!("Some parts did not stop within 1.8 s; exiting anyway");
    }
}
