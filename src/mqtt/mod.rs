//! MQTT: each camera's motion, last event picture, state, frame rate and bitrate published to a
//! broker, Home Assistant discovery for them ([`discovery`]), and Home Assistant's switches
//! (motion detection, recording) applied through the same control path and role rules as a
//! `PATCH` (`Access::check` at `Door::Mqtt` with the role `mqtt.role`).
//!
//! A broker that is away never touches streaming: everything published goes through a bounded
//! [`Outbox`] (the oldest dropped and counted) that only this module's tasks wait on, and the
//! connection comes back by itself with a capped backoff, announcing `online` (retained; the
//! last will says `offline`) and the discovery again.

pub mod discovery;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::{Access, Action, Door, Identity, Principal, Via};
use crate::config::{Config, ConfigError, HookEvent, MqttConfig};
use crate::control::Control;
use crate::metrics::names;
use discovery::{Device, Switch, Topics};

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest message sent (pictures); brokers' default limit is far above.
const MAX_OUTGOING: usize = 8 * 1024 * 1024;
/// Largest message accepted from the broker (commands are a word).
const MAX_INCOMING: usize = 64 * 1024;
/// How long a picture for an event may take to make.
const PICTURE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why MQTT could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The settings are unusable (URL, password file, CA file).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS settings could not be applied.
    #[error("mqtt TLS: {0}")]
    Tls(String),
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Retained at the broker.
    pub retain: bool,
}

impl Message {
    fn new(topic: String, payload: impl Into<Vec<u8>>, retain: bool) -> Self {
        Message {
            topic,
            payload: payload.into(),
            retain,
        }
    }
}

/// The bounded queue between what happens and the broker: pushing never waits; when full the
/// oldest message is dropped and counted.
pub struct Outbox {
    queue: Mutex<VecDeque<Message>>,
    capacity: usize,
    wake: Notify,
}

impl Outbox {
    /// An empty outbox of `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Message>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `m`; returns whether an older message was dropped for it.
    pub fn push(&self, m: Message) -> bool {
        let dropped = {
            let mut q = self.lock();
            let dropped = q.len() >= self.capacity;
            if dropped {
                q.pop_front();
            }
            q.push_back(m);
            dropped
        };
        if dropped {
            metrics::counter!(names::MQTT_DROPPED).increment(1);
        }
        self.wake.notify_one();
        dropped
    }

    /// The oldest message, waiting for one.
    pub async fn pop(&self) -> Message {
        loop {
            if let Some(m) = self.lock().pop_front() {
                return m;
            }
            self.wake.notified().await;
        }
    }

    /// Messages waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no message waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the tasks share.
struct Ctx {
    topics: Topics,
    device: Device,
    discovery: bool,
    outbox: Outbox,
    control: Arc<Control>,
    access: Arc<Access>,
    /// Who the broker's commands are.
    broker: Principal,
    connected: AtomicBool,
}

/// The client id in use: `mqtt.client_id`, or `camstream-` and the host name.
fn client_id(c: &MqttConfig) -> String {
    if !c.client_id.is_empty() {
        return c.client_id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    if host.is_empty() {
        "camstream".into()
    } else {
        format!("camstream-{host}")
    }
}

fn options(c: &MqttConfig, id: &str, topics: &Topics) -> Result<MqttOptions, MqttError> {
    let broker = c.broker()?;
    let mut o = MqttOptions::new(id, broker.host.clone(), broker.port);
    o.set_keep_alive(Duration::from_secs(u64::from(c.keep_alive_s)));
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_INCOMING, MAX_OUTGOING);
    o.set_last_will(LastWill::new(
        topics.availability(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if !c.username.is_empty() {
        o.set_credentials(c.username.clone(), c.password()?);
    }
    if broker.tls {
        use rumqttc::tokio_native_tls::native_tls;
        let mut b = native_tls::TlsConnector::builder();
        if !c.ca_file.is_empty() {
            let pem = std::fs::read(&c.ca_file)
                .map_err(|e| MqttError::Tls(format!("mqtt.ca_file {:?}: {e}", c.ca_file)))?;
            let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| {
                MqttError::Tls(format!("mqtt.ca_file {:?} is not PEM: {e}", c.ca_file))
            })?;
            b.add_root_certificate(cert);
        }
        if c.insecure {
            b.danger_accept_invalid_certs(true);
            b.danger_accept_invalid_hostnames(true);
        }
        let connector = b.build().map_err(|e| MqttError::Tls(e.to_string()))?;
        o.set_transport(Transport::tls_with_config(
            TlsConfiguration::NativeConnector(connector),
        ));
    }
    Ok(o)
}

/// Starts MQTT when `[mqtt].url` is set: the connection, the publishers and the command
/// handler, until `cancel` (then `offline` is published and the connection closed).
pub fn start(
    config: &Config,
    access: Arc<Access>,
    control: Arc<Control>,
    cancel: CancellationToken,
) -> Result<Option<JoinHandle<()>>, MqttError> {
    let c = &config.mqtt;
    if !c.enabled() {
        return Ok(None);
    }
    let id = client_id(c);
    let topics = Topics::new(
        &c.topic_prefix,
        &c.discovery_prefix,
        &discovery::node_id(&id),
    );
    let opts = options(c, &id, &topics)?;
    metrics::gauge!(names::MQTT_CONNECTED).set(0.0);
    let _ = metrics::counter!(names::MQTT_PUBLISHED);
    let _ = metrics::counter!(names::MQTT_DROPPED);
    for r in ["ok", "refused", "invalid"] {
        let _ = metrics::counter!(names::MQTT_COMMANDS, "result" => r);
    }
    // The client's own request channel stays small: the outbox is the queue that bounds.
    let (client, eventloop) = AsyncClient::new(opts, 16);
    let ctx = Arc::new(Ctx {
        topics,
        device: Device {
            name: config.onvif.name.clone(),
            model: config.onvif.hardware.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        discovery: c.discovery,
        outbox: Outbox::new(c.queue as usize),
        control,
        access,
        broker: Principal::Account(Arc::new(Identity {
            name: "mqtt".into(),
            role: c.role,
            streams: Vec::new(),
            via: Via::Token,
        })),
        connected: AtomicBool::new(false),
    });
    let broker = c.broker()?;
    tracing::info!(broker = %format!("{}:{}", broker.host, broker.port), tls = broker.tls, client_id = %id, base = %ctx.topics.base, "MQTT starting");
    let (epoch_tx, epoch_rx) = watch::channel(0u64);
    tokio::spawn(forward(
        ctx.clone(),
        client.clone(),
        epoch_rx.clone(),
        cancel.clone(),
    ));
    tokio::spawn(announce(
        ctx.clone(),
        client.clone(),
        epoch_rx,
        cancel.clone(),
    ));
    tokio::spawn(follow_events(ctx.clone(), cancel.clone()));
    tokio::spawn(publish_states(
        ctx.clone(),
        Duration::from_secs(u64::from(c.state_interval_s)),
        cancel.clone(),
    ));
    Ok(Some(tokio::spawn(run(
        ctx, client, eventloop, epoch_tx, cancel,
    ))))
}

/// Drives the connection: reconnects with backoff, counts connections, hands commands on.
async fn run(
    ctx: Arc<Ctx>,
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    epoch: watch::Sender<u64>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    // The first failure of a run of them is a warning, the rest debug: an operator sees why,
    // once, and a broker away for a day does not fill the log.
    let mut warned = false;
    loop {
        let polled = tokio::select! {
            p = eventloop.poll() => p,
            _ = cancel.cancelled() => break,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(250);
                warned = false;
                ctx.connected.store(true, Ordering::SeqCst);
                metrics::gauge!(names::MQTT_CONNECTED).set(1.0);
                tracing::info!("MQTT connected");
                epoch.send_modify(|e| *e += 1);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some((stream, switch)) = ctx.topics.parse_command(&p.topic) {
                    let payload = String::from_utf8_lossy(&p.payload).trim().to_string();
                    tokio::spawn(command(ctx.clone(), stream.to_string(), switch, payload));
                }
            }
            Ok(_) => {}
            Err(e) => {
                if ctx.connected.swap(false, Ordering::SeqCst) {
                    tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                    warned = true;
                } else if !warned {
                    tracing::warn!(error = %e, "MQTT broker unreachable; retrying (further failures are logged at debug)");
                    warned = true;
                } else {
                    tracing::debug!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT broker unreachable");
                }
                metrics::gauge!(names::MQTT_CONNECTED).set(0.0);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    // A clean goodbye: `offline` retained, then DISCONNECT (which keeps the broker from
    // sending the will, so the state is said here). Bounded: a dead broker costs 500 ms.
    if ctx.connected.load(Ordering::SeqCst) {
        let _ = client.try_publish(ctx.topics.availability(), QoS::AtLeastOnce, true, "offline");
        let _ = client.try_disconnect();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, eventloop.poll()).await {
            if matches!(e, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    }
    metrics::gauge!(names::MQTT_CONNECTED).set(0.0);
}

/// Hands the outbox's messages to the connection while it is up.
async fn forward(
    ctx: Arc<Ctx>,
    client: AsyncClient,
    mut epoch: watch::Receiver<u64>,
    cancel: CancellationToken,
) {
    loop {
        // While down, messages wait (bounded) in the outbox, not in the client.
        while !ctx.connected.load(Ordering::SeqCst) {
            tokio::select! {
                r = epoch.changed() => if r.is_err() { return },
                _ = cancel.cancelled() => return,
            }
        }
        let m = tokio::select! {
            m = ctx.outbox.pop() => m,
            _ = cancel.cancelled() => return,
        };
        let sent = tokio::select! {
            r = client.publish(m.topic, QoS::AtMostOnce, m.retain, m.payload) => r,
            _ = cancel.cancelled() => return,
        };
        if sent.is_ok() {
            metrics::counter!(names::MQTT_PUBLISHED).increment(1);
        }
    }
}

/// On every (re)connection: subscribes to the commands, says `online`, and publishes the
/// discovery and every camera's state.
async fn announce(
    ctx: Arc<Ctx>,
    client: AsyncClient,
    mut epoch: watch::Receiver<u64>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            r = epoch.changed() => if r.is_err() { return },
            _ = cancel.cancelled() => return,
        }
        let _ = client
            .subscribe(ctx.topics.command_filter(), QoS::AtLeastOnce)
            .await;
        ctx.outbox
            .push(Message::new(ctx.topics.availability(), "online", true));
        for camera in ctx.control.cameras() {
            if ctx.discovery {
                for (topic, payload) in ctx.topics.discovery(&ctx.device, &camera.name) {
                    ctx.outbox
                        .push(Message::new(topic, payload.to_string(), true));
                }
            }
            switch_states(&ctx, &camera.name);
            state_of(&ctx, &camera.name, None);
            ctx.outbox.push(Message::new(
                ctx.topics.stream(&camera.name, "motion"),
                on_off(camera.motion.state().active),
                true,
            ));
        }
    }
}

/// The current value of a stream's `{section: {enabled}}` setting, read generically so a
/// section another part adds (motion) needs nothing here.
fn switch_on(ctx: &Ctx, stream: &str, switch: Switch) -> Option<bool> {
    let camera = ctx.control.camera(stream)?;
    let v = serde_json::to_value(&*camera.config()).ok()?;
    v.get(switch.section())?.get("enabled")?.as_bool()
}

fn on_off(b: bool) -> &'static str {
    if b { "ON" } else { "OFF" }
}

fn switch_states(ctx: &Ctx, stream: &str) {
    for s in Switch::ALL {
        if let Some(on) = switch_on(ctx, stream, s) {
            ctx.outbox.push(Message::new(
                ctx.topics.stream(stream, s.key()),
                on_off(on),
                true,
            ));
        }
    }
}

/// A switch from Home Assistant: checked like a PATCH (`control` at `Door::Mqtt`), applied
/// through `Control::patch`; the switch's state is published after, changed or not, so a
/// refused switch flips back in Home Assistant.
async fn command(ctx: Arc<Ctx>, stream: String, switch: Switch, payload: String) {
    let on = match payload.to_ascii_uppercase().as_str() {
        "ON" | "TRUE" | "1" => Some(true),
        "OFF" | "FALSE" | "0" => Some(false),
        _ => None,
    };
    let result = match on {
        None => {
            tracing::warn!(stream = %stream, switch = switch.key(), payload = %payload, "MQTT command ignored: the payload is not ON or OFF");
            "invalid"
        }
        Some(_)
            if ctx
                .access
                .check(&ctx.broker, Door::Mqtt, Some(&stream), Action::Control)
                .is_err() =>
        {
            tracing::warn!(stream = %stream, switch = switch.key(), role = ctx.broker.role().map(|r| r.as_str()).unwrap_or("none"), "MQTT command refused: mqtt.role may not change settings (operator or admin may)");
            "refused"
        }
        Some(on) => {
            let patch = json!({ switch.section(): { "enabled": on } });
            match ctx.control.patch(&stream, &patch).await {
                Ok(_) => {
                    tracing::info!(stream = %stream, switch = switch.key(), on, "Changed through MQTT");
                    "ok"
                }
                Err(e) => {
                    tracing::warn!(stream = %stream, switch = switch.key(), error = %e, "MQTT command not applied");
                    "invalid"
                }
            }
        }
    };
    metrics::counter!(names::MQTT_COMMANDS, "result" => result).increment(1);
    switch_states(&ctx, &stream);
}

/// Motion (and camera up/down) as it happens.
async fn follow_events(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let mut rx = crate::events::subscribe();
    loop {
        let e = tokio::select! {
            r = rx.recv() => r,
            _ = cancel.cancelled() => return,
        };
        let e = match e {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "MQTT fell behind the event bus");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match e.kind {
            HookEvent::MotionStart | HookEvent::MotionEnd => {
                let start = e.kind == HookEvent::MotionStart;
                ctx.outbox.push(Message::new(
                    ctx.topics.stream(&e.stream, "motion"),
                    on_off(start),
                    true,
                ));
                // The picture follows the state: a slow picture never delays ON.
                tokio::spawn(publish_picture(ctx.clone(), e.stream.clone()));
            }
            HookEvent::CameraDown | HookEvent::CameraUp => state_of(&ctx, &e.stream, None),
            _ => {}
        }
    }
}

/// The event's picture, as JPEG: the detector's peak picture of the event, or (when it has
/// none) the newest frame of the stream's main encoding.
async fn picture(ctx: &Ctx, stream: &str) -> Option<Vec<u8>> {
    if let Some(peak) = ctx.control.camera(stream).and_then(|c| c.motion.jpeg()) {
        return Some(peak.data.clone());
    }
    let (camera, enc, snapshots) = ctx.control.encoding(stream)?;
    let (w, h) = camera.picture_size(&enc);
    let made = tokio::time::timeout(PICTURE_TIMEOUT, snapshots.snapshot(w, h)).await;
    match made {
        Ok(Ok(jpeg)) => Some(jpeg.data),
        Ok(Err(e)) => {
            tracing::debug!(stream, error = %e, "No picture for the MQTT image");
            None
        }
        Err(_) => None,
    }
}

async fn publish_picture(ctx: Arc<Ctx>, stream: String) {
    if let Some(jpeg) = picture(&ctx, &stream).await {
        ctx.outbox.push(Message::new(
            ctx.topics.stream(&stream, "picture"),
            jpeg,
            true,
        ));
    }
}

/// Publishes one camera's state (and, with `rates`, its frame rate and bitrate).
fn state_of(ctx: &Ctx, stream: &str, rates: Option<(f64, f64)>) {
    let Some(camera) = ctx.control.camera(stream) else {
        return;
    };
    let state = camera.status().health.state.name();
    ctx.outbox.push(Message::new(
        ctx.topics.stream(stream, "state"),
        state,
        true,
    ));
    if let Some((fps, kbps)) = rates {
        ctx.outbox.push(Message::new(
            ctx.topics.stream(stream, "fps"),
            format!("{:.1}", fps),
            false,
        ));
        ctx.outbox.push(Message::new(
            ctx.topics.stream(stream, "bitrate"),
            format!("{:.0}", kbps),
            false,
        ));
    }
}

/// Every `interval`: each camera's state, and its frame rate and bitrate measured over the
/// interval from the main encoding's counters.
async fn publish_states(ctx: Arc<Ctx>, interval: Duration, cancel: CancellationToken) {
    let mut last: std::collections::HashMap<String, (Instant, u64, u64)> = Default::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        // Nothing piles up for a broker that is away: the state is sent again when it is back.
        if !ctx.connected.load(Ordering::SeqCst) {
            continue;
        }
        for camera in ctx.control.cameras() {
            let stats = camera.main().hub.stats();
            let now = (Instant::now(), stats.frames(), stats.bytes());
            let rates = last.get(&camera.name).map(|&(t, frames, bytes)| {
                let secs = now.0.duration_since(t).as_secs_f64().max(1e-3);
                (
                    now.1.saturating_sub(frames) as f64 / secs,
                    now.2.saturating_sub(bytes) as f64 * 8.0 / 1000.0 / secs,
                )
            });
            last.insert(camera.name.clone(), now);
            state_of(&ctx, &camera.name, rates);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_outbox_drops_the_oldest_and_never_waits() {
        let o = Outbox::new(3);
        for i in 0..5u8 {
            o.push(Message::new(format!("t{i}"), vec![i], false));
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.pop().await.topic, "t2");
        assert_eq!(o.pop().await.topic, "t3");
        assert_eq!(o.pop().await.topic, "t4");
        assert!(o.is_empty());
        // A waiting pop is woken by a push.
        let o = Arc::new(o);
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.pop().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        o.push(Message::new("late".into(), vec![], true));
        let m = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.topic, "late");
    }
}
