//! The layers settings are read from, later wins: built-in defaults → TOML file → legacy
//! environment variables → `CAMSTREAM_*` environment variables → command-line flags. Each layer
//! is named, so an error says where a bad key came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, ConfigError, DEFAULT_CONFIG_PATH, legacy};

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
    "renditions",
    "streams",
    "video",
    "encoder",
    "rtsp",
    "http",
    "auth",
    "tls",
    "supervisor",
    "log",
    "push",
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
    for (var, key) in legacy::LEGACY_ENV {
        if let Some(v) = env.get(*var).filter(|v| !v.is_empty()) {
            insert_path(&mut legacy, key, parse_value(key, v));
        }
    }
    for (key, value) in legacy::auth(env) {
        insert_path(&mut legacy, key, value);
    }
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
