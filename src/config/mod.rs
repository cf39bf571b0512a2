//! Configuration: the typed settings, their defaults, the layers they are read from, and the
//! checks that reject bad input before anything starts.
//!
//! Layers, later wins: built-in defaults → TOML file → legacy environment variables
//! (`VIDEO_DEVICE`, then `STREAM_WIDTH` & co.) → `CAMSTREAM_*` environment variables → command-line
//! flags. Unknown keys are rejected and the error names the key and the layer it came from.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::stream::h264::{self, Level};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/camstream/camstream.toml";

/// Everything camstream can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where pictures come from.
    pub source: SourceConfig,
    /// Picture size and rate, as delivered to the encoder.
    pub video: VideoConfig,
    /// H.264 encoder settings.
    pub encoder: EncoderConfig,
    /// RTSP server settings.
    pub rtsp: RtspConfig,
    /// HTTP sidecar settings.
    pub http: HttpConfig,
    /// RTSP viewer authentication.
    pub auth: AuthConfig,
    /// RTSPS (RTSP over TLS).
    pub tls: TlsConfig,
    /// Restart policy of the capture pipeline.
    pub supervisor: SupervisorConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Which kind of source feeds the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A libcamera camera if one is found, else a V4L2 capture device; never a test pattern.
    Auto,
    /// `libcamerasrc` (Raspberry Pi CSI cameras).
    Libcamera,
    /// `v4l2src` (USB cameras, CSI through V4L2, v4l2loopback).
    V4l2,
    /// `videotestsrc`: a synthetic picture, for trying camstream without a camera.
    Test,
    /// An operator-given GStreamer launch fragment producing raw video.
    Pipeline,
}

impl SourceKind {
    /// The name used in configuration and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Auto => "auto",
            SourceKind::Libcamera => "libcamera",
            SourceKind::V4l2 => "v4l2",
            SourceKind::Test => "test",
            SourceKind::Pipeline => "pipeline",
        }
    }
}

/// `[source]`: where pictures come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Source kind. Default `auto`.
    pub kind: SourceKind,
    /// V4L2 device path for `v4l2`. Default empty: the first capture device found.
    pub device: String,
    /// libcamera camera name for `libcamera`. Default empty: the first camera.
    pub camera_name: String,
    /// `videotestsrc` pattern name for `test`. Default `smpte`.
    pub pattern: String,
    /// Launch fragment for `pipeline`; its last element must output raw video. Default empty.
    pub pipeline: String,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Auto,
            device: String::new(),
            camera_name: String::new(),
            pattern: "smpte".into(),
            pipeline: String::new(),
        }
    }
}

/// `[video]`: the picture the encoder receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// Width in pixels; even, 16 to 4096. Default 1280.
    pub width: u32,
    /// Height in pixels; even, 16 to 4096. Default 720.
    pub height: u32,
    /// Frames per second, 1 to 120. Default 30.
    pub fps: u32,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            width: 1280,
            height: 720,
            fps: 30,
        }
    }
}

/// Which H.264 encoder to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// The Pi hardware encoder when its device is present and works, else x264, else openh264.
    Auto,
    /// `v4l2h264enc` (Raspberry Pi bcm2835-codec).
    V4l2,
    /// `x264enc`, software.
    X264,
    /// `openh264enc`, software.
    Openh264,
}

/// H.264 profile requested from the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile264 {
    /// Constrained baseline: decodable by everything.
    ConstrainedBaseline,
    /// Baseline.
    Baseline,
    /// Main.
    Main,
    /// High.
    High,
}

impl Profile264 {
    /// The name GStreamer caps use.
    pub fn caps_name(self) -> &'static str {
        match self {
            Profile264::ConstrainedBaseline => "constrained-baseline",
            Profile264::Baseline => "baseline",
            Profile264::Main => "main",
            Profile264::High => "high",
        }
    }
}

/// `[encoder]`: H.264 encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderConfig {
    /// Encoder kind. Default `auto`.
    pub kind: EncoderKind,
    /// Device of the V4L2 hardware encoder. Default `/dev/video11` (Pi bcm2835-codec).
    pub device: String,
    /// Target bitrate in kbit/s, 100 to 20000 (the Pi encoder fails above 20 Mb/s). Default 4000.
    pub bitrate_kbps: u32,
    /// Frames between keyframes (GOP length). Default 60 (2 s at 30 fps).
    pub keyframe_interval: u32,
    /// H.264 profile. Default `high`.
    pub profile: Profile264,
    /// H.264 level such as "3.1" or "4". Default empty: derived from width × height × fps.
    pub level: String,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            kind: EncoderKind::Auto,
            device: "/dev/video11".into(),
            bitrate_kbps: 4000,
            keyframe_interval: 60,
            profile: Profile264::High,
            level: String::new(),
        }
    }
}

/// An RTSP lower transport a viewer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RTP interleaved on the RTSP TCP connection.
    Tcp,
    /// RTP over unicast UDP.
    Udp,
    /// RTP over multicast UDP.
    Multicast,
}

/// `[rtsp]`: the RTSP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtspConfig {
    /// Address to listen on. Default `0.0.0.0`.
    pub address: IpAddr,
    /// TCP port. Default 8554.
    pub port: u16,
    /// Mount path of the stream. Default `/video`.
    pub mount: String,
    /// Transports offered to viewers. Default `["tcp", "udp"]`.
    pub transports: Vec<Transport>,
    /// Seconds without RTSP or RTCP keep-alive after which a session expires. Default 60.
    pub session_timeout_s: u32,
    /// Viewers (clients with a session) at once; the next SETUP gets 503. Default 64.
    pub max_viewers: u32,
    /// RTSP connections at once; more are closed on accept. Default 128.
    pub max_connections: u32,
    /// RTSP sessions at once (gst-rtsp-server's pool). Default 128.
    pub max_sessions: u32,
    /// Largest request head (request line and headers) and largest request body
    /// (Content-Length) accepted, in bytes; at least 256. Default 4096.
    pub max_request_bytes: u32,
    /// Seconds a connection without a session may stay silent before it is closed. Default 30.
    pub idle_timeout_s: u32,
}

impl Default for RtspConfig {
    fn default() -> Self {
        RtspConfig {
            address: IpAddr::from([0, 0, 0, 0]),
            port: 8554,
            mount: "/video".into(),
            transports: vec![Transport::Tcp, Transport::Udp],
            session_timeout_s: 60,
            max_viewers: 64,
            max_connections: 128,
            max_sessions: 128,
            max_request_bytes: 4096,
            idle_timeout_s: 30,
        }
    }
}

/// `[http]`: the HTTP sidecar (health, metrics, status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether the sidecar runs. Default true.
    pub enabled: bool,
    /// Address to listen on. Default `0.0.0.0`.
    pub address: IpAddr,
    /// TCP port. Default 8080.
    pub port: u16,
    /// Bearer token required for `/api/*` and `/snapshot.jpg`. Default empty: no token.
    pub token: Secret,
    /// File holding the bearer token (e.g. a mounted Secret); overrides `token`. Default empty.
    pub token_file: String,
    /// Also require the token for `/healthz` and `/readyz`. Default false.
    pub protect_probes: bool,
    /// Also require the token for `/metrics`. Default false.
    pub protect_metrics: bool,
    /// Separate listener for `/api/*` and `/snapshot.jpg` (e.g. "127.0.0.1"); with it, the main
    /// listener serves only probes and metrics. Default empty: one listener for all.
    pub api_address: String,
    /// Port of the separate API listener; required with `api_address`. Default 0.
    pub api_port: u16,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            address: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            token: Secret::default(),
            token_file: String::new(),
            protect_probes: false,
            protect_metrics: false,
            api_address: String::new(),
            api_port: 0,
        }
    }
}

/// A string that is never shown: `Debug` prints `<redacted>` (the status API and `check` redact
/// it by key name too).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl Secret {
    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An RTSP authentication scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// HTTP Digest (RFC 2617): the password never crosses the wire.
    Digest,
    /// HTTP Basic: the password crosses the wire, readable without TLS.
    Basic,
}

/// One viewer account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// User name (no ':').
    pub username: String,
    /// Password.
    pub password: Secret,
    /// File holding the password (trailing newline ignored); overrides `password`.
    pub password_file: String,
}

/// `[auth]`: who may watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Enforce authentication when users are configured. Default true (`RTSP_AUTH=false` turns
    /// it off).
    pub enabled: bool,
    /// Schemes offered. Default `["digest"]`.
    pub methods: Vec<AuthMethod>,
    /// A single user's name (`RTSP_USERNAME`). Default empty.
    pub username: String,
    /// That user's password (`RTSP_PASSWORD`). Default empty.
    pub password: Secret,
    /// File holding that user's password; overrides `password`. Default empty.
    pub password_file: String,
    /// More users, as `[[auth.users]]` tables. Default none.
    pub users: Vec<UserConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            methods: vec![AuthMethod::Digest],
            username: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            users: Vec::new(),
        }
    }
}

/// `[tls]`: RTSPS. With a certificate, every RTSP connection is TLS and media goes over TCP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate (chain) file. Default empty: no TLS.
    pub cert_file: String,
    /// PEM private key file. Default empty.
    pub key_file: String,
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

/// Reads a secret from a file, dropping one trailing newline.
fn read_secret(key: &str, path: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid(format!("{key} = {path:?} cannot be read: {e}")))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(ConfigError::Invalid(format!("{key} = {path:?} is empty")));
    }
    Ok(text.to_string())
}

/// `[supervisor]`: how a failed capture pipeline is restarted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Delay before the first restart, in ms. Default 500.
    pub initial_backoff_ms: u64,
    /// Cap on the restart delay, in ms. Default 30000.
    pub max_backoff_ms: u64,
    /// Factor the delay grows by after each failure, ≥ 1. Default 2.0.
    pub multiplier: f64,
    /// Random spread of each delay as a fraction, 0 to 1 (0.2 = ±20 %). Default 0.2.
    pub jitter: f64,
    /// Restarts allowed in a row: the process exits non-zero on failure max_retries + 1;
    /// 0 = never give up. Default 0.
    pub max_retries: u32,
    /// No encoded frame for this long (ms) counts as a stall and restarts the camera. Default 5000.
    pub stall_timeout_ms: u64,
    /// Time (ms) a starting pipeline has to deliver its first frame. Default 10000.
    pub start_timeout_ms: u64,
    /// Streaming this long (ms) without a failure resets the attempt count. Default 30000.
    pub stable_period_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            multiplier: 2.0,
            jitter: 0.2,
            max_retries: 0,
            stall_timeout_ms: 5_000,
            start_timeout_ms: 10_000,
            stable_period_ms: 30_000,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter: a level (error, warn, info, debug, trace) or directives. Default `info`.
    pub level: String,
    /// Output format. Default `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` is missing or unreadable.
    #[error("cannot read configuration file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A layer holds an unknown key, a value of the wrong type, or bad syntax.
    #[error("invalid configuration: {0}")]
    Parse(Box<figment::Error>),
    /// A `--set` flag is not `KEY=VALUE`.
    #[error("invalid --set {0:?}: expected KEY=VALUE, e.g. --set rtsp.port=8555")]
    BadOverride(String),
    /// Values that parse but make no sense together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Parse(Box::new(e))
    }
}

/// A provider holding a fixed map, named for the layer it stands for so errors can say where a
/// bad key came from.
struct Layer {
    name: &'static str,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Variables existing deployments set, and the key each one maps to. `VIDEO_DEVICE` (set by the
/// Kubernetes device plugin) comes first so an operator's explicit `CAPTURE_DEVICE` wins.
pub const LEGACY_ENV: &[(&str, &str)] = &[
    ("VIDEO_DEVICE", "source.device"),
    ("CAPTURE_DEVICE", "source.device"),
    ("STREAM_WIDTH", "video.width"),
    ("STREAM_HEIGHT", "video.height"),
    ("STREAM_FPS", "video.fps"),
    ("H264_PROFILE", "encoder.profile"),
    ("H264_LEVEL", "encoder.level"),
    ("KEYFRAME_INTERVAL", "encoder.keyframe_interval"),
];

/// Inserts `value` at dotted `path` into `dict`, creating tables on the way.
fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut cur = dict;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return;
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::from(Dict::new()));
        if entry.as_dict().is_none() {
            *entry = Value::from(Dict::new());
        }
        cur = match entry {
            Value::Dict(_, d) => d,
            _ => unreachable!("just made a dict"),
        };
    }
}

/// Whether a variable name (after `CAMSTREAM_`) has the shape of a Kubernetes service link, as
/// made for a Service named e.g. `camstream-http`: `HTTP_SERVICE_HOST`, `HTTP_PORT_8080_TCP`.
fn is_service_link(rest: &str) -> bool {
    rest.contains("_SERVICE_")
        || rest.ends_with("_PORT")
        || rest.split("_PORT_").nth(1).is_some_and(|t| {
            t.split('_')
                .next()
                .is_some_and(|n| n.parse::<u16>().is_ok())
        })
}

/// The top-level sections, for recognising near-miss environment variables.
const SECTIONS: &[&str] = &[
    "source",
    "video",
    "encoder",
    "rtsp",
    "http",
    "auth",
    "tls",
    "supervisor",
    "log",
];

/// Keys whose values are always strings, so "4" or "0x10" given on the command line or in the
/// environment stay text (a device name, a level, a password) instead of turning into numbers.
const STRING_KEYS: &[&str] = &[
    "source.device",
    "source.camera_name",
    "source.pattern",
    "source.pipeline",
    "encoder.device",
    "encoder.level",
    "rtsp.mount",
    "log.level",
    "http.token",
    "http.token_file",
    "http.api_address",
    "tls.cert_file",
    "tls.key_file",
];

/// Parses a string the way figment parses environment values, except for string-typed keys.
fn parse_value(path: &str, raw: &str) -> Value {
    let auth_string = path.starts_with("auth.") && !matches!(path, "auth.enabled" | "auth.methods");
    if STRING_KEYS.contains(&path) || auth_string {
        return Value::from(raw.to_string());
    }
    raw.parse::<Value>()
        .unwrap_or_else(|_| Value::from(raw.to_string()))
}

/// Maps the seeds' `RTSP_AUTH`, `RTSP_USERNAME` and `RTSP_PASSWORD`. `RTSP_AUTH` takes a
/// boolean, or the methods to offer ("digest", "basic", "digest,basic").
fn legacy_auth(env: &BTreeMap<String, String>, dict: &mut Dict) {
    if let Some(v) = env.get("RTSP_USERNAME").filter(|v| !v.is_empty()) {
        insert_path(dict, "auth.username", Value::from(v.clone()));
    }
    if let Some(v) = env.get("RTSP_PASSWORD").filter(|v| !v.is_empty()) {
        insert_path(dict, "auth.password", Value::from(v.clone()));
    }
    let Some(v) = env.get("RTSP_AUTH").map(|v| v.trim().to_ascii_lowercase()) else {
        return;
    };
    match v.as_str() {
        "" => {}
        "1" | "true" | "yes" | "on" => insert_path(dict, "auth.enabled", Value::from(true)),
        "0" | "false" | "no" | "off" | "none" => {
            insert_path(dict, "auth.enabled", Value::from(false))
        }
        methods => {
            insert_path(dict, "auth.enabled", Value::from(true));
            let list: Vec<Value> = methods
                .split([',', ' '])
                .filter(|m| !m.is_empty())
                .map(|m| Value::from(m.to_string()))
                .collect();
            insert_path(dict, "auth.methods", Value::from(list));
        }
    }
}

/// Where the configuration comes from: everything except the process environment, which is
/// passed in so tests need not touch global state.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--config PATH`, if given.
    pub file: Option<PathBuf>,
    /// Whether to read [`DEFAULT_CONFIG_PATH`] when `file` is `None`.
    pub use_default_file: bool,
    /// Command-line overrides as (dotted key, raw value).
    pub overrides: Vec<(String, String)>,
}

/// Loads and validates the configuration from all layers.
pub fn load(sources: &Sources, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let figment = figment(sources, env)?;
    let config: Config = figment.extract()?;
    config.validate()?;
    Ok(config)
}

/// Builds the layered figment (exposed for `camstream check`, which prints it).
pub fn figment(sources: &Sources, env: &BTreeMap<String, String>) -> Result<Figment, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));

    let file = match &sources.file {
        Some(p) => Some(p.clone()),
        None if sources.use_default_file && Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Some(PathBuf::from(DEFAULT_CONFIG_PATH))
        }
        None => None,
    };
    if let Some(path) = file {
        // Read it ourselves: figment treats a missing file as empty, which would hide a typo in
        // `--config`.
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let named = Toml::string(&text);
        // Absolute, so an error under systemd names the file unambiguously.
        let path = std::path::absolute(&path).unwrap_or(path);
        fig = fig.merge(FileLayer { path, inner: named });
    }

    let mut legacy = Dict::new();
    for (var, key) in LEGACY_ENV {
        if let Some(v) = env.get(*var).filter(|v| !v.is_empty()) {
            insert_path(&mut legacy, key, parse_value(key, v));
        }
    }
    legacy_auth(env, &mut legacy);
    fig = fig.merge(Layer {
        name: "legacy environment variables (STREAM_*, H264_*, CAPTURE_DEVICE, VIDEO_DEVICE, RTSP_*)",
        dict: legacy,
    });

    // CAMSTREAM_RTSP__PORT → rtsp.port. Values are parsed like figment's own Env provider, but
    // from the map given, and device paths and levels stay strings.
    let mut ours = Dict::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("CAMSTREAM_") else {
            continue;
        };
        if !rest.contains("__") {
            // Every setting is section__key. Kubernetes adds CAMSTREAM_PORT,
            // CAMSTREAM_SERVICE_HOST & co. for a Service named camstream, and scripts keep their
            // own CAMSTREAM_* variables: those are not ours. A near miss of a real setting is.
            let section = rest.split('_').next().unwrap_or("").to_ascii_lowercase();
            if SECTIONS.contains(&section.as_str())
                && rest.len() > section.len()
                && !is_service_link(rest)
            {
                return Err(ConfigError::Invalid(format!(
                    "environment variable {k} is not a setting: sections and keys are separated \
                     by a double underscore, e.g. CAMSTREAM_{}__{}",
                    section.to_ascii_uppercase(),
                    &rest[section.len() + 1..]
                )));
            }
            continue;
        }
        let path = rest.to_ascii_lowercase().replace("__", ".");
        insert_path(&mut ours, &path, parse_value(&path, v));
    }
    fig = fig.merge(Layer {
        name: "CAMSTREAM_* environment variables",
        dict: ours,
    });

    let mut cli = Dict::new();
    for (k, v) in &sources.overrides {
        if k.is_empty() {
            return Err(ConfigError::BadOverride(format!("={v}")));
        }
        insert_path(&mut cli, k, parse_value(k, v));
    }
    fig = fig.merge(Layer {
        name: "command-line flags",
        dict: cli,
    });
    Ok(fig)
}

/// A TOML file layer whose metadata names the file.
struct FileLayer {
    path: PathBuf,
    inner: figment::providers::Data<Toml>,
}

impl Provider for FileLayer {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data().map_err(|e| {
            let mut e = e;
            e.metadata = Some(self.metadata());
            e
        })
    }
}

/// Parses `KEY=VALUE` from a `--set` flag.
pub fn parse_override(s: &str) -> Result<(String, String), ConfigError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(ConfigError::BadOverride(s.to_string())),
    }
}

/// Keys whose values are never shown (status API, `camstream check`).
const SECRET_KEYS: &[&str] = &["password", "token", "secret"];

fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SECRET_KEYS.iter().any(|s| k.contains(s)) && !k.ends_with("_file") {
                    if !v.is_null() && v.as_str() != Some("") {
                        *v = serde_json::Value::String("<redacted>".into());
                    }
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Fails with the key and the allowed range when `value` is outside `lo..=hi` (or NaN).
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if value >= lo && value <= hi {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{key} = {value} is out of range ({lo} to {hi})"
        )))
    }
}

/// A viewer account with its password resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

impl Config {
    /// The viewer accounts in force (empty when authentication is off), with password files read.
    pub fn users(&self) -> Result<Vec<Credentials>, ConfigError> {
        let a = &self.auth;
        let single = UserConfig {
            username: a.username.clone(),
            password: a.password.clone(),
            password_file: a.password_file.clone(),
        };
        let mut out: Vec<Credentials> = Vec::new();
        let all =
            std::iter::once(("auth", &single)).chain(a.users.iter().map(|u| ("auth.users", u)));
        for (key, u) in all {
            let has_password = !u.password.is_empty() || !u.password_file.is_empty();
            if u.username.is_empty() {
                if has_password {
                    return Err(ConfigError::Invalid(format!(
                        "{key}: a password is set without a username"
                    )));
                }
                if key == "auth" {
                    continue;
                }
                return Err(ConfigError::Invalid(format!(
                    "{key}: an entry has no username"
                )));
            }
            if u.username.contains(':') || u.username.chars().any(char::is_control) {
                return Err(ConfigError::Invalid(format!(
                    "{key}: username {:?} contains ':' or a control character",
                    u.username
                )));
            }
            let password = if !u.password_file.is_empty() {
                read_secret(&format!("{key}.password_file"), &u.password_file)?
            } else if !u.password.is_empty() {
                u.password.0.clone()
            } else {
                return Err(ConfigError::Invalid(format!(
                    "{key}: user {:?} has no password (set password or password_file)",
                    u.username
                )));
            };
            if out.iter().any(|c| c.username == u.username) {
                return Err(ConfigError::Invalid(format!(
                    "{key}: user {:?} is configured twice",
                    u.username
                )));
            }
            out.push(Credentials {
                username: u.username.clone(),
                password: Secret(password),
            });
        }
        if !a.enabled {
            out.clear();
        }
        Ok(out)
    }

    /// The HTTP bearer token in force, if any, with `token_file` read.
    pub fn http_token(&self) -> Result<Option<Secret>, ConfigError> {
        let h = &self.http;
        if !h.token_file.is_empty() {
            return read_secret("http.token_file", &h.token_file).map(|t| Some(Secret(t)));
        }
        Ok((!h.token.is_empty()).then(|| h.token.clone()))
    }

    /// The configuration as JSON with every secret replaced by "<redacted>".
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        redact(&mut v);
        v
    }

    /// The H.264 level in force: the configured one, or the lowest that fits size × rate.
    pub fn effective_level(&self) -> Result<Level, ConfigError> {
        let v = &self.video;
        let e = &self.encoder;
        let high = e.profile == Profile264::High;
        let needed = h264::derive_level_for(v.width, v.height, v.fps, e.bitrate_kbps, high);
        if e.level.trim().is_empty() {
            return needed.ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "video {}x{}@{} at {} kbit/s exceeds every H.264 level",
                    v.width, v.height, v.fps, e.bitrate_kbps
                ))
            });
        }
        let level: Level = e.level.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "encoder.level = {:?} is not an H.264 level (one of {})",
                e.level,
                h264::LEVEL_NAMES.join(", ")
            ))
        })?;
        if !level.fits(v.width, v.height, v.fps) || !level.allows_bitrate(e.bitrate_kbps, high) {
            let min = needed.map_or_else(|| "none".to_string(), |l| l.to_string());
            return Err(ConfigError::Invalid(format!(
                "encoder.level = {:?} is too low for {}x{}@{} at {} kbit/s (needs at least {})",
                e.level, v.width, v.height, v.fps, e.bitrate_kbps, min
            )));
        }
        Ok(level)
    }

    /// Rejects values that parse but cannot work, with the offending key in the message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let v = &self.video;
        for (key, val) in [("video.width", v.width), ("video.height", v.height)] {
            in_range(key, val, 16, 4096)?;
            if val % 2 != 0 {
                return bad(format!(
                    "{key} = {val} is odd; H.264 with 4:2:0 chroma needs even sizes"
                ));
            }
        }
        in_range("video.fps", v.fps, 1, 120)?;
        let e = &self.encoder;
        in_range("encoder.bitrate_kbps", e.bitrate_kbps, 100, 20_000)?;
        in_range("encoder.keyframe_interval", e.keyframe_interval, 1, 1000)?;
        self.effective_level()?;
        if e.kind == EncoderKind::V4l2
            && (v.width > 1920 || v.height > 1088 || v.fps > 30 && v.width * v.height > 1280 * 720)
        {
            return bad(format!(
                "video {}x{}@{} is beyond what the Pi hardware encoder handles (up to 1080p30)",
                v.width, v.height, v.fps
            ));
        }

        let s = &self.source;
        if s.kind == SourceKind::Pipeline && s.pipeline.trim().is_empty() {
            return bad("source.kind = \"pipeline\" needs source.pipeline (a launch fragment producing raw video)".into());
        }

        let r = &self.rtsp;
        if r.mount.trim().is_empty() || r.mount.trim() == "/" {
            return bad(format!(
                "rtsp.mount = {:?} is empty; give a path such as \"/video\"",
                r.mount
            ));
        }
        if !r.mount.starts_with('/') {
            return bad(format!(
                "rtsp.mount = {:?} must start with '/' (e.g. \"/video\")",
                r.mount
            ));
        }
        if r.mount
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '#')
        {
            return bad(format!(
                "rtsp.mount = {:?} contains a space, '?' or '#'",
                r.mount
            ));
        }
        if r.transports.is_empty() {
            return bad(
                "rtsp.transports is empty; offer at least one of tcp, udp, multicast".into(),
            );
        }
        if r.session_timeout_s < 5 {
            return bad(format!(
                "rtsp.session_timeout_s = {} is below 5 seconds",
                r.session_timeout_s
            ));
        }
        if self.http.enabled && self.http.port == self.rtsp.port && self.http.port != 0 {
            return bad(format!(
                "http.port = {} is the same as rtsp.port",
                self.http.port
            ));
        }

        let sup = &self.supervisor;
        if sup.initial_backoff_ms == 0 || sup.initial_backoff_ms > sup.max_backoff_ms {
            return bad(format!(
                "supervisor.initial_backoff_ms = {} must be between 1 and supervisor.max_backoff_ms ({})",
                sup.initial_backoff_ms, sup.max_backoff_ms
            ));
        }
        in_range("supervisor.multiplier", sup.multiplier, 1.0, 100.0)?;
        in_range("supervisor.jitter", sup.jitter, 0.0, 1.0)?;
        if sup.stall_timeout_ms < 100 {
            return bad(format!(
                "supervisor.stall_timeout_ms = {} is below 100 ms",
                sup.stall_timeout_ms
            ));
        }
        if sup.start_timeout_ms < 100 {
            return bad(format!(
                "supervisor.start_timeout_ms = {} is below 100 ms",
                sup.start_timeout_ms
            ));
        }
        for (key, v) in [
            ("rtsp.max_viewers", r.max_viewers),
            ("rtsp.max_connections", r.max_connections),
            ("rtsp.max_sessions", r.max_sessions),
            ("rtsp.idle_timeout_s", r.idle_timeout_s),
        ] {
            if v == 0 {
                return bad(format!("{key} = 0 must be at least 1"));
            }
        }
        if r.max_request_bytes < 256 {
            return bad(format!(
                "rtsp.max_request_bytes = {} is below 256",
                r.max_request_bytes
            ));
        }
        if self.auth.methods.is_empty() {
            return bad("auth.methods is empty; offer digest, basic or both".into());
        }
        self.users()?;
        self.http_token()?;
        let t = &self.tls;
        if t.cert_file.is_empty() != t.key_file.is_empty() {
            return bad("tls.cert_file and tls.key_file go together: set both or neither".into());
        }
        for (key, path) in [
            ("tls.cert_file", &t.cert_file),
            ("tls.key_file", &t.key_file),
        ] {
            if !path.is_empty() && !Path::new(path).is_file() {
                return bad(format!("{key} = {path:?} does not exist"));
            }
        }
        if t.enabled() && !r.transports.contains(&Transport::Tcp) {
            return bad(
                "with TLS, media goes over TCP only: rtsp.transports must include tcp".into(),
            );
        }
        let h = &self.http;
        if !h.api_address.is_empty() {
            if h.api_address.parse::<IpAddr>().is_err() {
                return bad(format!(
                    "http.api_address = {:?} is not an IP address",
                    h.api_address
                ));
            }
            if h.api_port == 0 || h.api_port == h.port || h.api_port == r.port {
                return bad(format!(
                    "http.api_port = {} must be set and differ from http.port and rtsp.port",
                    h.api_port
                ));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad(format!(
                "log.level = {:?} is not a level (error, warn, info, debug, trace) or filter",
                self.log.level
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_str(toml: &str, e: &[(&str, &str)], sets: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let sources = Sources {
            file: Some(path),
            use_default_file: false,
            overrides: sets.iter().map(|s| parse_override(s).unwrap()).collect(),
        };
        load(&sources, &env(e))
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(&Sources::default(), &BTreeMap::new()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.effective_level().unwrap().to_string(), "3.1");
    }

    #[test]
    fn layers_later_wins() {
        let c = load_str(
            "[video]\nwidth = 640\nheight = 480\nfps = 25\n",
            &[
                ("STREAM_WIDTH", "800"),
                ("STREAM_HEIGHT", "600"),
                ("CAMSTREAM_VIDEO__WIDTH", "1024"),
            ],
            &["video.fps=15"],
        )
        .unwrap();
        assert_eq!(c.video.width, 1024); // CAMSTREAM_* over legacy over file
        assert_eq!(c.video.height, 600); // legacy over file
        assert_eq!(c.video.fps, 15); // CLI over file
    }

    #[test]
    fn capture_device_beats_video_device() {
        let c = load_str(
            "",
            &[
                ("VIDEO_DEVICE", "/dev/video2"),
                ("CAPTURE_DEVICE", "/dev/video4"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.source.device, "/dev/video4");
        let c = load_str("", &[("VIDEO_DEVICE", "/dev/video2")], &[]).unwrap();
        assert_eq!(c.source.device, "/dev/video2");
    }

    #[test]
    fn legacy_level_and_profile() {
        let c = load_str(
            "",
            &[
                ("H264_LEVEL", "4"),
                ("H264_PROFILE", "main"),
                ("KEYFRAME_INTERVAL", "30"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.encoder.level, "4");
        assert_eq!(c.encoder.profile, Profile264::Main);
        assert_eq!(c.encoder.keyframe_interval, 30);
    }

    #[test]
    fn unknown_key_names_key_and_layer() {
        let e = load_str("[video]\nwidht = 640\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("widht"), "{e}");
        assert!(e.contains("TOML file"), "{e}");
        let e = load_str("", &[("CAMSTREAM_RTSP__PROT", "1")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("prot") && e.contains("CAMSTREAM_"), "{e}");
        let e = load_str("", &[], &["bogus.key=1"]).unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("command-line"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[video]\nwidth = 641\n", "video.width"),
            ("[video]\nheight = 0\n", "video.height"),
            ("[video]\nfps = 0\n", "video.fps"),
            ("[video]\nfps = 500\n", "video.fps"),
            ("[rtsp]\nmount = \"\"\n", "rtsp.mount"),
            ("[rtsp]\nmount = \"video\"\n", "rtsp.mount"),
            ("[encoder]\nlevel = \"3\"\n", "too low"),
            ("[encoder]\nlevel = \"7.7\"\n", "not an H.264 level"),
            ("[source]\nkind = \"pipeline\"\n", "source.pipeline"),
            ("[supervisor]\njitter = 2.0\n", "supervisor.jitter"),
            ("[source]\nkind = \"webcam\"\n", "webcam"),
            ("[rtsp]\nport = 70000\n", "70000"),
        ];
        for (toml, needle) in cases {
            let e = load_str(toml, &[], &[]).unwrap_err().to_string();
            assert!(e.contains(needle), "{toml:?}: {e}");
        }
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let sources = Sources {
            file: Some("/nonexistent/camstream.toml".into()),
            ..Default::default()
        };
        let e = load(&sources, &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/camstream.toml"), "{e}");
    }

    #[test]
    fn seed_auth_variables() {
        let c = load_str(
            "",
            &[
                ("RTSP_AUTH", "true"),
                ("RTSP_USERNAME", "cam"),
                ("RTSP_PASSWORD", "1234"),
            ],
            &[],
        )
        .unwrap();
        let users = c.users().unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].username, "cam");
        assert_eq!(
            users[0].password.0, "1234",
            "numeric passwords stay strings"
        );
        let c = load_str(
            "",
            &[
                ("RTSP_AUTH", "false"),
                ("RTSP_USERNAME", "cam"),
                ("RTSP_PASSWORD", "x"),
            ],
            &[],
        )
        .unwrap();
        assert!(c.users().unwrap().is_empty());
        let c = load_str("", &[("RTSP_AUTH", "basic,digest")], &[]).unwrap();
        assert_eq!(c.auth.methods, [AuthMethod::Basic, AuthMethod::Digest]);
    }

    #[test]
    fn password_files_and_bad_users() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let toml = format!(
            "[[auth.users]]\nusername = \"a\"\npassword_file = {:?}\n",
            pw.to_str().unwrap()
        );
        let c = load_str(&toml, &[], &[]).unwrap();
        assert_eq!(c.users().unwrap()[0].password.0, "s3cret");
        for (toml, needle) in [
            ("[auth]\npassword = \"x\"\n", "without a username"),
            ("[auth]\nusername = \"a\"\n", "no password"),
            (
                "[auth]\nusername = \"a:b\"\npassword = \"x\"\n",
                "contains ':'",
            ),
            (
                "[auth]\nusername = \"a\"\npassword_file = \"/nonexistent\"\n",
                "cannot be read",
            ),
            (
                "[tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/k\"\n",
                "tls.cert_file",
            ),
            ("[tls]\ncert_file = \"/x\"\n", "go together"),
        ] {
            let e = load_str(toml, &[], &[]).unwrap_err().to_string();
            assert!(e.contains(needle), "{toml:?}: {e}");
        }
    }

    #[test]
    fn secrets_never_show() {
        let c = load_str(
            "[auth]\nusername = \"a\"\npassword = \"hunter2\"\n[http]\ntoken = \"tok3n\"\n",
            &[],
            &[],
        )
        .unwrap();
        let shown = format!("{c:?} {}", c.redacted());
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok3n"),
            "{shown}"
        );
    }

    #[test]
    fn kubernetes_service_links_are_not_settings() {
        let c = load_str(
            "",
            &[
                ("CAMSTREAM_PORT", "tcp://10.0.0.1:8554"),
                ("CAMSTREAM_SERVICE_HOST", "10.0.0.1"),
                ("CAMSTREAM_PORT_8554_TCP_ADDR", "10.0.0.1"),
                ("CAMSTREAM_BIN", "/usr/local/bin/camstream"),
                ("CAMSTREAM_HTTP_SERVICE_HOST", "10.0.0.2"),
                ("CAMSTREAM_HTTP_PORT", "tcp://10.0.0.2:8080"),
                ("CAMSTREAM_HTTP_PORT_8080_TCP_PROTO", "tcp"),
            ],
            &[],
        );
        assert!(c.is_ok(), "{:?}", c.err());
        // A single underscore where a double one belongs is caught, unless the name has the
        // shape of a service link (CAMSTREAM_RTSP_PORT would be one for a Service camstream-rtsp).
        let e = load_str("", &[("CAMSTREAM_VIDEO_WIDTH", "1")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("CAMSTREAM_VIDEO__WIDTH"), "{e}");
    }

    #[test]
    fn override_syntax() {
        assert!(parse_override("rtsp.port").is_err());
        assert!(parse_override("=3").is_err());
        assert_eq!(
            parse_override("source.kind=test").unwrap(),
            ("source.kind".into(), "test".into())
        );
    }
}
