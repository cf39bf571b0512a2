//! The elements of a push after the hub's appsrc, per scheme: the H.264 access units leave as
//! they were encoded (parsed and muxed, never re-encoded) into the protocol's sink.
//!
//! Credentials go into element properties (`username`, `user-pw`, `passphrase`), never into a
//! location string an element may echo in an error; the secret values are also handed to the
//! pipeline runner, which scrubs them from every message it logs or shows.

use crate::config::push_url::{
    PushUrl, SECRET_PLACEHOLDER, Scheme, SrtMode, check_passphrase, expand_process_env,
};
use crate::config::{PushConfig, PushTransport};

/// The launch description of a push and what it must never show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Elements after the appsrc, with credentials in it.
    pub description: String,
    /// The description with credentials redacted, for logs.
    pub shown: String,
    /// Secret values (the resolved `{secret}`, URL passwords) to scrub from messages.
    pub secrets: Vec<String>,
    /// The sink element, for `camstream check` (with its Debian package).
    pub sink: &'static str,
}

/// Why a push's elements could not be described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The URL does not parse (validation normally catches this first).
    #[error("url {url:?} {source}")]
    Url {
        /// The URL, redacted.
        url: String,
        /// Why.
        source: crate::config::push_url::UrlError,
    },
    /// The secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::config::push_url::SecretError),
    /// The secret does not fit where it goes.
    #[error("the secret {0}")]
    BadSecret(String),
}

/// The elements each scheme needs, for `camstream check`.
pub fn elements(scheme: Scheme) -> &'static [&'static str] {
    match scheme {
        Scheme::Rtmp | Scheme::Rtmps => &["h264parse", "flvmux", "rtmp2sink"],
        Scheme::Rtsp | Scheme::Rtsps => &["h264parse", "rtspclientsink"],
        Scheme::Srt => &["h264parse", "mpegtsmux", "srtsink"],
        Scheme::Udp => &["h264parse", "rtph264pay", "udpsink"],
    }
}

/// A value quoted for a launch description.
fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One `key=value` pair of a launch description, and how it is shown.
struct Props {
    real: Vec<String>,
    shown: Vec<String>,
}

impl Props {
    fn new() -> Self {
        Props {
            real: Vec::new(),
            shown: Vec::new(),
        }
    }
    fn add(&mut self, key: &str, value: &str) {
        self.real.push(format!("{key}={}", quote(value)));
        self.shown.push(format!("{key}={}", quote(value)));
    }
    fn add_raw(&mut self, key: &str, value: impl ToString) {
        let v = value.to_string();
        self.real.push(format!("{key}={v}"));
        self.shown.push(format!("{key}={v}"));
    }
    fn add_secret(&mut self, key: &str, value: &str, shown: &str) {
        self.real.push(format!("{key}={}", quote(value)));
        self.shown.push(format!("{key}={}", quote(shown)));
    }
}

/// Describes the elements of `push`, with its secret (already resolved) put in.
pub fn describe(push: &PushConfig, secret: Option<&str>) -> Result<Chain, ChainError> {
    describe_with_audio(push, secret, false)
}

/// Name of the AAC `appsrc` of a push that carries sound (issue #24).
pub const AUDIO_SOURCE_NAME: &str = "asrc";

/// Whether a scheme's container carries the AAC track: FLV, MPEG-TS and RTSP do; raw RTP over
/// UDP (a ground station's video link) stays picture only.
pub fn carries_audio(scheme: Scheme) -> bool {
    !matches!(scheme, Scheme::Udp)
}

/// [`describe`], with the stream's AAC as a second input of the muxer (or of `rtspclientsink`)
/// when `audio` is set and the scheme carries it: `appsrc name=asrc`, fed by the audio hub.
pub fn describe_with_audio(
    push: &PushConfig,
    secret: Option<&str>,
    audio: bool,
) -> Result<Chain, ChainError> {
    let url = expand_process_env(&push.url)
        .and_then(|u| PushUrl::parse(&u))
        .map_err(|source| ChainError::Url {
            url: push.shown_url(),
            source,
        })?;
    let secret = secret.unwrap_or("");
    let fill = |s: &str| s.replace(SECRET_PLACEHOLDER, secret);
    // What the shown form has where a credential is: the placeholder if the URL used one.
    let hide = |s: &str| {
        if s.contains(SECRET_PLACEHOLDER) {
            s.to_string()
        } else {
            crate::config::push_url::REDACTED.to_string()
        }
    };
    let mut secrets: Vec<String> = Vec::new();
    if !secret.is_empty() && url.uses_secret() {
        secrets.push(secret.to_string());
    }
    if let Some(p) = url.password.as_deref().filter(|p| !p.is_empty()) {
        secrets.push(fill(p));
    }
    let query = if url.raw_query.is_empty() {
        String::new()
    } else {
        format!("?{}", url.raw_query)
    };
    let base = format!("{}://{}:{}", url.scheme, url.host_for_url(), url.port);
    let mut sink = Props::new();
    let (head, sink_name) = match url.scheme {
        Scheme::Rtmp | Scheme::Rtmps => {
            // The location carries the application and stream (key); the user info goes into
            // properties. `{secret}` in the path is the stream key of most services.
            sink.add_secret(
                "location",
                &format!("{base}{}{}", fill(&url.path), fill(&query)),
                &format!("{base}{}{}", url.path, redact_query(&query)),
            );
            add_userinfo(&mut sink, &url, "username", "password", &fill, &hide);
            // The capture paces the frames; a sink that synced would hold each one back.
            sink.add_raw("sync", "false");
            (
                "h264parse ! video/x-h264,stream-format=avc,alignment=au ! flvmux streamable=true name=mux ! rtmp2sink",
                "rtmp2sink",
            )
        }
        Scheme::Rtsp | Scheme::Rtsps => {
            sink.add_secret(
                "location",
                &format!("{base}{}{}", fill(&url.path), fill(&query)),
                &format!("{base}{}{}", url.path, redact_query(&query)),
            );
            add_userinfo(&mut sink, &url, "user-id", "user-pw", &fill, &hide);
            let protocols = match push.rtsp_transport {
                PushTransport::Tcp => "tcp",
                PushTransport::Udp => "udp",
            };
            sink.add_raw("protocols", protocols);
            // SPS/PPS in band as well as in the SDP, for servers that relay without the SDP.
            (
                "h264parse config-interval=-1 ! rtspclientsink",
                "rtspclientsink",
            )
        }
        Scheme::Srt => {
            let mode = url.srt_mode().map_err(|source| ChainError::Url {
                url: push.shown_url(),
                source,
            })?;
            sink.add("uri", &format!("srt://{}:{}", url.host_for_url(), url.port));
            sink.add_raw(
                "mode",
                match mode {
                    SrtMode::Caller => "caller",
                    SrtMode::Listener => "listener",
                },
            );
            if let Some(l) = url.param("latency") {
                sink.add_raw("latency", l);
            }
            if let Some(k) = url.param("pbkeylen") {
                sink.add_raw("pbkeylen", k);
            }
            if let Some(p) = url.param("passphrase") {
                let real = fill(p);
                check_passphrase(&real).map_err(|e| ChainError::BadSecret(e.to_string()))?;
                secrets.push(real.clone());
                sink.add_secret("passphrase", &real, &hide(p));
            }
            if let Some(id) = url.param("streamid") {
                sink.add_secret("streamid", &fill(id), id);
            }
            // Failures end the pipeline, so the push's own backoff and status see them; a
            // listener sends to whoever dials in and drops frames while nobody does.
            sink.add_raw("auto-reconnect", "false");
            sink.add_raw(
                "wait-for-connection",
                if mode == SrtMode::Listener {
                    "false"
                } else {
                    "true"
                },
            );
            sink.add_raw("sync", "false");
            // SPS/PPS before every IDR: a receiver can join at any time. Seven TS packets per
            // buffer fill one SRT payload (1316 bytes).
            (
                "h264parse config-interval=-1 ! mpegtsmux alignment=7 name=mux ! srtsink",
                "srtsink",
            )
        }
        Scheme::Udp => {
            sink.add("host", &url.host);
            sink.add_raw("port", url.port);
            let ttl = url
                .param("ttl")
                .unwrap_or(if url.is_multicast() { "1" } else { "64" });
            sink.add_raw(if url.is_multicast() { "ttl-mc" } else { "ttl" }, ttl);
            sink.add_raw("auto-multicast", "true");
            sink.add_raw("sync", "false");
            sink.add_raw("async", "false");
            // RTP payload type 96, SPS/PPS before every IDR: QGroundControl and any
            // `udpsrc ! rtph264depay` receiver can join at any time.
            (
                "h264parse ! rtph264pay pt=96 mtu=1400 config-interval=-1 aggregate-mode=zero-latency ! udpsink",
                "udpsink",
            )
        }
    };
    secrets.retain(|s| !s.is_empty());
    secrets.sort();
    secrets.dedup();
    // Audio (issue #24): the AAC access units go into the same muxer, parsed, not re-encoded.
    // An AAC frame leaves its encoder some 50 ms after its first sample was captured, behind
    // the picture of the same instant; a live muxer that does not wait for it writes the
    // picture first and FLV, one timeline for both, then clamps the late sound onto the
    // picture's clock. The muxer waits for the sound instead.
    let audio = audio && carries_audio(url.scheme);
    let head = if audio {
        head.replace("name=mux", "name=mux latency=300000000")
    } else {
        head.to_string()
    };
    let audio = if audio {
        let into = if sink_name == "rtspclientsink" {
            "sink."
        } else {
            "mux."
        };
        format!(
            " appsrc name={AUDIO_SOURCE_NAME} is-live=true format=time \
             ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=1000000000 ! aacparse ! {into}"
        )
    } else {
        String::new()
    };
    Ok(Chain {
        description: format!("{head} name=sink {}{audio}", sink.real.join(" ")),
        shown: format!("{head} name=sink {}{audio}", sink.shown.join(" ")),
        secrets,
        sink: sink_name,
    })
}

fn add_userinfo(
    sink: &mut Props,
    url: &PushUrl,
    user_key: &str,
    pass_key: &str,
    fill: &dyn Fn(&str) -> String,
    hide: &dyn Fn(&str) -> String,
) {
    if let Some(u) = url.username.as_deref().filter(|u| !u.is_empty()) {
        sink.add_secret(user_key, &fill(u), u);
    }
    if let Some(p) = url.password.as_deref().filter(|p| !p.is_empty()) {
        sink.add_secret(pass_key, &fill(p), &hide(p));
    }
}

fn redact_query(query: &str) -> String {
    // Reuse the URL redaction on a dummy authority, then drop it.
    let shown = crate::config::push_url::redact_url(&format!("x://h{query}"));
    shown.trim_start_matches("x://h").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(url: &str) -> PushConfig {
        PushConfig {
            name: "t".into(),
            url: url.into(),
            ..Default::default()
        }
    }

    /// Every description parses into a real pipeline with the elements installed here.
    fn parses(c: &Chain) {
        gst::init().unwrap();
        if elements_missing(c) {
            return;
        }
        let d = format!("appsrc ! {}", c.description);
        gst::parse::launch(&d).unwrap_or_else(|e| panic!("{d}: {e}"));
    }

    fn elements_missing(c: &Chain) -> bool {
        gst::ElementFactory::find(c.sink).is_none()
    }

    #[test]
    fn rtmp_keeps_credentials_out_of_the_location() {
        let c = describe(
            &push("rtmp://cam:pw%21@media.lan/live/{secret}"),
            Some("KEY123"),
        )
        .unwrap();
        assert!(
            c.description
                .contains("location=\"rtmp://media.lan:1935/live/KEY123\"")
        );
        assert!(c.description.contains("username=\"cam\" password=\"pw!\""));
        assert!(c.description.contains("flvmux streamable=true"));
        assert!(
            !c.shown.contains("KEY123") && !c.shown.contains("pw!"),
            "{}",
            c.shown
        );
        assert!(c.shown.contains("/live/{secret}"));
        assert_eq!(c.secrets, vec!["KEY123".to_string(), "pw!".to_string()]);
        parses(&c);
    }

    #[test]
    fn rtsp_records_over_tcp_by_default() {
        let c = describe(&push("rtsp://u:{secret}@10.0.0.2:8554/cam"), Some("s\"q")).unwrap();
        assert!(c.description.contains("protocols=tcp"));
        assert!(
            c.description.contains("user-pw=\"s\\\"q\""),
            "{}",
            c.description
        );
        assert!(c.shown.contains("user-pw=\"{secret}\""));
        let mut p = push("rtsp://h/x");
        p.rtsp_transport = PushTransport::Udp;
        assert!(
            describe(&p, None)
                .unwrap()
                .description
                .contains("protocols=udp")
        );
        parses(&c);
    }

    #[test]
    fn audio_joins_the_muxer_except_on_plain_rtp() {
        gst::init().unwrap();
        for (url, into) in [
            ("rtmp://h/app/key", "mux."),
            ("srt://h:9000", "mux."),
            ("rtsp://h:8554/x", "sink."),
        ] {
            let c = describe_with_audio(&push(url), None, true).unwrap();
            assert!(
                c.description.contains("appsrc name=asrc"),
                "{}",
                c.description
            );
            assert!(
                c.description.ends_with(&format!("aacparse ! {into}")),
                "{}",
                c.description
            );
            if !elements_missing(&c) {
                parses(&c);
            }
        }
        let c = describe_with_audio(&push("udp://127.0.0.1:5600"), None, true).unwrap();
        assert!(!c.description.contains("asrc"), "{}", c.description);
    }

    #[test]
    fn srt_takes_mode_latency_and_passphrase_from_the_query() {
        let c = describe(
            &push("srt://10.0.0.3:9000?latency=200&passphrase=0123456789ab"),
            None,
        )
        .unwrap();
        assert!(c.description.contains("mode=caller"));
        assert!(c.description.contains("latency=200"));
        assert!(c.description.contains("passphrase=\"0123456789ab\""));
        assert!(c.description.contains("uri=\"srt://10.0.0.3:9000\""));
        assert!(!c.shown.contains("0123456789ab"), "{}", c.shown);
        assert!(c.description.contains("mpegtsmux alignment=7"));
        let l = describe(&push("srt://:9000?mode=listener"), None).unwrap();
        assert!(l.description.contains("mode=listener"));
        assert!(l.description.contains("wait-for-connection=false"));
        let short = describe(&push("srt://h:1?passphrase={secret}"), Some("short"));
        assert!(matches!(short, Err(ChainError::BadSecret(_))));
        parses(&c);
    }

    #[test]
    fn udp_is_rtp_with_headers_on_every_idr() {
        let c = describe(&push("udp://127.0.0.1:5600"), None).unwrap();
        assert!(c.description.contains("rtph264pay pt=96"));
        assert!(c.description.contains("config-interval=-1"));
        assert!(c.description.contains("ttl=64"));
        let m = describe(&push("udp://239.0.0.1:5600?ttl=3"), None).unwrap();
        assert!(m.description.contains("ttl-mc=3"), "{}", m.description);
        assert!(c.secrets.is_empty());
        parses(&c);
        parses(&m);
    }
}
