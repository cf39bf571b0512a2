//! The hub of one encoded stream: the long-lived point every output subscribes to. It outlives
//! camera restarts: when the supervisor builds a new capture pipeline the hub moves every
//! subscriber to the new producer, so outputs stay attached and their picture resumes without a
//! reconnect. Built on gstreamer-utils' `StreamProducer`: each subscriber's appsrc gets a
//! bounded queue that leaks the oldest, so no output can make the capture wait.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_utils::streamproducer::{ConsumerSettings, ProducerSettings};
use gst_utils::{ConsumptionLink, StreamProducer};

use super::capture::FrameStats;
use super::gop::GopCache;
use crate::metrics::names;
use crate::output::rtsp::auth::LogLimiter;

/// Forced keyframes a second a stream's encoder is asked for in the long run (every caller).
pub const KEYFRAME_RATE: f64 = 1.0;
/// Forced keyframes that may be asked for at once, above the rate.
pub const KEYFRAME_BURST: f64 = 3.0;

/// What became of a keyframe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeAsk {
    /// Asked of the encoder now.
    Sent,
    /// Over the budget: the keyframe scheduled at the budget's next slot serves it.
    Coalesced,
}

/// The forced-keyframe budget: a token bucket, and whether a keyframe is scheduled.
struct Budget {
    tokens: f64,
    at: Instant,
    scheduled: bool,
}

impl Budget {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * KEYFRAME_RATE).min(KEYFRAME_BURST);
        self.at = now;
    }
}

/// How a subscriber queues. The defaults suit live outputs: a second of video at most.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberSettings {
    /// The output kind, for the `output` metric label (e.g. "rtsp", "record", "push:ground").
    pub output: String,
    /// Most buffers queued.
    pub max_buffers: u64,
    /// Most bytes queued.
    pub max_bytes: u64,
    /// Most time queued, in ms.
    pub max_time_ms: u64,
}

impl SubscriberSettings {
    /// Live defaults for an output named `output`.
    pub fn new(output: impl Into<String>) -> Self {
        SubscriberSettings {
            output: output.into(),
            max_buffers: 60,
            max_bytes: 16 * 1024 * 1024,
            max_time_ms: 1000,
        }
    }
}

struct Entry {
    link: ConsumptionLink,
    output: String,
}

#[derive(Default)]
struct Inner {
    producer: Option<StreamProducer>,
    links: HashMap<u64, Entry>,
    next: u64,
    /// Counts of subscriptions already gone, per output, so counters never go backwards.
    retired: BTreeMap<String, (u64, u64)>,
}

/// The hub of one encoded stream (a camera's main encoding or one of its renditions).
pub struct Hub {
    name: String,
    inner: Mutex<Inner>,
    stats: Arc<FrameStats>,
    gop: Arc<GopCache>,
    budget: Mutex<Budget>,
    keyframe_log: LogLimiter,
}

/// A subscriber's link to a hub; dropping it unlinks the subscriber.
pub struct Subscription {
    hub: Weak<Hub>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(self.id);
        }
    }
}

impl Subscription {
    /// Buffers pushed to and dropped for this subscriber so far.
    pub fn counts(&self) -> (u64, u64) {
        let Some(hub) = self.hub.upgrade() else {
            return (0, 0);
        };
        let inner = hub.inner.lock().unwrap();
        inner
            .links
            .get(&self.id)
            .map_or((0, 0), |e| (e.link.pushed(), e.link.dropped()))
    }
}

/// Per-output totals, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCounts {
    /// The output label.
    pub output: String,
    /// Buffers pushed into its queues.
    pub pushed: u64,
    /// Buffers dropped because its queue was full.
    pub dropped: u64,
}

impl Hub {
    /// An empty hub named after its stream.
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(Hub {
            name: name.into(),
            inner: Mutex::new(Inner::default()),
            stats: Arc::new(FrameStats::default()),
            gop: Arc::new(GopCache::default()),
            budget: Mutex::new(Budget {
                tokens: KEYFRAME_BURST,
                at: Instant::now(),
                scheduled: false,
            }),
            keyframe_log: LogLimiter::new(3, Duration::from_secs(60)),
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Frame counters of this encoding.
    pub fn stats(&self) -> &Arc<FrameStats> {
        &self.stats
    }

    /// The access units since the last keyframe.
    pub fn gop(&self) -> &Arc<GopCache> {
        &self.gop
    }

    /// Makes `appsink` the source of every subscriber (or detaches all with `None`).
    pub fn set_producer(&self, appsink: Option<&gst_app::AppSink>) {
        let producer = appsink.map(|sink| {
            // No clock sync at the appsink: frames go out the moment they are encoded.
            let p = StreamProducer::with(sink, ProducerSettings { sync: false });
            // EOS from a failing camera must not end the outputs' streams: the supervisor
            // restarts the camera and the same outputs carry on.
            p.set_forward_events([]);
            p
        });
        let mut inner = self.inner.lock().unwrap();
        for entry in inner.links.values_mut() {
            match &producer {
                Some(p) => {
                    if let Err(e) = entry.link.change_producer(p, false) {
                        tracing::warn!(stream = %self.name, output = %entry.output, error = %e, "Could not move an output to the new capture");
                    }
                }
                None => entry.link.disconnect(),
            }
        }
        inner.producer = producer;
    }

    /// Links an output's `appsrc`: it receives frames from the current and every later
    /// producer until the returned subscription is dropped.
    pub fn subscribe(
        self: &Arc<Self>,
        appsrc: &gst_app::AppSrc,
        settings: SubscriberSettings,
    ) -> Subscription {
        let consumer = ConsumerSettings {
            max_buffer: settings.max_buffers,
            max_bytes: gst::format::Bytes::from_u64(settings.max_bytes),
            max_time: gst::ClockTime::from_mseconds(settings.max_time_ms),
            event_types: Vec::new(),
        };
        let mut link = ConsumptionLink::disconnected_with(appsrc.clone(), consumer);
        let mut inner = self.inner.lock().unwrap();
        if let Some(p) = &inner.producer
            && let Err(e) = link.change_producer(p, false)
        {
            tracing::warn!(stream = %self.name, output = %settings.output, error = %e, "Could not link an output to the capture");
        }
        inner.next += 1;
        let id = inner.next;
        inner.links.insert(
            id,
            Entry {
                link,
                output: settings.output,
            },
        );
        Subscription {
            hub: Arc::downgrade(self),
            id,
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(entry) = inner.links.remove(&id) {
            let r = inner.retired.entry(entry.output.clone()).or_default();
            r.0 += entry.link.pushed();
            r.1 += entry.link.dropped();
            // Dropping the link disconnects it; done under the lock so a concurrent producer
            // swap cannot relink it.
            drop(entry);
        }
    }

    /// Number of linked subscribers.
    pub fn subscribers(&self) -> usize {
        self.inner.lock().unwrap().links.len()
    }

    /// Pushed and dropped buffers per output label, including subscribers already gone.
    pub fn output_counts(&self) -> Vec<OutputCounts> {
        let inner = self.inner.lock().unwrap();
        let mut totals = inner.retired.clone();
        for e in inner.links.values() {
            let t = totals.entry(e.output.clone()).or_default();
            t.0 += e.link.pushed();
            t.1 += e.link.dropped();
        }
        totals
            .into_iter()
            .map(|(output, (pushed, dropped))| OutputCounts {
                output,
                pushed,
                dropped,
            })
            .collect()
    }

    /// Asks the encoder for an IDR with SPS/PPS, so a subscriber that just joined gets a
    /// picture within a frame interval rather than at the next scheduled keyframe. Every
    /// caller (RTSP PLAY, WebRTC PLI/FIR, the API, outputs starting) shares one budget per
    /// stream: [`KEYFRAME_BURST`] at once, then [`KEYFRAME_RATE`] a second. A request over the
    /// budget is coalesced: one keyframe is scheduled at the budget's next slot and serves
    /// every request refused meanwhile, so a lone joiner gets one at once and a crowd (or a
    /// PLAY loop) cannot make the encoder send only keyframes.
    pub fn request_keyframe(self: &Arc<Self>) -> KeyframeAsk {
        let now = Instant::now();
        let mut b = self.budget.lock().unwrap();
        b.refill(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            drop(b);
            self.count_keyframe("sent");
            self.force_keyframe();
            return KeyframeAsk::Sent;
        }
        self.count_keyframe("coalesced");
        if !b.scheduled {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / KEYFRAME_RATE);
            let hub = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("keyframe-slot".into())
                .spawn(move || {
                    std::thread::sleep(wait);
                    if let Some(h) = hub.upgrade() {
                        h.fire_scheduled();
                    }
                });
            b.scheduled = spawned.is_ok();
            if let Some(suppressed) = self.keyframe_log.allow(now) {
                tracing::info!(stream = %self.name, rate = KEYFRAME_RATE, burst = KEYFRAME_BURST, suppressed, "Keyframe requests over the budget: coalesced into the next slot");
            }
        }
        KeyframeAsk::Coalesced
    }

    /// The keyframe scheduled for requests refused by the budget.
    fn fire_scheduled(&self) {
        {
            let mut b = self.budget.lock().unwrap();
            b.refill(Instant::now());
            b.scheduled = false;
            b.tokens = (b.tokens - 1.0).max(0.0);
        }
        self.count_keyframe("scheduled");
        self.force_keyframe();
    }

    fn count_keyframe(&self, result: &'static str) {
        metrics::counter!(names::KEYFRAME_REQUESTS, "stream" => self.name.clone(), "result" => result)
            .increment(1);
    }

    /// Sends the force-key-unit event upstream of the encoder's appsink.
    fn force_keyframe(&self) {
        let sink = self
            .inner
            .lock()
            .unwrap()
            .producer
            .as_ref()
            .map(|p| p.appsink().clone());
        let Some(sink) = sink else { return };
        let Some(pad) = sink.static_pad("sink") else {
            return;
        };
        // Pushed on the pad, not sent to the element, which would take the state lock.
        pad.push_event(
            gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build(),
        );
    }

    /// The caps of the current encoding (SPS/PPS, size), once the first frame was produced.
    pub fn caps(&self) -> Option<gst::Caps> {
        let inner = self.inner.lock().unwrap();
        inner
            .producer
            .as_ref()
            .and_then(|p| p.appsink().static_pad("sink"))
            .and_then(|pad| pad.current_caps())
    }
}
