//! The typed settings and their defaults: one struct per section, each field documented with its
//! default. Unknown keys are refused everywhere (`deny_unknown_fields`).

use std::net::IpAddr;

use figment::value::Value;
use serde::{Deserialize, Serialize};

pub use super::image::ImageConfig;
// Audio (issue #24).
pub use super::audio::{AudioConfig, AudioKind, RtspAudioCodec};

/// Everything camstream can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where pictures come from (the flat form's one stream, and the default of every
    /// `[[streams]]` entry).
    pub source: SourceConfig,
    /// Picture size and rate, as delivered to the encoder (flat form and stream default).
    pub video: VideoConfig,
    /// H.264 encoder settings (flat form and stream default).
    pub encoder: EncoderConfig,
    /// Restart policy of the capture pipeline (flat form and stream default).
    pub supervisor: SupervisorConfig,
    /// Other encodings of the flat form's camera, as `[[renditions]]`. Default none.
    pub renditions: Vec<RenditionConfig>,
    /// Cameras, as `[[streams]]` tables; each inherits the top-level `source`, `video`,
    /// `encoder` and `supervisor` keys it does not set. Default none: the flat form's one
    /// stream, named `video`, at `rtsp.mount`.
    pub streams: Vec<Value>,
    /// RTSP server settings.
    pub rtsp: RtspConfig,
    /// HTTP sidecar settings.
    pub http: HttpConfig,
    /// RTSP viewer authentication.
    pub auth: AuthConfig,
    /// RTSPS (RTSP over TLS).
    pub tls: TlsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Recording of the flat form's stream (and the default of every `[[streams]]` entry).
    pub record: RecordConfig,
    /// Restreams of the flat form's stream, as `[[push]]` tables. Default none.
    pub push: Vec<PushConfig>,
    /// Browser viewing over WebRTC (WHEP).
    pub webrtc: WebrtcConfig,
    /// Picture controls of the flat form's stream (and the default of every `[[streams]]`
    /// entry).
    pub image: ImageConfig,
    /// ONVIF discovery and services (docs/onvif.md).
    pub onvif: super::nvr::OnvifConfig,
    /// Commands and webhooks run on events, as `[[hooks]]` tables (docs/hooks.md). Default none.
    pub hooks: Vec<super::nvr::HookConfig>,
    /// Bounds on hook runs.
    pub hook_limits: super::nvr::HookLimits,
    /// Pictures sent to a vision model (docs/hooks.md).
    pub analysis: super::nvr::AnalysisConfig,
    /// Who may pass the doors without credentials (docs/security.md).
    pub access: AccessConfig,
    /// Sound of the flat form's stream (and the default of every `[[streams]]` entry),
    /// docs/audio.md.
    pub audio: AudioConfig,
}

/// What an account may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Watch: RTSP, WebRTC, snapshots, recordings, the page, the status summary.
    #[default]
    Viewer,
    /// A viewer that may also change live settings and ask for a keyframe.
    Operator,
    /// An operator that may also read the full status and configuration, and reload.
    Admin,
}

impl Role {
    /// The name used in the configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// What a visitor without credentials may do, at every door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Nothing that carries the picture or what it shows.
    None,
    /// Watch every stream (a camera on a home LAN); changes still need an account.
    View,
}

/// `[access]`: the rule for visitors without credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// `none` or `view`. Default unset: `view` while no user account exists (tokens do not
    /// count), `none` as soon as one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<Anonymous>,
}

/// One API token (`[[http.tokens]]`): an account without a password login, for Prometheus, Home
/// Assistant or scripts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// A name for logs and the status API (required, unique among tokens).
    pub name: String,
    /// The token, sent as `Authorization: Bearer <token>`.
    pub token: Secret,
    /// File holding the token (trailing newline ignored); overrides `token`. Default empty.
    pub token_file: String,
    /// What it may do. Default `viewer`.
    pub role: Role,
    /// Streams it may reach. Default empty: all.
    pub streams: Vec<String>,
}

/// One camera: where its pictures come from, how it is encoded, and where it is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Unique name, `[a-z0-9_-]+`; used in the API, metrics and logs. Required in `[[streams]]`.
    pub name: String,
    /// RTSP mount path. Default `/<name>`.
    pub mount: String,
    /// Whether `/readyz` waits for this stream to stream. Default true.
    pub required: bool,
    /// Where pictures come from.
    pub source: SourceConfig,
    /// Picture size and rate.
    pub video: VideoConfig,
    /// H.264 encoder settings.
    pub encoder: EncoderConfig,
    /// Restart policy.
    pub supervisor: SupervisorConfig,
    /// Other encodings of the same camera (the camera opens once). Default none.
    pub renditions: Vec<RenditionConfig>,
    /// Recording to disk (`[streams.record]`).
    pub record: RecordConfig,
    /// Restreams to servers and ground stations, as `[[streams.push]]`. Default none.
    pub push: Vec<PushConfig>,
    /// Picture controls (`[streams.image]`).
    pub image: ImageConfig,
    /// Sound (`[streams.audio]`, docs/audio.md).
    pub audio: AudioConfig,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            name: String::new(),
            mount: String::new(),
            required: true,
            source: SourceConfig::default(),
            video: VideoConfig::default(),
            encoder: EncoderConfig::default(),
            supervisor: SupervisorConfig::default(),
            renditions: Vec::new(),
            record: RecordConfig::default(),
            push: Vec::new(),
            image: ImageConfig::default(),
            audio: AudioConfig::default(),
        }
    }
}

/// Another encoding of a stream's camera, e.g. a small "detect" stream for an NVR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenditionConfig {
    /// Unique name across all streams and renditions, `[a-z0-9_-]+`. Required.
    pub name: String,
    /// RTSP mount path. Default `/<name>`.
    pub mount: String,
    /// Width in pixels; even, 16 to 4096. Default 640.
    pub width: u32,
    /// Height in pixels; even, 16 to 4096. Default 360.
    pub height: u32,
    /// Frames per second, at most the stream's. Default 0: the stream's rate.
    pub fps: u32,
    /// Target bitrate in kbit/s, 100 to 20000. Default 1000.
    pub bitrate_kbps: u32,
}

impl Default for RenditionConfig {
    fn default() -> Self {
        RenditionConfig {
            name: String::new(),
            mount: String::new(),
            width: 640,
            height: 360,
            fps: 0,
            bitrate_kbps: 1000,
        }
    }
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
    /// The first that passes a test encode, in this order: the Pi hardware encoder, VA-API
    /// (`vah264enc`, `vaapih264enc`), NVENC, Quick Sync, x264, openh264.
    Auto,
    /// `v4l2h264enc` (Raspberry Pi bcm2835-codec).
    V4l2,
    /// `vah264enc` (VA-API, GStreamer's `va` plugin).
    Va,
    /// `vaapih264enc` (VA-API, the older `vaapi` plugin).
    Vaapi,
    /// `nvh264enc` (NVIDIA NVENC).
    Nvenc,
    /// `qsvh264enc` (Intel Quick Sync).
    Qsv,
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

/// How a browser's media reaches camstream's WebRTC port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransport {
    /// UDP (what every browser prefers).
    Udp,
    /// ICE-TCP (RFC 6544, passive), on the same port number.
    Tcp,
}

/// `[webrtc]`: browser viewing over WebRTC (WHEP), media on one UDP port for every viewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// Whether `POST /whep/{stream}` is served. Default true.
    pub enabled: bool,
    /// Address the media socket binds. Default `0.0.0.0`.
    pub address: IpAddr,
    /// How browsers may reach the media port: `udp`, and `tcp` (ICE-TCP, the same port number
    /// over TCP, for networks that pass no UDP). Default both.
    pub transports: Vec<IceTransport>,
    /// UDP port carrying every viewer's media (0: any free port, for tests). Default 8189.
    pub udp_port: u16,
    /// Addresses advertised to browsers besides the one the browser reached the HTTP server
    /// at (e.g. a NAT's public address or a node address). Default none.
    pub additional_hosts: Vec<IpAddr>,
    /// STUN/TURN URLs handed to the web page's `RTCPeerConnection`. Default none: nothing is
    /// contacted outside the LAN.
    pub ice_servers: Vec<String>,
    /// WebRTC viewers at once, over all streams; the next offer gets 503. Default 32.
    pub max_viewers: u32,
    /// Seconds a new session may take to connect (ICE and DTLS) before it is freed. Default 10.
    pub handshake_timeout_s: u32,
    /// Seconds without a packet from a connected browser after which its session is freed
    /// (a closed tab that sent no DELETE). Default 10.
    pub session_timeout_s: u32,
    /// Sessions at once that were offered without credentials (an open stream, no
    /// `Authorization`), so re-posted anonymous offers cannot take every session; the next
    /// gets 503 with `Retry-After`. Default 16.
    pub max_anonymous: u32,
    /// Sessions still connecting (ICE and DTLS) from one source address; the next offer from it
    /// gets 503 with `Retry-After`. Default 4.
    pub max_pending_per_address: u32,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        WebrtcConfig {
            enabled: true,
            address: IpAddr::from([0, 0, 0, 0]),
            transports: vec![IceTransport::Udp, IceTransport::Tcp],
            udp_port: 8189,
            additional_hosts: Vec::new(),
            ice_servers: Vec::new(),
            max_viewers: 32,
            handshake_timeout_s: 10,
            session_timeout_s: 10,
            max_anonymous: 16,
            max_pending_per_address: 4,
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
    /// An admin API token (`Authorization: Bearer <token>`). Default empty: none.
    pub token: Secret,
    /// File holding that token (e.g. a mounted Secret); overrides `token`. Default empty.
    pub token_file: String,
    /// More API tokens, each with a role, as `[[http.tokens]]` tables. Default none.
    pub tokens: Vec<TokenConfig>,
    /// Also require the token for `/healthz` and `/readyz`. Default false.
    pub protect_probes: bool,
    /// Also require the token for `/metrics`. Default false.
    pub protect_metrics: bool,
    /// Separate listener for `/api/*` and `/snapshot.jpg` (e.g. "127.0.0.1"); with it, the main
    /// listener serves only probes and metrics. Default empty: one listener for all.
    pub api_address: String,
    /// Port of the separate API listener; required with `api_address`. Default 0.
    pub api_port: u16,
    /// Serve the sidecar (both listeners) over HTTPS with `[tls]`'s certificate and key.
    /// Default false.
    pub tls: bool,
    /// Host names the sidecar answers to besides IP addresses, `localhost` and this machine's
    /// name (and `name.local`): a request naming any other host is refused (DNS rebinding).
    /// Default none.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            address: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            token: Secret::default(),
            token_file: String::new(),
            tokens: Vec::new(),
            protect_probes: false,
            protect_metrics: false,
            api_address: String::new(),
            api_port: 0,
            tls: false,
            allowed_hosts: Vec::new(),
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
    /// What the account may do. Default `viewer`.
    pub role: Role,
    /// Streams it may reach. Default empty: all.
    pub streams: Vec<String>,
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
    /// That user's role. Default `viewer`.
    pub role: Role,
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
            role: Role::Viewer,
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

/// The container recordings are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// Fragmented MP4 (`.mp4`): browsers play it; one fragment per part.
    Fmp4,
    /// Matroska (`.mkv`): one cluster per part.
    Mkv,
}

impl RecordFormat {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            RecordFormat::Fmp4 => "mp4",
            RecordFormat::Mkv => "mkv",
        }
    }
}

/// `[record]` / `[streams.record]`: recording the main encoding to disk, in segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Whether the stream is recorded. Default false.
    pub enabled: bool,
    /// Folder holding one folder per stream; absolute. Default `/var/lib/camstream/recordings`.
    pub path: String,
    /// Length of a segment file in seconds, 1 to 3600. Default 60.
    pub segment_s: u32,
    /// Length of a part (what is written to disk at once, and at most what a crash loses) in
    /// ms, 100 to 10000. Default 1000.
    pub part_ms: u32,
    /// Container: `fmp4` or `mkv`. Default `fmp4`.
    pub format: RecordFormat,
    /// Delete recordings older than this many hours, 0 to 87600; 0 keeps them. Default 0.
    pub keep_hours: u32,
    /// Delete the oldest recordings while the stream's folder holds more bytes than this;
    /// 0 = no limit. Default 0.
    pub max_bytes: u64,
    /// Keep this much space free (MiB) on the file system: the oldest recordings are deleted,
    /// and writing pauses if that is not enough. 0 to 1048576. Default 256.
    pub min_free_mb: u64,
    /// Seconds between `fsync`s of the segment being written (bounds what a power cut loses),
    /// 0 to 3600; 0 = after every part. Default 10.
    pub fsync_s: u32,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            enabled: false,
            path: "/var/lib/camstream/recordings".into(),
            segment_s: 60,
            part_ms: 1000,
            format: RecordFormat::Fmp4,
            keep_hours: 0,
            max_bytes: 0,
            min_free_mb: 256,
            fsync_s: 10,
        }
    }
}

/// How an RTSP push reaches its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushTransport {
    /// RTP interleaved on the RTSP TCP connection: passes NAT and firewalls, no loss.
    Tcp,
    /// RTP over UDP to ports the server names.
    Udp,
}

/// `[[push]]` / `[[streams.push]]`: one restream of the stream's main encoding to a server or a
/// ground station (RTMP, RTSP RECORD, SRT, RTP over UDP), supervised on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Unique within the stream, `[a-z0-9_-]+`; names the output in the API, metrics and logs.
    /// Required.
    pub name: String,
    /// Where to: `rtmp://`, `rtmps://`, `rtsp://`, `rtsps://`, `srt://` or `udp://` (see
    /// docs/push.md). `{secret}` in it is replaced by the secret. Required.
    pub url: String,
    /// Whether it runs. Default true.
    pub enabled: bool,
    /// The value of `{secret}` in `url` (a password, an RTMP stream key, an SRT passphrase).
    /// Default empty.
    pub secret: Secret,
    /// File holding the secret (trailing newline ignored), read at each connection; overrides
    /// `secret`. Default empty.
    pub secret_file: String,
    /// Environment variable holding the secret; overrides `secret`. Default empty.
    pub secret_env: String,
    /// Lower transport of an `rtsp://` push. Default `tcp`.
    pub rtsp_transport: PushTransport,
    /// Delay before the first reconnection, in ms, 100 to 600000. Default 1000.
    pub initial_backoff_ms: u64,
    /// Cap on the reconnection delay, in ms, up to 600000. Default 30000.
    pub max_backoff_ms: u64,
    /// Time (ms) a connection has to take its first frame, 1000 to 120000. Default 10000.
    pub start_timeout_ms: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            name: String::new(),
            url: String::new(),
            enabled: true,
            secret: Secret::default(),
            secret_file: String::new(),
            secret_env: String::new(),
            rtsp_transport: PushTransport::Tcp,
            initial_backoff_ms: 1000,
            max_backoff_ms: 30_000,
            start_timeout_ms: 10_000,
        }
    }
}
