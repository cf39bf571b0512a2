//! Who asks, and whether they may: the one place an HTTP request's [`Principal`] is resolved
//! ([`principal`]) and the one way a route is registered ([`Doors::route`]), with the
//! [`Rule`] that [`Access::check`](crate::access::Access::check) applies before the handler
//! runs. A route cannot exist without a declared rule: the router is only reachable through
//! [`Doors`], and a unit test fails when a module registers a route any other way.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, RawPathParams, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::MethodRouter;

use super::{Shared, error};
use crate::access::{Action, Denied, Door, Principal};
use crate::output::rtsp::auth::LogLimiter;

/// Where a route finds the stream its rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOf {
    /// The route belongs to no stream (status, probes, the page).
    None,
    /// A path parameter names it (`/api/v1/streams/{name}`).
    Path(&'static str),
    /// A path parameter names it with a suffix to strip (`/recordings/{file}` → `video.mp4`).
    PathFile(&'static str, &'static str),
    /// The `stream` query parameter names it; without one, the first stream.
    Query,
}

/// What a route needs: the door it is, the action it takes and where its stream is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The kind of door (HTTP route, WHEP endpoint, ONVIF service).
    pub door: Door,
    /// What the request does.
    pub action: Action,
    /// Where the stream's name is.
    pub stream: StreamOf,
}

impl Rule {
    /// A rule for an HTTP route about no stream.
    pub const fn http(action: Action) -> Rule {
        Rule {
            door: Door::Http,
            action,
            stream: StreamOf::None,
        }
    }

    /// The same rule about the stream found at `stream`.
    pub const fn on(self, stream: StreamOf) -> Rule {
        Rule { stream, ..self }
    }

    /// The same rule at another kind of door.
    pub const fn at(self, door: Door) -> Rule {
        Rule { door, ..self }
    }
}

/// One registered route and its rule, for the docs and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The path as registered (`/api/v1/streams/{name}`).
    pub path: &'static str,
    /// The methods it answers, e.g. `"GET"`.
    pub methods: &'static str,
    /// What it needs.
    pub rule: Rule,
}

/// The router under construction: every route goes in with its rule.
pub struct Doors {
    shared: Shared,
    router: Router<Shared>,
    declared: Vec<Declared>,
}

impl Doors {
    /// An empty set of routes over `shared`.
    pub fn new(shared: Shared) -> Self {
        Doors {
            shared,
            router: Router::new(),
            declared: Vec::new(),
        }
    }

    /// Registers `handler` at `path` for `methods` (as documented), behind `rule`.
    pub fn route(
        &mut self,
        path: &'static str,
        methods: &'static str,
        rule: Rule,
        handler: MethodRouter<Shared>,
    ) -> &mut Self {
        let layer = middleware::from_fn_with_state(self.shared.clone(), move |s, req, next| {
            enforce(s, rule, req, next)
        });
        let router = std::mem::take(&mut self.router);
        self.router = router.route(path, handler.route_layer(layer));
        self.declared.push(Declared {
            path,
            methods,
            rule,
        });
        self
    }

    /// Registers `handler` at `path` with a rule chosen by the query: `keyed` when it has the
    /// parameter `key` (mjpg-streamer's `/?action=stream` beside the page at `/`), else `rule`.
    /// `keyed_as` are the keyed forms, declared with `keyed` for the docs and the tests.
    #[allow(clippy::too_many_arguments)]
    pub fn route_by_query(
        &mut self,
        path: &'static str,
        methods: &'static str,
        rule: Rule,
        key: &'static str,
        keyed: Rule,
        keyed_as: &[&'static str],
        handler: MethodRouter<Shared>,
    ) -> &mut Self {
        let layer =
            middleware::from_fn_with_state(self.shared.clone(), move |s, req: Request, next| {
                let has_key = req
                    .uri()
                    .query()
                    .is_some_and(|q| url_query_value(q, key).is_some());
                enforce(s, if has_key { keyed } else { rule }, req, next)
            });
        let router = std::mem::take(&mut self.router);
        self.router = router.route(path, handler.route_layer(layer));
        self.declared.push(Declared {
            path,
            methods,
            rule,
        });
        for p in keyed_as {
            self.declared.push(Declared {
                path: p,
                methods,
                rule: keyed,
            });
        }
        self
    }

    /// Every route registered so far.
    pub fn declared(&self) -> &[Declared] {
        &self.declared
    }

    /// The finished router (its rules stay in [`Doors::declared`]).
    pub fn into_router(self) -> Router<Shared> {
        self.router
    }
}

/// Who is asking: the `Authorization` header (Bearer token or Basic password), else the page's
/// session cookie, else the anonymous visitor. A header that proves nothing is refused, never
/// taken as anonymous.
pub fn principal(s: &Shared, headers: &HeaderMap) -> Result<Principal, Denied> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Denied::Unauthenticated)?;
        return s.access.authenticate(Some(value));
    }
    Ok(s.sessions
        .principal(headers)
        .unwrap_or(Principal::Anonymous))
}

/// The stream a request is about, as its rule says where to look.
async fn stream_of(s: &Shared, rule: Rule, req: Request) -> (Option<String>, Request) {
    match rule.stream {
        StreamOf::None => (None, req),
        StreamOf::Path(key) | StreamOf::PathFile(key, _) => {
            let (mut parts, body) = req.into_parts();
            let found = RawPathParams::from_request_parts(&mut parts, &())
                .await
                .ok()
                .and_then(|params| {
                    params
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, v)| v.to_string())
                });
            let found = match (rule.stream, found) {
                (StreamOf::PathFile(_, suffix), Some(f)) => {
                    Some(f.strip_suffix(suffix).map_or(f.clone(), str::to_string))
                }
                (_, f) => f,
            };
            (found, Request::from_parts(parts, body))
        }
        StreamOf::Query => {
            let named = req
                .uri()
                .query()
                .and_then(|q| url_query_value(q, "stream").filter(|v| !v.is_empty()));
            let name = named.or_else(|| s.control.cameras().first().map(|c| c.name.clone()));
            (name, req)
        }
    }
}

/// The value of `key` in a query string (percent-decoded), if present.
fn url_query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`Access::check`](crate::access::Access::check) for a stream or rendition: an account that
/// may reach a stream may reach its renditions.
pub fn check_stream(
    s: &Shared,
    who: &Principal,
    rule: Rule,
    stream: Option<&str>,
) -> Result<(), Denied> {
    let first = s.access.check(who, rule.door, stream, rule.action);
    match (first, stream) {
        (Err(Denied::Forbidden), Some(name)) => match s.control.encoding(name) {
            Some((camera, _, _)) if camera.name != name => {
                s.access
                    .check(who, rule.door, Some(&camera.name), rule.action)
            }
            _ => first,
        },
        _ => first,
    }
}

/// Applies `rule` to the request; the handler sees the [`Principal`] as an extension.
async fn enforce(
    AxumState(s): AxumState<Shared>,
    rule: Rule,
    req: Request,
    next: Next,
) -> Response {
    let who = match principal(&s, req.headers()) {
        Ok(p) => p,
        // What is open to anyone stays open to a client with stale credentials.
        Err(_) if rule.action == Action::Public => Principal::Anonymous,
        Err(d) => {
            note_refused_login(req.headers());
            return for_page(req.headers(), refuse(rule, d, s.access.has_users()));
        }
    };
    let (stream, mut req) = stream_of(&s, rule, req).await;
    if let Err(d) = check_stream(&s, &who, rule, stream.as_deref()) {
        tracing::debug!(
            who = who.name(),
            door = rule.door.as_str(),
            action = rule.action.as_str(),
            stream = stream.as_deref().unwrap_or(""),
            "HTTP request refused"
        );
        return for_page(req.headers(), refuse(rule, d, s.access.has_users()));
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// The header the page's script sends on every request; a 401 answering such a request carries
/// no `WWW-Authenticate: Basic`, so the browser never shows its own password prompt.
pub const PAGE_HEADER: &str = "x-requested-with";

/// The page's own requests (marked with `X-Requested-With`) are never answered with a Basic
/// challenge, so the browser shows no password prompt over the page's sign-in form.
fn for_page(headers: &HeaderMap, mut r: Response) -> Response {
    if headers.contains_key(PAGE_HEADER) && r.headers().contains_key(header::WWW_AUTHENTICATE) {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// Counts a request whose credentials proved nothing (with RTSP's refused logins) and logs it
/// with the user name tried (never the password or token), at most 5 lines a minute plus a
/// count of the suppressed ones, as RTSP does.
fn note_refused_login(headers: &HeaderMap) {
    static LIMITER: OnceLock<LogLimiter> = OnceLock::new();
    metrics::counter!(crate::metrics::names::AUTH_FAILURES).increment(1);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let user = if value.trim_start().starts_with("Bearer") {
        "(API token)".to_string()
    } else {
        crate::output::rtsp::auth::user_tried(value)
    };
    let limiter = LIMITER.get_or_init(|| LogLimiter::new(5, Duration::from_secs(60)));
    if let Some(suppressed) = limiter.allow(Instant::now()) {
        tracing::warn!(user = %user, suppressed, "HTTP login refused");
    }
}

/// 401 with a challenge, or 403, as a JSON error. `passwords`: whether password accounts exist,
/// so that a Basic challenge is offered only where a password can succeed.
pub fn refuse(rule: Rule, denied: Denied, passwords: bool) -> Response {
    if rule.door == Door::Webrtc {
        crate::output::webrtc::reject("unauthorized");
    }
    match denied {
        Denied::Unauthenticated => {
            let message = match rule.action {
                Action::Control | Action::Admin => format!(
                    "this needs an account with the {} role: an API token ('Authorization: \
                     Bearer <token>', http.token or [[http.tokens]]) or a user account \
                     ([[auth.users]] with a role)",
                    if rule.action == Action::Admin {
                        "admin"
                    } else {
                        "operator"
                    }
                ),
                _ => "credentials are required: an API token ('Authorization: Bearer <token>') \
                      or a user account (HTTP Basic, as for RTSP)"
                    .to_string(),
            };
            let mut r = error(StatusCode::UNAUTHORIZED, &message);
            // WHEP clients (and ffmpeg, gst whepsrc) answer a Basic challenge, as over RTSP.
            // Elsewhere a browser opening a URL by hand (a snapshot) may ask for the password;
            // the page's own requests never get a Basic challenge (`for_page`).
            let challenge = if rule.door == Door::Webrtc {
                "Basic realm=\"camstream\", charset=\"UTF-8\""
            } else if passwords {
                "Basic realm=\"camstream\", charset=\"UTF-8\", Bearer"
            } else {
                "Bearer"
            };
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            r
        }
        Denied::Forbidden => error(
            StatusCode::FORBIDDEN,
            &format!(
                "this account may not do that here (needs: {} on this stream)",
                rule.action.as_str()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            url_query_value("width=320&stream=gar%64en", "stream").as_deref(),
            Some("garden")
        );
        assert_eq!(url_query_value("width=320", "stream"), None);
        assert_eq!(
            url_query_value("stream=%zz", "stream").as_deref(),
            Some("%zz")
        );
        assert_eq!(
            url_query_value("stream=a%2", "stream").as_deref(),
            Some("a%2")
        );
    }

    /// Every route is registered through [`Doors`]: no module of the sidecar calls
    /// `Router::route` itself, so none can skip its rule.
    #[test]
    fn no_route_is_registered_without_a_rule() {
        let sources = [
            ("mod.rs", include_str!("mod.rs")),
            ("streams.rs", include_str!("streams.rs")),
            ("push.rs", include_str!("push.rs")),
            ("recordings.rs", include_str!("recordings.rs")),
            ("webrtc.rs", include_str!("webrtc.rs")),
            ("onvif.rs", include_str!("onvif.rs")),
            ("mjpeg.rs", include_str!("mjpeg.rs")),
        ];
        for (file, text) in sources {
            for needle in ["Router::new(", ".nest(", ".merge(", "route_service("] {
                assert!(
                    !text.contains(needle),
                    "src/http/{file} builds routes with {needle} outside Doors::route"
                );
            }
        }
    }
}
