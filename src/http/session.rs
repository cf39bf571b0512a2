//! The page's sign-in: a form posts a user name and password, the answer sets a session cookie
//! (`HttpOnly; SameSite=Strict`, `Secure` under TLS, an expiry), and every state-changing request
//! the cookie authenticates must come from the page itself (`Sec-Fetch-Site` or `Origin`) and
//! carry the session's CSRF token in `X-CSRF-Token`.
//!
//! Requests with an `Authorization` header (scripts, Home Assistant, Prometheus) are not
//! authenticated by the cookie and need no CSRF token. Passwords are checked by
//! [`Access::verify_password`]; this module only remembers who signed in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use base64::Engine;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::auth::{Doors, PAGE_HEADER, Rule, principal};
pub use super::listener::Connection;
use super::{Shared, error};
use crate::access::{Access, Action, Door, Identity, Principal, Via, same_secret};
use crate::config::Credentials;
use crate::logins::{LOG_BURST, LOG_WINDOW, LogLimiter, RefusedLogins};

/// The session cookie's name.
pub const COOKIE: &str = "camstream_session";
/// The header the page's script sends with the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The sign-in route.
pub const ROUTE: &str = "/api/v1/session";
/// Largest sign-in body accepted.
const MAX_BODY: usize = 4096;
/// Longest user name written to the log.
const MAX_LOGGED_NAME: usize = 64;

/// How long sessions live and how many may.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Live sessions at most; signing in beyond evicts the least recently used.
    pub max: usize,
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub absolute: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max: 256,
            idle: Duration::from_secs(12 * 3600),
            absolute: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

struct Session {
    identity: Arc<Identity>,
    /// The account as it was at sign-in; a reload that changes it ends the session.
    fingerprint: [u8; 20],
    csrf: String,
    created: Instant,
    used: Instant,
}

/// A session just made: the cookie value and the CSRF token the page must send back.
pub struct Created {
    /// The session id (the cookie's value).
    pub id: String,
    /// The CSRF token bound to the session.
    pub csrf: String,
}

/// The signed-in sessions, bounded in number and time.
pub struct Sessions {
    /// By a salted hash of the id, so the map never holds or compares the secret itself.
    live: Mutex<HashMap<[u8; 20], Session>>,
    salt: [u8; 32],
    limits: Limits,
    refused: RefusedLogins,
    plain: LogLimiter,
    cross: LogLimiter,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(Limits::default())
    }
}

/// 256 random bits from the thread's CSPRNG (seeded from the OS), URL-safe base64.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    /// An empty store.
    pub fn new(limits: Limits) -> Self {
        Sessions {
            live: Mutex::new(HashMap::new()),
            salt: rand::rng().random(),
            limits,
            refused: RefusedLogins::new(Door::Http, "Sign-in refused"),
            plain: LogLimiter::new(LOG_BURST, LOG_WINDOW),
            cross: LogLimiter::new(LOG_BURST, LOG_WINDOW),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 20], Session>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    fn key(&self, id: &str) -> [u8; 20] {
        let mut h = sha1_smol::Sha1::new();
        h.update(&self.salt);
        h.update(b"id\0");
        h.update(id.as_bytes());
        h.digest().bytes()
    }

    fn fingerprint(&self, c: &Credentials) -> [u8; 20] {
        let mut h = sha1_smol::Sha1::new();
        h.update(&self.salt);
        h.update(b"account\0");
        for part in [c.username.as_str(), c.password.0.as_str(), c.role.as_str()] {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        for s in &c.streams {
            h.update(s.as_bytes());
            h.update(b"\0");
        }
        h.digest().bytes()
    }

    /// Opens a session for `username`, whose password the caller checked.
    pub fn create(&self, access: &Access, username: &str, now: Instant) -> Option<Created> {
        let account = access.users().iter().find(|u| u.username == username)?;
        let identity = Arc::new(Identity {
            name: account.username.clone(),
            role: account.role,
            streams: account.streams.clone(),
            via: Via::Session,
        });
        let created = Created {
            id: random_token(),
            csrf: random_token(),
        };
        let mut live = self.map();
        live.retain(|_, s| !self.expired(s, now));
        while live.len() >= self.limits.max.max(1) {
            let oldest = live.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k);
            match oldest {
                Some(k) => live.remove(&k),
                None => break,
            };
        }
        live.insert(
            self.key(&created.id),
            Session {
                identity,
                fingerprint: self.fingerprint(account),
                csrf: created.csrf.clone(),
                created: now,
                used: now,
            },
        );
        Some(created)
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.used) >= self.limits.idle
            || now.saturating_duration_since(s.created) >= self.limits.absolute
    }

    /// The live session a request's cookie names: its account and CSRF token. Marks it used.
    fn lookup(&self, headers: &HeaderMap, now: Instant) -> Option<(Arc<Identity>, String)> {
        let mut live = self.map();
        for id in cookie_values(headers, COOKIE) {
            let key = self.key(id);
            let Some(s) = live.get_mut(&key) else {
                continue;
            };
            if self.expired(s, now) {
                live.remove(&key);
                continue;
            }
            s.used = now;
            return Some((s.identity.clone(), s.csrf.clone()));
        }
        None
    }

    /// The account a request's session cookie belongs to, if the session is live.
    pub fn principal(&self, headers: &HeaderMap) -> Option<Principal> {
        self.lookup(headers, Instant::now())
            .map(|(id, _)| Principal::Account(id))
    }

    /// The CSRF token of the request's session, if it has one.
    pub fn csrf(&self, headers: &HeaderMap) -> Option<String> {
        self.lookup(headers, Instant::now()).map(|(_, csrf)| csrf)
    }

    /// Whether a request may go on as far as cross-site protection is concerned: reads, requests
    /// carrying `Authorization` and requests without a live session pass; a state-changing
    /// request the cookie authenticates must come from the page (same origin) and carry the
    /// session's CSRF token.
    pub fn csrf_ok(&self, headers: &HeaderMap, method: &Method) -> bool {
        if is_safe(method) || headers.contains_key(header::AUTHORIZATION) {
            return true;
        }
        let Some((_, csrf)) = self.lookup(headers, Instant::now()) else {
            return true;
        };
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        same_origin(headers) && same_secret(sent.as_bytes(), csrf.as_bytes())
    }

    /// Ends the request's session; whether there was one.
    pub fn sign_out(&self, headers: &HeaderMap) -> bool {
        let mut live = self.map();
        let mut ended = false;
        for id in cookie_values(headers, COOKIE) {
            ended |= live.remove(&self.key(id)).is_some();
        }
        ended
    }

    /// After the accounts were re-read: ends every session whose account is gone or whose
    /// password, role or streams changed. Returns how many ended.
    pub fn reload(&self, access: &Access) -> usize {
        let mut live = self.map();
        let before = live.len();
        live.retain(|_, s| {
            access
                .users()
                .iter()
                .find(|u| u.username == s.identity.name)
                .is_some_and(|u| same_secret(&self.fingerprint(u), &s.fingerprint))
        });
        before - live.len()
    }

    /// The `Set-Cookie` value that stores a session in the browser.
    pub fn cookie(&self, id: &str, tls: bool) -> String {
        format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            self.limits.absolute.as_secs(),
            if tls { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(tls: bool) -> String {
        format!(
            "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
            if tls { "; Secure" } else { "" }
        )
    }

    /// Notes a refused sign-in (counted, rate-capped log).
    fn refused(&self, peer: &str, user: &str) {
        let user: String = user
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_LOGGED_NAME)
            .collect();
        self.refused.refused(peer, &user);
    }

    /// Warns (rate-capped) that a password crossed plain HTTP from another machine; for every
    /// place that reads a password off the sidecar (the sign-in, HTTP Basic).
    pub fn warn_plain(&self, conn: Option<Connection>) {
        if !conn.is_some_and(password_in_clear) {
            return;
        }
        let Some(c) = conn else { return };
        if let Some(suppressed) = self.plain.allow(Instant::now()) {
            tracing::warn!(
                peer = %c.peer,
                suppressed,
                "A password crossed plain HTTP from another machine: serve the page over HTTPS \
                 (see docs/security.md)"
            );
        }
    }
}

/// Whether a password sent on this connection crossed a network in clear: plain HTTP from
/// another machine (loopback never leaves the box).
fn password_in_clear(c: Connection) -> bool {
    !c.tls && !c.peer.ip().is_loopback()
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Every value of cookie `name` in the request's `Cookie` headers.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

/// Whether the browser says the request comes from a page of this very origin: `Sec-Fetch-Site`
/// (`same-origin`, or `none` for what a person typed), else an `Origin` naming the request's
/// `Host`. Another port on the same address is another origin.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(site) = get("sec-fetch-site") {
        return site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none");
    }
    let (Some(origin), Some(host)) = (get("origin"), get("host")) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// The 401 for a request without (valid) credentials. Only requests not made by the page's
/// script get a Basic challenge, so the browser never shows its own prompt over the page.
pub(super) fn unauthorized(headers: &HeaderMap, message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    let challenge = if headers.contains_key(PAGE_HEADER) {
        "Bearer"
    } else {
        "Basic realm=\"camstream\", Bearer"
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// The session routes: open to anyone (signing in is how an account is proved; who-am-I and
/// sign-out resolve the asker themselves).
pub(super) fn routes(d: &mut Doors) {
    d.route(
        ROUTE,
        "GET, POST, DELETE",
        Rule::http(Action::Public),
        get(whoami).post(sign_in).delete(sign_out),
    );
}

/// Refuses state-changing requests the session cookie authenticates unless they come from the
/// page (same origin, CSRF token). Sign-in checks its own origin: it has no token yet.
pub(super) async fn cross_site(
    AxumState(s): AxumState<Shared>,
    req: Request,
    next: Next,
) -> Response {
    let sign_in = req.method() == Method::POST && req.uri().path() == ROUTE;
    if !sign_in && !s.sessions.csrf_ok(req.headers(), req.method()) {
        if let Some(suppressed) = s.sessions.cross.allow(Instant::now()) {
            let origin = req
                .headers()
                .get("origin")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            tracing::warn!(
                method = %req.method(),
                path = req.uri().path(),
                origin,
                suppressed,
                "Cross-site request refused"
            );
        }
        return error(
            StatusCode::FORBIDDEN,
            "cross-site request refused: a request signed in by the page's cookie must come \
             from the page itself and carry its X-CSRF-Token (scripts send Authorization instead)",
        );
    }
    next.run(req).await
}

/// The sign-in form's fields.
#[derive(Deserialize)]
struct SignIn {
    username: String,
    password: String,
}

/// Who is signed in, and what the page may show them.
#[derive(Serialize)]
struct WhoAmI {
    /// The account's name; `null` for a visitor.
    name: Option<String>,
    /// `viewer`, `operator`, `admin`; `null` for a visitor.
    role: Option<&'static str>,
    /// The streams the account may reach; empty: all.
    streams: Vec<String>,
    /// How the account proved who it is: `session`, `password`, `token`.
    via: Option<&'static str>,
    /// `open` when visitors may watch without an account, else `protected`.
    access: &'static str,
    /// Whether the account has any password account to sign in with (the page shows the form).
    sign_in: bool,
    /// What the page may show.
    may: May,
    /// The token to send in `X-CSRF-Token` with every state-changing request (sessions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf: Option<String>,
}

/// What the page may show.
#[derive(Serialize)]
struct May {
    /// The picture, snapshots and recordings.
    view: bool,
    /// Live controls: image settings, bitrate, keyframe.
    control: bool,
    /// The full status and configuration.
    admin: bool,
}

fn describe(s: &Shared, who: &Principal, csrf: Option<String>) -> WhoAmI {
    let may = |a| s.access.check(who, Door::Http, None, a).is_ok();
    let (name, streams, via) = match who {
        Principal::Anonymous => (None, Vec::new(), None),
        Principal::Account(id) => (
            Some(id.name.clone()),
            id.streams.clone(),
            Some(match id.via {
                Via::Password => "password",
                Via::Token => "token",
                Via::Session => "session",
            }),
        ),
    };
    WhoAmI {
        name,
        role: who.role().map(|r| r.as_str()),
        streams,
        via,
        access: if s.access.is_open() {
            "open"
        } else {
            "protected"
        },
        sign_in: s.access.has_users(),
        may: May {
            view: may(Action::View),
            control: may(Action::Control),
            admin: may(Action::Admin),
        },
        csrf,
    }
}

async fn whoami(AxumState(s): AxumState<Shared>, headers: HeaderMap) -> Response {
    let who = match principal(&s, &headers) {
        Ok(p) => p,
        Err(_) => return unauthorized(&headers, "these credentials prove no account"),
    };
    let csrf = match &who {
        Principal::Account(id) if id.via == Via::Session => s.sessions.csrf(&headers),
        _ => None,
    };
    let mut r = Json(describe(&s, &who, csrf)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn sign_in(AxumState(s): AxumState<Shared>, req: Request) -> Response {
    let conn = req.extensions().get::<Connection>().copied();
    let tls = conn.is_some_and(|c| c.tls);
    let peer = conn.map_or_else(|| "unknown".to_string(), |c| c.peer.ip().to_string());
    let headers = req.headers().clone();
    if !same_origin(&headers) {
        return error(
            StatusCode::FORBIDDEN,
            "sign-in refused: it must come from camstream's own page (Origin or Sec-Fetch-Site)",
        );
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a sign-in body is at most {MAX_BODY} bytes"),
        );
    };
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let form = kind.starts_with("application/x-www-form-urlencoded");
    let parsed: Option<SignIn> = if form {
        serde_urlencoded::from_bytes(&body).ok()
    } else if kind.starts_with("application/json") {
        serde_json::from_slice(&body).ok()
    } else {
        None
    };
    let Some(creds) = parsed else {
        return error(
            StatusCode::BAD_REQUEST,
            "send {\"username\", \"password\"} as JSON (application/json) or as a form \
             (application/x-www-form-urlencoded)",
        );
    };
    s.sessions.warn_plain(conn);
    if s.access
        .verify_password(&creds.username, &creds.password)
        .is_none()
    {
        s.sessions.refused(&peer, &creds.username);
        return error(StatusCode::UNAUTHORIZED, "wrong user name or password");
    }
    let Some(created) = s
        .sessions
        .create(&s.access, &creds.username, Instant::now())
    else {
        return error(StatusCode::UNAUTHORIZED, "wrong user name or password");
    };
    tracing::info!(user = %creds.username, peer, "Signed in");
    let cookie = s.sessions.cookie(&created.id, tls);
    let mut r = if form {
        // A form posted without the script: back to the page, now signed in.
        (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
    } else {
        let who = s.sessions.principal(&cookie_header(&created.id));
        let who = who.unwrap_or(Principal::Anonymous);
        Json(describe(&s, &who, Some(created.csrf))).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A `Cookie` header naming session `id`, to look it up as a request would.
fn cookie_header(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={id}")) {
        h.insert(header::COOKIE, v);
    }
    h
}

async fn sign_out(AxumState(s): AxumState<Shared>, req: Request) -> Response {
    let tls = req.extensions().get::<Connection>().is_some_and(|c| c.tls);
    if s.sessions.sign_out(req.headers()) {
        tracing::info!("Signed out");
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&Sessions::clear_cookie(tls)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Role, Secret, UserConfig};

    fn access(users: &[(&str, &str, Role)]) -> Access {
        let mut c = Config::default();
        c.auth.users = users
            .iter()
            .map(|(n, p, r)| UserConfig {
                username: (*n).into(),
                password: Secret((*p).into()),
                password_file: String::new(),
                role: *r,
                streams: Vec::new(),
            })
            .collect();
        Access::from_config(&c).unwrap()
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE}={id}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_session_names_its_account_until_signed_out() {
        let a = access(&[("op", "pw", Role::Operator)]);
        let s = Sessions::default();
        let c = s.create(&a, "op", Instant::now()).unwrap();
        assert_eq!(c.id.len(), 43, "256 bits in URL-safe base64");
        assert_ne!(c.id, c.csrf);
        let h = with_cookie(&c.id);
        let p = s.principal(&h).unwrap();
        assert_eq!(p.name(), "op");
        assert_eq!(p.role(), Some(Role::Operator));
        assert!(s.principal(&with_cookie("forged")).is_none());
        assert!(s.sign_out(&h));
        assert!(s.principal(&h).is_none());
        assert!(s.create(&a, "nobody", Instant::now()).is_none());
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_absolute_end() {
        let a = access(&[("v", "pw", Role::Viewer)]);
        let s = Sessions::new(Limits {
            max: 8,
            idle: Duration::from_secs(10),
            absolute: Duration::from_secs(25),
        });
        let t0 = Instant::now();
        let c = s.create(&a, "v", t0).unwrap();
        let h = with_cookie(&c.id);
        // Used every 8 s it stays up to its absolute end, then ends anyway.
        for i in 1..=3 {
            assert!(
                s.lookup(&h, t0 + Duration::from_secs(8 * i)).is_some(),
                "{i}"
            );
        }
        assert!(s.lookup(&h, t0 + Duration::from_secs(26)).is_none());
        assert_eq!(s.len(), 0, "an expired session is dropped when seen");
        let c = s.create(&a, "v", t0).unwrap();
        assert!(
            s.lookup(&with_cookie(&c.id), t0 + Duration::from_secs(11))
                .is_none()
        );
    }

    #[test]
    fn the_store_is_bounded_and_evicts_the_least_recently_used() {
        let a = access(&[("v", "pw", Role::Viewer)]);
        let s = Sessions::new(Limits {
            max: 3,
            ..Limits::default()
        });
        let t0 = Instant::now();
        let ids: Vec<String> = (0..3)
            .map(|i| s.create(&a, "v", t0 + Duration::from_secs(i)).unwrap().id)
            .collect();
        // The first is used again: the second is now the least recently used.
        assert!(
            s.lookup(&with_cookie(&ids[0]), t0 + Duration::from_secs(5))
                .is_some()
        );
        let fourth = s.create(&a, "v", t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(s.len(), 3);
        let now = t0 + Duration::from_secs(7);
        assert!(s.lookup(&with_cookie(&ids[1]), now).is_none());
        for id in [&ids[0], &ids[2], &fourth.id] {
            assert!(s.lookup(&with_cookie(id), now).is_some());
        }
    }

    #[test]
    fn a_reload_ends_sessions_of_changed_or_removed_accounts() {
        let before = access(&[
            ("keep", "pw", Role::Viewer),
            ("gone", "pw", Role::Viewer),
            ("newpw", "pw", Role::Viewer),
            ("promoted", "pw", Role::Viewer),
        ]);
        let s = Sessions::default();
        let now = Instant::now();
        let ids: Vec<(String, String)> = ["keep", "gone", "newpw", "promoted"]
            .iter()
            .map(|n| (n.to_string(), s.create(&before, n, now).unwrap().id))
            .collect();
        let after = access(&[
            ("keep", "pw", Role::Viewer),
            ("newpw", "changed", Role::Viewer),
            ("promoted", "pw", Role::Admin),
        ]);
        assert_eq!(s.reload(&after), 3);
        for (name, id) in &ids {
            assert_eq!(
                s.principal(&with_cookie(id)).is_some(),
                name == "keep",
                "{name}"
            );
        }
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn cookie_writes_need_the_same_origin_and_the_csrf_token() {
        let a = access(&[("op", "pw", Role::Operator)]);
        let s = Sessions::default();
        let c = s.create(&a, "op", Instant::now()).unwrap();
        let cookie = format!("{COOKIE}={}", c.id);
        let patch = &Method::PATCH;
        let ok = |h: &[(&str, &str)], m: &Method| s.csrf_ok(&request(h), m);
        // The page: same origin and the token.
        assert!(ok(
            &[
                ("cookie", &cookie),
                ("sec-fetch-site", "same-origin"),
                (CSRF_HEADER, &c.csrf)
            ],
            patch
        ));
        assert!(ok(
            &[
                ("cookie", &cookie),
                ("origin", "http://127.0.0.1:8080"),
                ("host", "127.0.0.1:8080"),
                (CSRF_HEADER, &c.csrf)
            ],
            patch
        ));
        // Another page (another port is another origin), or no token, or a wrong one.
        for refused in [
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "same-site"),
                (CSRF_HEADER, c.csrf.as_str()),
            ],
            vec![
                ("cookie", cookie.as_str()),
                ("origin", "http://127.0.0.1:9999"),
                ("host", "127.0.0.1:8080"),
                (CSRF_HEADER, c.csrf.as_str()),
            ],
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "same-origin"),
                (CSRF_HEADER, "guess"),
            ],
            vec![("cookie", cookie.as_str()), (CSRF_HEADER, c.csrf.as_str())],
        ] {
            assert!(!ok(&refused, patch), "{refused:?}");
            assert!(!ok(&refused, &Method::POST), "{refused:?}");
            assert!(!ok(&refused, &Method::DELETE), "{refused:?}");
            assert!(ok(&refused, &Method::GET), "reads need no token");
        }
        // Scripts send Authorization; requests without a live session are not cookie-based.
        assert!(ok(
            &[("cookie", &cookie), ("authorization", "Bearer x")],
            patch
        ));
        assert!(ok(&[("cookie", "camstream_session=stale")], patch));
    }

    #[test]
    fn only_plain_http_from_another_machine_is_a_password_in_clear() {
        let c = |peer: &str, tls| Connection {
            peer: peer.parse().unwrap(),
            tls,
        };
        assert!(password_in_clear(c("192.168.1.20:50000", false)));
        assert!(password_in_clear(c("[2001:db8::1]:50000", false)));
        assert!(!password_in_clear(c("192.168.1.20:50000", true)));
        assert!(!password_in_clear(c("127.0.0.1:50000", false)));
        assert!(!password_in_clear(c("[::1]:50000", false)));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let s = Sessions::default();
        let plain = s.cookie("abc", false);
        assert!(
            plain.starts_with("camstream_session=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=")
        );
        assert!(!plain.contains("Secure"));
        assert!(s.cookie("abc", true).ends_with("; Secure"));
        assert!(Sessions::clear_cookie(false).contains("Max-Age=0"));
    }
}
