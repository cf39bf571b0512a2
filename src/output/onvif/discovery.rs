//! WS-Discovery (the 2005/04 version ONVIF uses): answers Probe messages on UDP (multicast group
//! 239.255.255.250 and unicast, port 3702 by default) with a ProbeMatch carrying the device's
//! types, scopes and service address, announces Hello on start and Bye on stop. Each datagram
//! is parsed with the same bounded SOAP reader as the services; anything else is ignored.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::soap::{self, Xml};
use super::{DEVICE_PATH, Identity};
use crate::metrics::names;

/// The WS-Discovery multicast group.
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
/// Largest datagram considered (a Probe is well under 1 KiB).
const MAX_DATAGRAM: usize = 16 * 1024;
/// Replies per second to one source address, and the burst allowed: a reply is ~17× the size
/// of a probe, so without a cap any host could aim this camera at a victim (a spoofed source).
pub const PER_SOURCE_RATE: f64 = 1.0;
/// Burst of replies to one source address.
pub const PER_SOURCE_BURST: f64 = 3.0;
/// Replies per second in all, and the burst allowed.
pub const TOTAL_RATE: f64 = 10.0;
/// Burst of replies in all.
pub const TOTAL_BURST: f64 = 20.0;
/// Source addresses remembered by the per-source buckets (older ones are forgotten first).
const MAX_SOURCES: usize = 1024;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
    }
}

/// Why a probe got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Not a Probe, or one for types or scopes this device does not have.
    NotOurs,
    /// The source's bucket is empty.
    RateSource,
    /// The total bucket is empty.
    RateTotal,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::NotOurs => "not_ours",
            Refused::RateSource => "rate_source",
            Refused::RateTotal => "rate_total",
        }
    }
}

/// Reply budgets: one bucket per source address and one for all.
struct Limiter {
    sources: HashMap<IpAddr, Bucket>,
    total: Bucket,
}

impl Limiter {
    fn new(now: Instant) -> Self {
        Limiter {
            sources: HashMap::new(),
            total: Bucket::full(TOTAL_BURST, now),
        }
    }

    /// Whether `ip` may be answered now (checked before the probe is parsed; spends nothing).
    fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        if let Some(b) = self.sources.get_mut(&ip) {
            b.refill(now, PER_SOURCE_RATE, PER_SOURCE_BURST);
            if b.tokens < 1.0 {
                return Err(Refused::RateSource);
            }
        }
        self.total.refill(now, TOTAL_RATE, TOTAL_BURST);
        if self.total.tokens < 1.0 {
            return Err(Refused::RateTotal);
        }
        Ok(())
    }

    /// Spends one reply for `ip` (after [`Limiter::check`] passed).
    fn spend(&mut self, ip: IpAddr, now: Instant) {
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            // Full buckets carry no information: forget those first, else the stalest.
            self.sources.retain(|_, b| {
                b.refill(now, PER_SOURCE_RATE, PER_SOURCE_BURST);
                b.tokens < PER_SOURCE_BURST
            });
            if self.sources.len() >= MAX_SOURCES
                && let Some(old) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, b)| b.at)
                    .map(|(k, _)| *k)
            {
                self.sources.remove(&old);
            }
        }
        let b = self
            .sources
            .entry(ip)
            .or_insert_with(|| Bucket::full(PER_SOURCE_BURST, now));
        b.tokens -= 1.0;
        self.total.tokens -= 1.0;
    }
}

const NS_DISCOVERY: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
const TO_DISCOVERY: &str = "urn:schemas-xmlsoap-org:ws:2005:04:discovery";
const TO_ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
/// What this device is, as WS-Discovery types (prefixes declared on every envelope).
const TYPES: &str = "dn:NetworkVideoTransmitter tds:Device";

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for WS-Discovery on UDP port {port}: {source} (set onvif.discovery = false, or free the port)"
)]
pub struct DiscoveryError {
    /// The port.
    pub port: u16,
    /// What the OS said.
    pub source: std::io::Error,
}

/// Sequence state every discovery message carries.
struct Sequence {
    instance: u64,
    number: AtomicU64,
}

fn message_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        (b[8] & 0x3f) | 0x80,
        &h[18..20],
        &h[20..32]
    )
}

/// Whether a Probe's type list asks for something this device is.
fn types_match(requested: &str) -> bool {
    requested.split_whitespace().all(|t| {
        let local = t.rsplit(':').next().unwrap_or(t);
        local == "NetworkVideoTransmitter" || local == "Device"
    })
}

/// RFC 3986 prefix matching (the default `MatchBy`): every requested scope is a segment-wise
/// prefix of one of ours.
fn scopes_match(requested: &str, ours: &[String]) -> bool {
    requested.split_whitespace().all(|r| {
        let r = r.trim_end_matches('/');
        ours.iter()
            .any(|o| o == r || o.strip_prefix(r).is_some_and(|rest| rest.starts_with('/')))
    })
}

/// The local address a reply to `peer` leaves from (a routing look-up; nothing is sent).
fn local_address_towards(peer: SocketAddr) -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect(peer).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

struct Announcer {
    identity: Identity,
    http_port: u16,
    /// The address the services listen on, when bound to one (else each reply's own).
    http_address: Option<IpAddr>,
    seq: Sequence,
}

impl Announcer {
    fn xaddrs(&self, addrs: &[IpAddr]) -> String {
        addrs
            .iter()
            .map(|a| match a {
                IpAddr::V6(v6) => format!("http://[{v6}]:{}{DEVICE_PATH}", self.http_port),
                IpAddr::V4(v4) => format!("http://{v4}:{}{DEVICE_PATH}", self.http_port),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn header(&self, x: &mut Xml, action: &str, to: &str, relates_to: Option<&str>) {
        x.leaf("wsa:MessageID", &message_id());
        if let Some(r) = relates_to {
            x.leaf("wsa:RelatesTo", r);
        }
        x.leaf("wsa:To", to);
        x.leaf("wsa:Action", &format!("{NS_DISCOVERY}/{action}"));
        let instance = self.seq.instance.to_string();
        let number = (self.seq.number.fetch_add(1, Ordering::Relaxed) + 1).to_string();
        x.node(
            "d:AppSequence",
            &[
                ("InstanceId", instance.as_str()),
                ("MessageNumber", number.as_str()),
            ],
            |_| {},
        );
    }

    /// The endpoint description shared by ProbeMatch and Hello.
    fn description(&self, x: &mut Xml, addrs: &[IpAddr]) {
        x.node("wsa:EndpointReference", &[], |x| {
            x.leaf("wsa:Address", &self.identity.endpoint)
        });
        x.leaf("d:Types", TYPES);
        x.leaf("d:Scopes", &self.identity.scopes().join(" "));
        let xaddrs = self.xaddrs(addrs);
        if !xaddrs.is_empty() {
            x.leaf("d:XAddrs", &xaddrs);
        }
        x.leaf("d:MetadataVersion", "1");
    }

    fn probe_matches(&self, relates_to: &str, addr: IpAddr) -> Vec<u8> {
        soap::envelope_with(
            |x| self.header(x, "ProbeMatches", TO_ANONYMOUS, Some(relates_to)),
            true,
            |x| {
                x.node("d:ProbeMatches", &[], |x| {
                    x.node("d:ProbeMatch", &[], |x| self.description(x, &[addr]))
                })
            },
        )
    }

    fn hello(&self) -> Vec<u8> {
        let addrs: Vec<IpAddr> = match self.http_address {
            Some(a) => vec![a],
            None => super::device::host_addresses()
                .into_iter()
                .map(IpAddr::V4)
                .collect(),
        };
        soap::envelope_with(
            |x| self.header(x, "Hello", TO_DISCOVERY, None),
            true,
            |x| x.node("d:Hello", &[], |x| self.description(x, &addrs)),
        )
    }

    fn bye(&self) -> Vec<u8> {
        soap::envelope_with(
            |x| self.header(x, "Bye", TO_DISCOVERY, None),
            true,
            |x| {
                x.node("d:Bye", &[], |x| {
                    x.node("wsa:EndpointReference", &[], |x| {
                        x.leaf("wsa:Address", &self.identity.endpoint)
                    })
                })
            },
        )
    }

    /// The answer to one datagram, if it is a Probe this device matches.
    fn answer(&self, data: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let req = soap::parse(data).ok()?;
        let action = req.get("Header/Action").unwrap_or_default();
        if req.operation != "Probe" || !(action.is_empty() || action.ends_with("/Probe")) {
            return None;
        }
        if !types_match(req.get("Body/Probe/Types").unwrap_or_default())
            || !scopes_match(
                req.get("Body/Probe/Scopes").unwrap_or_default(),
                &self.identity.scopes(),
            )
        {
            return None;
        }
        let relates_to = req.get("Header/MessageID")?.trim().to_string();
        let addr = match self.http_address {
            Some(a) => a,
            None => local_address_towards(peer)?,
        };
        Some(self.probe_matches(&relates_to, addr))
    }
}

fn bind(port: u16) -> std::io::Result<(std::net::UdpSocket, bool)> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Other WS-Discovery users on this host (an NVR, a client) share the port.
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
    let joined = match s.join_multicast_v4(&MULTICAST_GROUP, &Ipv4Addr::UNSPECIFIED) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot join the WS-Discovery multicast group; answering unicast probes only");
            false
        }
    };
    s.set_nonblocking(true)?;
    Ok((s.into(), joined))
}

/// `camstream check` line for `[onvif]` discovery, as `(ok, what, detail)`: whether it could
/// listen on its UDP port now.
pub fn check(c: &crate::config::OnvifConfig) -> Option<(bool, String, String)> {
    if !(c.enabled && c.discovery) {
        return None;
    }
    let port = c.discovery_port;
    let what = "onvif discovery".to_string();
    Some(match bind(port) {
        Ok(_) => (true, what, format!("UDP port {port} can be bound")),
        Err(source) => (false, what, DiscoveryError { port, source }.to_string()),
    })
}

/// Starts discovery on UDP `port`, advertising the services on `http_address` (`0.0.0.0`: the
/// address each reply leaves from) and `http_port`; says Hello now and Bye when `cancel` fires
/// (the returned task ends after that).
pub fn start(
    identity: Identity,
    http_address: IpAddr,
    http_port: u16,
    port: u16,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, DiscoveryError> {
    let (std_socket, joined) = bind(port).map_err(|source| DiscoveryError { port, source })?;
    let socket =
        UdpSocket::from_std(std_socket).map_err(|source| DiscoveryError { port, source })?;
    let _ = metrics::counter!(names::ONVIF_PROBES);
    for r in [Refused::NotOurs, Refused::RateSource, Refused::RateTotal] {
        metrics::counter!(names::ONVIF_PROBES_REFUSED, "reason" => r.label()).absolute(0);
    }
    let log = crate::output::rtsp::auth::LogLimiter::new(5, std::time::Duration::from_secs(60));
    let a = Announcer {
        identity,
        http_port,
        http_address: (!http_address.is_unspecified()).then_some(http_address),
        seq: Sequence {
            instance: crate::stream::status::unix_now(),
            number: AtomicU64::new(0),
        },
    };
    tracing::info!(port, multicast = joined, endpoint = %a.identity.endpoint, "WS-Discovery listening");
    let group = SocketAddr::V4(SocketAddrV4::new(MULTICAST_GROUP, port));
    Ok(tokio::spawn(async move {
        if joined && let Err(e) = socket.send_to(&a.hello(), group).await {
            tracing::debug!(error = %e, "WS-Discovery Hello not sent");
        }
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut limiter = Limiter::new(Instant::now());
        loop {
            let (n, peer) = tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "WS-Discovery receive failed");
                        continue;
                    }
                },
                _ = cancel.cancelled() => break,
            };
            if n > MAX_DATAGRAM {
                continue;
            }
            let now = Instant::now();
            let refused = match limiter.check(peer.ip(), now) {
                Err(r) => Some(r),
                Ok(()) => match a.answer(&buf[..n], peer) {
                    None => Some(Refused::NotOurs),
                    Some(reply) => {
                        limiter.spend(peer.ip(), now);
                        metrics::counter!(names::ONVIF_PROBES).increment(1);
                        tracing::debug!(peer = %peer, "WS-Discovery probe answered");
                        if let Err(e) = socket.send_to(&reply, peer).await {
                            tracing::debug!(peer = %peer, error = %e, "WS-Discovery reply not sent");
                        }
                        None
                    }
                },
            };
            if let Some(r) = refused {
                metrics::counter!(names::ONVIF_PROBES_REFUSED, "reason" => r.label()).increment(1);
                if r != Refused::NotOurs
                    && let Some(suppressed) = log.allow(now)
                {
                    tracing::warn!(peer = %peer, reason = r.label(), suppressed, "WS-Discovery probe not answered: reply rate limit (docs/reliability.md)");
                }
            }
        }
        if joined {
            let _ = socket.send_to(&a.bye(), group).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcer() -> Announcer {
        Announcer {
            identity: Identity::new(&crate::config::OnvifConfig {
                name: "front door".into(),
                location: "porch".into(),
                ..Default::default()
            }),
            http_port: 8080,
            http_address: None,
            seq: Sequence {
                instance: 1,
                number: AtomicU64::new(0),
            },
        }
    }

    const PROBE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
<s:Header><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action><a:MessageID>urn:uuid:probe-1</a:MessageID><a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>
<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types>SCOPES</d:Probe></s:Body></s:Envelope>"#;

    #[test]
    fn answers_matching_probes_only() {
        let a = announcer();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let reply = a
            .answer(PROBE.replace("SCOPES", "").as_bytes(), peer)
            .unwrap();
        let text = String::from_utf8(reply).unwrap();
        assert!(
            text.contains("<wsa:RelatesTo>urn:uuid:probe-1</wsa:RelatesTo>"),
            "{text}"
        );
        assert!(
            text.contains("http://127.0.0.1:8080/onvif/device_service"),
            "{text}"
        );
        assert!(
            text.contains("onvif://www.onvif.org/name/front%20door"),
            "{text}"
        );
        assert!(
            text.contains("onvif://www.onvif.org/location/porch"),
            "{text}"
        );
        let scoped = PROBE.replace(
            "SCOPES",
            "<d:Scopes>onvif://www.onvif.org/location</d:Scopes>",
        );
        assert!(a.answer(scoped.as_bytes(), peer).is_some());
        let other = PROBE.replace(
            "SCOPES",
            "<d:Scopes>onvif://www.onvif.org/location/attic</d:Scopes>",
        );
        assert!(a.answer(other.as_bytes(), peer).is_none());
        let printer = PROBE
            .replace("dn:NetworkVideoTransmitter", "p:Printer")
            .replace("SCOPES", "");
        assert!(a.answer(printer.as_bytes(), peer).is_none());
        assert!(a.answer(b"garbage", peer).is_none());
    }

    #[test]
    fn replies_are_rate_limited_per_source_and_in_total() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut answered = 0;
        for _ in 0..10 {
            if l.check(a, t0).is_ok() {
                l.spend(a, t0);
                answered += 1;
            }
        }
        assert_eq!(answered, PER_SOURCE_BURST as usize);
        assert_eq!(l.check(a, t0), Err(Refused::RateSource));
        // One more a second.
        let t1 = t0 + std::time::Duration::from_secs(1);
        assert!(l.check(a, t1).is_ok());
        // Many sources: the total bucket caps them together.
        let mut total = 0;
        for i in 0..200u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i));
            if l.check(ip, t1).is_ok() {
                l.spend(ip, t1);
                total += 1;
            }
        }
        assert!(total <= TOTAL_BURST as usize, "{total}");
        assert_eq!(
            l.check("10.9.9.9".parse().unwrap(), t1),
            Err(Refused::RateTotal)
        );
    }
}
