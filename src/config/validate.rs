//! Checks that reject values which parse but cannot work, before anything starts. Every message
//! names the offending key (with its stream, for `[[streams]]`) and, for numbers, the range.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use super::{
    Config, ConfigError, EncoderKind, Profile264, SourceKind, StreamConfig, Transport, h264,
};

type Checked = Result<(), ConfigError>;

fn bad(m: String) -> Checked {
    Err(ConfigError::Invalid(m))
}

use super::rules::{check_name, in_range};

/// An RTSP mount path.
fn check_mount(key: &str, mount: &str) -> Checked {
    if mount.trim().is_empty() || mount.trim() == "/" {
        return bad(format!(
            "{key} = {mount:?} is empty; give a path such as \"/video\""
        ));
    }
    if !mount.starts_with('/') {
        return bad(format!(
            "{key} = {mount:?} must start with '/' (e.g. \"/video\")"
        ));
    }
    if mount
        .chars()
        .any(|c| c.is_whitespace() || c == '?' || c == '#' || c.is_control())
    {
        return bad(format!("{key} = {mount:?} contains a space, '?' or '#'"));
    }
    Ok(())
}

fn check_size(prefix: &str, width: u32, height: u32, fps: u32) -> Checked {
    for (key, val) in [("width", width), ("height", height)] {
        let key = format!("{prefix}{key}");
        in_range(&key, val, 16, 4096)?;
        if val % 2 != 0 {
            return bad(format!(
                "{key} = {val} is odd; H.264 with 4:2:0 chroma needs even sizes"
            ));
        }
    }
    in_range(&format!("{prefix}fps"), fps, 1, 120)
}

impl StreamConfig {
    /// Rejects stream settings that cannot work; `prefix` is prepended to every key named
    /// (e.g. `streams[cam1].`, or empty for the flat form and the control API).
    pub fn validate(&self, prefix: &str) -> Checked {
        let v = &self.video;
        check_size(&format!("{prefix}video."), v.width, v.height, v.fps)?;
        let e = &self.encoder;
        in_range(
            &format!("{prefix}encoder.bitrate_kbps"),
            e.bitrate_kbps,
            100,
            20_000,
        )?;
        in_range(
            &format!("{prefix}encoder.keyframe_interval"),
            e.keyframe_interval,
            1,
            1000,
        )?;
        self.level().map_err(|e| match e {
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("{prefix}{m}")),
            other => other,
        })?;
        if e.kind == EncoderKind::V4l2
            && (v.width > 1920 || v.height > 1088 || v.fps > 30 && v.width * v.height > 1280 * 720)
        {
            return bad(format!(
                "{prefix}video {}x{}@{} is beyond what the Pi hardware encoder handles (up to 1080p30)",
                v.width, v.height, v.fps
            ));
        }
        let s = &self.source;
        if s.kind == SourceKind::Pipeline && s.pipeline.trim().is_empty() {
            return bad(format!(
                "{prefix}source.kind = \"pipeline\" needs {prefix}source.pipeline (a launch fragment producing raw video)"
            ));
        }
        let sup = &self.supervisor;
        if sup.initial_backoff_ms == 0 || sup.initial_backoff_ms > sup.max_backoff_ms {
            return bad(format!(
                "{prefix}supervisor.initial_backoff_ms = {} must be between 1 and supervisor.max_backoff_ms ({})",
                sup.initial_backoff_ms, sup.max_backoff_ms
            ));
        }
        in_range(
            &format!("{prefix}supervisor.multiplier"),
            sup.multiplier,
            1.0,
            100.0,
        )?;
        in_range(&format!("{prefix}supervisor.jitter"), sup.jitter, 0.0, 1.0)?;
        in_range(
            &format!("{prefix}supervisor.stall_timeout_ms"),
            sup.stall_timeout_ms,
            100,
            3_600_000,
        )?;
        in_range(
            &format!("{prefix}supervisor.start_timeout_ms"),
            sup.start_timeout_ms,
            100,
            3_600_000,
        )?;
        for (i, r) in self.renditions.iter().enumerate() {
            let p = format!("{prefix}renditions[{i}].");
            check_name(&format!("{p}name"), &r.name)?;
            check_mount(&format!("{p}mount"), &r.mount_path())?;
            let fps = self.rendition_fps(r);
            check_size(&p, r.width, r.height, fps)?;
            if r.fps > v.fps {
                return bad(format!(
                    "{p}fps = {} is above the stream's video.fps ({})",
                    r.fps, v.fps
                ));
            }
            in_range(&format!("{p}bitrate_kbps"), r.bitrate_kbps, 100, 20_000)?;
            if h264::derive_level_for(r.width, r.height, fps, r.bitrate_kbps, false).is_none() {
                return bad(format!(
                    "{p}: {}x{}@{fps} at {} kbit/s exceeds every H.264 level",
                    r.width, r.height, r.bitrate_kbps
                ));
            }
        }
        check_record(&format!("{prefix}record."), &self.record)?;
        self.image.validate(&format!("{prefix}image."))?;
        self.audio.validate(&format!("{prefix}audio."))?;
        super::push_url::validate_pushes(prefix, &self.push)
    }
}

/// `[record]`: ranges, and a path that cannot point somewhere unexpected.
fn check_record(p: &str, r: &super::RecordConfig) -> Checked {
    if !Path::new(&r.path).is_absolute() || r.path.split('/').any(|c| c == "..") {
        return bad(format!(
            "{p}path = {:?} must be an absolute path without '..' (e.g. \"/var/lib/camstream/recordings\")",
            r.path
        ));
    }
    in_range(&format!("{p}segment_s"), r.segment_s, 1, 3600)?;
    in_range(&format!("{p}part_ms"), r.part_ms, 100, 10_000)?;
    if u64::from(r.part_ms) > u64::from(r.segment_s) * 1000 {
        return bad(format!(
            "{p}part_ms = {} is longer than {p}segment_s ({} s)",
            r.part_ms, r.segment_s
        ));
    }
    in_range(&format!("{p}keep_hours"), r.keep_hours, 0, 87_600)?;
    in_range(&format!("{p}min_free_mb"), r.min_free_mb, 0, 1 << 20)?;
    in_range(&format!("{p}fsync_s"), r.fsync_s, 0, 3600)
}

impl Config {
    /// Rejects values that parse but cannot work, with the offending key in the message.
    pub fn validate(&self) -> Checked {
        let streams = self.streams()?;
        if streams.is_empty() {
            return bad("streams is empty; configure at least one stream".into());
        }
        let mut names = HashSet::new();
        let mut mounts = HashSet::new();
        for s in &streams {
            let prefix = if self.streams.is_empty() {
                String::new()
            } else {
                format!("streams[{}].", s.name)
            };
            check_name(&format!("{prefix}name"), &s.name)?;
            let mount_key = if self.streams.is_empty() {
                "rtsp.mount".to_string()
            } else {
                format!("{prefix}mount")
            };
            check_mount(&mount_key, &s.mount_path())?;
            s.validate(&prefix)?;
            let outputs = std::iter::once((s.name.clone(), s.mount_path())).chain(
                s.renditions
                    .iter()
                    .map(|r| (r.name.clone(), r.mount_path())),
            );
            for (name, mount) in outputs {
                if !names.insert(name.clone()) {
                    return bad(format!(
                        "stream name {name:?} is used twice; names must be unique across streams and renditions"
                    ));
                }
                if !mounts.insert(mount.clone()) {
                    return bad(format!(
                        "RTSP mount {mount:?} is used twice; each stream and rendition needs its own"
                    ));
                }
            }
        }

        if !self.streams.is_empty() && !self.push.is_empty() {
            return bad(
                "[[push]] belongs to the flat form; with [[streams]], put each push in its stream as [[streams.push]]".into(),
            );
        }
        let r = &self.rtsp;
        if self.streams.is_empty() {
            check_mount("rtsp.mount", &r.mount)?;
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
        let w = &self.webrtc;
        if w.enabled && w.transports.is_empty() {
            return bad("webrtc.transports is empty; offer udp, tcp or both".into());
        }
        for (key, v) in [
            ("webrtc.max_viewers", w.max_viewers),
            ("webrtc.handshake_timeout_s", w.handshake_timeout_s),
            ("webrtc.session_timeout_s", w.session_timeout_s),
        ] {
            if w.enabled && v == 0 {
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
        self.check_accounts()?;
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
        if h.tls && !t.enabled() {
            return bad(
                "http.tls = true needs a certificate: set tls.cert_file and tls.key_file".into(),
            );
        }
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
        let names: Vec<String> = streams
            .iter()
            .flat_map(|s| {
                std::iter::once(s.name.clone()).chain(s.renditions.iter().map(|r| r.name.clone()))
            })
            .collect();
        super::nvr::validate(
            &self.onvif,
            &self.hooks,
            &self.hook_limits,
            &self.analysis,
            &names,
            self.http.enabled,
        )?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad(format!(
                "log.level = {:?} is not a level (error, warn, info, debug, trace) or filter",
                self.log.level
            ));
        }
        Ok(())
    }
}

/// Whether the profile asked for is High (which allows a higher bitrate per level).
pub(crate) fn is_high(p: Profile264) -> bool {
    p == Profile264::High
}
