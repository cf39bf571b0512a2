//! The one door live control goes through: the running streams, their RTSP mounts, and the
//! changes the control API (`PATCH`) and `SIGHUP` ask for. Each change is applied to the running
//! pipeline where it can be, or by restarting that stream alone with reason `reconfigure`; a
//! stream that did not change is never touched.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StreamConfig};
use crate::output::rtsp::RtspServer;
use crate::output::snapshot::Snapshotter;
use crate::output::{self, Outputs, registry};
use crate::stream::camera::{self, Applied, Camera, Encoding};
use crate::stream::clock::SharedTime;
use crate::stream::restart::Exit;
use crate::stream::status::State;

/// Why a change was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No stream or rendition has that name.
    #[error("no stream named {0:?}")]
    NotFound(String),
    /// The body is not a JSON object of known settings, or a value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The stream's task has ended.
    #[error(transparent)]
    NotRunning(#[from] camera::ControlError),
    /// A stream could not be started (no encoder works, a missing element).
    #[error("stream {name} cannot start: {reason}")]
    Start {
        /// The stream.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The answer to a change.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The stream changed.
    pub stream: String,
    /// How it was applied.
    pub applied: Applied,
}

struct Running {
    camera: Camera,
    cancel: CancellationToken,
    snapshots: Arc<Snapshotter>,
    outputs: Outputs,
    mjpeg: Arc<crate::output::mjpeg::Mjpeg>,
    /// Its HLS channels (issue #28).
    hls: Arc<output::hls::Hls>,
}

/// The running streams and what changes them.
pub struct Control {
    streams: RwLock<BTreeMap<String, Running>>,
    order: RwLock<Vec<String>>,
    config: RwLock<Arc<Config>>,
    rtsp: Arc<RtspServer>,
    time: SharedTime,
    cancel: CancellationToken,
    exits: mpsc::UnboundedSender<(String, Exit)>,
}

/// What a stream's structure is: changing any of it re-creates the stream's hubs and mounts.
fn shape(s: &StreamConfig) -> Vec<(String, String)> {
    std::iter::once((s.name.clone(), s.mount_path()))
        .chain(
            s.renditions
                .iter()
                .map(|r| (r.name.clone(), r.mount_path())),
        )
        .collect()
}

/// Merges `patch` into `base`: objects merge key by key, anything else replaces.
pub(crate) fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

impl Control {
    /// An empty control over `rtsp`; `exits` hears when a stream's supervisor gives up.
    pub fn new(
        config: Arc<Config>,
        rtsp: Arc<RtspServer>,
        time: SharedTime,
        cancel: CancellationToken,
        exits: mpsc::UnboundedSender<(String, Exit)>,
    ) -> Self {
        Control {
            streams: RwLock::new(BTreeMap::new()),
            order: RwLock::new(Vec::new()),
            config: RwLock::new(config),
            rtsp,
            time,
            cancel,
            exits,
        }
    }

    /// The configuration in force (with streams as last applied).
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    /// The RTSP server.
    pub fn rtsp(&self) -> &Arc<RtspServer> {
        &self.rtsp
    }

    /// Chooses the encoder (test encodes run off the async threads), starts the camera and
    /// mounts its encodings.
    pub async fn start_stream(&self, config: StreamConfig) -> Result<(), ControlError> {
        let name = config.name.clone();
        let c = config.clone();
        let selection = tokio::task::spawn_blocking(move || camera::choose_encoder(&c))
            .await
            .map_err(|e| ControlError::Start {
                name: name.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| ControlError::Start {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        tracing::info!(stream = %name, encoder = selection.encoder.element(), reason = %selection.reason(), "Encoder selected");
        if let Some(caveat) = crate::stream::encoder::caveats(&config, selection.encoder) {
            tracing::info!(stream = %name, "{caveat}");
        }
        if config.source.kind == crate::config::SourceKind::Test {
            tracing::warn!(
                stream = %name,
                pattern = %config.source.pattern,
                "Streaming a TEST PATTERN, not a camera (source.kind = \"test\")"
            );
        }
        // A source without camera controls is known before it opens: refuse what it cannot do.
        if let Err(e) = crate::stream::image::check_static(&config) {
            return Err(ControlError::Start {
                name,
                reason: e.to_string(),
            });
        }
        let cancel = self.cancel.child_token();
        let (camera, task) = camera::start(config, selection, self.time.clone(), cancel.clone());
        // Motion detection's starts and ends onto the event bus.
        crate::motion::follow(&camera, cancel.clone());
        let started = registry::start_camera(
            &camera,
            &self.rtsp,
            &output::Context {
                time: self.time.clone(),
                hls: self.config().hls.clone(),
            },
            &cancel,
        );
        let exits = self.exits.clone();
        let n = name.clone();
        tokio::spawn(async move {
            let exit = task.await.unwrap_or_else(|e| {
                tracing::error!(stream = %n, error = %e, "Camera task panicked");
                Exit::MaxRetriesExceeded
            });
            let _ = exits.send((n, exit));
        });
        self.order.write().unwrap().push(name.clone());
        self.streams.write().unwrap().insert(
            name,
            Running {
                camera,
                cancel,
                snapshots: started.snapshots,
                outputs: started.outputs,
                mjpeg: started.mjpeg,
                hls: started.hls,
            },
        );
        Ok(())
    }

    /// Stops a stream: its mounts go away (its viewers are disconnected) and its capture ends.
    pub async fn stop_stream(&self, name: &str) {
        let running = self.streams.write().unwrap().remove(name);
        self.order.write().unwrap().retain(|n| n != name);
        let Some(r) = running else { return };
        for e in &r.camera.encodings {
            self.rtsp.unmount(&e.mount);
        }
        r.cancel.cancel();
        // The supervisor stops its pipeline within its own bound; wait for the state to say so.
        let mut status = r.camera.watch_status();
        let _ = tokio::time::timeout(
            Duration::from_secs(4),
            status.wait_for(|s| s.health.state == State::Stopped),
        )
        .await;
        tracing::info!(stream = %name, "Stream stopped");
    }

    /// Every running camera, in configuration order.
    pub fn cameras(&self) -> Vec<Camera> {
        let streams = self.streams.read().unwrap();
        self.order
            .read()
            .unwrap()
            .iter()
            .filter_map(|n| streams.get(n).map(|r| r.camera.clone()))
            .collect()
    }

    /// A running camera by its stream name.
    pub fn camera(&self, name: &str) -> Option<Camera> {
        self.streams
            .read()
            .unwrap()
            .get(name)
            .map(|r| r.camera.clone())
    }

    /// The outputs of a stream (other than RTSP).
    pub fn outputs(&self, name: &str) -> Option<Outputs> {
        self.streams
            .read()
            .unwrap()
            .get(name)
            .map(|r| r.outputs.clone())
    }

    /// The camera and encoding of a stream or rendition name, with its snapshot maker.
    pub fn encoding(&self, name: &str) -> Option<(Camera, Encoding, Arc<Snapshotter>)> {
        let streams = self.streams.read().unwrap();
        streams.values().find_map(|r| {
            r.camera
                .encodings
                .iter()
                .find(|e| e.name == name)
                .map(|e| (r.camera.clone(), e.clone(), r.snapshots.clone()))
        })
    }

    /// The MJPEG encoders of the camera named `camera` (issue 28).
    pub fn mjpeg(&self, camera: &str) -> Option<Arc<crate::output::mjpeg::Mjpeg>> {
        self.streams
            .read()
            .unwrap()
            .get(camera)
            .map(|r| r.mjpeg.clone())
    }

    /// The HLS of the camera that has the encoding `name`, and that encoding's channel.
    pub fn hls(&self, name: &str) -> Option<(Arc<output::hls::Hls>, Arc<output::hls::Channel>)> {
        let streams = self.streams.read().unwrap();
        streams
            .values()
            .find_map(|r| r.hls.channel(name).map(|c| (r.hls.clone(), c.clone())))
    }

    /// Applies a JSON merge patch to a stream's settings.
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<Outcome, ControlError> {
        let camera = match self.camera(name) {
            Some(c) => c,
            None if self.encoding(name).is_some() => {
                return Err(ControlError::Invalid(format!(
                    "{name} is a rendition: change it through its stream's renditions"
                )));
            }
            None => return Err(ControlError::NotFound(name.to_string())),
        };
        if !patch.is_object() {
            return Err(ControlError::Invalid(
                "the body must be a JSON object of settings, e.g. {\"encoder\": {\"bitrate_kbps\": 1000}}"
                    .into(),
            ));
        }
        let current = camera.config();
        let mut value =
            serde_json::to_value(&*current).map_err(|e| ControlError::Invalid(e.to_string()))?;
        merge(&mut value, patch);
        let new: StreamConfig = serde_json::from_value(value)
            .map_err(|e| ControlError::Invalid(format!("invalid settings: {e}")))?;
        let before =
            serde_json::to_value(&*current).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let after = serde_json::to_value(&new).map_err(|e| ControlError::Invalid(e.to_string()))?;
        if let Some(key) = not_live(&before, &after, "") {
            return Err(ControlError::Invalid(format!(
                "{key} cannot change through the API: set it in the configuration file and \
                 reload (SIGHUP). The API changes live settings only: encoder bitrate and \
                 keyframe interval, image settings, rendition bitrates, enabling or disabling \
                 an output"
            )));
        }
        if shape(&new) != shape(&current) {
            return Err(ControlError::Invalid(
                "name, mount and the set of renditions cannot change through the API; edit the \
                 configuration file and send SIGHUP"
                    .into(),
            ));
        }
        new.validate("")
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        camera
            .check_image(&new)
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let applied = camera.reconfigure(new.clone()).await?;
        // The capture took nothing, but an output section changed: its manager applies it live.
        let applied = if applied == Applied::Unchanged && new != *current {
            Applied::Live
        } else {
            applied
        };
        self.remember(new);
        tracing::info!(stream = %name, applied = ?applied, "Settings changed through the API");
        Ok(Outcome {
            stream: name.to_string(),
            applied,
        })
    }

    /// Records a stream's new settings in the configuration the status API shows.
    fn remember(&self, stream: StreamConfig) {
        let mut config = self.config.write().unwrap();
        let mut c = (**config).clone();
        if c.streams.is_empty() {
            c.source = stream.source;
            c.video = stream.video;
            c.encoder = stream.encoder;
            c.supervisor = stream.supervisor;
            c.renditions = stream.renditions;
            c.push = stream.push;
            c.image = stream.image;
            c.motion = stream.motion;
        } else if let Ok(v) = figment::value::Value::serialize(&stream) {
            for s in c.streams.iter_mut() {
                if s.find_ref("name").and_then(|n| n.as_str()) == Some(stream.name.as_str()) {
                    *s = v.clone();
                }
            }
        }
        *config = Arc::new(c);
    }

    /// Applies a re-read configuration: unchanged streams are untouched, changed ones are
    /// reconfigured (live or by a restart), new ones start and removed ones stop. Settings
    /// outside the streams need a daemon restart and are reported, not applied.
    pub async fn reload(&self, new: Config) -> Vec<Outcome> {
        let old = self.config();
        let new_streams = match new.streams() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "Configuration not reloaded");
                return Vec::new();
            }
        };
        for (section, changed) in [
            ("rtsp", old.rtsp != new.rtsp),
            ("http", old.http != new.http),
            ("auth", old.auth != new.auth),
            ("access", old.access != new.access),
            ("tls", old.tls != new.tls),
            ("log", old.log != new.log),
            ("webrtc", old.webrtc != new.webrtc),
            ("onvif", old.onvif != new.onvif),
            (
                "hooks",
                old.hooks != new.hooks || old.hook_limits != new.hook_limits,
            ),
            ("analysis", old.analysis != new.analysis),
            // MQTT (issue #25, branch events).
            ("mqtt", old.mqtt != new.mqtt),
        ] {
            if changed {
                tracing::warn!(
                    section,
                    "[{section}] changed; it takes effect when camstream restarts"
                );
            }
        }
        let mut outcomes = Vec::new();
        let wanted: Vec<String> = new_streams.iter().map(|s| s.name.clone()).collect();
        let running = self.order.read().unwrap().clone();
        for name in running {
            if !wanted.contains(&name) {
                self.stop_stream(&name).await;
                outcomes.push(Outcome {
                    stream: name,
                    applied: Applied::Restart,
                });
            }
        }
        for s in new_streams {
            let name = s.name.clone();
            let before = self.camera(&name).map(|c| c.config());
            let applied = match self.camera(&name) {
                Some(c) if shape(&c.config()) == shape(&s) => {
                    match c.reconfigure(s.clone()).await {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::error!(stream = %name, error = %e, "Reload not applied");
                            continue;
                        }
                    }
                }
                Some(_) => {
                    self.stop_stream(&name).await;
                    if let Err(e) = self.start_stream(s).await {
                        tracing::error!(error = %e, "Reload could not start a stream");
                    }
                    Applied::Restart
                }
                None => {
                    if let Err(e) = self.start_stream(s).await {
                        tracing::error!(error = %e, "Reload could not start a stream");
                        continue;
                    }
                    Applied::Restart
                }
            };
            // Output sections changed without touching the capture: applied live.
            let applied = match (applied, before) {
                (Applied::Unchanged, Some(b))
                    if self.camera(&name).is_some_and(|c| c.config() != b) =>
                {
                    Applied::Live
                }
                (a, _) => a,
            };
            outcomes.push(Outcome {
                stream: name,
                applied,
            });
        }
        *self.config.write().unwrap() = Arc::new(new);
        for o in &outcomes {
            if o.applied != Applied::Unchanged {
                tracing::info!(stream = %o.stream, applied = ?o.applied, "Reloaded");
            }
        }
        outcomes
    }

    /// Whether every required stream is streaming with fresh frames.
    pub fn required_streaming(&self) -> Vec<(String, bool)> {
        self.cameras()
            .into_iter()
            .filter(|c| c.config().required)
            .map(|c| (c.name.clone(), c.flowing()))
            .collect()
    }
}

/// The settings the API may change: live knobs only. Everything else (source kind, device and
/// pipeline fragments, push URLs and secrets, recording paths...) can run commands, read or
/// write files, or leak secrets, so it changes only through the configuration file.
fn is_live(path: &str) -> bool {
    const LIVE: &[&str] = &[
        "encoder.bitrate_kbps",
        "encoder.keyframe_interval",
        "record.enabled",
        // Audio (issue #24): set on the running audio pipeline.
        "audio.mute",
        "audio.gain_db",
    ];
    // A tuning file is a path the camera stack reads: a file setting, not a live one.
    LIVE.contains(&path)
        || (path.starts_with("image.") && path != "image.tuning_file")
        || (path.starts_with("renditions[") && path.ends_with("].bitrate_kbps"))
        || (path.starts_with("push[") && path.ends_with("].enabled"))
        // Motion detection: everything but the analysed picture's size and rate.
        || path
            .strip_prefix("motion.")
            .is_some_and(|k| crate::config::motion::MotionConfig::is_live_key(k.split(['.', '[']).next().unwrap_or(k)))
}

/// The first setting (dotted path; list entries by name) that differs between `before` and
/// `after` and is not live; `None` when only live settings changed.
fn not_live(before: &Value, after: &Value, path: &str) -> Option<String> {
    if before == after {
        return None;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                not_live(x, y, &join(k))
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter().zip(b).enumerate().find_map(|(i, (x, y))| {
                let id = match (x.get("name"), y.get("name")) {
                    (Some(Value::String(n)), Some(Value::String(m))) if n == m => n.clone(),
                    _ => i.to_string(),
                };
                not_live(x, y, &format!("{path}[{id}]"))
            })
        }
        _ => (!is_live(path)).then(|| path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_settings_change_through_the_api() {
        let before = serde_json::json!({
            "source": {"kind": "test", "pipeline": ""},
            "encoder": {"bitrate_kbps": 4000, "keyframe_interval": 30, "kind": "x264"},
            "image": {"brightness": 0.0},
            "renditions": [{"name": "low", "bitrate_kbps": 300, "width": 320}],
            "push": [{"name": "gcs", "enabled": true, "url": "srt://h:1?streamid=k"}],
            "record": {"enabled": false, "path": "/var/lib/camstream"},
        });
        let live = |edit: serde_json::Value| {
            let mut after = before.clone();
            merge(&mut after, &edit);
            not_live(&before, &after, "")
        };
        for ok in [
            serde_json::json!({"encoder": {"bitrate_kbps": 1000, "keyframe_interval": 15}}),
            serde_json::json!({"image": {"brightness": 0.4}}),
            serde_json::json!({"record": {"enabled": true}}),
        ] {
            assert_eq!(live(ok.clone()), None, "{ok}");
        }
        let mut after = before.clone();
        after["renditions"][0]["bitrate_kbps"] = 200.into();
        after["push"][0]["enabled"] = false.into();
        assert_eq!(not_live(&before, &after, ""), None);
        let refused = [
            (
                serde_json::json!({"source": {"kind": "pipeline"}}),
                "source.kind",
            ),
            (
                serde_json::json!({"source": {"pipeline": "filesrc location=/etc/hostname"}}),
                "source.pipeline",
            ),
            (
                serde_json::json!({"encoder": {"kind": "openh264"}}),
                "encoder.kind",
            ),
            (
                serde_json::json!({"record": {"path": "/tmp"}}),
                "record.path",
            ),
        ];
        for (edit, key) in refused {
            assert_eq!(live(edit).as_deref(), Some(key));
        }
        let mut after = before.clone();
        after["push"][0]["url"] = "srt://evil:1".into();
        assert_eq!(
            not_live(&before, &after, "").as_deref(),
            Some("push[gcs].url")
        );
        after = before.clone();
        after["push"] = serde_json::json!([]);
        assert_eq!(not_live(&before, &after, "").as_deref(), Some("push"));
    }

    #[test]
    fn merge_patches_objects_and_replaces_values() {
        let mut base = serde_json::json!({"encoder": {"bitrate_kbps": 4000, "kind": "x264"}, "required": true});
        merge(
            &mut base,
            &serde_json::json!({"encoder": {"bitrate_kbps": 1000}, "required": false}),
        );
        assert_eq!(
            base,
            serde_json::json!({"encoder": {"bitrate_kbps": 1000, "kind": "x264"}, "required": false})
        );
    }
}
