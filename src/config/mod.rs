//! Configuration: the typed settings ([`schema`]), the layers they are read from ([`layers`],
//! [`legacy`]), and the checks that reject bad input before anything starts ([`validate`]).
//!
//! Layers, later wins: built-in defaults → TOML file → legacy environment variables
//! (`VIDEO_DEVICE`, then `STREAM_WIDTH` & co.) → `CAMSTREAM_*` environment variables → command-line
//! flags. Unknown keys are rejected and the error names the key and the layer it came from.
//!
//! Streams: the flat form (`[source]`, `[video]`, `[encoder]`, `[supervisor]`, `[[renditions]]`)
//! is one stream named `video` at `rtsp.mount`; `[[streams]]` tables are cameras of their own,
//! each inheriting the top-level sections' keys it does not set. [`Config::streams`] resolves
//! both forms into [`StreamConfig`]s.

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::Serialized;

// Audio (issue #24).
pub mod audio;
pub mod h264;
pub mod hls;
pub mod image;
mod layers;
mod legacy;
pub mod mjpeg;
pub mod motion;
pub mod mqtt;
pub mod nvr;
pub mod push_url;
mod rules;
mod schema;
mod validate;

pub use h264::Level;
pub use hls::{HlsConfig, HlsMode};
pub use layers::{Sources, figment, parse_override};
pub use legacy::LEGACY_ENV;
pub use mqtt::MqttConfig;
pub use nvr::{AnalysisConfig, HookConfig, HookEvent, HookLimits, OnvifConfig};
pub use schema::*;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/camstream/camstream.toml";

/// The name of the flat form's one stream.
pub const FLAT_STREAM_NAME: &str = "video";

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

/// Loads and validates the configuration from all layers.
pub fn load(sources: &Sources, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let figment = figment(sources, env)?;
    let config: Config = figment.extract()?;
    config.validate()?;
    Ok(config)
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
        // A URL's user info and credential-like query values (push URLs).
        serde_json::Value::String(s) => *s = push_url::redact_text(s),
        _ => {}
    }
}

/// An account with its password resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// What it may do.
    pub role: Role,
    /// Streams it may reach; empty: all.
    pub streams: Vec<String>,
}

/// An API token with its value resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenCredentials {
    /// Its name, for logs.
    pub name: String,
    /// The token.
    pub token: Secret,
    /// What it may do.
    pub role: Role,
    /// Streams it may reach; empty: all.
    pub streams: Vec<String>,
}

impl Config {
    /// The viewer accounts in force (empty when authentication is off), with password files read.
    pub fn users(&self) -> Result<Vec<Credentials>, ConfigError> {
        let a = &self.auth;
        let single = UserConfig {
            username: a.username.clone(),
            password: a.password.clone(),
            password_file: a.password_file.clone(),
            role: a.role,
            streams: Vec::new(),
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
                role: u.role,
                streams: u.streams.clone(),
            });
        }
        if !a.enabled {
            out.clear();
        }
        Ok(out)
    }

    /// The admin token of `http.token` / `http.token_file`, if any, with the file read.
    pub fn http_token(&self) -> Result<Option<Secret>, ConfigError> {
        let h = &self.http;
        if !h.token_file.is_empty() {
            return read_secret("http.token_file", &h.token_file).map(|t| Some(Secret(t)));
        }
        Ok((!h.token.is_empty()).then(|| h.token.clone()))
    }

    /// Every API token in force: `http.token` (an admin token named `http.token`) and each
    /// `[[http.tokens]]`, with token files read.
    pub fn tokens(&self) -> Result<Vec<TokenCredentials>, ConfigError> {
        let mut out = Vec::new();
        if let Some(t) = self.http_token()? {
            out.push(TokenCredentials {
                name: "http.token".into(),
                token: t,
                role: Role::Admin,
                streams: Vec::new(),
            });
        }
        for t in &self.http.tokens {
            let key = format!("http.tokens[{}]", t.name);
            if t.name.is_empty() || t.name == "http.token" {
                return Err(ConfigError::Invalid(
                    "http.tokens: every entry needs a name (other than \"http.token\")".into(),
                ));
            }
            if out.iter().any(|o: &TokenCredentials| o.name == t.name) {
                return Err(ConfigError::Invalid(format!("{key} is configured twice")));
            }
            let token = if !t.token_file.is_empty() {
                read_secret(&format!("{key}.token_file"), &t.token_file)?
            } else if !t.token.is_empty() {
                t.token.0.clone()
            } else {
                return Err(ConfigError::Invalid(format!(
                    "{key} has no token (set token or token_file)"
                )));
            };
            if token.len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "{key}: the token is shorter than 16 characters; use a long random one \
                     (e.g. openssl rand -hex 24)"
                )));
            }
            if out.iter().any(|o| o.token.0 == token) {
                return Err(ConfigError::Invalid(format!(
                    "{key}: the same token is configured twice"
                )));
            }
            out.push(TokenCredentials {
                name: t.name.clone(),
                token: Secret(token),
                role: t.role,
                streams: t.streams.clone(),
            });
        }
        Ok(out)
    }

    /// Accounts and tokens resolve, and every `streams = [...]` they carry names a stream.
    pub(crate) fn check_accounts(&self) -> Result<(), ConfigError> {
        let users = self.users()?;
        let tokens = self.tokens()?;
        let known: Vec<String> = self
            .streams()?
            .iter()
            .flat_map(|s| {
                std::iter::once(s.name.clone()).chain(s.renditions.iter().map(|r| r.name.clone()))
            })
            .collect();
        let named = users
            .iter()
            .map(|u| (format!("auth.users[{}]", u.username), &u.streams))
            .chain(
                tokens
                    .iter()
                    .map(|t| (format!("http.tokens[{}]", t.name), &t.streams)),
            );
        for (key, streams) in named {
            if let Some(s) = streams.iter().find(|s| !known.contains(s)) {
                return Err(ConfigError::Invalid(format!(
                    "{key}.streams names {s:?}, which is not a stream (streams: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The configuration as JSON with every secret replaced by "<redacted>".
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        redact(&mut v);
        v
    }
}

impl Config {
    /// Every stream, resolved: the flat form's one stream, or each `[[streams]]` entry over the
    /// top-level sections. Unknown keys inside an entry are refused with the entry named.
    pub fn streams(&self) -> Result<Vec<StreamConfig>, ConfigError> {
        let base = StreamConfig {
            name: FLAT_STREAM_NAME.into(),
            mount: self.rtsp.mount.clone(),
            required: true,
            source: self.source.clone(),
            video: self.video.clone(),
            encoder: self.encoder.clone(),
            supervisor: self.supervisor.clone(),
            renditions: self.renditions.clone(),
            record: self.record.clone(),
            push: self.push.clone(),
            image: self.image.clone(),
            motion: self.motion.clone(),
            audio: self.audio.clone(),
        };
        if self.streams.is_empty() {
            return Ok(vec![base]);
        }
        let base = StreamConfig {
            name: String::new(),
            mount: String::new(),
            renditions: Vec::new(),
            push: Vec::new(),
            ..base
        };
        self.streams
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let label = raw
                    .find_ref("name")
                    .and_then(|n| n.as_str())
                    .map_or_else(|| format!("streams[{i}]"), |n| format!("streams[{n}]"));
                if raw.as_dict().is_none() {
                    return Err(ConfigError::Invalid(format!("{label} is not a table")));
                }
                let stream: StreamConfig = Figment::from(Serialized::defaults(&base))
                    .merge(Serialized::defaults(raw))
                    .extract()
                    .map_err(|e| ConfigError::Invalid(format!("{label}: {e}")))?;
                if stream.name.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "{label}: every [[streams]] entry needs a name"
                    )));
                }
                Ok(stream)
            })
            .collect()
    }
}

impl StreamConfig {
    /// The picture size (width, height) the encoding named `encoding` delivers: the stream's
    /// own encoding after `[image]` rotation (a quarter turn swaps them), a rendition at its
    /// configured size (it is scaled after the turn). `None` for a name that is neither. Every
    /// place that states a size (status, snapshots, analysis, ONVIF) asks here.
    pub fn picture_size(&self, encoding: &str) -> Option<(u32, u32)> {
        if encoding == self.name {
            let (w, h) = (self.video.width, self.video.height);
            return Some(if self.image.swaps_dimensions() {
                (h, w)
            } else {
                (w, h)
            });
        }
        self.renditions
            .iter()
            .find(|r| r.name == encoding)
            .map(|r| (r.width, r.height))
    }

    /// The stream's settings as JSON with every secret replaced by "<redacted>".
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        redact(&mut v);
        v
    }

    /// The RTSP mount path: the configured one, or `/<name>`.
    pub fn mount_path(&self) -> String {
        if self.mount.is_empty() {
            format!("/{}", self.name)
        } else {
            self.mount.clone()
        }
    }

    /// The frame rate of a rendition: its own, or the stream's.
    pub fn rendition_fps(&self, r: &RenditionConfig) -> u32 {
        if r.fps == 0 { self.video.fps } else { r.fps }
    }

    /// The H.264 level in force: the configured one, or the lowest that fits size × rate.
    pub fn level(&self) -> Result<Level, ConfigError> {
        let v = &self.video;
        let e = &self.encoder;
        let high = validate::is_high(e.profile);
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
}

impl RenditionConfig {
    /// The RTSP mount path: the configured one, or `/<name>`.
    pub fn mount_path(&self) -> String {
        if self.mount.is_empty() {
            format!("/{}", self.name)
        } else {
            self.mount.clone()
        }
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
        assert_eq!(c.streams().unwrap()[0].level().unwrap().to_string(), "3.1");
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

    #[test]
    fn streams_image_inherits_the_top_level_image_key_by_key() {
        let c = load_str(
            "[image]\nrotation = 180\n[image.overlay]\ntext = \"%H:%M\"\n\
             [[streams]]\nname = \"a\"\nsource = { kind = \"test\" }\n\
             [streams.image]\nhflip = true\noverlay = { position = \"bottom\" }\n\
             [[streams]]\nname = \"b\"\nsource = { kind = \"test\" }\n",
            &[],
            &[],
        )
        .unwrap();
        let s = c.streams().unwrap();
        assert!(s[0].image.hflip && s[0].image.rotation == 180);
        assert_eq!(s[0].image.overlay.text, "%H:%M");
        assert_eq!(s[0].image.overlay.position, image::OverlayPosition::Bottom);
        assert!(!s[1].image.hflip && s[1].image.rotation == 180);
        let e = load_str(
            "[[streams]]\nname = \"a\"\n[streams.image]\nrotation = 45\n",
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("streams[a].image.rotation = 45"), "{e}");
    }

    #[test]
    fn streams_inherit_top_level_sections_and_refuse_mistakes() {
        let c = load_str(
            "[video]\nwidth = 640\nheight = 360\n[encoder]\nkind = \"x264\"\n\
             [[streams]]\nname = \"cam1\"\nsource = { kind = \"test\" }\n\
             [[streams.renditions]]\nname = \"cam1_low\"\nwidth = 320\nheight = 180\n\
             [[streams]]\nname = \"cam2\"\nmount = \"/garage\"\nvideo = { fps = 15 }\n",
            &[],
            &["video.fps=25"],
        )
        .unwrap();
        let s = c.streams().unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].video.width, s[0].video.fps), (640, 25), "inherited");
        assert_eq!(s[0].encoder.kind, EncoderKind::X264);
        assert_eq!(s[0].mount_path(), "/cam1");
        assert_eq!(s[0].renditions[0].mount_path(), "/cam1_low");
        assert_eq!(
            (s[1].video.width, s[1].video.fps),
            (640, 15),
            "own value wins"
        );
        assert_eq!(s[1].mount_path(), "/garage");

        let e = load_str("[[streams]]\nname = \"a\"\nbitrate = 5\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("streams[a]") && e.contains("bitrate"), "{e}");
        let e = load_str(
            "[[streams]]\nname = \"a\"\n[[streams]]\nname = \"a\"\n",
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("used twice"), "{e}");
        let e = load_str("[[streams]]\nname = \"Cam 1\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("a-z, 0-9"), "{e}");
        let e = load_str("[[streams]]\nsource = { kind = \"test\" }\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a name"), "{e}");
        let e = load_str(
            "[[streams]]\nname = \"a\"\n[[streams.renditions]]\nname = \"b\"\nfps = 60\n",
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("renditions[0].fps"), "{e}");
        let e = load_str(
            "[[streams]]\nname = \"a\"\nencoder = { bitrate_kbps = 50 }\n",
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("streams[a].encoder.bitrate_kbps = 50 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn flat_form_is_one_stream_named_video() {
        let c = load_str(
            "[rtsp]\nmount = \"/cam\"\n[[renditions]]\nname = \"low\"\n",
            &[],
            &[],
        )
        .unwrap();
        let s = c.streams().unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].name.as_str(), s[0].mount_path().as_str()),
            ("video", "/cam")
        );
        assert_eq!(s[0].renditions[0].name, "low");
    }
}
