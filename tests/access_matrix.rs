//! The access matrix (issue 22): every door — each HTTP route, WHEP, ONVIF and RTSP — against
//! {anonymous, wrong password, viewer, operator, admin, token} × {accounts configured, none},
//! with the status each must answer. What carries the picture is checked by content: the JPEG
//! decodes, the MP4 plays, the RTSP stream decodes (ffprobe). One daemon per configuration,
//! every request against it. Also: the seeds' variables alone close snapshot, recordings, WHEP
//! and status; PATCH refuses what is not a live setting and leaves the file alone; hooks see no
//! secret; the host check refuses names that are not this camera's.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{Daemon, daemon, ffprobe, http_request, raw_exchange, wait_until};

const VIEWER_PW: &str = "viewer-Pw-1";
const OPERATOR_PW: &str = "operator-Pw-1";
const ADMIN_PW: &str = "admin-Pw-1";
const HA_TOKEN: &str = "ha-token-0123456789";
const ADMIN_TOKEN: &str = "adm-token-0123456789";
const SEED_PW: &str = "Seed-Pw-42";

fn basic(user: &str, pw: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    format!("Basic {b}")
}

/// One column of the matrix: who asks, and the Authorization header that says so.
struct Who {
    name: &'static str,
    auth: Option<String>,
    /// RTSP user name and password, when this principal can use RTSP at all.
    rtsp: Option<(&'static str, &'static str)>,
}

fn columns_with_accounts() -> Vec<Who> {
    vec![
        Who {
            name: "anonymous",
            auth: None,
            rtsp: None,
        },
        Who {
            name: "wrong",
            auth: Some(basic("viewer", "not-the-password")),
            rtsp: Some(("viewer", "not-the-password")),
        },
        Who {
            name: "viewer",
            auth: Some(basic("viewer", VIEWER_PW)),
            rtsp: Some(("viewer", VIEWER_PW)),
        },
        Who {
            name: "operator",
            auth: Some(basic("operator", OPERATOR_PW)),
            rtsp: Some(("operator", OPERATOR_PW)),
        },
        Who {
            name: "admin",
            auth: Some(basic("admin", ADMIN_PW)),
            rtsp: Some(("admin", ADMIN_PW)),
        },
        Who {
            name: "token",
            auth: Some(format!("Bearer {HA_TOKEN}")),
            rtsp: None,
        },
    ]
}

fn request(d: &Daemon, who: &Who, method: &str, path: &str, body: &[u8]) -> common::HttpResponse {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &who.auth {
        headers.push(("Authorization", a));
    }
    let ctype = if path.starts_with("/whep") {
        "application/sdp"
    } else if path.starts_with("/onvif") {
        "application/soap+xml; charset=utf-8"
    } else {
        "application/json"
    };
    headers.push(("Content-Type", ctype));
    http_request(d.http_port, method, path, &headers, body)
}

fn soap(body: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl"><s:Header/><s:Body>{body}</s:Body></s:Envelope>"#
    )
    .into_bytes()
}

/// One row: a door and the status each column gets, in column order.
struct Row {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    expect: Vec<u16>,
}

fn row(method: &'static str, path: impl Into<String>, body: &[u8], expect: &[u16]) -> Row {
    Row {
        method,
        path: path.into(),
        body: body.to_vec(),
        expect: expect.to_vec(),
    }
}

/// Runs every row for every column; returns the table as text and the mismatches.
fn run_matrix(d: &Daemon, columns: &[Who], rows: &[Row]) -> (String, Vec<String>) {
    let mut table = String::new();
    let mut wrong = Vec::new();
    for r in rows {
        let mut line = format!(
            "{:7} {:60}",
            r.method,
            r.path.chars().take(60).collect::<String>()
        );
        for (who, want) in columns.iter().zip(&r.expect) {
            let got = request(d, who, r.method, &r.path, &r.body).status;
            line.push_str(&format!(" {}={got}", who.name));
            if got != *want {
                wrong.push(format!(
                    "{} {} as {}: got {got}, want {want}",
                    r.method, r.path, who.name
                ));
            }
        }
        table.push_str(&line);
        table.push('\n');
    }
    (table, wrong)
}

/// The JPEG decodes: ffprobe reads its size.
fn assert_jpeg(bytes: &[u8], width: u64) {
    assert!(
        bytes.starts_with(&[0xFF, 0xD8]),
        "not a JPEG ({} bytes)",
        bytes.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.jpg");
    std::fs::write(&f, bytes).unwrap();
    let s = probe_file(&f);
    assert_eq!(s["streams"][0]["width"].as_u64(), Some(width), "{s}");
}

fn probe_file(f: &Path) -> serde_json::Value {
    let out = Command::new("timeout")
        .args(["20", "ffprobe", "-v", "error", "-count_frames"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ])
        .args(["-of", "json"])
        .arg(f)
        .output()
        .expect("ffprobe runs");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("ffprobe failed: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Status line of an RTSP DESCRIBE of /video without credentials.
fn describe_anonymously(port: u16) -> String {
    let r = raw_exchange(
        port,
        format!("DESCRIBE rtsp://127.0.0.1:{port}/video RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(3),
    );
    String::from_utf8_lossy(&r)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Whether ffprobe decodes the RTSP stream with these credentials.
fn rtsp_decodes(d: &Daemon, creds: Option<(&str, &str)>) -> bool {
    let url = match creds {
        Some((u, p)) => format!("rtsp://{u}:{p}@127.0.0.1:{}/video", d.rtsp_port),
        None => d.url(),
    };
    let out = Command::new("timeout")
        .args(["20", "ffprobe", "-v", "error", "-rtsp_transport", "tcp"])
        .args([
            "-show_entries",
            "stream=codec_name,width",
            "-of",
            "json",
            &url,
        ])
        .output()
        .expect("ffprobe runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["streams"][0]["codec_name"] == "h264" && v["streams"][0]["width"] == 320
}

/// The first recorded span long enough for a one-second MP4.
fn recorded_start(d: &Daemon, auth: &str) -> String {
    let mut start = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        let r = http_request(
            d.http_port,
            "GET",
            "/api/v1/recordings?stream=video",
            &[("Authorization", auth)],
            b"",
        );
        if r.status != 200 {
            return false;
        }
        let v = r.json();
        match v["spans"].as_array().and_then(|s| s.first()) {
            Some(s) if s["duration_s"].as_f64().unwrap_or(0.0) >= 3.0 => {
                start = s["start"].as_str().unwrap_or_default().to_string();
                true
            }
            _ => false,
        }
    });
    assert!(ok, "nothing recorded:\n{}", d.log());
    start
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let f = dir.join("camstream.toml");
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn accounts_configured_every_door_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[[auth.users]]
username = "viewer"
password = "{VIEWER_PW}"

[[auth.users]]
username = "operator"
password = "{OPERATOR_PW}"
role = "operator"

[[auth.users]]
username = "admin"
password = "{ADMIN_PW}"
role = "admin"

[[http.tokens]]
name = "home-assistant"
token = "{HA_TOKEN}"
role = "viewer"

[record]
enabled = true
path = "{}"
min_free_mb = 0
segment_s = 1
part_ms = 500

[onvif]
enabled = true
discovery = false
"#,
            rec.display()
        ),
    );
    let d = daemon().arg("--config").arg(config.display()).start();
    let cols = columns_with_accounts();
    let admin_auth = basic("admin", ADMIN_PW);
    let start = recorded_start(&d, &admin_auth);
    let mp4 = format!("/recordings/video.mp4?start={start}&duration=1");
    let patch = br#"{"encoder":{"bitrate_kbps":600}}"#;
    //                    anon wrong viewer operator admin token
    let rows = [
        row("GET", "/healthz", b"", &[200, 401, 200, 200, 200, 200]),
        row("GET", "/readyz", b"", &[200, 401, 200, 200, 200, 200]),
        row("GET", "/metrics", b"", &[200, 401, 200, 200, 200, 200]),
        row("GET", "/", b"", &[200, 200, 200, 200, 200, 200]),
        row("GET", "/web/app.js", b"", &[200, 200, 200, 200, 200, 200]),
        row(
            "GET",
            "/api/v1/status",
            b"",
            &[401, 401, 200, 200, 200, 200],
        ),
        row("GET", "/snapshot.jpg", b"", &[401, 401, 200, 200, 200, 200]),
        row(
            "GET",
            "/api/v1/streams",
            b"",
            &[401, 401, 200, 200, 200, 200],
        ),
        row(
            "GET",
            "/api/v1/streams/video",
            b"",
            &[401, 401, 200, 200, 200, 200],
        ),
        row(
            "GET",
            "/api/v1/streams/video/controls",
            b"",
            &[401, 401, 200, 200, 200, 200],
        ),
        // Motion detection: the peak picture needs `view` like a snapshot (off here, so a
        // principal who passes the door learns there is no picture).
        row(
            "GET",
            "/api/v1/streams/video/motion.jpg",
            b"",
            &[401, 401, 404, 404, 404, 404],
        ),
        row(
            "GET",
            "/recordings/video/events/video-1.jpg",
            b"",
            &[401, 401, 404, 404, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/recordings?stream=video",
            b"",
            &[401, 401, 200, 200, 200, 200],
        ),
        row("GET", mp4.clone(), b"", &[401, 401, 200, 200, 200, 200]),
        row(
            "PATCH",
            "/api/v1/streams/video",
            patch,
            &[401, 401, 403, 200, 200, 403],
        ),
        row(
            "POST",
            "/api/v1/streams/video/keyframe",
            b"",
            &[401, 401, 403, 202, 202, 403],
        ),
        row(
            "PATCH",
            "/api/v1/streams/video/push/none",
            br#"{"enabled":false}"#,
            &[401, 401, 403, 404, 404, 403],
        ),
        // A malformed offer reaches the handler (400) only when the door lets it through.
        row(
            "POST",
            "/whep/video",
            b"v=0\r\n",
            &[401, 401, 400, 400, 400, 400],
        ),
        row(
            "OPTIONS",
            "/whep/video",
            b"",
            &[204, 204, 204, 204, 204, 204],
        ),
        row(
            "DELETE",
            "/whep/video/none",
            b"",
            &[401, 401, 404, 404, 404, 404],
        ),
        row(
            "POST",
            "/onvif/device_service",
            &soap("<tds:GetSystemDateAndTime/>"),
            &[200, 200, 200, 200, 200, 200],
        ),
        row(
            "POST",
            "/onvif/media_service",
            // No credentials: 401 with an HTTP Digest challenge; wrong ones: a fault.
            &soap("<trt:GetProfiles/>"),
            &[401, 400, 200, 200, 200, 200],
        ),
        row(
            "POST",
            "/onvif/media_service",
            &soap(
                r#"<trt:GetStreamUri><trt:ProfileToken>profile_video</trt:ProfileToken></trt:GetStreamUri>"#,
            ),
            &[401, 400, 200, 200, 200, 200],
        ),
        // ONVIF events (issue 25, branch events): the same accounts as the other services.
        row(
            "POST",
            "/onvif/events_service",
            &soap(
                r#"<tev:GetEventProperties xmlns:tev="http://www.onvif.org/ver10/events/wsdl"/>"#,
            ),
            &[401, 400, 200, 200, 200, 200],
        ),
        row(
            "POST",
            "/onvif/events_service",
            &soap(
                r#"<tev:CreatePullPointSubscription xmlns:tev="http://www.onvif.org/ver10/events/wsdl"><tev:InitialTerminationTime>PT10S</tev:InitialTerminationTime></tev:CreatePullPointSubscription>"#,
            ),
            &[401, 400, 200, 200, 200, 200],
        ),
    ];
    let (table, wrong) = run_matrix(&d, &cols, &rows);
    println!("accounts configured:\n{table}");

    // RTSP: no credentials, a wrong password: 401; each account's stream decodes.
    assert!(describe_anonymously(d.rtsp_port).contains("401"));
    let mut rtsp_line =
        String::from("RTSP    /video                                                      ");
    for who in &cols {
        let decodes = match who.rtsp {
            Some(c) => rtsp_decodes(&d, Some(c)),
            None => rtsp_decodes(&d, None),
        };
        rtsp_line.push_str(&format!(
            " {}={}",
            who.name,
            if decodes { "plays" } else { "refused" }
        ));
        let want = matches!(who.name, "viewer" | "operator" | "admin");
        assert_eq!(decodes, want, "RTSP as {}", who.name);
    }
    println!("{rtsp_line}");
    assert!(wrong.is_empty(), "{table}\n{wrong:#?}");
    // Wrong passwords are counted and logged (capped) at every door, the password never.
    assert!(d.metric("camstream_auth_failures_total") >= Some(10.0));
    assert!(d.wait_log("HTTP login refused", Duration::from_secs(5)));
    assert!(d.log().contains("user=viewer"), "{}", d.log());
    assert!(
        !d.log().contains("not-the-password"),
        "a password in the log"
    );
    assert!(d.count_log("HTTP login refused") <= 5, "{}", d.log());

    // ONVIF over HTTP Digest (curl answers the challenge): the same accounts.
    let digest = |user: &str, pw: &str| {
        let out = Command::new("curl")
            .args(["-s", "-m", "10", "--digest", "-u", &format!("{user}:{pw}")])
            .args(["-H", "Content-Type: application/soap+xml; charset=utf-8"])
            .args(["-w", "\n%{http_code}", "--data-binary", "@-"])
            .arg(format!(
                "http://127.0.0.1:{}/onvif/media_service",
                d.http_port
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                if let Some(mut i) = c.stdin.take() {
                    i.write_all(&soap("<trt:GetProfiles/>"))?;
                }
                c.wait_with_output()
            })
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = digest("viewer", VIEWER_PW);
    assert!(ok.ends_with("200") && ok.contains("profile_video"), "{ok}");
    assert!(digest("viewer", "not-the-password").ends_with("401"));

    // The pictures are pictures.
    let viewer = &cols[2];
    assert_jpeg(&request(&d, viewer, "GET", "/snapshot.jpg", b"").body, 320);
    let r = request(&d, viewer, "GET", &mp4, b"");
    let f = dir.path().join("clip.mp4");
    std::fs::write(&f, &r.body).unwrap();
    let s = probe_file(&f);
    assert_eq!(s["streams"][0]["codec_name"], "h264", "{s}");
    assert!(
        s["streams"][0]["nb_read_frames"]
            .as_str()
            .and_then(|n| n.parse::<u32>().ok())
            >= Some(5),
        "{s}"
    );

    // Status: the summary for viewers, everything for the admin.
    let shown = request(&d, viewer, "GET", "/api/v1/status", b"").json();
    assert_eq!(shown["access"], "protected");
    assert!(shown.get("config").is_none(), "{shown}");
    assert!(shown["streams"][0].get("settings").is_none(), "{shown}");
    // The streams API shows a viewer the live settings (the page's forms), nothing else.
    let one = request(&d, viewer, "GET", "/api/v1/streams/video", b"").json();
    assert!(one["settings"]["image"].is_object(), "{one}");
    assert_eq!(one["settings"]["encoder"]["bitrate_kbps"], 600, "{one}");
    assert!(one["settings"].get("source").is_none(), "{one}");
    assert!(one["settings"]["record"].get("path").is_none(), "{one}");
    let full = request(&d, &cols[4], "GET", "/api/v1/status", b"").json();
    assert!(full.get("config").is_some(), "{full}");
    assert_eq!(full["role"], "admin");
    // A 401 says how to prove who you are; WHEP asks for Basic like RTSP.
    let r = request(&d, &cols[0], "GET", "/api/v1/status", b"");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"camstream\", charset=\"UTF-8\", Bearer")
    );
    let r = request(&d, &cols[0], "POST", "/whep/video", b"v=0\r\n");
    assert!(
        r.header("www-authenticate")
            .unwrap_or("")
            .starts_with("Basic")
    );
}

#[test]
fn no_accounts_visitors_watch_writes_need_a_token_and_only_live_settings_change() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[http]
allowed_hosts = ["cam.example"]

[[http.tokens]]
name = "admin-script"
token = "{ADMIN_TOKEN}"
role = "admin"
"#
    );
    let config = write_config(dir.path(), &text);
    let d = daemon().arg("--config").arg(config.display()).start();
    let cols = vec![
        Who {
            name: "anonymous",
            auth: None,
            rtsp: None,
        },
        Who {
            name: "wrong",
            auth: Some(basic("viewer", "not-the-password")),
            rtsp: None,
        },
        Who {
            name: "token",
            auth: Some(format!("Bearer {ADMIN_TOKEN}")),
            rtsp: None,
        },
    ];
    let patch = br#"{"encoder":{"bitrate_kbps":600}}"#;
    //                      anon wrong token(admin)
    let rows = [
        row("GET", "/healthz", b"", &[200, 401, 200]),
        row("GET", "/api/v1/status", b"", &[200, 401, 200]),
        row("GET", "/snapshot.jpg", b"", &[200, 401, 200]),
        row("GET", "/api/v1/streams/video", b"", &[200, 401, 200]),
        row("PATCH", "/api/v1/streams/video", patch, &[401, 401, 200]),
        row(
            "POST",
            "/api/v1/streams/video/keyframe",
            b"",
            &[401, 401, 202],
        ),
        row("POST", "/whep/video", b"v=0\r\n", &[400, 401, 400]),
    ];
    let (table, wrong) = run_matrix(&d, &cols, &rows);
    println!("no accounts:\n{table}");
    assert!(wrong.is_empty(), "{table}\n{wrong:#?}");
    assert!(rtsp_decodes(&d, None), "RTSP is open without accounts");
    assert_jpeg(
        &request(&d, &cols[0], "GET", "/snapshot.jpg", b"").body,
        320,
    );
    let open = request(&d, &cols[0], "GET", "/api/v1/status", b"").json();
    assert_eq!(open["access"], "open");
    assert!(open.get("config").is_none(), "{open}");
    assert!(
        d.log().contains("anyone who reaches"),
        "no start-up warning for an open camera:\n{}",
        d.log()
    );

    // PATCH changes only live settings: the rest is 400, naming the key; nothing on disk.
    for (body, key) in [
        (
            r#"{"source":{"kind":"pipeline","pipeline":"filesrc location=/etc/hostname ! fakesink"}}"#,
            "source.",
        ),
        (
            r#"{"source":{"pipeline":"videotestsrc"}}"#,
            "source.pipeline",
        ),
        (
            r#"{"push":[{"name":"x","url":"srt://192.0.2.1:9000?streamid=k"}]}"#,
            "push",
        ),
        (r#"{"record":{"path":"/tmp/elsewhere"}}"#, "record.path"),
    ] {
        let r = request(
            &d,
            &cols[2],
            "PATCH",
            "/api/v1/streams/video",
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(key) && msg.contains("SIGHUP"), "{msg}");
        assert!(
            !msg.contains("/etc/hostname"),
            "a pipeline value in an error: {msg}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        text,
        "the file changed"
    );

    // The host check: this machine's addresses and configured names pass, others do not.
    for (host, want) in [
        ("evil.example", 421),
        ("evil.example:8080", 421),
        ("127.0.0.1", 200),
        ("cam.example", 200),
        ("localhost:80", 200),
    ] {
        let r = raw_exchange(
            d.http_port,
            format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(3),
        );
        let line = String::from_utf8_lossy(&r)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        assert!(line.contains(&want.to_string()), "Host: {host}: {line}");
    }
}

#[test]
fn the_seeds_variables_alone_close_every_picture_and_hooks_see_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("hook-env.txt");
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[[hooks]]
on = "viewer_connected"
run = ["sh", "-c", "env > {}"]
"#,
            env_file.display()
        ),
    );
    let d = daemon()
        .arg("--config")
        .arg(config.display())
        .env("RTSP_USERNAME", "alice")
        .env("RTSP_PASSWORD", SEED_PW)
        .set("record.enabled", "true")
        .set("record.path", dir.path().join("rec").display())
        .set("record.min_free_mb", "0")
        .start();
    let anon = Who {
        name: "anonymous",
        auth: None,
        rtsp: None,
    };
    let alice = Who {
        name: "alice",
        auth: Some(basic("alice", SEED_PW)),
        rtsp: None,
    };
    for (method, path, body) in [
        ("GET", "/snapshot.jpg", &b""[..]),
        ("GET", "/api/v1/recordings?stream=video", b""),
        (
            "GET",
            "/recordings/video.mp4?start=2026-01-01T00:00:00Z&duration=1",
            b"",
        ),
        ("POST", "/whep/video", b"v=0\r\n"),
        ("GET", "/api/v1/status", b""),
    ] {
        assert_eq!(request(&d, &anon, method, path, body).status, 401, "{path}");
        let r = request(&d, &alice, method, path, body);
        assert!(
            ![401, 403].contains(&r.status),
            "{path} as alice: {}",
            r.status
        );
    }
    assert_jpeg(&request(&d, &alice, "GET", "/snapshot.jpg", b"").body, 320);
    // RTSP as before, and the viewer's connection runs the hook: its environment holds no secret.
    assert!(describe_anonymously(d.rtsp_port).contains("401"));
    let url = format!("rtsp://alice:{SEED_PW}@127.0.0.1:{}/video", d.rtsp_port);
    assert_eq!(ffprobe(&url, "tcp")["streams"][0]["codec_name"], "h264");
    assert!(
        wait_until(Duration::from_secs(15), || std::fs::metadata(&env_file)
            .is_ok_and(|m| m.len() > 0)),
        "the hook did not run:\n{}",
        d.log()
    );
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("CAMSTREAM_EVENT=viewer_connected"), "{env}");
    assert!(
        !env.contains(SEED_PW),
        "the password reached a hook:\n{env}"
    );
    assert!(
        !env.contains("RTSP_"),
        "the daemon's variables reached a hook:\n{env}"
    );
}

#[test]
fn an_account_limited_to_some_streams_reaches_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
[[auth.users]]
username = "garden"
password = "garden-Pw-1"
streams = ["front"]

[[auth.users]]
username = "all"
password = "all-Pw-1"

[[streams]]
name = "front"

[[streams]]
name = "back"
"#,
    );
    let d = daemon().arg("--config").arg(config.display()).start();
    let garden = Who {
        name: "garden",
        auth: Some(basic("garden", "garden-Pw-1")),
        rtsp: None,
    };
    let all = Who {
        name: "all",
        auth: Some(basic("all", "all-Pw-1")),
        rtsp: None,
    };
    for (who, stream, want) in [
        (&garden, "front", 200),
        (&garden, "back", 403),
        (&all, "back", 200),
    ] {
        let r = request(
            &d,
            who,
            "GET",
            &format!("/snapshot.jpg?stream={stream}"),
            b"",
        );
        assert_eq!(r.status, want, "{} {stream}: {}", who.name, r.text());
        let r = request(&d, who, "GET", &format!("/api/v1/streams/{stream}"), b"");
        assert_eq!(r.status, want, "{} {stream}", who.name);
    }
    // The list shows only what the account reaches.
    let listed = request(&d, &garden, "GET", "/api/v1/streams", b"").json();
    let names: Vec<&str> = listed["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["front"], "{listed}");
    // RTSP: the same rule per mount.
    let url = |user: &str, pw: &str, mount: &str| {
        format!("rtsp://{user}:{pw}@127.0.0.1:{}/{mount}", d.rtsp_port)
    };
    let plays = |u: String| {
        let out = Command::new("timeout")
            .args(["20", "ffprobe", "-v", "error", "-rtsp_transport", "tcp"])
            .args(["-show_entries", "stream=codec_name", "-of", "json", &u])
            .output()
            .expect("ffprobe runs");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["streams"][0]["codec_name"] == "h264"
    };
    assert!(plays(url("garden", "garden-Pw-1", "front")));
    assert!(!plays(url("garden", "garden-Pw-1", "back")));
    assert!(plays(url("all", "all-Pw-1", "back")));
}

/// `access.anonymous = "view"` with accounts (a camera on a home LAN): visitors watch at every
/// door, writes still need an operator, a wrong password is refused rather than taken as a
/// visitor (RTSP too), and start-up and status say the camera is open.
#[test]
fn open_to_visitors_with_accounts_still_refuses_wrong_passwords_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[access]
anonymous = "view"

[auth]
methods = ["digest", "basic"]

[[auth.users]]
username = "operator"
password = "{OPERATOR_PW}"
role = "operator"
"#
        ),
    );
    let d = daemon().arg("--config").arg(config.display()).start();
    let anon = Who {
        name: "anonymous",
        auth: None,
        rtsp: None,
    };
    let wrong = Who {
        name: "wrong",
        auth: Some(basic("operator", "not-the-password")),
        rtsp: None,
    };
    let operator = Who {
        name: "operator",
        auth: Some(basic("operator", OPERATOR_PW)),
        rtsp: None,
    };
    let patch = br#"{"encoder":{"bitrate_kbps":600}}"#;
    let rows = [
        row("GET", "/snapshot.jpg", b"", &[200, 401, 200]),
        row("GET", "/api/v1/status", b"", &[200, 401, 200]),
        row("POST", "/whep/video", b"v=0\r\n", &[400, 401, 400]),
        row("PATCH", "/api/v1/streams/video", patch, &[401, 401, 200]),
    ];
    let (table, bad) = run_matrix(&d, &[anon, wrong, operator], &rows);
    println!("open with accounts:\n{table}");
    assert!(bad.is_empty(), "{table}\n{bad:#?}");
    assert!(rtsp_decodes(&d, None), "visitors watch over RTSP");
    let describe = |auth: &str| {
        let r = raw_exchange(
            d.rtsp_port,
            format!(
                "DESCRIBE rtsp://127.0.0.1:{}/video RTSP/1.0\r\nCSeq: 2\r\n{auth}\r\n",
                d.rtsp_port
            )
            .as_bytes(),
            Duration::from_secs(3),
        );
        String::from_utf8_lossy(&r)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert!(describe("").contains("200"), "{}", describe(""));
    let wrong_basic = format!("Authorization: {}\r\n", basic("operator", "nope"));
    assert!(describe(&wrong_basic).contains("401"));
    let right_basic = format!("Authorization: {}\r\n", basic("operator", OPERATOR_PW));
    assert!(describe(&right_basic).contains("200"));
    let status = http_request(d.http_port, "GET", "/api/v1/status", &[], b"").json();
    assert_eq!(status["access"], "open");
    assert!(
        d.log()
            .contains("access.anonymous = view: anyone who reaches")
    );
}
