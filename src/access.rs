//! The one lock on every door: who is asking (a [`Principal`]), and whether they may take an
//! [`Action`] on a stream at a [`Door`]. RTSP, WebRTC, every HTTP route, ONVIF and every later
//! output ask [`Access::check`]; nothing else decides access.
//!
//! Accounts are one list for every door: `[auth]` / `[[auth.users]]` (password accounts, viewers
//! unless a role is given) and API tokens (`http.token`, an admin token, and `[[http.tokens]]`).
//! What a visitor without credentials may do is one setting, `access.anonymous`: `view` while no
//! user account exists (tokens do not count), `none` as soon as one does.
//!
//! A leaf: depends only on `config`, so every output can use it.

use std::sync::Arc;

use base64::Engine;

use crate::config::{Anonymous, Config, ConfigError, Credentials, Role, TokenCredentials};

/// What a request wants to do. Roles are sets of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open to anyone: the sign-in form, the page's shell, what a protocol leaves open (ONVIF's
    /// GetSystemDateAndTime).
    Public,
    /// Liveness and readiness: open unless `http.protect_probes`, then any account.
    Probe,
    /// Prometheus metrics: open unless `http.protect_metrics`, then any account.
    Metrics,
    /// The picture, the sound, recordings, snapshots, the status summary.
    View,
    /// Live settings and keyframe requests.
    Control,
    /// The full status and configuration, reload.
    Admin,
}

impl Action {
    /// The least role that may take this action.
    fn least_role(self) -> Role {
        match self {
            Action::Public | Action::Probe | Action::Metrics | Action::View => Role::Viewer,
            Action::Control => Role::Operator,
            Action::Admin => Role::Admin,
        }
    }

    /// The name used in logs, metrics and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Public => "public",
            Action::Probe => "probe",
            Action::Metrics => "metrics",
            Action::View => "view",
            Action::Control => "control",
            Action::Admin => "admin",
        }
    }
}

/// Which kind of door a request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// An RTSP mount.
    Rtsp,
    /// A WHEP endpoint.
    Webrtc,
    /// An HTTP route of the sidecar.
    Http,
    /// An ONVIF operation.
    Onvif,
    /// An MQTT topic.
    Mqtt,
}

impl Door {
    /// The name used in logs, metrics and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Rtsp => "rtsp",
            Door::Webrtc => "webrtc",
            Door::Http => "http",
            Door::Onvif => "onvif",
            Door::Mqtt => "mqtt",
        }
    }
}

/// How an account proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A user name and password (RTSP Digest/Basic, HTTP Basic, WS-UsernameToken).
    Password,
    /// An API token.
    Token,
    /// The page's session cookie, made at sign-in.
    Session,
}

/// An authenticated account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user or token name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The streams it may reach; empty: all.
    pub streams: Vec<String>,
    /// How it proved who it is.
    pub via: Via,
}

impl Identity {
    /// Whether the account may reach `stream` (a camera or one of its renditions, by name).
    pub fn may_reach(&self, stream: &str) -> bool {
        self.streams.is_empty() || self.streams.iter().any(|s| s == stream)
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials were given.
    Anonymous,
    /// An account proved who it is.
    Account(Arc<Identity>),
}

impl Principal {
    /// The account's name, or "anonymous".
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Account(id) => &id.name,
        }
    }

    /// The account's role; `None` for the anonymous visitor.
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::Anonymous => None,
            Principal::Account(id) => Some(id.role),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials, or wrong ones: prove who you are (401).
    #[error("credentials are required")]
    Unauthenticated,
    /// The account may not do this (403).
    #[error("this account may not do that")]
    Forbidden,
}

/// The accounts, the tokens and the rule for visitors, resolved from the configuration.
#[derive(Clone)]
pub struct Access {
    users: Vec<Credentials>,
    tokens: Vec<TokenCredentials>,
    anonymous: Anonymous,
    /// `http.token` alone (no user account, `access.anonymous` unset) protected the HTTP API
    /// before accounts existed; it still does, so no configuration loses protection.
    legacy_token_guard: bool,
    protect_probes: bool,
    protect_metrics: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("users", &self.users.len())
            .field("tokens", &self.tokens.len())
            .field("anonymous", &self.anonymous)
            .field("legacy_token_guard", &self.legacy_token_guard)
            .finish()
    }
}

impl Access {
    /// Resolves the accounts (reading password and token files) and the rule for visitors.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let users = config.users()?;
        let tokens = config.tokens()?;
        let configured = config.access.anonymous;
        let anonymous = configured.unwrap_or(if users.is_empty() {
            Anonymous::View
        } else {
            Anonymous::None
        });
        let legacy_token_guard =
            configured.is_none() && users.is_empty() && config.http_token()?.is_some();
        Ok(Access {
            users,
            tokens,
            anonymous,
            legacy_token_guard,
            protect_probes: config.http.protect_probes,
            protect_metrics: config.http.protect_metrics,
        })
    }

    /// The rule for visitors without credentials, as resolved.
    pub fn anonymous(&self) -> Anonymous {
        self.anonymous
    }

    /// Whether anonymous visitors may watch (status says `"access": "open"`, the page shows a
    /// banner, start-up warns).
    pub fn is_open(&self) -> bool {
        self.anonymous == Anonymous::View
    }

    /// The password accounts, for the protocols that need the password itself (RTSP Digest,
    /// ONVIF's PasswordDigest).
    pub fn users(&self) -> &[Credentials] {
        &self.users
    }

    /// Whether any password account exists.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// The rule for visitors at one kind of door.
    fn anonymous_at(&self, door: Door) -> Anonymous {
        if self.legacy_token_guard && door == Door::Http {
            Anonymous::None
        } else {
            self.anonymous
        }
    }

    /// The decision for every door: may `who` take `action` on `stream` (a camera or rendition
    /// name; `None` for what belongs to no stream) at `door`?
    pub fn check(
        &self,
        who: &Principal,
        door: Door,
        stream: Option<&str>,
        action: Action,
    ) -> Result<(), Denied> {
        match who {
            Principal::Anonymous => {
                let allowed = match action {
                    Action::Public => true,
                    Action::Probe => !self.protect_probes,
                    Action::Metrics => !self.protect_metrics,
                    Action::View => self.anonymous_at(door) == Anonymous::View,
                    Action::Control | Action::Admin => false,
                };
                if allowed {
                    Ok(())
                } else {
                    Err(Denied::Unauthenticated)
                }
            }
            Principal::Account(id) => {
                if id.role < action.least_role() {
                    return Err(Denied::Forbidden);
                }
                match stream {
                    Some(s) if !id.may_reach(s) => Err(Denied::Forbidden),
                    _ => Ok(()),
                }
            }
        }
    }

    /// The account with this user name and password, compared in constant time.
    pub fn verify_password(&self, username: &str, password: &str) -> Option<Principal> {
        let mut found = None;
        for u in &self.users {
            // Every account is compared, so the time does not tell which names exist.
            let ok = same_secret(u.username.as_bytes(), username.as_bytes())
                & same_secret(u.password.0.as_bytes(), password.as_bytes());
            if ok {
                found = Some(u);
            }
        }
        found.map(|u| {
            Principal::Account(Arc::new(Identity {
                name: u.username.clone(),
                role: u.role,
                streams: u.streams.clone(),
                via: Via::Password,
            }))
        })
    }

    /// The account a user name belongs to, without a password check: for a principal whose
    /// password a protocol checked itself (RTSP Digest, ONVIF PasswordDigest) or a session.
    pub fn identify(&self, username: &str, via: Via) -> Option<Principal> {
        self.users.iter().find(|u| u.username == username).map(|u| {
            Principal::Account(Arc::new(Identity {
                name: u.username.clone(),
                role: u.role,
                streams: u.streams.clone(),
                via,
            }))
        })
    }

    /// The token's account, compared in constant time.
    pub fn verify_token(&self, token: &str) -> Option<Principal> {
        let mut found = None;
        for t in &self.tokens {
            if same_secret(t.token.0.as_bytes(), token.as_bytes()) {
                found = Some(t);
            }
        }
        found.map(|t| {
            Principal::Account(Arc::new(Identity {
                name: t.name.clone(),
                role: t.role,
                streams: t.streams.clone(),
                via: Via::Token,
            }))
        })
    }

    /// Who an HTTP-style `Authorization` header (Bearer or Basic) names. No header is the
    /// anonymous visitor; a header that does not prove an account is refused, never taken as
    /// anonymous, so a wrong password is noticed even where visitors may watch.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, Denied> {
        let Some(value) = authorization.map(str::trim) else {
            return Ok(Principal::Anonymous);
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        let found = if scheme.eq_ignore_ascii_case("bearer") {
            self.verify_token(rest)
        } else if scheme.eq_ignore_ascii_case("basic") {
            base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|pair| {
                    let (user, password) = pair.split_once(':')?;
                    self.verify_password(user, password)
                })
        } else {
            None
        };
        found.ok_or(Denied::Unauthenticated)
    }
}

/// Byte-wise comparison whose time does not depend on where the first difference is.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, TokenConfig, UserConfig};

    fn user(name: &str, role: Role, streams: &[&str]) -> UserConfig {
        UserConfig {
            username: name.into(),
            password: Secret(format!("{name}-pw")),
            password_file: String::new(),
            role,
            streams: streams.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn access(edit: impl FnOnce(&mut Config)) -> Access {
        let mut c = Config::default();
        edit(&mut c);
        Access::from_config(&c).unwrap()
    }

    fn basic(user: &str, pw: &str) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        format!("Basic {b}")
    }

    const ALL: [Action; 6] = [
        Action::Public,
        Action::Probe,
        Action::Metrics,
        Action::View,
        Action::Control,
        Action::Admin,
    ];

    #[test]
    fn without_accounts_visitors_watch_but_never_change() {
        let a = access(|_| {});
        assert!(a.is_open());
        let anon = Principal::Anonymous;
        for door in [Door::Rtsp, Door::Webrtc, Door::Http, Door::Onvif] {
            assert_eq!(a.check(&anon, door, Some("video"), Action::View), Ok(()));
            assert_eq!(
                a.check(&anon, door, Some("video"), Action::Control),
                Err(Denied::Unauthenticated)
            );
            assert_eq!(
                a.check(&anon, door, None, Action::Admin),
                Err(Denied::Unauthenticated)
            );
        }
    }

    #[test]
    fn a_user_account_closes_every_door_to_visitors() {
        // The seeds' variables: RTSP_USERNAME / RTSP_PASSWORD.
        let a = access(|c| {
            c.auth.username = "alice".into();
            c.auth.password = Secret("pw".into());
        });
        assert!(!a.is_open());
        let anon = Principal::Anonymous;
        for door in [
            Door::Rtsp,
            Door::Webrtc,
            Door::Http,
            Door::Onvif,
            Door::Mqtt,
        ] {
            assert_eq!(
                a.check(&anon, door, Some("video"), Action::View),
                Err(Denied::Unauthenticated)
            );
        }
        // Probes stay open for the kubelet; metrics follow protect_metrics.
        assert_eq!(a.check(&anon, Door::Http, None, Action::Probe), Ok(()));
        assert_eq!(a.check(&anon, Door::Http, None, Action::Metrics), Ok(()));
        assert_eq!(a.check(&anon, Door::Http, None, Action::Public), Ok(()));
        let alice = a.verify_password("alice", "pw").unwrap();
        assert_eq!(alice.role(), Some(Role::Viewer));
        assert_eq!(
            a.check(&alice, Door::Http, Some("video"), Action::View),
            Ok(())
        );
        assert_eq!(
            a.check(&alice, Door::Http, Some("video"), Action::Control),
            Err(Denied::Forbidden)
        );
        assert!(a.verify_password("alice", "wrong").is_none());
        assert!(a.verify_password("bob", "pw").is_none());
    }

    #[test]
    fn roles_are_nested_sets_of_actions() {
        let a = access(|c| {
            c.auth.users = vec![
                user("v", Role::Viewer, &[]),
                user("o", Role::Operator, &[]),
                user("a", Role::Admin, &[]),
            ];
        });
        let expect = |name: &str, allowed: &[Action]| {
            let p = a.verify_password(name, &format!("{name}-pw")).unwrap();
            for action in ALL {
                let got = a.check(&p, Door::Http, Some("video"), action);
                if allowed.contains(&action) {
                    assert_eq!(got, Ok(()), "{name} {action:?}");
                } else {
                    assert_eq!(got, Err(Denied::Forbidden), "{name} {action:?}");
                }
            }
        };
        let viewer = [Action::Public, Action::Probe, Action::Metrics, Action::View];
        expect("v", &viewer);
        expect("o", &[&viewer[..], &[Action::Control]].concat());
        expect("a", &ALL);
    }

    #[test]
    fn per_account_streams_limit_what_it_reaches() {
        let a = access(|c| c.auth.users = vec![user("garden", Role::Operator, &["garden"])]);
        let p = a.verify_password("garden", "garden-pw").unwrap();
        assert_eq!(
            a.check(&p, Door::Rtsp, Some("garden"), Action::View),
            Ok(())
        );
        assert_eq!(
            a.check(&p, Door::Rtsp, Some("door"), Action::View),
            Err(Denied::Forbidden)
        );
        assert_eq!(a.check(&p, Door::Http, None, Action::View), Ok(()));
    }

    #[test]
    fn tokens_are_accounts_and_do_not_close_the_doors() {
        let a = access(|c| {
            c.http.tokens = vec![TokenConfig {
                name: "prometheus".into(),
                token: Secret("0123456789abcdef-prom".into()),
                ..TokenConfig::default()
            }];
        });
        // A viewer token alone does not count as a user account.
        assert!(a.is_open());
        let p = a.verify_token("0123456789abcdef-prom").unwrap();
        assert_eq!(p.name(), "prometheus");
        assert_eq!(a.check(&p, Door::Http, None, Action::Metrics), Ok(()));
        assert_eq!(
            a.check(&p, Door::Http, Some("video"), Action::Control),
            Err(Denied::Forbidden)
        );
        assert!(a.verify_token("0123456789abcdef-pro").is_none());
    }

    #[test]
    fn the_legacy_token_keeps_the_http_api_closed_and_is_admin() {
        let a = access(|c| c.http.token = Secret("s3cret".into()));
        let anon = Principal::Anonymous;
        // As before accounts existed: RTSP and WHEP open, the HTTP API behind the token.
        assert_eq!(
            a.check(&anon, Door::Rtsp, Some("video"), Action::View),
            Ok(())
        );
        assert_eq!(
            a.check(&anon, Door::Webrtc, Some("video"), Action::View),
            Ok(())
        );
        assert_eq!(
            a.check(&anon, Door::Http, Some("video"), Action::View),
            Err(Denied::Unauthenticated)
        );
        let admin = a.authenticate(Some("Bearer s3cret")).unwrap();
        assert_eq!(admin.role(), Some(Role::Admin));
        assert_eq!(a.check(&admin, Door::Http, None, Action::Admin), Ok(()));
        // Saying so explicitly opens the HTTP doors too.
        let open = access(|c| {
            c.http.token = Secret("s3cret".into());
            c.access.anonymous = Some(Anonymous::View);
        });
        assert_eq!(
            open.check(&anon, Door::Http, Some("video"), Action::View),
            Ok(())
        );
    }

    #[test]
    fn anonymous_can_be_closed_without_accounts_and_opened_with_them() {
        let closed = access(|c| c.access.anonymous = Some(Anonymous::None));
        assert_eq!(
            closed.check(
                &Principal::Anonymous,
                Door::Rtsp,
                Some("video"),
                Action::View
            ),
            Err(Denied::Unauthenticated)
        );
        let open = access(|c| {
            c.auth.username = "alice".into();
            c.auth.password = Secret("pw".into());
            c.access.anonymous = Some(Anonymous::View);
        });
        assert_eq!(
            open.check(
                &Principal::Anonymous,
                Door::Rtsp,
                Some("video"),
                Action::View
            ),
            Ok(())
        );
        assert_eq!(
            open.check(&Principal::Anonymous, Door::Http, None, Action::Admin),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn probes_and_metrics_follow_their_protect_settings() {
        let a = access(|c| {
            c.http.protect_probes = true;
            c.http.protect_metrics = true;
            c.http.token = Secret("s3cret".into());
        });
        let anon = Principal::Anonymous;
        assert_eq!(
            a.check(&anon, Door::Http, None, Action::Probe),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.check(&anon, Door::Http, None, Action::Metrics),
            Err(Denied::Unauthenticated)
        );
        let t = a.authenticate(Some("Bearer s3cret")).unwrap();
        assert_eq!(a.check(&t, Door::Http, None, Action::Metrics), Ok(()));
    }

    #[test]
    fn authorization_headers_are_read_strictly() {
        let a = access(|c| c.auth.users = vec![user("v", Role::Viewer, &[])]);
        assert_eq!(a.authenticate(None), Ok(Principal::Anonymous));
        assert_eq!(
            a.authenticate(Some(&basic("v", "v-pw"))).unwrap().name(),
            "v"
        );
        for bad in [
            basic("v", "nope"),
            "Basic !!!".into(),
            "Bearer ".into(),
            "Digest x".into(),
            String::new(),
        ] {
            assert_eq!(
                a.authenticate(Some(&bad)),
                Err(Denied::Unauthenticated),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn token_settings_are_checked() {
        let mut c = Config::default();
        c.http.tokens = vec![TokenConfig {
            name: "short".into(),
            token: Secret("abc".into()),
            ..TokenConfig::default()
        }];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("http.tokens[short]") && e.contains("16"), "{e}");
        c.http.tokens[0].token = Secret("0123456789abcdef".into());
        c.http.tokens[0].streams = vec!["nowhere".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("nowhere") && e.contains("not a stream"), "{e}");
        c.http.tokens[0].streams = vec!["video".into()];
        c.validate().unwrap();
    }
}
