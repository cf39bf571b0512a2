//! SOAP 1.2 envelopes, read and written with quick-xml. Reading is bounded (size, depth, element
//! count; no DOCTYPE) and keeps only what the services need: the leaf texts of the header and
//! body by their path of local names, and the body's operation. Anything malformed becomes a
//! [`Fault`], never a panic.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::reader::Reader;

/// Largest SOAP message accepted, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 32;
/// Most elements accepted in one message.
const MAX_ELEMENTS: usize = 4096;
/// Most attributes accepted in one message.
const MAX_ATTRIBUTES: usize = 256;
/// Longest element or attribute name accepted, in bytes (ONVIF's are under 40).
const MAX_NAME: usize = 128;
/// Most bytes of paths and values kept from one message: bounds what a request costs before
/// anyone is authenticated, whatever its shape (each leaf and attribute keeps its path).
const MAX_KEPT: usize = 128 * 1024;

/// SOAP 1.2 envelope namespace.
pub const NS_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";

/// Namespace prefixes every answer declares on its envelope.
const NAMESPACES: &[(&str, &str)] = &[
    ("xmlns:env", NS_ENV),
    ("xmlns:tt", "http://www.onvif.org/ver10/schema"),
    ("xmlns:tds", "http://www.onvif.org/ver10/device/wsdl"),
    ("xmlns:trt", "http://www.onvif.org/ver10/media/wsdl"),
    ("xmlns:ter", "http://www.onvif.org/ver10/error"),
    (
        "xmlns:wsa",
        "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    ),
    ("xmlns:d", "http://schemas.xmlsoap.org/ws/2005/04/discovery"),
    ("xmlns:dn", "http://www.onvif.org/ver10/network/wsdl"),
    // The event service (output::onvif::events).
    ("xmlns:tev", "http://www.onvif.org/ver10/events/wsdl"),
    ("xmlns:wsnt", "http://docs.oasis-open.org/wsn/b-2"),
    ("xmlns:wstop", "http://docs.oasis-open.org/wsn/t-1"),
    ("xmlns:tns1", "http://www.onvif.org/ver10/topics"),
    ("xmlns:wsa5", "http://www.w3.org/2005/08/addressing"),
    ("xmlns:xs", "http://www.w3.org/2001/XMLSchema"),
];

/// A SOAP fault: who is at fault, the ONVIF subcodes, and a reason for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// True for `env:Sender` (the request was wrong), false for `env:Receiver`.
    pub sender: bool,
    /// Subcodes, outermost first (e.g. `ter:InvalidArgVal`, `ter:NoProfile`).
    pub subcodes: Vec<&'static str>,
    /// Human-readable reason.
    pub reason: String,
}

impl Fault {
    /// The request is not well-formed SOAP.
    pub fn malformed(reason: impl Into<String>) -> Self {
        Fault {
            sender: true,
            subcodes: vec!["ter:WellFormed"],
            reason: reason.into(),
        }
    }

    /// Missing or wrong credentials.
    pub fn not_authorized(reason: impl Into<String>) -> Self {
        Fault {
            sender: true,
            subcodes: vec!["ter:NotAuthorized"],
            reason: reason.into(),
        }
    }

    /// An operation this device does not implement.
    pub fn not_supported(operation: &str) -> Self {
        Fault {
            sender: false,
            subcodes: vec!["ter:ActionNotSupported"],
            reason: format!("{operation} is not supported by this device"),
        }
    }

    /// A bad argument, with its specific subcode (e.g. `ter:NoProfile`).
    pub fn invalid_arg(sub: &'static str, reason: impl Into<String>) -> Self {
        Fault {
            sender: true,
            subcodes: vec!["ter:InvalidArgVal", sub],
            reason: reason.into(),
        }
    }

    /// The HTTP status the fault goes with (SOAP 1.2 HTTP binding).
    pub fn http_status(&self) -> u16 {
        if self.sender { 400 } else { 500 }
    }

    /// The fault as a complete envelope.
    pub fn envelope(&self) -> Vec<u8> {
        envelope(&[], |x| {
            x.node("env:Fault", &[], |x| {
                x.node("env:Code", &[], |x| {
                    x.leaf(
                        "env:Value",
                        if self.sender {
                            "env:Sender"
                        } else {
                            "env:Receiver"
                        },
                    );
                    subcode(x, &self.subcodes);
                });
                x.node("env:Reason", &[], |x| {
                    x.node("env:Text", &[("xml:lang", "en")], |x| x.text(&self.reason));
                });
            });
        })
    }
}

fn subcode(x: &mut Xml, codes: &[&str]) {
    if let Some((first, rest)) = codes.split_first() {
        x.node("env:Subcode", &[], |x| {
            x.leaf("env:Value", first);
            subcode(x, rest);
        });
    }
}

/// What was read from a request envelope.
#[derive(Debug, Default, Clone)]
pub struct Request {
    /// Local name of the body's first element: the operation.
    pub operation: String,
    /// Leaf texts by path of local names below the envelope, e.g.
    /// `Header/Security/UsernameToken/Username` or `Body/GetStreamUri/ProfileToken`.
    pub fields: Vec<(String, String)>,
    /// Attributes by `path@name`, e.g. `Header/Security/UsernameToken/Password@Type`.
    pub attributes: Vec<(String, String)>,
}

impl Request {
    /// The text at `path`, if present.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }

    /// Every text at `path` (repeated elements).
    pub fn all(&self, path: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The attribute `name` of the element at `path`.
    pub fn attribute(&self, path: &str, name: &str) -> Option<&str> {
        let key = format!("{path}@{name}");
        self.attributes
            .iter()
            .find(|(p, _)| *p == key)
            .map(|(_, v)| v.as_str())
    }

    /// A body argument of the operation, e.g. `arg("ProfileToken")`.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.get(&format!("Body/{}/{name}", self.operation))
    }
}

fn local(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    match s.rsplit_once(':') {
        Some((_, l)) => l.to_string(),
        None => s.to_string(),
    }
}

/// Parses a SOAP envelope (1.1 or 1.2: only local names are looked at).
pub fn parse(data: &[u8]) -> Result<Request, Fault> {
    if data.len() > MAX_MESSAGE {
        return Err(Fault::malformed(format!(
            "the message is larger than {MAX_MESSAGE} bytes"
        )));
    }
    let text =
        std::str::from_utf8(data).map_err(|_| Fault::malformed("the message is not UTF-8"))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<String> = Vec::new();
    let mut req = Request::default();
    let mut elements = 0usize;
    let mut attributes = 0usize;
    let mut kept = 0usize;
    let mut keep = |n: usize| -> Result<(), Fault> {
        kept += n;
        if kept > MAX_KEPT {
            return Err(Fault::malformed(format!(
                "the message holds more than {MAX_KEPT} bytes of fields"
            )));
        }
        Ok(())
    };
    let mut saw_envelope = false;
    let mut pending_text: Option<String> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| Fault::malformed(format!("not well-formed XML: {e}")))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(Fault::malformed("too many elements"));
                }
                if e.name().as_ref().len() > MAX_NAME {
                    return Err(Fault::malformed(format!(
                        "an element name is longer than {MAX_NAME} bytes"
                    )));
                }
                let name = local(e.name().as_ref());
                if stack.is_empty() {
                    if saw_envelope || name != "Envelope" {
                        return Err(Fault::malformed("the root element is not a SOAP Envelope"));
                    }
                    saw_envelope = true;
                }
                stack.push(name);
                if stack.len() > MAX_DEPTH {
                    return Err(Fault::malformed("elements nested too deeply"));
                }
                if stack.len() == 3 && stack[1] == "Body" && req.operation.is_empty() {
                    req.operation = stack[2].clone();
                }
                // The path is built once per element with attributes, not per attribute.
                let mut path: Option<String> = None;
                for a in e.attributes() {
                    let a = a.map_err(|e| Fault::malformed(format!("bad attribute: {e}")))?;
                    attributes += 1;
                    if attributes > MAX_ATTRIBUTES {
                        return Err(Fault::malformed("too many attributes"));
                    }
                    if a.key.as_ref().len() > MAX_NAME {
                        return Err(Fault::malformed(format!(
                            "an attribute name is longer than {MAX_NAME} bytes"
                        )));
                    }
                    let value = a
                        .unescape_value()
                        .map_err(|e| Fault::malformed(format!("bad attribute value: {e}")))?;
                    let path = path.get_or_insert_with(|| stack[1..].join("/"));
                    let key = format!("{path}@{}", local(a.key.as_ref()));
                    keep(key.len() + value.len())?;
                    req.attributes.push((key, value.to_string()));
                }
                pending_text = None;
                if matches!(event, Event::Empty(_)) {
                    stack.pop();
                }
            }
            Event::Text(t) => {
                let t = t
                    .unescape()
                    .map_err(|e| Fault::malformed(format!("bad text: {e}")))?;
                if stack.is_empty() {
                    return Err(Fault::malformed("text outside the envelope"));
                }
                pending_text = Some(t.to_string());
            }
            Event::CData(c) => {
                pending_text = Some(String::from_utf8_lossy(&c).to_string());
            }
            Event::End(_) => {
                if let Some(t) = pending_text.take()
                    && stack.len() > 1
                {
                    let path = stack[1..].join("/");
                    keep(path.len() + t.len())?;
                    req.fields.push((path, t));
                }
                stack.pop();
            }
            Event::DocType(_) => return Err(Fault::malformed("DOCTYPE is not allowed in SOAP")),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !saw_envelope || !stack.is_empty() {
        return Err(Fault::malformed("the envelope is incomplete"));
    }
    if req.operation.is_empty() {
        return Err(Fault::malformed("the SOAP Body holds no operation"));
    }
    Ok(req)
}

/// Writes XML with quick-xml; text and attribute values are escaped.
pub struct Xml {
    w: Writer<Vec<u8>>,
}

impl Xml {
    fn new() -> Self {
        Xml {
            w: Writer::new(Vec::new()),
        }
    }

    /// `<name attrs>…</name>` with `inner` written between.
    pub fn node(&mut self, name: &str, attrs: &[(&str, &str)], inner: impl FnOnce(&mut Xml)) {
        let start = BytesStart::new(name).with_attributes(attrs.iter().copied());
        // Writing to a Vec cannot fail.
        let _ = self.w.write_event(Event::Start(start));
        inner(self);
        let _ = self.w.write_event(Event::End(BytesEnd::new(name)));
    }

    /// `<name>text</name>`.
    pub fn leaf(&mut self, name: &str, text: &str) {
        self.node(name, &[], |x| x.text(text));
    }

    /// Escaped text.
    pub fn text(&mut self, text: &str) {
        let _ = self.w.write_event(Event::Text(BytesText::new(text)));
    }
}

/// A complete SOAP 1.2 envelope: `header` leaves (name, text) and the body written by `body`.
pub fn envelope(header: &[(&str, &str)], body: impl FnOnce(&mut Xml)) -> Vec<u8> {
    envelope_with(
        |x| {
            for (name, text) in header {
                x.leaf(name, text);
            }
        },
        !header.is_empty(),
        body,
    )
}

/// A complete SOAP 1.2 envelope whose header (when `has_header`) is written by `header`.
pub fn envelope_with(
    header: impl FnOnce(&mut Xml),
    has_header: bool,
    body: impl FnOnce(&mut Xml),
) -> Vec<u8> {
    let mut x = Xml::new();
    let _ =
        x.w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    x.node("env:Envelope", NAMESPACES, |x| {
        if has_header {
            x.node("env:Header", &[], header);
        }
        x.node("env:Body", &[], body);
    });
    x.w.into_inner()
}

/// Runs the SOAP reader over one body, as the fuzz target and its stable smoke test do, and
/// checks what a parsed request must satisfy. Panics on a violated invariant.
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(r) = parse(data) {
        assert!(data.len() <= MAX_MESSAGE);
        assert!(!r.operation.is_empty(), "parsed without an operation");
        assert!(r.attributes.len() <= MAX_ATTRIBUTES);
        let kept: usize = r
            .fields
            .iter()
            .chain(&r.attributes)
            .map(|(p, v)| p.len() + v.len())
            .sum();
        assert!(kept <= MAX_KEPT, "kept {kept} bytes");
        assert!(
            r.fields
                .iter()
                .all(|(p, _)| p.split('/').count() < MAX_DEPTH)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET_URI: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<soap-env:Envelope xmlns:soap-env="http://www.w3.org/2003/05/soap-envelope">
  <soap-env:Header><wsse:Security xmlns:wsse="x"><wsse:UsernameToken>
    <wsse:Username>admin</wsse:Username>
    <wsse:Password Type="http://x#PasswordDigest">abc=</wsse:Password>
  </wsse:UsernameToken></wsse:Security></soap-env:Header>
  <soap-env:Body><ns0:GetStreamUri xmlns:ns0="http://www.onvif.org/ver10/media/wsdl">
    <ns0:StreamSetup><ns1:Stream xmlns:ns1="s">RTP-Unicast</ns1:Stream></ns0:StreamSetup>
    <ns0:ProfileToken>prof_a&amp;b</ns0:ProfileToken>
  </ns0:GetStreamUri></soap-env:Body></soap-env:Envelope>"#;

    #[test]
    fn reads_operation_arguments_and_security() {
        let r = parse(GET_URI.as_bytes()).unwrap();
        assert_eq!(r.operation, "GetStreamUri");
        assert_eq!(r.arg("ProfileToken"), Some("prof_a&b"));
        assert_eq!(
            r.get("Header/Security/UsernameToken/Username"),
            Some("admin")
        );
        assert_eq!(
            r.attribute("Header/Security/UsernameToken/Password", "Type"),
            Some("http://x#PasswordDigest")
        );
    }

    #[test]
    fn refuses_what_is_not_soap() {
        for bad in [
            "",
            "hello",
            "<a/>",
            "<Envelope><Body></Body></Envelope>",
            "<Envelope><Body><Op></Body></Envelope>",
            "<!DOCTYPE x [<!ENTITY a 'b'>]><Envelope><Body><Op/></Body></Envelope>",
            "<Envelope><Body><Op/></Body></Envelope><Envelope/>",
        ] {
            let f = parse(bad.as_bytes()).unwrap_err();
            assert_eq!(f.http_status(), 400, "{bad}");
        }
        let deep = format!(
            "<Envelope><Body>{}{}</Body></Envelope>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert!(
            parse(deep.as_bytes())
                .unwrap_err()
                .reason
                .contains("deeply")
        );
        assert!(parse(&vec![b' '; MAX_MESSAGE + 1]).is_err());
    }

    #[test]
    fn writes_escaped_faults() {
        let f = Fault::invalid_arg("ter:NoProfile", "no profile <x>");
        let s = String::from_utf8(f.envelope()).unwrap();
        assert!(s.contains("<env:Value>env:Sender</env:Value>"), "{s}");
        assert!(s.contains("<env:Value>ter:NoProfile</env:Value>"), "{s}");
        assert!(s.contains("no profile &lt;x&gt;"), "{s}");
        // What we write, we can read.
        let r = parse(s.as_bytes()).unwrap();
        assert_eq!(r.operation, "Fault");
    }
}
