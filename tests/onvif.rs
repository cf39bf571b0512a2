//! ONVIF against real clients: WSDiscovery (PyPI) finds the daemon with a unicast probe over
//! loopback, onvif-zeep reads its device information, profiles and stream URIs, ffprobe plays
//! every URI it was given, wrong or replayed credentials are refused, and malformed SOAP gets
//! faults while the daemon keeps streaming. The Python clients live in a venv made by
//! tests/onvif/setup-venv.sh (scripts/setup.sh --test runs it too).

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

use base64::Engine;
use common::{Daemon, daemon, ffprobe, http_request, promtool_accepts};

const USER: &str = "nvr";
const PASSWORD: &str = "pa ss&<word>";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, made once per test binary.
fn python() -> PathBuf {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        let status = Command::new("bash")
            .arg(root().join("tests/onvif/setup-venv.sh"))
            .status()
            .expect("bash runs");
        assert!(status.success(), "tests/onvif/setup-venv.sh failed");
    });
    root().join("target/onvif-venv/bin/python")
}

fn client(args: &[&str]) -> serde_json::Value {
    let out = Command::new("timeout")
        .arg("60")
        .arg(python())
        .arg(root().join("tests/onvif/client.py"))
        .args(args)
        .output()
        .expect("python runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client.py {args:?} printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A UDP port nobody uses right now.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon with ONVIF on, viewer accounts, and a 160x120 rendition named "low".
fn start(dir: &tempfile::TempDir, discovery_port: u16) -> Daemon {
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[auth]
username = "{USER}"
password = "{PASSWORD}"

[onvif]
enabled = true
discovery_port = {discovery_port}
name = "Front door"
location = "porch"
hardware = "pi-cm4"

[[renditions]]
name = "low"
width = 160
height = 120
bitrate_kbps = 150
"#
        ),
    )
    .unwrap();
    daemon().arg("--config").arg(config.display()).start()
}

#[test]
fn an_nvr_discovers_adds_and_plays_the_camera() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let d = start(&dir, udp);

    // Discovery: a unicast probe over loopback, through the library's own client.
    let t0 = std::time::Instant::now();
    let found = client(&["discover", &udp.to_string()]);
    eprintln!(
        "discovery (3 s listening window included) took {:?}",
        t0.elapsed()
    );
    let services = found["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "exactly this device answers: {found}");
    let s = &services[0];
    let xaddr = format!("http://127.0.0.1:{}/onvif/device_service", d.http_port);
    assert_eq!(s["xaddrs"], serde_json::json!([xaddr]), "{found}");
    let scopes: Vec<&str> = s["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for want in [
        "onvif://www.onvif.org/name/Front%20door",
        "onvif://www.onvif.org/location/porch",
        "onvif://www.onvif.org/hardware/pi-cm4",
        "onvif://www.onvif.org/Profile/Streaming",
    ] {
        // The library hands scopes back percent-decoded.
        let decoded = want.replace("%20", " ");
        assert!(
            scopes.iter().any(|s| *s == want || *s == decoded),
            "{want} in {scopes:?}"
        );
    }
    assert!(
        s["types"]
            .as_array()
            .unwrap()
            .contains(&"NetworkVideoTransmitter".into())
    );

    // The device and media services, as an NVR reads them.
    let port = d.http_port.to_string();
    let t0 = std::time::Instant::now();
    let m = client(&["media", "127.0.0.1", &port, USER, PASSWORD]);
    eprintln!(
        "onvif-zeep session (WSDL load and every call) took {:?}",
        t0.elapsed()
    );
    assert_eq!(m["manufacturer"], "camstream", "{m}");
    assert_eq!(m["model"], "pi-cm4", "{m}");
    assert_eq!(m["sources"], serde_json::json!(["source_video"]), "{m}");
    assert_eq!(
        m["services"],
        serde_json::json!([
            "http://www.onvif.org/ver10/device/wsdl",
            "http://www.onvif.org/ver10/media/wsdl",
            // The event service (issue 25, branch events).
            "http://www.onvif.org/ver10/events/wsdl"
        ]),
        "{m}"
    );
    assert!(m["year"].as_i64().unwrap() >= 2024, "{m}");
    // The host's interfaces as /sys lists them (loopback left out).
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    let reported: Vec<&str> = m["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(reported, names, "{m}");
    let profiles = m["profiles"].as_array().unwrap();
    assert_eq!(
        profiles.len(),
        2,
        "one profile per stream and rendition: {m}"
    );
    let rtsp = format!("rtsp://127.0.0.1:{}", d.rtsp_port);
    for (p, name, mount, (w, h)) in [
        (&profiles[0], "video", "/video", (320, 240)),
        (&profiles[1], "low", "/low", (160, 120)),
    ] {
        assert_eq!(p["name"], name, "{m}");
        assert_eq!(p["encoding"], "H264");
        assert_eq!(
            (p["width"].as_i64(), p["height"].as_i64()),
            (Some(w), Some(h))
        );
        assert_eq!(
            p["uri"],
            format!("{rtsp}{mount}"),
            "the RTSP URL on the host reached"
        );
        assert_eq!(
            p["snapshot"],
            format!(
                "http://127.0.0.1:{}/snapshot.jpg?stream={name}",
                d.http_port
            )
        );
        // ffprobe plays the URI the client was given (with the same account).
        let uri = p["uri"].as_str().unwrap().replacen(
            "rtsp://",
            &format!("rtsp://{USER}:{}@", "pa%20ss%26%3Cword%3E"),
            1,
        );
        let probe = ffprobe(&uri, "tcp");
        let st = &probe["streams"][0];
        assert_eq!(st["codec_name"], "h264", "{probe}");
        assert_eq!(
            (st["width"].as_i64(), st["height"].as_i64()),
            (Some(w), Some(h)),
            "{probe}"
        );
    }

    // Wrong credentials are refused, and GetSystemDateAndTime stays open, as the spec says.
    let refused = client(&["media", "127.0.0.1", &port, USER, "guess"]);
    assert!(
        refused["refused"]
            .as_str()
            .unwrap_or_default()
            .contains("wrong user name or password"),
        "{refused}"
    );
    let open = soap(
        &d,
        "/onvif/device_service",
        "",
        "<tds:GetSystemDateAndTime/>",
    );
    assert_eq!(open.status, 200, "{}", open.text());
    assert!(open.text().contains("<tt:UTCDateTime>"));
    let closed = soap(
        &d,
        "/onvif/device_service",
        "",
        "<tds:GetDeviceInformation/>",
    );
    // No credentials at all: a SOAP fault with an HTTP Digest challenge (401).
    assert_eq!(closed.status, 401);
    assert!(
        closed
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Digest realm=\"camstream\"")),
        "{:?}",
        closed.headers
    );
    assert!(
        closed.text().contains("ter:NotAuthorized"),
        "{}",
        closed.text()
    );

    // A captured request cannot be sent again, and a stale one is refused.
    let token = username_token(USER, PASSWORD, b"nonce-for-replay", &now_rfc3339(0));
    let first = soap(&d, "/onvif/media_service", &token, "<trt:GetProfiles/>");
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().contains("token=\"profile_low\""));
    let again = soap(&d, "/onvif/media_service", &token, "<trt:GetProfiles/>");
    assert_eq!(again.status, 400);
    assert!(again.text().contains("replay"), "{}", again.text());
    let stale = username_token(USER, PASSWORD, b"another-nonce", &now_rfc3339(-3600));
    let old = soap(&d, "/onvif/media_service", &stale, "<trt:GetProfiles/>");
    assert!(old.text().contains("stale"), "{}", old.text());

    // Unimplemented operations and unknown profiles are faults, not errors of the daemon.
    let fresh = username_token(USER, PASSWORD, b"third-nonce", &now_rfc3339(0));
    let ptz = soap(&d, "/onvif/device_service", &fresh, "<tds:SystemReboot/>");
    assert_eq!(ptz.status, 500);
    assert!(
        ptz.text().contains("ter:ActionNotSupported"),
        "{}",
        ptz.text()
    );
    let fresh = username_token(USER, PASSWORD, b"fourth-nonce", &now_rfc3339(0));
    let none = soap(
        &d,
        "/onvif/media_service",
        &fresh,
        "<trt:GetStreamUri><trt:ProfileToken>nope</trt:ProfileToken></trt:GetStreamUri>",
    );
    assert!(none.text().contains("ter:NoProfile"), "{}", none.text());
    assert!(
        d.metric(
            "camstream_onvif_requests_total{service=\"media\",operation=\"GetProfiles\",result=\"ok\"}"
        )
        .unwrap_or(0.0)
            >= 2.0,
        "GetProfiles counted (the client's and ours)"
    );
    assert!(
        d.metric("camstream_onvif_discovery_probes_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    promtool_accepts(&d.get("/metrics").text());
}

#[test]
fn malformed_soap_gets_faults_and_the_daemon_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(&dir, free_udp_port());
    let valid = envelope("", "<trt:GetProfiles/>");
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    // Every truncation of a valid request.
    let step = valid.len() / 40;
    for i in 0..40 {
        bodies.push(valid.as_bytes()[..i * step].to_vec());
    }
    // Pseudo-random bytes (fixed seed) and random tag soup.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..30 {
        let n = 1 + (next() % 2000) as usize;
        let b: Vec<u8> = (0..n)
            .map(|_| {
                let r = next();
                if i % 2 == 0 {
                    r as u8
                } else {
                    b"<>/=\"'&;:ab Envelope Body"[(r % 25) as usize]
                }
            })
            .collect();
        bodies.push(b);
    }
    let deep = format!("{}{}", "<a>".repeat(5000), "</a>".repeat(5000));
    let many = format!(
        "<e:Envelope xmlns:e=\"{}\"><e:Body>{}</e:Body></e:Envelope>",
        "http://www.w3.org/2003/05/soap-envelope",
        "<x/>".repeat(20_000)
    );
    for b in [
        "<!DOCTYPE lol [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><Envelope><Body>&b;</Body></Envelope>".to_string(),
        "<Envelope><Body></Body></Envelope>".into(),
        "<NotSoap/>".into(),
        "<Envelope><Body><Op/></Body></Envelope><Envelope/>".into(),
        "<Envelope><Body><Op>&unknown;</Op></Body></Envelope>".into(),
        "<Envelope><Body><Op a=\"1\" a=\"2\"/></Body></Envelope>".into(),
        "<Envelope><Body><Op></Body></Op></Envelope>".into(),
        deep,
        many,
        "x".repeat(200 * 1024),
    ] {
        bodies.push(b.into_bytes());
    }
    bodies.push(vec![0xff, 0xfe, 0x3c, 0x00]);
    while bodies.len() < 100 {
        let mut b = valid.clone().into_bytes();
        let at = (next() as usize) % b.len();
        b[at] = b'<';
        bodies.push(b);
    }
    assert_eq!(bodies.len(), 100);
    for (i, b) in bodies.iter().enumerate() {
        let r = http_request(
            d.http_port,
            "POST",
            "/onvif/device_service",
            &[("Content-Type", "application/soap+xml")],
            b,
        );
        // 401: parsed, but it needs credentials (with an HTTP Digest challenge).
        assert!(
            [400, 401, 500].contains(&r.status),
            "body {i} answered {} {}",
            r.status,
            r.text()
        );
        assert!(r.text().contains("<env:Fault>"), "body {i}: {}", r.text());
    }
    // Still up, still serving, still streaming.
    assert_eq!(d.get("/healthz").status, 200);
    let ok = soap(
        &d,
        "/onvif/device_service",
        "",
        "<tds:GetSystemDateAndTime/>",
    );
    assert_eq!(ok.status, 200);
    let url = format!(
        "rtsp://{USER}:pa%20ss%26%3Cword%3E@127.0.0.1:{}/video",
        d.rtsp_port
    );
    assert_eq!(ffprobe(&url, "tcp")["streams"][0]["width"], 320);
    let metrics = d.get("/metrics").text();
    // Every body but the two over 64 KiB (refused before they are parsed) is counted as refused.
    let refused: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("camstream_onvif_requests_total{service=\"device\"")
                && !l.contains("result=\"ok\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(refused >= 98.0, "{metrics}");
}

fn envelope(header: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl"><s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

fn soap(d: &Daemon, path: &str, header: &str, body: &str) -> common::HttpResponse {
    http_request(
        d.http_port,
        "POST",
        path,
        &[("Content-Type", "application/soap+xml; charset=utf-8")],
        envelope(header, body).as_bytes(),
    )
}

/// Now plus `offset_s`, as xsd:dateTime in UTC.
fn now_rfc3339(offset_s: i64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("{offset_s} seconds"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A WS-Security header with a PasswordDigest UsernameToken, as a client builds it.
fn username_token(user: &str, password: &str, nonce: &[u8], created: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD;
    let digest = b64.encode(h.digest().bytes());
    let password_xml = digest; // base64 needs no escaping
    format!(
        r#"<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"><wsse:UsernameToken><wsse:Username>{user}</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{password_xml}</wsse:Password><wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">{}</wsse:Nonce><wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"#,
        b64.encode(nonce)
    )
}

/// Home Assistant's ONVIF library (onvif-zeep-async, in its own venv) as HA adds a camera:
/// service addresses, profiles, the stream URI. With an account it gets them and the URI
/// plays; without one, or with a wrong password, it is refused.
#[test]
fn home_assistants_client_needs_an_account() {
    python();
    let d = daemon()
        .set("onvif.enabled", "true")
        .set("onvif.discovery", "false")
        .set("auth.username", USER)
        .set("auth.password", PASSWORD)
        .start();
    let port = d.http_port.to_string();
    let ha = |user: &str, password: &str| -> serde_json::Value {
        let out = Command::new("timeout")
            .arg("60")
            .arg(root().join("target/onvif-ha-venv/bin/python"))
            .arg(root().join("tests/onvif/ha_client.py"))
            .args(["127.0.0.1", &port, user, password])
            .output()
            .expect("python runs");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ha_client.py printed no JSON ({e}):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let ok = ha(USER, PASSWORD);
    assert_eq!(ok["profiles"][0], "profile_video", "{ok}");
    let uri = ok["uri"].as_str().unwrap_or_default().to_string();
    assert!(uri.starts_with("rtsp://127.0.0.1:"), "{ok}");
    let with_creds = uri.replacen(
        "rtsp://",
        &format!("rtsp://{USER}:{}@", "pa%20ss%26%3Cword%3E"),
        1,
    );
    assert_eq!(
        ffprobe(&with_creds, "tcp")["streams"][0]["codec_name"],
        "h264"
    );
    for (user, password) in [("", ""), (USER, "wrong")] {
        let refused = ha(user, password);
        assert!(
            refused["refused"].as_str().is_some_and(|r| !r.is_empty()),
            "{user:?}: {refused}"
        );
    }
}
