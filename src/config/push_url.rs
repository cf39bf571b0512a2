//! Push URLs: the schemes a push may use, parsed into the parts the elements take, checked
//! without a connection, and shown with every credential removed. A leaf module (plain string
//! handling): the configuration validates with it and the push output builds from it.
//!
//! A URL may hold `{secret}` (in the user info, path or a query value); it stays a placeholder
//! here and the push output puts the secret in at each connection, so the secret never passes
//! through a URL string that could be logged.

use std::fmt;
use std::net::IpAddr;

use super::{ConfigError, PushConfig, PushTransport};

/// The placeholder a push URL may carry for its secret.
pub const SECRET_PLACEHOLDER: &str = "{secret}";

/// Where a push URL takes an environment variable's value: `{env:NODE_NAME}` (e.g. a
/// DaemonSet's node name, so every camera of a fleet publishes under its own path).
pub const ENV_PREFIX: &str = "{env:";

/// What credentials are shown as.
pub const REDACTED: &str = "<redacted>";

/// A push protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RTMP (FLV), port 1935 by default.
    Rtmp,
    /// RTMP over TLS, port 443 by default.
    Rtmps,
    /// RTSP ANNOUNCE/RECORD, port 554 by default.
    Rtsp,
    /// RTSP over TLS, port 322 by default.
    Rtsps,
    /// SRT carrying MPEG-TS; the port is required.
    Srt,
    /// RTP/H.264 over UDP, unicast or multicast; the port is required.
    Udp,
}

impl Scheme {
    /// Every scheme, as written in URLs.
    pub const NAMES: &'static [&'static str] = &["rtmp", "rtmps", "rtsp", "rtsps", "srt", "udp"];

    /// The name as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
            Scheme::Rtsp => "rtsp",
            Scheme::Rtsps => "rtsps",
            Scheme::Srt => "srt",
            Scheme::Udp => "udp",
        }
    }

    fn parse(s: &str) -> Option<Scheme> {
        Some(match s.to_ascii_lowercase().as_str() {
            "rtmp" => Scheme::Rtmp,
            "rtmps" => Scheme::Rtmps,
            "rtsp" => Scheme::Rtsp,
            "rtsps" => Scheme::Rtsps,
            "srt" => Scheme::Srt,
            "udp" => Scheme::Udp,
            _ => return None,
        })
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Rtmp => Some(1935),
            Scheme::Rtmps => Some(443),
            Scheme::Rtsp => Some(554),
            Scheme::Rtsps => Some(322),
            Scheme::Srt | Scheme::Udp => None,
        }
    }

    /// Query parameters camstream reads for this scheme (others pass through to the server for
    /// RTMP and RTSP, and are refused for SRT and UDP, where a typo would silently be ignored).
    fn known_query(self) -> Option<&'static [&'static str]> {
        match self {
            Scheme::Srt => Some(&["mode", "passphrase", "latency", "pbkeylen", "streamid"]),
            Scheme::Udp => Some(&["ttl"]),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a push URL was refused. Messages never contain the URL's credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Empty.
    #[error("is empty; give e.g. rtmp://server/live/cam or udp://192.168.1.10:5600")]
    Empty,
    /// No `scheme://`, or one camstream does not push to.
    #[error("has scheme {0:?}; use one of rtmp, rtmps, rtsp, rtsps, srt, udp")]
    Scheme(String),
    /// No host where one is needed.
    #[error("has no host")]
    NoHost,
    /// The port is not a number from 1 to 65535, or is missing where required.
    #[error("{0}")]
    Port(String),
    /// The path does not fit the scheme.
    #[error("{0}")]
    Path(String),
    /// A query parameter is unknown or its value is out of range.
    #[error("{0}")]
    Query(String),
    /// Spaces, control characters or quotes, or `{secret}` where it cannot go.
    #[error("{0}")]
    Characters(String),
}

/// A parsed push URL. Parts may still hold [`SECRET_PLACEHOLDER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUrl {
    /// The protocol.
    pub scheme: Scheme,
    /// User name from the user info, percent-decoded.
    pub username: Option<String>,
    /// Password from the user info, percent-decoded.
    pub password: Option<String>,
    /// Host name or address, without IPv6 brackets; empty for an SRT listener on every address.
    pub host: String,
    /// Port (the scheme's default where it has one).
    pub port: u16,
    /// Path as written, with its leading '/', or empty.
    pub path: String,
    /// Query as written (without '?'), or empty.
    pub raw_query: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
}

/// SRT connection modes camstream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtMode {
    /// camstream dials the receiver (the default).
    Caller,
    /// camstream waits for the receiver to dial in.
    Listener,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Whether a query key names a credential.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "auth", "sig"]
        .iter()
        .any(|s| k.contains(s))
}

impl PushUrl {
    /// Parses and checks `url` (no connection is made).
    pub fn parse(url: &str) -> Result<PushUrl, UrlError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(UrlError::Empty);
        }
        if url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
        {
            return Err(UrlError::Characters(
                "contains a space, a control character, a quote or a backslash; percent-encode them"
                    .into(),
            ));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::Scheme(String::new()))?;
        let scheme = Scheme::parse(scheme).ok_or_else(|| UrlError::Scheme(scheme.into()))?;
        let rest = rest.split('#').next().unwrap_or("");
        let (before_query, raw_query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(percent_decode(n)), Some(percent_decode(p))),
                None => (Some(percent_decode(u)), None),
            },
        };
        let (host, port) = split_host_port(hostport)?;
        if host.contains(SECRET_PLACEHOLDER) {
            return Err(UrlError::Characters(
                "has {secret} in the host; it may stand in the user info, path or a query value"
                    .into(),
            ));
        }
        let port = match (port, scheme.default_port()) {
            (Some(p), _) => p,
            (None, Some(d)) => d,
            (None, None) => {
                return Err(UrlError::Port(format!(
                    "needs a port: {scheme}://HOST:PORT"
                )));
            }
        };
        let query: Vec<(String, String)> = raw_query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let u = PushUrl {
            scheme,
            username,
            password,
            host,
            port,
            path: path.to_string(),
            raw_query: raw_query.to_string(),
            query,
        };
        u.check()?;
        Ok(u)
    }

    fn check(&self) -> Result<(), UrlError> {
        if let Some(known) = self.scheme.known_query() {
            for (k, _) in &self.query {
                if !known.contains(&k.as_str()) {
                    return Err(UrlError::Query(format!(
                        "has query parameter {k:?}; {} URLs take {}",
                        self.scheme,
                        known.join(", ")
                    )));
                }
            }
        }
        match self.scheme {
            Scheme::Rtmp | Scheme::Rtmps => {
                if self.host.is_empty() {
                    return Err(UrlError::NoHost);
                }
                let segments = self.path.split('/').filter(|s| !s.is_empty()).count();
                if segments < 2 {
                    return Err(UrlError::Path(format!(
                        "needs an application and a stream name: {}://HOST/APP/STREAM",
                        self.scheme
                    )));
                }
            }
            Scheme::Rtsp | Scheme::Rtsps => {
                if self.host.is_empty() {
                    return Err(UrlError::NoHost);
                }
                if self.path.trim_matches('/').is_empty() {
                    return Err(UrlError::Path(format!(
                        "needs a path to publish to: {}://HOST:PORT/PATH",
                        self.scheme
                    )));
                }
            }
            Scheme::Srt => {
                if self.srt_mode()? == SrtMode::Caller && self.host.is_empty() {
                    return Err(UrlError::NoHost);
                }
                if self.has_userinfo() {
                    return Err(UrlError::Characters(
                        "has user info; SRT takes ?passphrase= (and ?streamid=) instead".into(),
                    ));
                }
                if let Some(l) = self.param("latency") {
                    match l.parse::<u32>() {
                        Ok(v) if v <= 60_000 => {}
                        _ => {
                            return Err(UrlError::Query(format!(
                                "has latency={l:?}; give milliseconds from 0 to 60000"
                            )));
                        }
                    }
                }
                if let Some(k) = self.param("pbkeylen")
                    && !["0", "16", "24", "32"].contains(&k)
                {
                    return Err(UrlError::Query(format!(
                        "has pbkeylen={k:?}; give 16, 24 or 32 (bytes)"
                    )));
                }
                if let Some(p) = self.param("passphrase") {
                    check_passphrase(p)?;
                }
            }
            Scheme::Udp => {
                if self.host.is_empty() {
                    return Err(UrlError::NoHost);
                }
                if self.has_userinfo() || !self.path.trim_matches('/').is_empty() {
                    return Err(UrlError::Path(
                        "takes no user info or path: udp://HOST:PORT[?ttl=N]".into(),
                    ));
                }
                if let Some(t) = self.param("ttl") {
                    match t.parse::<u8>() {
                        Ok(v) if v >= 1 => {}
                        _ => {
                            return Err(UrlError::Query(format!("has ttl={t:?}; give 1 to 255")));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn has_userinfo(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }

    /// The value of query parameter `key`, if given.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The SRT mode asked for (`?mode=`), caller by default.
    pub fn srt_mode(&self) -> Result<SrtMode, UrlError> {
        match self.param("mode") {
            None | Some("caller") => Ok(SrtMode::Caller),
            Some("listener") => Ok(SrtMode::Listener),
            Some(m) => Err(UrlError::Query(format!(
                "has mode={m:?}; give caller (the default) or listener"
            ))),
        }
    }

    /// Whether the host is a multicast address.
    pub fn is_multicast(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok_and(|a| a.is_multicast())
    }

    /// Whether any part holds `{secret}`.
    pub fn uses_secret(&self) -> bool {
        [&self.username, &self.password]
            .into_iter()
            .flatten()
            .chain([&self.path, &self.raw_query])
            .any(|s| s.contains(SECRET_PLACEHOLDER))
    }

    /// The host as it goes into a URL (IPv6 in brackets).
    pub fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// `url` with every `{env:NAME}` replaced by the variable's value from `lookup`. Fails naming
/// the first variable that is unset or empty, or a placeholder that is not closed.
pub fn expand_env(url: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, UrlError> {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find(ENV_PREFIX) {
        out.push_str(&rest[..i]);
        let after = &rest[i + ENV_PREFIX.len()..];
        let end = after.find('}').ok_or_else(|| {
            UrlError::Characters("has an {env: placeholder without its closing '}'".into())
        })?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(UrlError::Characters(format!(
                "has {{env:{name}}}, which is not an environment variable name"
            )));
        }
        match lookup(name).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(UrlError::Characters(format!(
                    "uses {{env:{name}}} but {name} is not set in camstream's environment"
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// [`expand_env`] from the process environment.
pub fn expand_process_env(url: &str) -> Result<String, UrlError> {
    expand_env(url, |n| std::env::var(n).ok())
}

/// An SRT passphrase must be 10 to 79 characters (libsrt refuses others at connection time).
pub fn check_passphrase(p: &str) -> Result<(), UrlError> {
    if p == SECRET_PLACEHOLDER || (10..=79).contains(&p.chars().count()) {
        Ok(())
    } else {
        Err(UrlError::Query(
            "has a passphrase that is not 10 to 79 characters long (SRT's limits)".into(),
        ))
    }
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), UrlError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlError::Characters("has an unclosed '[' in the host".into()))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(UrlError::Characters(format!(
                "has [{h}], which is not an IPv6 address"
            )));
        }
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(UrlError::Characters("has text after the IPv6 host".into())),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(UrlError::Port(format!(
                    "has port {p:?}; give a number from 1 to 65535"
                )));
            }
        },
    };
    if host
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')))
        && !host.contains(SECRET_PLACEHOLDER)
    {
        return Err(UrlError::Characters(format!(
            "has host {host:?}, which is not a host name or address"
        )));
    }
    Ok((host.to_string(), port))
}

/// `url` as logs, the status API and `camstream check` may show it: the user info's password
/// and query values whose names look like credentials (passphrase, key, token, ...) replaced by
/// `<redacted>`. `{secret}` placeholders stay as they are. Works on any text, also unparsable.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, pw)) if pw != SECRET_PLACEHOLDER => format!("{user}:{REDACTED}@{host}"),
            _ => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let q: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, v)) if secret_key(k) && v != SECRET_PLACEHOLDER && !v.is_empty() => {
                        format!("{k}={REDACTED}")
                    }
                    _ => p.to_string(),
                })
                .collect();
            let mut t = format!("{path}?{}", q.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
        None => tail.to_string(),
    };
    format!("{head}{authority}{tail}")
}

/// `text` with every URL in it passed through [`redact_url`] (for values that may embed one).
pub fn redact_text(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The scheme starts after the last character that cannot be in one.
        let start = rest[..i]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(j, c)| j + c.len_utf8());
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ','))
            .map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Where a push's secret comes from, as a key to name in messages.
fn secret_source(p: &PushConfig) -> Option<&'static str> {
    if !p.secret_file.is_empty() {
        Some("secret_file")
    } else if !p.secret_env.is_empty() {
        Some("secret_env")
    } else if !p.secret.is_empty() {
        Some("secret")
    } else {
        None
    }
}

/// Why a push's secret could not be had at connection time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `secret_file` is unreadable or empty.
    #[error("secret_file {path:?} {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// `secret_env` names a variable that is not set or empty.
    #[error("secret_env {0:?} is not set in camstream's environment, or is empty")]
    Env(String),
}

impl PushConfig {
    /// The URL as it may be shown (credentials redacted, `{secret}` kept).
    pub fn shown_url(&self) -> String {
        redact_url(self.url.trim())
    }

    /// The secret in force (`secret_file`, then `secret_env`, then `secret`), read now so a
    /// rotated file or a changed Secret is picked up at the next connection. `None`: none set.
    pub fn resolve_secret(&self) -> Result<Option<String>, SecretError> {
        if !self.secret_file.is_empty() {
            let text =
                std::fs::read_to_string(&self.secret_file).map_err(|e| SecretError::File {
                    path: self.secret_file.clone(),
                    why: format!("cannot be read: {e}"),
                })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.is_empty() {
                return Err(SecretError::File {
                    path: self.secret_file.clone(),
                    why: "is empty".into(),
                });
            }
            return Ok(Some(text.to_string()));
        }
        if !self.secret_env.is_empty() {
            return match std::env::var(&self.secret_env) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(SecretError::Env(self.secret_env.clone())),
            };
        }
        Ok((!self.secret.is_empty()).then(|| self.secret.0.clone()))
    }
}

/// Checks a stream's pushes: names, URLs (parsed, no connection), secret sources and timings.
/// `prefix` is the stream's key prefix (e.g. `streams[cam1].`); messages never show a secret.
pub(crate) fn validate_pushes(prefix: &str, pushes: &[PushConfig]) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    let mut names = std::collections::HashSet::new();
    for (i, p) in pushes.iter().enumerate() {
        let key = if p.name.is_empty() {
            format!("{prefix}push[{i}]")
        } else {
            format!("{prefix}push[{}]", p.name)
        };
        super::rules::check_name(&format!("{key}.name"), &p.name)?;
        if !names.insert(p.name.as_str()) {
            return bad(format!(
                "{key}.name = {:?} is used twice in this stream; push names must be unique",
                p.name
            ));
        }
        let url = match expand_process_env(&p.url).and_then(|u| PushUrl::parse(&u)) {
            Ok(u) => u,
            Err(e) => return bad(format!("{key}.url = {:?} {e}", p.shown_url())),
        };
        let sources = [
            !p.secret.is_empty(),
            !p.secret_file.is_empty(),
            !p.secret_env.is_empty(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return bad(format!(
                "{key}: set only one of secret, secret_file and secret_env"
            ));
        }
        match (url.uses_secret(), secret_source(p)) {
            (true, None) => {
                return bad(format!(
                    "{key}.url uses {SECRET_PLACEHOLDER} but no secret, secret_file or secret_env is set"
                ));
            }
            (false, Some(source)) => {
                return bad(format!(
                    "{key}.{source} is set but {key}.url has no {SECRET_PLACEHOLDER} to put it in"
                ));
            }
            _ => {}
        }
        if url.param("passphrase") == Some(SECRET_PLACEHOLDER) && !p.secret.is_empty() {
            check_passphrase(&p.secret.0).map_err(|e| {
                ConfigError::Invalid(format!("{key}.secret (the SRT passphrase) {e}"))
            })?;
        }
        if p.rtsp_transport != PushTransport::Tcp
            && !matches!(url.scheme, Scheme::Rtsp | Scheme::Rtsps)
        {
            return bad(format!(
                "{key}.rtsp_transport applies to rtsp:// and rtsps:// URLs only"
            ));
        }
        super::rules::in_range(
            &format!("{key}.initial_backoff_ms"),
            p.initial_backoff_ms,
            100,
            600_000,
        )?;
        super::rules::in_range(
            &format!("{key}.max_backoff_ms"),
            p.max_backoff_ms,
            p.initial_backoff_ms,
            600_000,
        )?;
        super::rules::in_range(
            &format!("{key}.start_timeout_ms"),
            p.start_timeout_ms,
            1000,
            120_000,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_parses_with_its_defaults() {
        let u = PushUrl::parse("rtmp://media.lan/live/cam1").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Rtmp, "media.lan", 1935, "/live/cam1")
        );
        assert_eq!(PushUrl::parse("rtmps://x.example/app/k").unwrap().port, 443);
        let u = PushUrl::parse("rtsp://user:p%40ss@10.0.0.2:8554/cam").unwrap();
        assert_eq!(u.username.as_deref(), Some("user"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.port, 8554);
        assert_eq!(PushUrl::parse("rtsps://h/x").unwrap().port, 322);
        let u = PushUrl::parse("srt://[::1]:9000?mode=listener&latency=200").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.host_for_url(), "[::1]");
        assert_eq!(u.srt_mode().unwrap(), SrtMode::Listener);
        assert_eq!(u.param("latency"), Some("200"));
        assert!(PushUrl::parse("srt://:9000?mode=listener").is_ok());
        let u = PushUrl::parse("udp://239.1.2.3:5600?ttl=4").unwrap();
        assert!(u.is_multicast());
        assert!(
            !PushUrl::parse("udp://192.168.1.10:5600")
                .unwrap()
                .is_multicast()
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, needle) in [
            ("", "empty"),
            ("media.lan/live", "scheme"),
            ("http://x/y", "\"http\""),
            ("rtmp://x/live", "application and a stream"),
            ("rtsp://x", "path"),
            ("srt://x", "needs a port"),
            ("udp://x:0", "1 to 65535"),
            ("udp://x:70000", "1 to 65535"),
            ("udp://x:5600?ttl=0", "ttl"),
            ("udp://x:5600?tll=3", "\"tll\""),
            ("srt://x:9000?mode=rendezvous", "mode"),
            ("srt://x:9000?latency=-1", "latency"),
            ("srt://x:9000?passphrase=short", "10 to 79"),
            ("srt://:9000", "no host"),
            ("rtmp://ho st/a/b", "space"),
            ("rtmp://{secret}/a/b", "host"),
            ("rtmp://h\"/a/b", "quote"),
        ] {
            let e = PushUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url:?}: {e}");
        }
    }

    #[test]
    fn environment_placeholders_expand_or_name_the_variable() {
        let env = |n: &str| (n == "NODE_NAME").then(|| "node-7".to_string());
        assert_eq!(
            expand_env("rtsp://media:8554/{env:NODE_NAME}/cam", env).unwrap(),
            "rtsp://media:8554/node-7/cam"
        );
        let e = expand_env("rtsp://m/{env:NOPE}", env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOPE is not set"), "{e}");
        assert!(expand_env("rtsp://m/{env:NODE_NAME", env).is_err());
        assert!(expand_env("rtsp://m/{env:A-B}", env).is_err());
    }

    #[test]
    fn secrets_are_placeholders_and_never_shown() {
        let u = PushUrl::parse("rtmp://a.example/live2/{secret}").unwrap();
        assert!(u.uses_secret());
        assert!(
            !PushUrl::parse("rtmp://a.example/live2/k")
                .unwrap()
                .uses_secret()
        );
        assert_eq!(
            redact_url("rtsp://cam:hunter2@10.0.0.2/x?transport=tcp"),
            "rtsp://cam:<redacted>@10.0.0.2/x?transport=tcp"
        );
        assert_eq!(
            redact_url("srt://h:9000?mode=caller&passphrase=verysecret123&streamid=a"),
            "srt://h:9000?mode=caller&passphrase=<redacted>&streamid=a"
        );
        assert_eq!(
            redact_url("rtsp://cam:{secret}@h/x"),
            "rtsp://cam:{secret}@h/x"
        );
        let text = "url=\"rtmp://u:pw@h/a/b\" and ésrt://h:1?passphrase=abcdefghijk, done";
        let shown = redact_text(text);
        assert!(
            !shown.contains("pw@") && !shown.contains("abcdefghijk"),
            "{shown}"
        );
        assert!(shown.ends_with(", done"), "{shown}");
        // An unparsable URL is still redacted.
        assert_eq!(redact_url("rtmp://u:pw@"), "rtmp://u:<redacted>@");
    }
}
