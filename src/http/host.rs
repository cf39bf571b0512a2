//! The host check against DNS rebinding: a web page on another site can make a browser resolve
//! its own name to the camera's address and read the answers as same-origin. Such a request
//! still names the page's host, so the sidecar answers only requests naming an IP address,
//! `localhost`, this machine's name (or `name.local`) or a name in `http.allowed_hosts`.
//!
//! Probes need no exception: a kubelet (or any check by address) names an IP literal.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State as AxumState};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::error;
use crate::config::HttpConfig;

/// The names a request may use, lowercased.
#[derive(Debug, Clone)]
pub struct Allowed {
    names: Vec<String>,
}

impl Allowed {
    /// `localhost`, the machine's name (and `name.local`) and `http.allowed_hosts`.
    pub fn from_config(http: &HttpConfig) -> Self {
        let mut names = vec!["localhost".to_string()];
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim().to_ascii_lowercase();
        if !host.is_empty() {
            // The short name too, when the kernel holds a fully qualified one.
            if let Some((short, _)) = host.split_once('.') {
                names.push(short.to_string());
                names.push(format!("{short}.local"));
            }
            names.push(format!("{host}.local"));
            names.push(host);
        }
        names.extend(
            http.allowed_hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()),
        );
        Allowed { names }
    }

    /// Whether a `Host` header value (with or without a port) names this machine.
    pub fn permits(&self, value: &str) -> bool {
        let value = value.trim();
        let host = if let Some(rest) = value.strip_prefix('[') {
            // [v6]:port
            match rest.split_once(']') {
                Some((h, _)) => return h.parse::<std::net::Ipv6Addr>().is_ok(),
                None => return false,
            }
        } else {
            match value.rsplit_once(':') {
                Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
                _ => value,
            }
        };
        if host.parse::<IpAddr>().is_ok() {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host.ends_with(".localhost") || self.names.contains(&host)
    }
}

/// Refuses requests whose `Host` names another machine (421 Misdirected Request). A request
/// without a `Host` (HTTP/1.0) cannot come from a browser and passes.
pub async fn check(
    AxumState(allowed): AxumState<Arc<Allowed>>,
    req: Request,
    next: Next,
) -> Response {
    let named = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_string())
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()));
    match named {
        Some(h) if !allowed.permits(&h) => {
            tracing::debug!(host = %h.chars().take(100).collect::<String>(), "Request for another host refused");
            error(
                StatusCode::MISDIRECTED_REQUEST,
                "this request names a host this camera does not answer to (a protection against \
                 DNS rebinding): use its IP address or name, or add the name to http.allowed_hosts",
            )
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_local_names_and_configured_names_pass() {
        let http = HttpConfig {
            allowed_hosts: vec!["Cam.Example.NET".into()],
            ..HttpConfig::default()
        };
        let a = Allowed::from_config(&http);
        for ok in [
            "127.0.0.1",
            "192.168.1.20:8080",
            "[::1]:8080",
            "[fe80::1]",
            "localhost:8080",
            "LOCALHOST",
            "cam.example.net",
            "cam.example.net.:80",
            "app.localhost",
        ] {
            assert!(a.permits(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[evil]",
            "",
            "cam.example.net.evil",
        ] {
            assert!(!a.permits(bad), "{bad}");
        }
    }
}
