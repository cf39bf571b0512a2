//! RTSP access control: the accounts of [`Access`] (Digest and Basic through gst-rtsp-server's
//! auth), who may watch each mount as [`Access::check`] decides, RTSPS certificates, and the
//! counting and rate-limited logging of failed logins.
//!
//! gst-rtsp-server has no signal for a refused login, so the auth object is a small subclass
//! whose `check` defers to the stock implementation and notes refusals of requests that carried
//! credentials (a client's first, credential-less request is refused by design of the protocol
//! and is not a failure).

use std::sync::{Arc, Mutex};

use gst::glib;
use gst_rtsp_server::prelude::*;
use gst_rtsp_server::subclass::prelude::*;
use gst_rtsp_server::{gio, gst_rtsp};

use crate::access::{Access, Action, Door, Principal, Via};
use crate::config::{AuthMethod, Config};

/// The gst-rtsp-server role of the visitor without credentials (the default token).
const ANONYMOUS_ROLE: &str = "anonymous";
/// The token field naming the account a token belongs to (absent: the anonymous visitor).
const USER_FIELD: &str = "camstream.user";

/// The gst-rtsp-server role of the `index`th account. An index, not the user name: role names
/// are GstStructure names, which a user name need not be.
fn user_role(index: usize) -> String {
    format!("user-{index}")
}

/// Why access control could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The certificate or key could not be loaded.
    #[error("cannot load the TLS certificate {cert} / key {key}: {reason}")]
    Tls {
        /// Certificate file.
        cert: String,
        /// Key file.
        key: String,
        /// What GLib said.
        reason: String,
    },
    /// The accounts could not be resolved (e.g. an unreadable password file).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Called on each refused login with the peer address and the user name tried.
pub type FailureHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

mod imp {
    use super::*;

    /// State of [`super::CamAuth`].
    #[derive(Default)]
    pub struct CamAuth {
        pub on_failure: Mutex<Option<FailureHook>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for CamAuth {
        const NAME: &'static str = "CamstreamAuth";
        type Type = super::CamAuth;
        type ParentType = gst_rtsp_server::RTSPAuth;
    }

    impl ObjectImpl for CamAuth {}

    impl RTSPAuthImpl for CamAuth {
        fn authenticate(&self, ctx: &gst_rtsp_server::RTSPContext) -> bool {
            if !self.parent_authenticate(ctx) {
                return false;
            }
            // gst-rtsp-server keeps the default (anonymous) token when the credentials match
            // no account; a wrong password must be refused, never taken as anonymous.
            let carried = ctx.request().is_some_and(|req| {
                crate::output::rtsp::ffi::header(req, gst_rtsp::RTSPHeaderField::Authorization)
                    .is_some()
            });
            let anonymous = ctx.token().is_some_and(|t| t.string(USER_FIELD).is_none());
            !(carried && anonymous)
        }

        fn check(&self, ctx: &gst_rtsp_server::RTSPContext, check: &glib::GString) -> bool {
            let ok = self.parent_check(ctx, check);
            if !ok
                && let Some(req) = ctx.request()
                && let Some(value) =
                    crate::output::rtsp::ffi::header(req, gst_rtsp::RTSPHeaderField::Authorization)
            {
                let peer = ctx
                    .client()
                    .map(crate::output::rtsp::ffi::peer_ip)
                    .unwrap_or_default();
                let hook = self.on_failure.lock().unwrap().clone();
                if let Some(hook) = hook {
                    hook(&peer, &user_tried(&value));
                }
            }
            ok
        }
    }
}

glib::wrapper! {
    /// gst-rtsp-server's auth, counting refused logins.
    pub struct CamAuth(ObjectSubclass<imp::CamAuth>) @extends gst_rtsp_server::RTSPAuth;
}

/// The user name in an Authorization header, for the log (never the password). Bounded and
/// printable, since the header comes from anyone on the network.
pub fn user_tried(header: &str) -> String {
    use std::io::Read;
    let header = header.trim();
    let name = if let Some(b64) = header.strip_prefix("Basic ") {
        decode_base64(b64.trim())
            .and_then(|raw| {
                let mut s = String::new();
                raw.as_slice().read_to_string(&mut s).ok()?;
                s.split_once(':').map(|(u, _)| u.to_string())
            })
            .unwrap_or_default()
    } else if let Some(params) = header.strip_prefix("Digest ") {
        params
            .split(',')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("username"))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Standard base64 (padding optional), bounded; `None` on anything else.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The rate-capped log every door shares (moved to [`crate::logins`]).
pub use crate::logins::LogLimiter;

/// Offers the configured schemes. The C type is a bit set, but the bindings model it as a
/// single-valued enum, which cannot say "Basic and Digest".
fn set_methods(auth: &CamAuth, methods: &[AuthMethod]) {
    let mut bits = gst_rtsp::ffi::GST_RTSP_AUTH_NONE;
    for m in methods {
        bits |= match m {
            AuthMethod::Basic => gst_rtsp::ffi::GST_RTSP_AUTH_BASIC,
            AuthMethod::Digest => gst_rtsp::ffi::GST_RTSP_AUTH_DIGEST,
        };
    }
    crate::output::rtsp::ffi::set_auth_methods(auth.upcast_ref(), bits);
}

/// The token of the visitor without credentials.
fn anonymous_token() -> gst_rtsp_server::RTSPToken {
    gst_rtsp_server::RTSPToken::builder()
        .field(
            gst_rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE,
            ANONYMOUS_ROLE,
        )
        .build()
}

/// The token of the `index`th account.
fn user_token(index: usize, username: &str) -> gst_rtsp_server::RTSPToken {
    gst_rtsp_server::RTSPToken::builder()
        .field(
            gst_rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE,
            user_role(index),
        )
        .field(USER_FIELD, username)
        .build()
}

/// Lets in, at the mount of `name` (a stream, or a rendition of `camera`), whom
/// [`Access::check`] lets watch it: the anonymous visitor per `access.anonymous`, each account
/// per its role and `streams`. Decided once per mount; gst-rtsp-server enforces it per request.
pub fn allow(
    factory: &gst_rtsp_server::RTSPMediaFactory,
    access: &Access,
    camera: &str,
    name: &str,
) {
    let may = |p: &Principal| {
        [name, camera]
            .iter()
            .any(|s| access.check(p, Door::Rtsp, Some(s), Action::View).is_ok())
    };
    let permit = |role: &str| {
        let role = gst::Structure::builder(role)
            .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
            .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
            .build();
        factory.add_role_from_structure(&role);
    };
    if may(&Principal::Anonymous) {
        permit(ANONYMOUS_ROLE);
    }
    for (i, u) in access.users().iter().enumerate() {
        if let Some(p) = access.identify(&u.username, Via::Password)
            && may(&p)
        {
            permit(&user_role(i));
        }
    }
}

/// Builds the server's auth: `None` when there are neither accounts nor TLS (open stream).
/// `on_failure` is told about each refused login.
pub fn build(
    config: &Config,
    access: &Access,
    on_failure: FailureHook,
) -> Result<Option<CamAuth>, AuthError> {
    let users = access.users();
    let tls = config.tls.enabled();
    // Whether visitors may watch at all (per stream, `allow` decides on each mount).
    let visitors = access
        .check(&Principal::Anonymous, Door::Rtsp, None, Action::View)
        .is_ok();
    if users.is_empty() && !tls && visitors {
        return Ok(None);
    }
    let auth: CamAuth = glib::Object::new();
    *auth.imp().on_failure.lock().unwrap() = Some(on_failure);
    auth.set_realm(Some("camstream"));
    if visitors {
        // Anyone (who completes the TLS handshake) may watch without credentials.
        let mut token = anonymous_token();
        auth.set_default_token(Some(&mut token));
    }
    if !users.is_empty() {
        set_methods(&auth, &config.auth.methods);
        for (i, u) in users.iter().enumerate() {
            let token = user_token(i, &u.username);
            if config.auth.methods.contains(&AuthMethod::Basic) {
                let basic = gst_rtsp_server::RTSPAuth::make_basic(&u.username, &u.password.0);
                auth.add_basic(&basic, &token);
            }
            if config.auth.methods.contains(&AuthMethod::Digest) {
                auth.add_digest(&u.username, &u.password.0, &token);
            }
        }
        if config.auth.methods.contains(&AuthMethod::Basic) && !tls {
            tracing::warn!(
                "Basic authentication is offered without TLS: passwords cross the network readable"
            );
        }
    }
    if tls {
        let t = &config.tls;
        let cert = gio::TlsCertificate::from_files(&t.cert_file, &t.key_file).map_err(|e| {
            AuthError::Tls {
                cert: t.cert_file.clone(),
                key: t.key_file.clone(),
                reason: e.to_string(),
            }
        })?;
        auth.set_tls_certificate(Some(&cert));
    }
    tracing::info!(
        users = users.len(),
        anonymous = visitors,
        tls,
        methods = ?config.auth.methods,
        "RTSP access control on"
    );
    Ok(Some(auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_from_headers() {
        assert_eq!(user_tried("Basic YWxpY2U6c2VjcmV0"), "alice");
        assert_eq!(
            user_tried("Digest username=\"bob\", realm=\"camstream\", nonce=\"x\""),
            "bob"
        );
        assert_eq!(user_tried("Basic !!!notbase64"), "");
        assert_eq!(user_tried(""), "");
        assert_eq!(user_tried(&format!("Basic {}", "QUFB".repeat(5000))), "");
        assert_eq!(user_tried("Digest username=\"a\u{7}b\""), "ab");
    }
}
