//! ONVIF Profile S, the subset an NVR needs to find and add camstream like an IP camera:
//! WS-Discovery ([`discovery`]), the device service ([`device`]: identity, clock, capabilities,
//! services, scopes, network interfaces, read only) and the media service ([`media`]: one profile
//! per stream and rendition, the RTSP URI and snapshot URI of each; [`audio`]: a camera's
//! microphone and its AAC encoder in those profiles). SOAP is read and written by
//! [`soap`] with quick-xml; callers authenticate with WS-UsernameToken digests ([`auth`]) or
//! HTTP Basic, against the accounts of [`Access`], which decides (`Door::Onvif`): what the spec
//! leaves open ([`OPEN_OPERATIONS`]) is public, every other operation needs `view`. Everything
//! else gets a SOAP fault.
//!
//! This module knows nothing of HTTP or of the running streams: the HTTP side (`http::onvif`)
//! hands it the request body, the address the client reached and the current [`MediaProfile`]s.

pub mod audio;
pub mod auth;
pub mod device;
pub mod digest;
pub mod discovery;
pub mod events;
pub mod media;
pub mod soap;

use std::sync::Arc;
use std::time::Duration;

use crate::access::{Access, Action, Denied, Door, Principal, Via};
use crate::config::{Config, OnvifConfig};
use crate::metrics::names;
use auth::{Account, Authenticator};
use soap::{Fault, Xml};

pub use media::MediaProfile;

/// Path of the device service on the HTTP port.
pub const DEVICE_PATH: &str = "/onvif/device_service";
/// Path of the media service on the HTTP port.
pub const MEDIA_PATH: &str = "/onvif/media_service";

/// Operations answered without credentials (ONVIF's PRE_AUTH class, as far as implemented):
/// a client needs the device's clock to build a valid UsernameToken.
const OPEN_OPERATIONS: &[&str] = &["GetSystemDateAndTime"];

/// Who this device says it is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `[onvif].name`.
    pub name: String,
    /// `[onvif].location` (may be empty).
    pub location: String,
    /// `[onvif].hardware`.
    pub hardware: String,
    /// Stable endpoint reference, `urn:uuid:…`, derived from the host name and device name.
    pub endpoint: String,
    /// Serial number shown in GetDeviceInformation (from the same hash).
    pub serial: String,
}

impl Identity {
    /// The identity for `config`, stable across restarts of the same host and name.
    pub fn new(config: &OnvifConfig) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let mut h = sha1_smol::Sha1::new();
        h.update(host.trim().as_bytes());
        h.update(b"\0");
        h.update(config.name.as_bytes());
        let b = h.digest().bytes();
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        // Shaped as a name-based (version 5) UUID.
        let uuid = format!(
            "{}-{}-5{}-{:x}{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            (b[8] & 0x3f) | 0x80,
            &hex[18..20],
            &hex[20..32]
        );
        Identity {
            name: config.name.clone(),
            location: config.location.clone(),
            hardware: config.hardware.clone(),
            endpoint: format!("urn:uuid:{uuid}"),
            serial: hex[..12].to_string(),
        }
    }

    /// The discovery scopes: Profile S, video encoder, name, hardware and location.
    pub fn scopes(&self) -> Vec<String> {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                        (c as char).to_string()
                    } else {
                        format!("%{c:02X}")
                    }
                })
                .collect()
        };
        let mut v = vec![
            "onvif://www.onvif.org/Profile/Streaming".to_string(),
            "onvif://www.onvif.org/type/video_encoder".to_string(),
            format!("onvif://www.onvif.org/name/{}", enc(&self.name)),
            format!("onvif://www.onvif.org/hardware/{}", enc(&self.hardware)),
        ];
        if !self.location.is_empty() {
            v.push(format!(
                "onvif://www.onvif.org/location/{}",
                enc(&self.location)
            ));
        }
        v
    }
}

/// The ONVIF services of one daemon.
pub struct Onvif {
    /// Who the device is.
    pub identity: Identity,
    auth: Authenticator,
    access: Arc<Access>,
    /// HTTP Digest, for clients that authenticate at the HTTP level.
    pub digest: digest::DigestAuth,
    /// The RTSP port.
    pub rtsp_port: u16,
    /// "rtsp" or "rtsps".
    pub rtsp_scheme: &'static str,
    /// The event service's subscriptions and motion state.
    pub events: Arc<events::EventService>,
}

/// Where the client reached us, and what we serve now.
pub struct Reached<'a> {
    /// Host (name or address, IPv6 in brackets) the client used, without the port.
    pub host: &'a str,
    /// The HTTP port the client used.
    pub http_port: u16,
    /// The profiles now (one per stream and rendition).
    pub profiles: &'a [MediaProfile],
}

/// An answer: HTTP status and SOAP envelope.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The envelope.
    pub body: Vec<u8>,
    /// Whether the request was refused for its credentials (or the lack of them).
    pub unauthorized: bool,
}

impl Onvif {
    /// The services for `config`, with RTSP on `rtsp_port` (the port bound, which differs from
    /// the configured one when that is 0); fails when the accounts cannot be read.
    pub fn new(
        config: &Config,
        access: Arc<Access>,
        rtsp_port: u16,
    ) -> Result<Self, crate::config::ConfigError> {
        let accounts = access
            .users()
            .iter()
            .map(|c| Account {
                username: c.username.clone(),
                password: c.password.0.clone(),
            })
            .collect();
        for service in ["device", "media", "events"] {
            for result in ["ok", "fault", "unauthorized"] {
                let _ = metrics::counter!(names::ONVIF_REQUESTS, "service" => service, "operation" => "other", "result" => result);
            }
        }
        Ok(Onvif {
            identity: Identity::new(&config.onvif),
            access,
            digest: digest::DigestAuth::new(),
            auth: Authenticator::new(
                accounts,
                Duration::from_secs(u64::from(config.onvif.max_clock_skew_s)),
            ),
            rtsp_port,
            events: Arc::default(),
            rtsp_scheme: if config.tls.enabled() {
                "rtsps"
            } else {
                "rtsp"
            },
        })
    }

    /// Answers one SOAP request to `service` ("device" or "media"); `http` is who the HTTP
    /// `Authorization` header (Basic or Bearer) names, used when the envelope has no
    /// UsernameToken.
    pub fn handle(
        &self,
        service: &'static str,
        body: &[u8],
        at: &Reached,
        now: i64,
        http: Result<Principal, Denied>,
    ) -> Answer {
        let result = self.answer(body, at, now, http);
        finish(service, result)
    }

    /// Answers one SOAP request to the event service (`subscription` `None`) or to the pull
    /// point of subscription `subscription`; PullMessages waits here for messages.
    pub async fn handle_events(
        &self,
        body: &[u8],
        at: &Reached<'_>,
        now: i64,
        http: Result<Principal, Denied>,
        subscription: Option<u64>,
    ) -> Answer {
        let result = async {
            let req = soap::parse(body).map_err(|f| (String::new(), f))?;
            let op = req.operation.clone();
            let who = self
                .authorize(&req, now, http)
                .map_err(|f| (op.clone(), f))?;
            let reply = events::answer(self, &req, &who, at, now, subscription)
                .await
                .map_err(|f| (op.clone(), f))?;
            Ok((op, soap::envelope(&[], |x| reply.write(x))))
        }
        .await;
        finish("events", result)
    }

    /// Who sent `req`, refused unless they may view at the ONVIF door (or the operation is
    /// one the spec leaves open).
    fn authorize(
        &self,
        req: &soap::Request,
        now: i64,
        http: Result<Principal, Denied>,
    ) -> Result<Principal, Fault> {
        let op = req.operation.as_str();
        let refused = |reason: &str| Fault::not_authorized(reason);
        // What the spec leaves open (the clock a client needs to build its token) is public
        // and looks at no credentials; everything else reads the picture's whereabouts: view.
        let who = if OPEN_OPERATIONS.contains(&op) {
            Principal::Anonymous
        } else {
            match self.auth.check(req, now)? {
                Some(user) => self
                    .access
                    .identify(&user, Via::Password)
                    .ok_or_else(|| refused("wrong user name or password"))?,
                None => http.map_err(|_| refused("wrong user name or password"))?,
            }
        };
        let action = if OPEN_OPERATIONS.contains(&op) {
            Action::Public
        } else {
            Action::View
        };
        self.access
            .check(&who, Door::Onvif, None, action)
            .map_err(|_| refused("this operation needs an account (WS-Security UsernameToken)"))?;
        Ok(who)
    }

    fn answer(
        &self,
        body: &[u8],
        at: &Reached,
        now: i64,
        http: Result<Principal, Denied>,
    ) -> Result<(String, Vec<u8>), (String, Fault)> {
        let req = soap::parse(body).map_err(|f| (String::new(), f))?;
        let op = req.operation.clone();
        let who = self
            .authorize(&req, now, http)
            .map_err(|f| (op.clone(), f))?;
        let action = if OPEN_OPERATIONS.contains(&op.as_str()) {
            Action::Public
        } else {
            Action::View
        };
        // An account limited to some streams sees only their profiles.
        let visible: Vec<MediaProfile> = at
            .profiles
            .iter()
            .filter(|p| {
                [p.name.as_str(), p.camera.as_str()].iter().any(|s| {
                    self.access
                        .check(&who, Door::Onvif, Some(s), action)
                        .is_ok()
                })
            })
            .cloned()
            .collect();
        let at = &Reached {
            host: at.host,
            http_port: at.http_port,
            profiles: &visible,
        };
        let mut fault = None;
        let envelope = soap::envelope(&[], |x: &mut Xml| {
            let done = device::answer(self, &req, at, now, x)
                .or_else(|| media::answer(self, &req, at, x))
                .or_else(|| audio::answer(&req, at.profiles, x));
            match done {
                Some(Ok(())) => {}
                Some(Err(f)) => fault = Some(f),
                None => fault = Some(Fault::not_supported(&op)),
            }
        });
        match fault {
            Some(f) => Err((op, f)),
            None => Ok((op, envelope)),
        }
    }
}

/// The HTTP answer to a SOAP result, counted by service, operation and result.
fn finish(service: &'static str, result: Result<(String, Vec<u8>), (String, Fault)>) -> Answer {
    let (answer, operation, result) = match result {
        Ok((op, envelope)) => (
            Answer {
                status: 200,
                body: envelope,
                unauthorized: false,
            },
            op,
            "ok",
        ),
        Err((op, fault)) => {
            let result = if fault.subcodes.first() == Some(&"ter:NotAuthorized") {
                "unauthorized"
            } else {
                "fault"
            };
            tracing::debug!(service, operation = %op, reason = %fault.reason, "ONVIF fault");
            (
                Answer {
                    status: fault.http_status(),
                    body: fault.envelope(),
                    unauthorized: result == "unauthorized",
                },
                op,
                result,
            )
        }
    };
    // Only implemented operation names become label values: the set stays bounded.
    let label = if device::OPERATIONS.contains(&operation.as_str())
        || media::OPERATIONS.contains(&operation.as_str())
        || events::OPERATIONS.contains(&operation.as_str())
        || audio::OPERATIONS.contains(&operation.as_str())
    {
        operation
    } else {
        "other".to_string()
    };
    metrics::counter!(names::ONVIF_REQUESTS, "service" => service, "operation" => label, "result" => result)
        .increment(1);
    answer
}

/// `http://host:port` as the client reached us.
pub fn base_url(at: &Reached) -> String {
    format!("http://{}:{}", at.host, at.http_port)
}
