//! HTTP Digest (RFC 7616 with MD5, `qop=auth`, as ONVIF's core specification names it) for
//! ONVIF clients that authenticate at the HTTP level instead of with a WS-UsernameToken. The
//! accounts are those of [`Access`]; nonces are signed with a per-process secret, expire after
//! [`NONCE_LIFETIME_S`], and each (nonce, nc, cnonce) is accepted once, so a captured request
//! cannot be sent again.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::access::{Access, Principal, Via, same_secret};

/// How long a nonce is accepted after it was issued.
pub const NONCE_LIFETIME_S: i64 = 300;
/// The realm in challenges.
const REALM: &str = "camstream";
/// Responses remembered at most (for replay refusal); the oldest half goes when full.
const MAX_SEEN: usize = 4096;

/// Issues challenges and checks Digest answers.
pub struct DigestAuth {
    secret: [u8; 20],
    seen: Mutex<HashSet<(String, String, String)>>,
}

impl Default for DigestAuth {
    fn default() -> Self {
        Self::new()
    }
}

impl DigestAuth {
    /// A checker with a fresh secret (from the kernel's random source, else time and pid).
    pub fn new() -> Self {
        let mut seed = [0u8; 20];
        let from_kernel = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .is_ok();
        if !from_kernel {
            let mut h = sha1_smol::Sha1::new();
            h.update(
                format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
            );
            seed = h.digest().bytes();
        }
        DigestAuth {
            secret: seed,
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn sign(&self, issued: i64) -> String {
        let mut h = sha1_smol::Sha1::new();
        h.update(&self.secret);
        h.update(issued.to_string().as_bytes());
        h.digest().to_string()[..24].to_string()
    }

    /// The `WWW-Authenticate` value for a challenge at `now` (unix seconds).
    pub fn challenge(&self, now: i64) -> String {
        format!(
            "Digest realm=\"{REALM}\", qop=\"auth\", algorithm=MD5, nonce=\"{now:x}.{}\"",
            self.sign(now)
        )
    }

    /// The account an `Authorization: Digest …` header proves for `method`, at `now`.
    pub fn verify(
        &self,
        access: &Access,
        header: &str,
        method: &str,
        now: i64,
    ) -> Option<Principal> {
        let params = header.trim().strip_prefix("Digest")?;
        let p = parse_params(params);
        let get = |k: &str| {
            p.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let (user, nonce, uri, response) = (
            get("username")?,
            get("nonce")?,
            get("uri")?,
            get("response")?,
        );
        if get("realm") != Some(REALM) {
            return None;
        }
        let (issued, mac) = nonce.split_once('.')?;
        let issued = i64::from_str_radix(issued, 16).ok()?;
        if !same_secret(mac.as_bytes(), self.sign(issued).as_bytes())
            || !(0..=NONCE_LIFETIME_S).contains(&(now - issued))
        {
            return None;
        }
        let qop = get("qop");
        let (nc, cnonce) = (
            get("nc").unwrap_or_default(),
            get("cnonce").unwrap_or_default(),
        );
        let ha2 = md5_hex(format!("{method}:{uri}").as_bytes());
        let mut found = None;
        // Every account is computed, so the time does not tell which names exist.
        for u in access.users() {
            let ha1 = md5_hex(format!("{}:{REALM}:{}", u.username, u.password.0).as_bytes());
            let expected = match qop {
                Some(q) => md5_hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:{q}:{ha2}").as_bytes()),
                None => md5_hex(format!("{ha1}:{nonce}:{ha2}").as_bytes()),
            };
            if same_secret(u.username.as_bytes(), user.as_bytes())
                & same_secret(expected.as_bytes(), response.as_bytes())
            {
                found = Some(u.username.clone());
            }
        }
        let user = found?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_SEEN {
            seen.clear();
        }
        if !seen.insert((nonce.to_string(), nc.to_string(), cnonce.to_string())) {
            return None;
        }
        access.identify(&user, Via::Password)
    }
}

/// `key=value` and `key="value"` pairs, commas inside quotes kept.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() && out.len() < 32 {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// MD5 (RFC 1321) as lowercase hex: Digest needs it, nothing else here does, and it is short.
pub fn md5_hex(data: &[u8]) -> String {
    md5(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: [u32; 64] =
        std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32);
    let (mut a0, mut b0, mut c0, mut d0) = (
        0x6745_2301u32,
        0xefcd_ab89u32,
        0x98ba_dcfeu32,
        0x1032_5476u32,
    );
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                chunk[4 * i],
                chunk[4 * i + 1],
                chunk[4 * i + 2],
                chunk[4 * i + 3],
            ])
        });
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, w) in [a0, b0, c0, d0].iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Secret};

    #[test]
    fn md5_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_hex(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn a_digest_answer_proves_the_account_once() {
        let mut c = Config::default();
        c.auth.username = "nvr".into();
        c.auth.password = Secret("pw".into());
        let access = Access::from_config(&c).unwrap();
        let d = DigestAuth::new();
        let now = 1_800_000_000;
        let challenge = d.challenge(now);
        let nonce = challenge
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        let answer = |pw: &str, nc: &str| {
            let ha1 = md5_hex(format!("nvr:camstream:{pw}").as_bytes());
            let ha2 = md5_hex(b"POST:/onvif/media_service");
            let r = md5_hex(format!("{ha1}:{nonce}:{nc}:abc:auth:{ha2}").as_bytes());
            format!(
                "Digest username=\"nvr\", realm=\"camstream\", nonce=\"{nonce}\", \
                 uri=\"/onvif/media_service\", qop=auth, nc={nc}, cnonce=\"abc\", response=\"{r}\""
            )
        };
        let ok = d.verify(&access, &answer("pw", "00000001"), "POST", now + 1);
        assert_eq!(ok.unwrap().name(), "nvr");
        // The same answer again is a replay; a wrong password or a stale nonce proves nothing.
        assert!(
            d.verify(&access, &answer("pw", "00000001"), "POST", now + 2)
                .is_none()
        );
        assert!(
            d.verify(&access, &answer("nope", "00000002"), "POST", now + 2)
                .is_none()
        );
        assert!(
            d.verify(
                &access,
                &answer("pw", "00000003"),
                "POST",
                now + NONCE_LIFETIME_S + 1
            )
            .is_none()
        );
        assert!(
            d.verify(&access, &answer("pw", "00000004"), "GET", now + 2)
                .is_none()
        );
        // A nonce this process did not sign is refused.
        let forged = answer("pw", "00000005").replace(nonce, &format!("{now:x}.000000"));
        assert!(d.verify(&access, &forged, "POST", now + 2).is_none());
    }
}
