//! The AI frame hook: every `analysis.interval_s`, the newest picture of a stream (the snapshot
//! path: the raw picture from the capture's tap, scaled to `analysis.width`) goes to an
//! Ollama-compatible `POST /api/generate` (`model`, `prompt`, `images: [base64 JPEG]`,
//! `stream: false`). The answer is kept for the status API, counted in `camstream_analysis_*`
//! and published as an `analysis` event for hooks.
//!
//! One request at a time (the loop waits for each); failures back off from `interval_s` up to
//! `max_backoff_s`. The loop only reads the camera's raw-picture tap, so a down or slow endpoint costs
//! the stream nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::{AnalysisConfig, HookEvent};
use crate::control::Control;
use crate::events::{self, Event};
use crate::metrics::names;
use crate::output::snapshot::{SNAPSHOT_TIMEOUT, scaled_height};
use crate::stream::status::unix_now;

/// Largest answer read from the model server.
const MAX_ANSWER: usize = 1 << 20;

/// What the status API shows under `analysis`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnalysisStatus {
    /// The stream analysed.
    pub stream: String,
    /// The model asked.
    pub model: String,
    /// The last answer, if any.
    pub answer: Option<String>,
    /// When it came (seconds since the Unix epoch).
    pub answered_at_unix: Option<u64>,
    /// How long that request took, in ms.
    pub duration_ms: Option<u64>,
    /// Size of the last picture sent.
    pub picture: Option<(u32, u32)>,
    /// Requests that got an answer.
    pub ok: u64,
    /// Requests that failed (endpoint down, slow, or a bad answer).
    pub failed: u64,
    /// Failures in a row now; the next attempt waits longer for each.
    pub consecutive_failures: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// The running analysis; cheap to clone.
#[derive(Clone, Default)]
pub struct Analysis {
    status: Arc<Mutex<AnalysisStatus>>,
}

impl Analysis {
    /// The status for the API.
    pub fn status(&self) -> AnalysisStatus {
        self.status.lock().unwrap().clone()
    }
}

/// Why one round failed.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("no picture: {0}")]
    NoPicture(String),
    #[error(transparent)]
    Web(#[from] crate::webclient::WebError),
    #[error("the model server answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the model server's answer has no \"response\" text: {0}")]
    BadAnswer(String),
}

/// The delay before the next round after `failures` failures in a row.
fn next_delay(c: &AnalysisConfig, failures: u32) -> Duration {
    let base = u64::from(c.interval_s);
    let factor = 1u64 << failures.min(16);
    Duration::from_secs(
        base.saturating_mul(factor)
            .min(u64::from(c.max_backoff_s).max(base)),
    )
}

/// Starts the analysis loop when `[analysis]` is enabled; it runs until `cancel`.
pub fn start(
    config: &AnalysisConfig,
    control: Arc<Control>,
    cancel: CancellationToken,
) -> Option<Analysis> {
    if !config.enabled {
        return None;
    }
    let stream = if config.stream.is_empty() {
        control.cameras().first()?.name.clone()
    } else {
        config.stream.clone()
    };
    for r in ["ok", "failed", "no_picture"] {
        let _ = metrics::counter!(names::ANALYSIS_REQUESTS, "result" => r);
    }
    metrics::gauge!(names::ANALYSIS_LAST_SUCCESS).set(0.0);
    let analysis = Analysis::default();
    {
        let mut s = analysis.status.lock().unwrap();
        s.stream = stream.clone();
        s.model = config.model.clone();
    }
    tracing::info!(stream = %stream, url = %config.url, model = %config.model, interval_s = config.interval_s, "Frame analysis active");
    let (c, a) = (config.clone(), analysis.clone());
    tokio::spawn(async move {
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return,
            }
            let t0 = Instant::now();
            let round = tokio::select! {
                r = round(&c, &control, &stream) => r,
                _ = cancel.cancelled() => return,
            };
            let mut s = a.status.lock().unwrap();
            match round {
                Ok((answer, size)) => {
                    let ms = t0.elapsed().as_millis() as u64;
                    metrics::counter!(names::ANALYSIS_REQUESTS, "result" => "ok").increment(1);
                    metrics::gauge!(names::ANALYSIS_DURATION).set(ms as f64 / 1000.0);
                    metrics::gauge!(names::ANALYSIS_LAST_SUCCESS).set(unix_now() as f64);
                    tracing::info!(stream = %stream, duration_ms = ms, answer = %answer, "Analysis answered");
                    s.ok += 1;
                    s.consecutive_failures = 0;
                    s.answer = Some(answer.clone());
                    s.answered_at_unix = Some(unix_now());
                    s.duration_ms = Some(ms);
                    s.picture = Some(size);
                    events::publish(
                        Event::new(HookEvent::Analysis, &stream)
                            .with("model", &c.model)
                            .with("answer", answer)
                            .with("duration_ms", ms),
                    );
                    delay = next_delay(&c, 0);
                }
                Err(RoundError::NoPicture(e)) => {
                    // The camera is restarting or not up yet: not the endpoint's fault.
                    metrics::counter!(names::ANALYSIS_REQUESTS, "result" => "no_picture")
                        .increment(1);
                    tracing::debug!(stream = %stream, error = %e, "Analysis skipped: no picture");
                    s.last_error = Some(format!("no picture: {e}"));
                    delay = Duration::from_secs(u64::from(c.interval_s).min(5));
                }
                Err(e) => {
                    metrics::counter!(names::ANALYSIS_REQUESTS, "result" => "failed").increment(1);
                    s.failed += 1;
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                    s.last_error = Some(e.to_string());
                    delay = next_delay(&c, s.consecutive_failures);
                    tracing::warn!(stream = %stream, error = %e, retry_s = delay.as_secs(), "Analysis failed");
                }
            }
        }
    });
    Some(analysis)
}

/// One picture to the model and its answer back.
async fn round(
    c: &AnalysisConfig,
    control: &Control,
    stream: &str,
) -> Result<(String, (u32, u32)), RoundError> {
    let (cam, enc, snapshots) = control
        .encoding(stream)
        .ok_or_else(|| RoundError::NoPicture(format!("no stream named {stream:?}")))?;
    let (sw, sh) = cam.picture_size(&enc);
    let width = c.width.min(sw) & !1;
    let height = if width == sw {
        sh
    } else {
        scaled_height(sw, sh, width)
    };
    let jpeg = tokio::time::timeout(SNAPSHOT_TIMEOUT, snapshots.snapshot(width, height))
        .await
        .map_err(|_| RoundError::NoPicture("the snapshot timed out".into()))?
        .map_err(|e| RoundError::NoPicture(e.to_string()))?;
    let body = json!({
        "model": c.model,
        "prompt": c.prompt,
        "images": [base64::engine::general_purpose::STANDARD.encode(jpeg.data.as_slice())],
        "stream": false,
    });
    let url = format!("{}/api/generate", c.url.trim_end_matches('/'));
    let answer = crate::webclient::post_json(
        &url,
        body.to_string().into_bytes(),
        Duration::from_secs(u64::from(c.timeout_s)),
        MAX_ANSWER,
    )
    .await?;
    if !(200..300).contains(&answer.status) {
        return Err(RoundError::Status {
            status: answer.status,
            body: String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]).into(),
        });
    }
    let v: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|e| RoundError::BadAnswer(e.to_string()))?;
    let text = v
        .get("response")
        .and_then(|r| r.as_str())
        .ok_or_else(|| RoundError::BadAnswer(v.to_string().chars().take(200).collect()))?;
    Ok((text.trim().to_string(), (jpeg.width, jpeg.height)))
}

/// `camstream check` line for `[analysis]`, as `(ok, what, detail)`: the server is connected to
/// (1 s), no request is sent.
pub fn check(c: &AnalysisConfig) -> Option<(bool, String, String)> {
    use std::net::ToSocketAddrs;
    if !c.enabled {
        return None;
    }
    let what = "analysis endpoint".to_string();
    let addr = c
        .url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .map(|h| {
            if h.contains(':') {
                h.to_string()
            } else {
                format!("{h}:80")
            }
        });
    let reachable = addr
        .as_deref()
        .and_then(|a| a.to_socket_addrs().ok()?.next())
        .map(|sa| std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(1)));
    Some(match reachable {
        Some(Ok(_)) => (true, what, format!("{} answers", c.url)),
        Some(Err(e)) => (
            false,
            what,
            format!(
                "{} is not reachable now ({e}); the daemon retries with backoff",
                c.url
            ),
        ),
        None => (false, what, format!("{} does not resolve", c.url)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = AnalysisConfig {
            interval_s: 10,
            max_backoff_s: 60,
            ..Default::default()
        };
        let d: Vec<u64> = (0..5).map(|f| next_delay(&c, f).as_secs()).collect();
        assert_eq!(d, [10, 20, 40, 60, 60]);
    }
}
