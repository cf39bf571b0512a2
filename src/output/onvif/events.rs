//! The event service (`/onvif/events_service`) and its pull points
//! (`/onvif/subscription/{id}`): motion as NVRs and Home Assistant read it, through WS-BaseNotification
//! PullPoint subscriptions. Two topics, one state per camera: `tns1:VideoSource/MotionAlarm`
//! (`State`) and `tns1:RuleEngine/CellMotionDetector/Motion` (`IsMotion`), fed by the event bus's
//! `motion_start` / `motion_end`.
//!
//! Bounded on every side: at most [`MAX_SUBSCRIPTIONS`] subscriptions, each expiring at its
//! termination time (at most [`MAX_TERMINATION_S`] ahead), each queue at most [`MAX_QUEUE`]
//! messages (the oldest dropped and counted), a pull waiting at most [`MAX_PULL_WAIT_S`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::soap::{Fault, Request, Xml};
use super::{Onvif, Reached, base_url};
use crate::access::{Action, Door, Principal};
use crate::config::HookEvent;
use crate::metrics::names;

/// Path of the event service on the HTTP port.
pub const EVENTS_PATH: &str = "/onvif/events_service";
/// Prefix of a pull point's address; the subscription's number follows.
pub const SUBSCRIPTION_PREFIX: &str = "/onvif/subscription/";
/// Most subscriptions alive at once; creating one more fails until one ends or expires.
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Most messages kept for one subscription between two pulls; older ones are dropped.
pub const MAX_QUEUE: usize = 64;
/// Longest a subscription may be asked to live ahead, in seconds.
pub const MAX_TERMINATION_S: i64 = 3600;
/// Life of a subscription created without `InitialTerminationTime`, in seconds.
const DEFAULT_TERMINATION_S: i64 = 60;
/// Longest a PullMessages waits for a message, in seconds: under the sidecar's 15 s bound on
/// every request, so a long `Timeout` gets an empty answer (as ONVIF allows) and the client
/// pulls again, rather than a 503.
pub const MAX_PULL_WAIT_S: u64 = 10;
/// Most messages answered to one PullMessages.
const MAX_MESSAGE_LIMIT: usize = 100;

/// Operations implemented here (event service and pull points).
pub const OPERATIONS: &[&str] = &[
    "GetServiceCapabilities",
    "GetEventProperties",
    "CreatePullPointSubscription",
    "PullMessages",
    "Renew",
    "Unsubscribe",
    "SetSynchronizationPoint",
];

/// The event service's namespace, as GetServices lists it.
pub const NS_EVENTS: &str = "http://www.onvif.org/ver10/events/wsdl";

const TOPIC_ALARM: &str = "tns1:VideoSource/MotionAlarm";
const TOPIC_CELL: &str = "tns1:RuleEngine/CellMotionDetector/Motion";
const DIALECT_CONCRETE: &str = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet";

/// One state change of one camera, as queued for a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The camera (stream) name.
    pub camera: String,
    /// Whether it sees motion.
    pub motion: bool,
    /// When, in Unix milliseconds.
    pub at_ms: i64,
    /// `Initialized` (current state, on subscription or synchronisation) or `Changed`.
    pub initial: bool,
}

struct Subscription {
    who: Principal,
    expires: i64,
    queue: VecDeque<Notification>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    subs: BTreeMap<u64, Subscription>,
    /// Every camera's motion state and since when (Unix ms).
    state: BTreeMap<String, (bool, i64)>,
}

/// The subscriptions and the motion state they report.
#[derive(Default)]
pub struct EventService {
    inner: Mutex<Inner>,
}

/// What a pull answered.
#[derive(Debug)]
pub struct Pulled {
    /// The messages, oldest first.
    pub messages: Vec<Notification>,
    /// When the subscription ends now (Unix seconds).
    pub termination: i64,
}

impl EventService {
    /// Follows the event bus's motion events until `cancel`.
    pub fn listen(self: &Arc<Self>, cancel: CancellationToken) {
        let me = self.clone();
        let mut rx = crate::events::subscribe();
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    r = rx.recv() => r,
                    _ = cancel.cancelled() => return,
                };
                match e {
                    Ok(e) if matches!(e.kind, HookEvent::MotionStart | HookEvent::MotionEnd) => {
                        let at_ms = i64::try_from(e.at_unix).unwrap_or(0).saturating_mul(1000);
                        me.motion(&e.stream, e.kind == HookEvent::MotionStart, at_ms);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "ONVIF events fell behind the event bus");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Records a camera's motion state and queues the change for every subscription allowed
    /// to see that camera.
    pub fn motion(&self, camera: &str, motion: bool, at_ms: i64) {
        let mut g = self.lock();
        if g.state.get(camera).map(|s| s.0) == Some(motion) {
            return;
        }
        g.state.insert(camera.to_string(), (motion, at_ms));
        let n = Notification {
            camera: camera.to_string(),
            motion,
            at_ms,
            initial: false,
        };
        for s in g.subs.values_mut() {
            if may_see(&s.who, camera) {
                push(s, n.clone());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a subscription for `who` ending at `termination` (Unix seconds); its queue
    /// starts with the current state of every camera in `cameras` it may see.
    pub fn create(
        &self,
        who: Principal,
        cameras: &[String],
        now: i64,
        termination: i64,
    ) -> Result<u64, Fault> {
        let mut g = self.lock();
        expire(&mut g, now);
        if g.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(Fault {
                sender: false,
                subcodes: vec!["ter:Action", "ter:TooManySubscriptions"],
                reason: format!(
                    "{MAX_SUBSCRIPTIONS} subscriptions are open; unsubscribe or let one expire"
                ),
            });
        }
        // Unguessable: a subscription's address is all an anonymous visitor (where visitors
        // may watch) would need to read or end another's.
        let mut id: u64 = rand::random::<u64>() >> 11;
        while id == 0 || g.subs.contains_key(&id) {
            id = rand::random::<u64>() >> 11;
        }
        let mut s = Subscription {
            who,
            expires: termination,
            queue: VecDeque::new(),
            wake: Arc::new(Notify::new()),
        };
        for n in initial(&g.state, cameras, &s.who, now) {
            push(&mut s, n);
        }
        g.subs.insert(id, s);
        gauge(g.subs.len());
        Ok(id)
    }

    fn with_sub<T>(
        &self,
        id: u64,
        who: &Principal,
        now: i64,
        f: impl FnOnce(&mut Subscription, &BTreeMap<String, (bool, i64)>) -> T,
    ) -> Result<T, Fault> {
        let mut g = self.lock();
        expire(&mut g, now);
        let Inner { subs, state, .. } = &mut *g;
        match subs.get_mut(&id) {
            // Another account's subscription is as unknown as a missing one.
            Some(s) if s.who.name() == who.name() => Ok(f(s, state)),
            _ => Err(unknown(id)),
        }
    }

    /// Moves the termination of subscription `id` to `termination`.
    pub fn renew(&self, id: u64, who: &Principal, now: i64, termination: i64) -> Result<(), Fault> {
        self.with_sub(id, who, now, |s, _| s.expires = termination)
    }

    /// Ends subscription `id`.
    pub fn unsubscribe(&self, id: u64, who: &Principal, now: i64) -> Result<(), Fault> {
        let mut g = self.lock();
        expire(&mut g, now);
        match g.subs.get(&id) {
            Some(s) if s.who.name() == who.name() => {
                if let Some(s) = g.subs.remove(&id) {
                    // A pull waiting on it answers now rather than at its timeout.
                    s.wake.notify_waiters();
                }
                gauge(g.subs.len());
                Ok(())
            }
            _ => Err(unknown(id)),
        }
    }

    /// Queues the current state of every camera `cameras` the subscription may see again.
    pub fn synchronize(
        &self,
        id: u64,
        who: &Principal,
        cameras: &[String],
        now: i64,
    ) -> Result<(), Fault> {
        self.with_sub(id, who, now, |s, state| {
            for n in initial(state, cameras, &s.who, now) {
                push(s, n);
            }
        })
    }

    /// Takes up to `limit` messages from subscription `id`, waiting up to `wait` for the first.
    pub async fn pull(
        &self,
        id: u64,
        who: &Principal,
        wait: Duration,
        limit: usize,
    ) -> Result<Pulled, Fault> {
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(MAX_PULL_WAIT_S));
        let limit = limit.clamp(1, MAX_MESSAGE_LIMIT);
        loop {
            let now = crate::stream::status::unix_now() as i64;
            let (taken, wake) = self.with_sub(id, who, now, |s, _| {
                let n = s.queue.len().min(limit);
                let taken: Vec<Notification> = s.queue.drain(..n).collect();
                (
                    Pulled {
                        messages: taken,
                        termination: s.expires,
                    },
                    s.wake.clone(),
                )
            })?;
            if !taken.messages.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(taken);
            }
            let notified = wake.notified();
            tokio::pin!(notified);
            // Registered before looking again, so a message queued in between is not missed.
            notified.as_mut().enable();
            let queued = self.with_sub(id, who, now, |s, _| !s.queue.is_empty())?;
            if !queued {
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        }
    }

    /// Subscriptions alive now.
    pub fn count(&self, now: i64) -> usize {
        let mut g = self.lock();
        expire(&mut g, now);
        g.subs.len()
    }
}

fn gauge(n: usize) {
    metrics::gauge!(names::ONVIF_EVENT_SUBSCRIPTIONS).set(n as f64);
}

fn unknown(id: u64) -> Fault {
    Fault::invalid_arg(
        "ter:InvalidArgVal",
        format!("no subscription {id}: it ended or expired; create a new one"),
    )
}

fn may_see(who: &Principal, camera: &str) -> bool {
    match who {
        Principal::Anonymous => true,
        Principal::Account(id) => id.may_reach(camera),
    }
}

fn expire(g: &mut Inner, now: i64) {
    let before = g.subs.len();
    g.subs.retain(|_, s| {
        let alive = s.expires > now;
        if !alive {
            s.wake.notify_waiters();
        }
        alive
    });
    if g.subs.len() != before {
        gauge(g.subs.len());
    }
}

fn push(s: &mut Subscription, n: Notification) {
    if s.queue.len() >= MAX_QUEUE {
        s.queue.pop_front();
        metrics::counter!(names::ONVIF_EVENTS_DROPPED).increment(1);
    }
    s.queue.push_back(n);
    s.wake.notify_waiters();
}

/// The current state of each camera `who` may see, as `Initialized` messages.
fn initial(
    state: &BTreeMap<String, (bool, i64)>,
    cameras: &[String],
    who: &Principal,
    now: i64,
) -> Vec<Notification> {
    cameras
        .iter()
        .filter(|c| may_see(who, c))
        .map(|c| {
            let (motion, _) = state.get(c).copied().unwrap_or((false, 0));
            Notification {
                camera: c.clone(),
                motion,
                at_ms: now.saturating_mul(1000),
                initial: true,
            }
        })
        .collect()
}

/// Reads an `xs:duration` (`PT60S`, `PT1M30S`, `P1DT2H`, `PT0.5S`) as whole seconds, rounding
/// fractions up; `None` for anything else (years and months have no fixed length: refused).
pub fn parse_duration(s: &str) -> Option<i64> {
    let rest = s.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut total = 0f64;
    let mut any = false;
    let mut read = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let (_, mult) = units.iter().find(|(u, _)| *u == c)?;
                let v: f64 = num.parse().ok()?;
                total += v * mult;
                num.clear();
                any = true;
            }
        }
        num.is_empty().then_some(())
    };
    read(date, &[('D', 86400.0), ('W', 604800.0)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        read(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    if !any || !total.is_finite() || total > 1e9 {
        return None;
    }
    Some(total.ceil() as i64)
}

/// A termination time as requested (a duration from now, or an absolute time), clamped to
/// `now + MAX_TERMINATION_S`; `None` in the request means the default life.
fn termination(requested: Option<&str>, now: i64) -> Result<i64, Fault> {
    let Some(r) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(now + DEFAULT_TERMINATION_S);
    };
    let at = if r.starts_with('P') {
        parse_duration(r).map(|d| now.saturating_add(d))
    } else {
        crate::utc::parse_rfc3339(r).map(|t| t / crate::utc::SECOND)
    };
    let at = at.ok_or_else(|| {
        Fault::invalid_arg(
            "ter:InvalidArgVal",
            format!("termination time {r:?} is neither an xs:duration (PT60S) nor a UTC time"),
        )
    })?;
    if at <= now {
        return Err(Fault::invalid_arg(
            "ter:InvalidArgVal",
            format!("termination time {r:?} is in the past"),
        ));
    }
    Ok(at.min(now + MAX_TERMINATION_S))
}

fn time(unix_s: i64) -> String {
    crate::utc::rfc3339(unix_s.saturating_mul(crate::utc::SECOND))
}

/// The cameras whose state the service reports: every camera with a profile, once.
fn cameras(at: &Reached) -> Vec<String> {
    let mut v: Vec<String> = at.profiles.iter().map(|p| p.camera.clone()).collect();
    v.sort();
    v.dedup();
    v
}

/// The subscription number at the end of a pull point's path.
pub fn subscription_id(path_tail: &str) -> Option<u64> {
    path_tail.parse().ok()
}

fn message(x: &mut Xml, n: &Notification, topic: &str) {
    let at = crate::utc::rfc3339(n.at_ms.saturating_mul(1_000_000));
    x.node("wsnt:NotificationMessage", &[], |x| {
        x.node("wsnt:Topic", &[("Dialect", DIALECT_CONCRETE)], |x| {
            x.text(topic)
        });
        x.node("wsnt:Message", &[], |x| {
            let op = if n.initial { "Initialized" } else { "Changed" };
            x.node(
                "tt:Message",
                &[("UtcTime", at.as_str()), ("PropertyOperation", op)],
                |x| {
                    let value = if n.motion { "true" } else { "false" };
                    if topic == TOPIC_ALARM {
                        x.node("tt:Source", &[], |x| {
                            item(x, "Source", &format!("source_{}", n.camera));
                        });
                        x.node("tt:Data", &[], |x| item(x, "State", value));
                    } else {
                        x.node("tt:Source", &[], |x| {
                            item(
                                x,
                                "VideoSourceConfigurationToken",
                                &format!("source_config_{}", n.camera),
                            );
                            item(
                                x,
                                "VideoAnalyticsConfigurationToken",
                                &format!("analytics_{}", n.camera),
                            );
                            item(x, "Rule", "MotionDetectorRule");
                        });
                        x.node("tt:Data", &[], |x| item(x, "IsMotion", value));
                    }
                },
            );
        });
    });
}

fn item(x: &mut Xml, name: &str, value: &str) {
    x.node("tt:SimpleItem", &[("Name", name), ("Value", value)], |_| {});
}

fn simple_item_description(x: &mut Xml, name: &str, kind: &str) {
    x.node(
        "tt:SimpleItemDescription",
        &[("Name", name), ("Type", kind)],
        |_| {},
    );
}

fn topic_set(x: &mut Xml) {
    x.node("wstop:TopicSet", &[], |x| {
        x.node("tns1:VideoSource", &[], |x| {
            x.node("tns1:MotionAlarm", &[("wstop:topic", "true")], |x| {
                x.node("tt:MessageDescription", &[("IsProperty", "true")], |x| {
                    x.node("tt:Source", &[], |x| {
                        simple_item_description(x, "Source", "tt:ReferenceToken")
                    });
                    x.node("tt:Data", &[], |x| {
                        simple_item_description(x, "State", "xs:boolean")
                    });
                });
            });
        });
        x.node("tns1:RuleEngine", &[], |x| {
            x.node("tns1:CellMotionDetector", &[], |x| {
                x.node("tns1:Motion", &[("wstop:topic", "true")], |x| {
                    x.node("tt:MessageDescription", &[("IsProperty", "true")], |x| {
                        x.node("tt:Source", &[], |x| {
                            simple_item_description(
                                x,
                                "VideoSourceConfigurationToken",
                                "tt:ReferenceToken",
                            );
                            simple_item_description(
                                x,
                                "VideoAnalyticsConfigurationToken",
                                "tt:ReferenceToken",
                            );
                            simple_item_description(x, "Rule", "xs:string");
                        });
                        x.node("tt:Data", &[], |x| {
                            simple_item_description(x, "IsMotion", "xs:boolean")
                        });
                    });
                });
            });
        });
    });
}

/// What an operation answers, computed before the envelope is written (PullMessages waits).
#[derive(Debug)]
pub enum Reply {
    /// GetServiceCapabilities.
    Capabilities,
    /// GetEventProperties.
    Properties,
    /// CreatePullPointSubscription: the pull point's address and the times.
    Created {
        /// The pull point's address.
        address: String,
        /// Unix seconds now.
        now: i64,
        /// Unix seconds at which the subscription ends.
        end: i64,
    },
    /// PullMessages.
    Pulled(Pulled),
    /// Renew.
    Renewed {
        /// Unix seconds now.
        now: i64,
        /// The new end.
        end: i64,
    },
    /// Unsubscribe.
    Unsubscribed,
    /// SetSynchronizationPoint.
    Synchronized,
}

/// Carries out one request to the event service (`subscription` `None`) or to a pull point.
/// `who` passed the door already (view).
pub async fn answer(
    o: &Onvif,
    req: &Request,
    who: &Principal,
    at: &Reached<'_>,
    now: i64,
    subscription: Option<u64>,
) -> Result<Reply, Fault> {
    let ev = &o.events;
    let cams: Vec<String> = cameras(at)
        .into_iter()
        .filter(|c| {
            o.access
                .check(who, Door::Onvif, Some(c), Action::View)
                .is_ok()
        })
        .collect();
    let op = req.operation.as_str();
    let sub = || {
        subscription.ok_or_else(|| {
            Fault::invalid_arg(
                "ter:InvalidArgVal",
                format!("{op} is sent to a subscription's address, not the event service"),
            )
        })
    };
    Ok(match op {
        "GetServiceCapabilities" => Reply::Capabilities,
        "GetEventProperties" => Reply::Properties,
        "CreatePullPointSubscription" => {
            let end = termination(req.arg("InitialTerminationTime"), now)?;
            let id = ev.create(who.clone(), &cams, now, end)?;
            Reply::Created {
                address: format!("{}{SUBSCRIPTION_PREFIX}{id}", base_url(at)),
                now,
                end,
            }
        }
        "PullMessages" => {
            let id = sub()?;
            let wait = req
                .arg("Timeout")
                .map(|t| {
                    parse_duration(t).ok_or_else(|| {
                        Fault::invalid_arg(
                            "ter:InvalidArgVal",
                            format!("Timeout {t:?} is not an xs:duration (e.g. PT10S)"),
                        )
                    })
                })
                .transpose()?
                .unwrap_or(10);
            let limit = req
                .arg("MessageLimit")
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(MAX_MESSAGE_LIMIT);
            let wait = Duration::from_secs(u64::try_from(wait).unwrap_or(0));
            Reply::Pulled(ev.pull(id, who, wait, limit).await?)
        }
        "Renew" => {
            let id = sub()?;
            let end = termination(req.arg("TerminationTime"), now)?;
            ev.renew(id, who, now, end)?;
            Reply::Renewed { now, end }
        }
        "Unsubscribe" => {
            ev.unsubscribe(sub()?, who, now)?;
            Reply::Unsubscribed
        }
        "SetSynchronizationPoint" => {
            ev.synchronize(sub()?, who, &cams, now)?;
            Reply::Synchronized
        }
        _ => return Err(Fault::not_supported(op)),
    })
}

impl Reply {
    /// Writes the answer's body element.
    pub fn write(&self, x: &mut Xml) {
        match self {
            Reply::Capabilities => x.node("tev:GetServiceCapabilitiesResponse", &[], |x| {
                let max = MAX_SUBSCRIPTIONS.to_string();
                x.node(
                    "tev:Capabilities",
                    &[
                        ("WSSubscriptionPolicySupport", "false"),
                        ("WSPullPointSupport", "true"),
                        ("WSPausableSubscriptionManagerInterfaceSupport", "false"),
                        ("MaxNotificationProducers", "0"),
                        ("MaxPullPoints", max.as_str()),
                        ("PersistentNotificationStorage", "false"),
                    ],
                    |_| {},
                );
            }),
            Reply::Properties => x.node("tev:GetEventPropertiesResponse", &[], |x| {
                x.leaf(
                    "tev:TopicNamespaceLocation",
                    "http://www.onvif.org/onvif/ver10/topics/topicns.xml",
                );
                x.leaf("wsnt:FixedTopicSet", "true");
                topic_set(x);
                x.leaf("wsnt:TopicExpressionDialect", DIALECT_CONCRETE);
                x.leaf(
                    "wsnt:TopicExpressionDialect",
                    "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Concrete",
                );
                x.leaf(
                    "tev:MessageContentFilterDialect",
                    "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter",
                );
                x.leaf(
                    "tev:MessageContentSchemaLocation",
                    "http://www.onvif.org/onvif/ver10/schema/onvif.xsd",
                );
            }),
            Reply::Created { address, now, end } => {
                x.node("tev:CreatePullPointSubscriptionResponse", &[], |x| {
                    x.node("tev:SubscriptionReference", &[], |x| {
                        x.leaf("wsa5:Address", address)
                    });
                    x.leaf("wsnt:CurrentTime", &time(*now));
                    x.leaf("wsnt:TerminationTime", &time(*end));
                })
            }
            Reply::Pulled(p) => {
                let now = crate::stream::status::unix_now() as i64;
                x.node("tev:PullMessagesResponse", &[], |x| {
                    x.leaf("tev:CurrentTime", &time(now));
                    x.leaf("tev:TerminationTime", &time(p.termination));
                    for n in &p.messages {
                        message(x, n, TOPIC_CELL);
                        message(x, n, TOPIC_ALARM);
                    }
                });
            }
            Reply::Renewed { now, end } => x.node("wsnt:RenewResponse", &[], |x| {
                x.leaf("wsnt:TerminationTime", &time(*end));
                x.leaf("wsnt:CurrentTime", &time(*now));
            }),
            Reply::Unsubscribed => x.node("wsnt:UnsubscribeResponse", &[], |_| {}),
            Reply::Synchronized => x.node("tev:SetSynchronizationPointResponse", &[], |_| {}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon() -> Principal {
        Principal::Anonymous
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT60S"), Some(60));
        assert_eq!(parse_duration("PT1M30S"), Some(90));
        assert_eq!(parse_duration("P1DT1H"), Some(90000));
        assert_eq!(parse_duration("PT0.5S"), Some(1));
        for bad in ["", "P", "PT", "60", "PT5X", "P1Y", "PTS", "PT1.2.3S"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn terminations_are_clamped_and_checked() {
        assert_eq!(termination(None, 100).unwrap(), 160);
        assert_eq!(termination(Some("PT10S"), 100).unwrap(), 110);
        assert_eq!(
            termination(Some("P30D"), 100).unwrap(),
            100 + MAX_TERMINATION_S
        );
        assert_eq!(termination(Some("1970-01-01T00:03:20Z"), 100).unwrap(), 200);
        assert!(termination(Some("1970-01-01T00:00:01Z"), 100).is_err());
        assert!(termination(Some("soon"), 100).is_err());
    }

    #[tokio::test]
    async fn a_subscription_gets_the_state_then_changes_in_order() {
        let ev = EventService::default();
        let cams = vec!["cam".to_string()];
        let now = crate::stream::status::unix_now() as i64;
        let id = ev.create(anon(), &cams, now, now + 60).unwrap();
        let p = ev.pull(id, &anon(), Duration::ZERO, 10).await.unwrap();
        assert_eq!(p.messages.len(), 1);
        assert!(p.messages[0].initial && !p.messages[0].motion);
        // A pull that waits is woken by the change.
        let ev = Arc::new(ev);
        let e2 = ev.clone();
        let waiter =
            tokio::spawn(async move { e2.pull(id, &anon(), Duration::from_secs(5), 10).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        ev.motion("cam", true, 1);
        ev.motion("cam", true, 2); // no change: nothing queued
        let p = waiter.await.unwrap().unwrap();
        assert_eq!(p.messages.len(), 1);
        assert!(p.messages[0].motion && !p.messages[0].initial);
        ev.motion("cam", false, 3);
        ev.synchronize(id, &anon(), &cams, now).unwrap();
        let p = ev.pull(id, &anon(), Duration::ZERO, 10).await.unwrap();
        let got: Vec<(bool, bool)> = p.messages.iter().map(|m| (m.motion, m.initial)).collect();
        assert_eq!(got, [(false, false), (false, true)]);
        ev.unsubscribe(id, &anon(), now).unwrap();
        assert!(ev.pull(id, &anon(), Duration::ZERO, 10).await.is_err());
    }

    #[test]
    fn a_pull_answer_carries_both_topics_as_parsers_read_them() {
        let n = Notification {
            camera: "front".into(),
            motion: true,
            at_ms: 1_000,
            initial: false,
        };
        let reply = Reply::Pulled(Pulled {
            messages: vec![n],
            termination: 60,
        });
        let xml = super::super::soap::envelope(&[], |x| reply.write(x));
        let text = String::from_utf8(xml.clone()).unwrap();
        let req = super::super::soap::parse(&xml).unwrap();
        assert_eq!(req.operation, "PullMessagesResponse");
        let topics = req.all("Body/PullMessagesResponse/NotificationMessage/Topic");
        assert_eq!(topics, [TOPIC_CELL, TOPIC_ALARM]);
        let dialect = req.attribute(
            "Body/PullMessagesResponse/NotificationMessage/Topic",
            "Dialect",
        );
        assert_eq!(dialect, Some(DIALECT_CONCRETE));
        for needle in [
            r#"<tt:SimpleItem Name="IsMotion" Value="true">"#,
            r#"<tt:SimpleItem Name="State" Value="true">"#,
            r#"<tt:SimpleItem Name="VideoSourceConfigurationToken" Value="source_config_front">"#,
            r#"<tt:SimpleItem Name="Source" Value="source_front">"#,
            r#"PropertyOperation="Changed""#,
            r#"UtcTime="1970-01-01T00:00:01.000Z""#,
            r#"xmlns:tns1="http://www.onvif.org/ver10/topics""#,
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }

    #[tokio::test]
    async fn a_subscription_is_its_creators() {
        let ev = EventService::default();
        let owner = Principal::Account(Arc::new(crate::access::Identity {
            name: "nvr".into(),
            role: crate::config::Role::Viewer,
            streams: vec!["front".into()],
            via: crate::access::Via::Password,
        }));
        let cams = vec!["back".to_string(), "front".to_string()];
        let id = ev.create(owner.clone(), &cams, 100, i64::MAX).unwrap();
        // Only the cameras the account may reach.
        let p = ev.pull(id, &owner, Duration::ZERO, 10).await.unwrap();
        let seen: Vec<&str> = p.messages.iter().map(|m| m.camera.as_str()).collect();
        assert_eq!(seen, ["front"]);
        ev.motion("back", true, 1);
        assert!(
            ev.pull(id, &owner, Duration::ZERO, 10)
                .await
                .unwrap()
                .messages
                .is_empty()
        );
        assert!(ev.pull(id, &anon(), Duration::ZERO, 10).await.is_err());
        assert!(ev.unsubscribe(id, &anon(), 100).is_err());
        assert!(ev.renew(id, &owner, 100, 200).is_ok());
    }

    #[tokio::test]
    async fn bounded_subscriptions_queues_and_lives() {
        let ev = EventService::default();
        let now = 1000;
        for _ in 0..MAX_SUBSCRIPTIONS {
            ev.create(anon(), &[], now, now + 10).unwrap();
        }
        assert!(ev.create(anon(), &[], now, now + 10).is_err());
        // Expired ones make room.
        assert_eq!(ev.count(now + 10), 0);
        let id = ev.create(anon(), &[], now + 10, i64::MAX).unwrap();
        for i in 0..(MAX_QUEUE as i64 * 2) {
            ev.motion("cam", i % 2 == 0, i);
        }
        let p = ev.pull(id, &anon(), Duration::ZERO, 1000).await.unwrap();
        assert_eq!(p.messages.len(), MAX_QUEUE);
        // The newest are kept.
        assert_eq!(p.messages.last().unwrap().at_ms, MAX_QUEUE as i64 * 2 - 1);
    }
}
