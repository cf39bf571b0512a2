//! WS-UsernameToken authentication (the WS-Security profile ONVIF requires): the client sends
//! `Username`, `Nonce`, `Created` and `Password = base64(sha1(nonce + created + password))`.
//! The accounts are those of `Access` (one list for every door). A `Created` time outside the allowed clock skew is
//! refused as stale, and a nonce seen before (within that window) as a replay, so a captured
//! request cannot be sent again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;

use super::soap::{Fault, Request};

const TOKEN: &str = "Header/Security/UsernameToken";
/// Nonces remembered at most; a flood of valid requests evicts the oldest.
const MAX_NONCES: usize = 4096;

/// An account allowed to use the services.
#[derive(Clone)]
pub struct Account {
    /// User name.
    pub username: String,
    /// Password (the RTSP viewer password).
    pub password: String,
}

/// Checks UsernameTokens against the accounts and remembers nonces.
pub struct Authenticator {
    accounts: Vec<Account>,
    skew: Duration,
    /// (nonce, created) → when it may be forgotten (unix seconds).
    seen: Mutex<HashMap<(Vec<u8>, String), i64>>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// `base64(sha1(nonce + created + password))`.
pub fn digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// Parses an xsd:dateTime such as `2026-12-02T13:22:01Z`, `…01.5Z` or `…01+02:00` into unix
/// seconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    crate::utc::parse_rfc3339(s.trim()).map(|t| t.div_euclid(crate::utc::SECOND))
}

impl Authenticator {
    /// Accounts (none: no authentication) and the allowed clock skew.
    pub fn new(accounts: Vec<Account>, skew: Duration) -> Self {
        Authenticator {
            accounts,
            skew,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any account is configured (without one, every request is let in).
    pub fn required(&self) -> bool {
        !self.accounts.is_empty()
    }

    /// Checks the request's UsernameToken at `now` (unix seconds); returns the user name, or
    /// `None` when the request carries no token (or no account exists: a token then proves
    /// nothing, and the request is the anonymous visitor's, as before accounts existed).
    pub fn check(&self, req: &Request, now: i64) -> Result<Option<String>, Fault> {
        if !self.required() {
            return Ok(None);
        }
        let field = |name: &str| req.get(&format!("{TOKEN}/{name}"));
        let Some(user) = field("Username") else {
            return Ok(None);
        };
        let password = field("Password").unwrap_or_default();
        let kind = req
            .attribute(&format!("{TOKEN}/Password"), "Type")
            .unwrap_or_default();
        if !kind.ends_with("#PasswordDigest") {
            return Err(Fault::not_authorized(
                "only PasswordDigest UsernameTokens are accepted",
            ));
        }
        let nonce = field("Nonce")
            .and_then(|n| {
                base64::engine::general_purpose::STANDARD
                    .decode(n.trim())
                    .ok()
            })
            .ok_or_else(|| Fault::not_authorized("the UsernameToken has no valid Nonce"))?;
        let created_text = field("Created")
            .ok_or_else(|| Fault::not_authorized("the UsernameToken has no Created time"))?;
        let created = parse_datetime(created_text).ok_or_else(|| {
            Fault::not_authorized("the UsernameToken's Created time is not a date")
        })?;
        let skew = self.skew.as_secs() as i64;
        if (now - created).abs() > skew {
            return Err(Fault::not_authorized(format!(
                "the UsernameToken's Created time is more than {skew} s from the device's clock (stale, or the clocks differ)"
            )));
        }
        let ok = self.accounts.iter().any(|a| {
            constant_time_eq(a.username.as_bytes(), user.as_bytes())
                && constant_time_eq(
                    digest(&nonce, created_text, &a.password).as_bytes(),
                    password.trim().as_bytes(),
                )
        });
        if !ok {
            return Err(Fault::not_authorized("wrong user name or password"));
        }
        let mut seen = self.seen.lock().unwrap();
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, until| *until > now);
            if seen.len() >= MAX_NONCES
                && let Some(oldest) = seen.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
        }
        let key = (nonce, created_text.to_string());
        if seen.contains_key(&key) {
            return Err(Fault::not_authorized("this nonce was used before (replay)"));
        }
        seen.insert(key, created + skew + 1);
        Ok(Some(user.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::onvif::soap::parse;

    fn request(user: &str, nonce: &[u8], created: &str, password: &str) -> Request {
        let n = base64::engine::general_purpose::STANDARD.encode(nonce);
        let d = digest(nonce, created, password);
        let xml = format!(
            r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Header><Security><UsernameToken>
            <Username>{user}</Username><Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{d}</Password>
            <Nonce>{n}</Nonce><Created>{created}</Created></UsernameToken></Security></e:Header>
            <e:Body><GetProfiles/></e:Body></e:Envelope>"#
        );
        parse(xml.as_bytes()).unwrap()
    }

    fn auth() -> Authenticator {
        Authenticator::new(
            vec![Account {
                username: "admin".into(),
                password: "s3cret".into(),
            }],
            Duration::from_secs(300),
        )
    }

    #[test]
    fn dates() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_datetime("2024-02-29T12:00:00.25Z"),
            Some(1_709_208_000)
        );
        assert_eq!(
            parse_datetime("2024-02-29T14:00:00+02:00"),
            Some(1_709_208_000)
        );
        assert_eq!(parse_datetime("2024-02-29 12:00:00"), None);
        assert_eq!(parse_datetime("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn digest_fresh_and_once() {
        let a = auth();
        let now = parse_datetime("2026-12-02T13:00:00Z").unwrap();
        let r = request(
            "admin",
            b"0123456789abcdef",
            "2026-12-02T13:00:10Z",
            "s3cret",
        );
        assert_eq!(a.check(&r, now).unwrap().as_deref(), Some("admin"));
        let replay = a.check(&r, now + 1).unwrap_err();
        assert!(replay.reason.contains("replay"), "{replay:?}");
        let wrong = request("admin", b"another-nonce", "2026-12-02T13:00:10Z", "guess");
        assert!(a.check(&wrong, now).unwrap_err().reason.contains("wrong"));
        let stale = request("admin", b"third-nonce", "2026-12-02T12:50:00Z", "s3cret");
        assert!(a.check(&stale, now).unwrap_err().reason.contains("stale"));
        // No token: the anonymous visitor, whom `Access::check` then judges.
        let nobody = parse(b"<Envelope><Body><GetProfiles/></Body></Envelope>").unwrap();
        assert_eq!(a.check(&nobody, now).unwrap(), None);
    }
}
