//! `[mqtt]`: publish state and motion to an MQTT broker, with Home Assistant discovery
//! (docs/mqtt.md).

use serde::{Deserialize, Serialize};

use super::rules::in_range;
use super::{ConfigError, Role, Secret, read_secret};

/// `[mqtt]`: the broker, its credentials and TLS, and the topics used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// The broker, `mqtt://HOST[:PORT]` (1883) or `mqtts://HOST[:PORT]` (8883). Default empty:
    /// MQTT is off.
    pub url: String,
    /// User name at the broker. Default empty: none.
    pub username: String,
    /// Password at the broker. Default empty.
    pub password: Secret,
    /// File holding the password (one trailing newline ignored); wins over `password`.
    pub password_file: String,
    /// PEM file of the certificate authority that signed the broker's certificate (`mqtts://`).
    /// Default empty: the system's authorities.
    pub ca_file: String,
    /// Accept any broker certificate (`mqtts://`): testing only. Default false.
    pub insecure: bool,
    /// Client identifier at the broker, and the device's identifier in Home Assistant.
    /// Default empty: `camstream-` and the host name.
    pub client_id: String,
    /// Topics start with this. Default `camstream`.
    pub topic_prefix: String,
    /// Home Assistant's discovery prefix. Default `homeassistant`.
    pub discovery_prefix: String,
    /// Publish Home Assistant discovery. Default true.
    pub discovery: bool,
    /// The role the broker's commands (switches) are given, checked like a PATCH: `operator`
    /// or `admin` may switch, `viewer` may not. Default `operator`.
    pub role: Role,
    /// Messages kept while the broker is away or slow, 16 to 100000; the oldest are dropped
    /// beyond it. Default 256.
    pub queue: u32,
    /// Seconds between publications of each stream's state, frame rate and bitrate, 1 to
    /// 3600. Default 10.
    pub state_interval_s: u32,
    /// MQTT keep-alive in seconds, 5 to 3600. Default 30.
    pub keep_alive_s: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: String::new(),
            username: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            ca_file: String::new(),
            insecure: false,
            client_id: String::new(),
            topic_prefix: "camstream".into(),
            discovery_prefix: "homeassistant".into(),
            discovery: true,
            role: Role::Operator,
            queue: 256,
            state_interval_s: 10,
            keep_alive_s: 30,
        }
    }
}

/// Where the broker is, as read from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS (`mqtts://`).
    pub tls: bool,
}

impl MqttConfig {
    /// Whether MQTT is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The broker named by `url`.
    pub fn broker(&self) -> Result<Broker, ConfigError> {
        let url = self.url.trim();
        let bad = |why: &str| {
            ConfigError::Invalid(format!(
                "mqtt.url = {url:?} {why}; expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
            ))
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad("has an unknown scheme"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) || rest.is_empty() {
            return Err(bad(
                "must be a host and port only (credentials go in mqtt.username/password)",
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed '['"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("has a bad port"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        Ok(Broker { host, port, tls })
    }

    /// The password, read from `password_file` when set.
    pub fn password(&self) -> Result<String, ConfigError> {
        if !self.password_file.is_empty() {
            read_secret("mqtt.password_file", &self.password_file)
        } else {
            Ok(self.password.0.clone())
        }
    }

    /// Rejects settings that cannot work (only when MQTT is configured).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        self.broker()?;
        in_range("mqtt.queue", self.queue, 16, 100_000)?;
        in_range("mqtt.state_interval_s", self.state_interval_s, 1, 3600)?;
        in_range("mqtt.keep_alive_s", self.keep_alive_s, 5, 3600)?;
        let topic_ok = |t: &str| {
            !t.is_empty()
                && !t.starts_with('/')
                && !t.ends_with('/')
                && !t.contains(['+', '#', '\0'])
        };
        for (key, value) in [
            ("mqtt.topic_prefix", &self.topic_prefix),
            ("mqtt.discovery_prefix", &self.discovery_prefix),
        ] {
            if !topic_ok(value) {
                return Err(ConfigError::Invalid(format!(
                    "{key} = {value:?} is not a topic prefix: not empty, no leading or trailing \
                     '/', no '+' or '#'"
                )));
            }
        }
        if self.password_file.is_empty() && !self.password.0.is_empty() && self.username.is_empty()
        {
            return Err(ConfigError::Invalid(
                "mqtt.password is set without mqtt.username".into(),
            ));
        }
        if !self.ca_file.is_empty() && !std::path::Path::new(&self.ca_file).is_file() {
            return Err(ConfigError::Invalid(format!(
                "mqtt.ca_file = {:?} is not a readable file",
                self.ca_file
            )));
        }
        self.password()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> MqttConfig {
        MqttConfig {
            url: url.into(),
            ..MqttConfig::default()
        }
    }

    #[test]
    fn broker_urls() {
        let b = with_url("mqtt://127.0.0.1:1884").broker().unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("127.0.0.1", 1884, false));
        let b = with_url("mqtts://broker.lan").broker().unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("broker.lan", 8883, true));
        let b = with_url("mqtt://[::1]/").broker().unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1883));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://u:p@host",
            "mqtt://host:0",
            "mqtt://host:x",
            "mqtt://host/topic",
        ] {
            let e = with_url(bad).validate().unwrap_err().to_string();
            assert!(e.contains("mqtt.url"), "{bad}: {e}");
        }
        assert!(MqttConfig::default().validate().is_ok(), "off is valid");
    }

    #[test]
    fn prefixes_and_bounds() {
        let mut c = with_url("mqtt://h");
        c.topic_prefix = "a/#".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("topic_prefix")
        );
        let mut c = with_url("mqtt://h");
        c.queue = 1;
        assert!(c.validate().unwrap_err().to_string().contains("mqtt.queue"));
        let mut c = with_url("mqtt://h");
        c.password = Secret("x".into());
        assert!(c.validate().unwrap_err().to_string().contains("username"));
    }
}
