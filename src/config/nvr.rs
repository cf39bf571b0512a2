//! The NVR-facing sections: `[onvif]` (discovery and the device/media services), `[[hooks]]`
//! (commands and webhooks run on events) and `[analysis]` (pictures sent to a vision model).
//! Their checks live here too, so the shared files only gain a line each.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::rules::in_range;

/// `[onvif]`: answer NVRs as an ONVIF Profile S camera (docs/onvif.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnvifConfig {
    /// Serve `/onvif/device_service` and `/onvif/media_service` on the HTTP port. Default false.
    pub enabled: bool,
    /// Answer WS-Discovery probes and announce Hello/Bye. Default true (when enabled).
    pub discovery: bool,
    /// UDP port for WS-Discovery. Default 3702 (the standard; change only for tests).
    pub discovery_port: u16,
    /// Device name, in the discovery scopes and GetDeviceInformation. Default "camstream".
    pub name: String,
    /// Location scope (e.g. "garage"). Default empty: no location scope.
    pub location: String,
    /// Hardware scope and model. Default "camstream".
    pub hardware: String,
    /// Oldest accepted WS-UsernameToken `Created` time, in seconds either side of now. Default 300.
    pub max_clock_skew_s: u32,
}

impl Default for OnvifConfig {
    fn default() -> Self {
        OnvifConfig {
            enabled: false,
            discovery: true,
            discovery_port: 3702,
            name: "camstream".into(),
            location: String::new(),
            hardware: "camstream".into(),
            max_clock_skew_s: 300,
        }
    }
}

/// An event a hook can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// A camera stopped delivering pictures (its capture entered backoff).
    CameraDown,
    /// A camera that was down is streaming again.
    CameraUp,
    /// An RTSP client connected.
    ViewerConnected,
    /// An RTSP client went away.
    ViewerDisconnected,
    /// A recording segment was finished on disk.
    RecordingSegment,
    /// A push stopped working.
    PushDown,
    /// A push that was down works again.
    PushUp,
    /// The vision model answered about a picture.
    Analysis,
    /// Motion began in a stream's picture (fields: `event_id`, `score`, `zone`).
    MotionStart,
    /// The motion in a stream's picture ended (fields: `event_id`, `score`, `zone`,
    /// `duration_ms`).
    MotionEnd,
}

impl HookEvent {
    /// Every event, for metric labels.
    pub const ALL: &'static [HookEvent] = &[
        HookEvent::CameraDown,
        HookEvent::CameraUp,
        HookEvent::ViewerConnected,
        HookEvent::ViewerDisconnected,
        HookEvent::RecordingSegment,
        HookEvent::PushDown,
        HookEvent::PushUp,
        HookEvent::Analysis,
        HookEvent::MotionStart,
        HookEvent::MotionEnd,
    ];

    /// The name used in configuration, environment variables, JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::CameraDown => "camera_down",
            HookEvent::CameraUp => "camera_up",
            HookEvent::ViewerConnected => "viewer_connected",
            HookEvent::ViewerDisconnected => "viewer_disconnected",
            HookEvent::RecordingSegment => "recording_segment",
            HookEvent::PushDown => "push_down",
            HookEvent::PushUp => "push_up",
            HookEvent::Analysis => "analysis",
            HookEvent::MotionStart => "motion_start",
            HookEvent::MotionEnd => "motion_end",
        }
    }
}

/// One `[[hooks]]` entry: a command or a webhook run on an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookConfig {
    /// The event. Required.
    pub on: Option<HookEvent>,
    /// Only events of this stream. Default empty: every stream.
    pub stream: String,
    /// A command as argv (no shell); event fields arrive as `CAMSTREAM_*` variables.
    pub run: Vec<String>,
    /// An `http://` URL the event is POSTed to as JSON.
    pub webhook: String,
    /// Longest a run may take; the command is killed then. Default 10 s.
    pub timeout_s: u32,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            on: None,
            stream: String::new(),
            run: Vec::new(),
            webhook: String::new(),
            timeout_s: 10,
        }
    }
}

/// `[hook_limits]`: how much hook work may be outstanding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookLimits {
    /// Hooks running at once; more wait for a slot, in event order. Default 4.
    pub max_concurrent: u32,
}

impl Default for HookLimits {
    fn default() -> Self {
        HookLimits { max_concurrent: 4 }
    }
}

/// `[analysis]`: the latest picture sent to an Ollama-compatible vision model (docs/hooks.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// Run the analysis. Default false.
    pub enabled: bool,
    /// The stream whose pictures are analysed. Default empty: the first stream.
    pub stream: String,
    /// Base URL of the Ollama-compatible server (`http://` only). Default
    /// `http://127.0.0.1:11434`.
    pub url: String,
    /// Model name. Default "llava".
    pub model: String,
    /// The question asked about each picture. Default "Describe this picture in one sentence.".
    pub prompt: String,
    /// Seconds between pictures. Default 30.
    pub interval_s: u32,
    /// Longest one request may take. Default 60 s.
    pub timeout_s: u32,
    /// Width of the picture sent (height keeps the aspect ratio). Default 640.
    pub width: u32,
    /// Longest wait after failures, which back off from `interval_s`. Default 300 s.
    pub max_backoff_s: u32,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            enabled: false,
            stream: String::new(),
            url: "http://127.0.0.1:11434".into(),
            model: "llava".into(),
            prompt: "Describe this picture in one sentence.".into(),
            interval_s: 30,
            timeout_s: 60,
            width: 640,
            max_backoff_s: 300,
        }
    }
}

fn bad(m: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(m))
}

/// Checks `[onvif]`, `[[hooks]]` and `[analysis]`; `streams` are the names known.
pub(crate) fn validate(
    onvif: &OnvifConfig,
    hooks: &[HookConfig],
    limits: &HookLimits,
    analysis: &AnalysisConfig,
    streams: &[String],
    http_enabled: bool,
) -> Result<(), ConfigError> {
    if onvif.enabled {
        if !http_enabled {
            return bad("onvif.enabled needs the HTTP sidecar (http.enabled = true): the ONVIF services are served on http.port".into());
        }
        if onvif.name.trim().is_empty() {
            return bad("onvif.name is empty".into());
        }
        if onvif.discovery && onvif.discovery_port == 0 {
            return bad(
                "onvif.discovery_port = 0 must be a UDP port (3702 is the standard)".into(),
            );
        }
        in_range("onvif.max_clock_skew_s", onvif.max_clock_skew_s, 5, 86_400)?;
    }
    in_range("hook_limits.max_concurrent", limits.max_concurrent, 1, 64)?;
    for (i, h) in hooks.iter().enumerate() {
        let key = format!("hooks[{i}]");
        if h.on.is_none() {
            return bad(format!(
                "{key}.on is missing: one of camera_down, camera_up, viewer_connected, viewer_disconnected, recording_segment, push_down, push_up, analysis"
            ));
        }
        match (h.run.is_empty(), h.webhook.is_empty()) {
            (true, true) => {
                return bad(format!(
                    "{key}: set run (a command as a list) or webhook (a URL)"
                ));
            }
            (false, false) => return bad(format!("{key}: set run or webhook, not both")),
            _ => {}
        }
        if !h.run.is_empty() && h.run[0].trim().is_empty() {
            return bad(format!("{key}.run: the program (first element) is empty"));
        }
        if !h.webhook.is_empty() {
            check_http_url(&format!("{key}.webhook"), &h.webhook)?;
        }
        if !h.stream.is_empty() && !streams.contains(&h.stream) {
            return bad(format!("{key}.stream = {:?} is not a stream", h.stream));
        }
        in_range(&format!("{key}.timeout_s"), h.timeout_s, 1, 3600)?;
    }
    let a = analysis;
    if a.enabled {
        check_http_url("analysis.url", &a.url)?;
        if a.model.trim().is_empty() {
            return bad("analysis.model is empty".into());
        }
        if !a.stream.is_empty() && !streams.contains(&a.stream) {
            return bad(format!("analysis.stream = {:?} is not a stream", a.stream));
        }
        in_range("analysis.interval_s", a.interval_s, 1, 86_400)?;
        in_range("analysis.timeout_s", a.timeout_s, 1, 3600)?;
        in_range("analysis.width", a.width, 16, 4096)?;
        in_range("analysis.max_backoff_s", a.max_backoff_s, 1, 86_400)?;
    }
    Ok(())
}

/// Accepts `http://host[:port][/path]`; HTTPS is refused with the reason.
pub fn check_http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match url.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ if url.starts_with("https://") => bad(format!(
            "{key} = {url:?}: only http:// is supported (put a local TLS proxy in front for https)"
        )),
        _ => bad(format!("{key} = {url:?} is not an http:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_need_one_action_and_an_event() {
        let names = vec!["video".to_string()];
        let (o, a) = (OnvifConfig::default(), AnalysisConfig::default());
        let ok = HookConfig {
            on: Some(HookEvent::CameraDown),
            run: vec!["/bin/true".into()],
            ..Default::default()
        };
        assert!(
            validate(
                &o,
                std::slice::from_ref(&ok),
                &HookLimits::default(),
                &a,
                &names,
                true
            )
            .is_ok()
        );
        let none = HookConfig {
            on: None,
            ..ok.clone()
        };
        assert!(
            validate(&o, &[none], &HookLimits::default(), &a, &names, true)
                .unwrap_err()
                .to_string()
                .contains("hooks[0].on")
        );
        let both = HookConfig {
            webhook: "http://x/".into(),
            ..ok.clone()
        };
        assert!(
            validate(&o, &[both], &HookLimits::default(), &a, &names, true)
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let tls = HookConfig {
            run: vec![],
            webhook: "https://x/".into(),
            ..ok.clone()
        };
        assert!(
            validate(&o, &[tls], &HookLimits::default(), &a, &names, true)
                .unwrap_err()
                .to_string()
                .contains("only http://")
        );
        let stream = HookConfig {
            stream: "nope".into(),
            ..ok
        };
        assert!(
            validate(&o, &[stream], &HookLimits::default(), &a, &names, true)
                .unwrap_err()
                .to_string()
                .contains("hooks[0].stream")
        );
    }

    #[test]
    fn onvif_needs_http() {
        let o = OnvifConfig {
            enabled: true,
            ..Default::default()
        };
        let e = validate(
            &o,
            &[],
            &HookLimits::default(),
            &AnalysisConfig::default(),
            &[],
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("http.enabled"));
    }

    #[test]
    fn the_shipped_file_states_the_defaults() {
        let sources = crate::config::Sources {
            file: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/config/camstream.toml").into()),
            use_default_file: false,
            overrides: Vec::new(),
        };
        let c = crate::config::load(&sources, &Default::default()).unwrap();
        assert_eq!(c.onvif, OnvifConfig::default());
        assert_eq!(c.hook_limits, HookLimits::default());
        assert_eq!(c.analysis, AnalysisConfig::default());
        assert!(c.hooks.is_empty());
    }
}
