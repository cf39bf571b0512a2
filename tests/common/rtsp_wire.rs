//! RTSP on the wire for the test and benchmark clients: one response type, and the splitting of
//! a read buffer into interleaved `$` frames and complete responses. The benchmark includes this
//! file too (`#[path]`), so both speak RTSP the same way.
#![allow(dead_code)]

/// One RTSP response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code (0 when the status line did not parse).
    pub status: u16,
    /// Headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The session id (without parameters).
    pub fn session(&self) -> Option<String> {
        self.header("session")
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the front of a read buffer held.
#[derive(Debug)]
pub enum Item {
    /// An interleaved `$` frame (RTP or RTCP over the RTSP connection).
    Frame {
        /// Its channel.
        channel: u8,
        /// Its payload length.
        len: usize,
    },
    /// A complete response.
    Response(Response),
}

/// Removes the next complete item from the front of `buf`; `None` until one has fully arrived.
pub fn take(buf: &mut Vec<u8>) -> Option<Item> {
    if buf.first() == Some(&b'$') {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if buf.len() < 4 + len {
            return None;
        }
        let channel = buf[1];
        buf.drain(..4 + len);
        return Some(Item::Frame { channel, len });
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body_len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if buf.len() < end + 4 + body_len {
        return None;
    }
    let body = buf[end + 4..end + 4 + body_len].to_vec();
    buf.drain(..end + 4 + body_len);
    Some(Item::Response(Response {
        status,
        headers,
        body,
    }))
}
