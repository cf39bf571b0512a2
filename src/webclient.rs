//! A small HTTP/1.1 POST client on hyper (already a dependency through the HTTP sidecar), for
//! webhooks and the analysis endpoint. `http://` only; every call is bounded by a timeout and
//! the answer by a size cap, so a slow or hostile server costs at most that.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The URL is not `http://host[:port][/path]`.
    #[error("{0:?} is not an http:// URL")]
    BadUrl(String),
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The exchange failed (connection reset, malformed answer, answer too large).
    #[error("HTTP exchange with {addr} failed: {reason}")]
    Exchange {
        /// host:port.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// No complete answer within the timeout.
    #[error("no answer from {addr} within {} s", .timeout.as_secs_f32())]
    Timeout {
        /// host:port.
        addr: String,
        /// The bound.
        timeout: Duration,
    },
}

/// A server's answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body (at most the cap asked for).
    pub body: Bytes,
}

/// `http://host[:port]/path` split into the connect address, the Host header and the path.
fn split(url: &str) -> Result<(String, String, String), WebError> {
    let bad = || WebError::BadUrl(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    // A port after the last ':' unless that ':' is inside an IPv6 literal.
    let has_port = authority
        .rfind(':')
        .is_some_and(|i| !authority[i..].contains(']'));
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, authority.to_string(), path.to_string()))
}

/// POSTs `body` as `application/json` to `url`; the whole exchange is bounded by `timeout` and
/// the answer's body by `max_body` bytes.
pub async fn post_json(
    url: &str,
    body: Vec<u8>,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, WebError> {
    let (addr, host, path) = split(url)?;
    let a = addr.clone();
    let exchange = async move {
        let stream =
            tokio::net::TcpStream::connect(&a)
                .await
                .map_err(|source| WebError::Connect {
                    addr: a.clone(),
                    source,
                })?;
        let fail = |reason: String| WebError::Exchange {
            addr: a.clone(),
            reason,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        // The connection task ends with the exchange (or when the timeout drops the sender).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("camstream/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(Answer { status, body })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(WebError::Timeout { addr, timeout }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split("http://127.0.0.1:11434/api/generate").unwrap(),
            (
                "127.0.0.1:11434".into(),
                "127.0.0.1:11434".into(),
                "/api/generate".into()
            )
        );
        assert_eq!(
            split("http://hooks.lan").unwrap(),
            ("hooks.lan:80".into(), "hooks.lan".into(), "/".into())
        );
        assert_eq!(split("http://[::1]/x").unwrap().0, "[::1]:80");
        assert!(split("https://x/").is_err());
        assert!(split("http://user:pw@x/").is_err());
    }

    #[tokio::test]
    async fn posts_and_reads_the_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("{\"a\":1}") {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8_lossy(&got).to_string()
        });
        let a = post_json(
            &format!("http://127.0.0.1:{port}/hook"),
            b"{\"a\":1}".to_vec(),
            Duration::from_secs(5),
            1024,
        )
        .await
        .unwrap();
        assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]));
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /hook HTTP/1.1"), "{req}");
        assert!(
            req.to_ascii_lowercase()
                .contains("content-type: application/json")
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let e = post_json(
            &format!("http://127.0.0.1:{port}/"),
            b"{}".to_vec(),
            Duration::from_millis(200),
            1024,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, WebError::Timeout { .. }), "{e}");
        drop(l);
    }
}
