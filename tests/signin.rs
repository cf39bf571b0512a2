//! The page signs in (issue 22): the session routes, the cookie, the cross-site guard and the
//! refused-login count over plain HTTP, then the whole page in headless Chromium (the sign-in
//! form, a viewer without controls, sign-out, an operator's brightness, another origin refused).

mod common;

use std::time::Duration;

use base64::Engine;
use common::chromium::browser;
use common::{Daemon, HttpResponse, daemon, http_request};
use serde_json::Value;

const VIEWER_PW: &str = "watch-Only-7";
const OPERATOR_PW: &str = "turn-Knobs-9";

/// A camera with a viewer and an operator account (no token): nothing is anonymous.
fn camera() -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("camstream.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[auth.users]]
username = "vera"
password = "{VIEWER_PW}"

[[auth.users]]
username = "otto"
password = "{OPERATOR_PW}"
role = "operator"
"#
        ),
    )
    .unwrap();
    let d = daemon()
        .set("video.fps", "30")
        .arg("--config")
        .arg(config.display())
        .start();
    (d, dir)
}

fn basic(user: &str, pw: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    format!("Basic {b}")
}

/// Signs in over JSON as the page would (same origin); the cookie pair and the CSRF token.
fn sign_in(d: &Daemon, user: &str, pw: &str) -> (String, String) {
    let body = serde_json::json!({"username": user, "password": pw}).to_string();
    let r = http_request(
        d.http_port,
        "POST",
        "/api/v1/session",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://127.0.0.1"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    let pair = set.split(';').next().unwrap().trim().to_string();
    (pair, r.json()["csrf"].as_str().unwrap().to_string())
}

fn brightness(d: &Daemon) -> f64 {
    let r = http_request(
        d.http_port,
        "GET",
        "/api/v1/streams/video",
        &[("Authorization", basic("otto", OPERATOR_PW).as_str())],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["settings"]["image"]["brightness"]
        .as_f64()
        .unwrap_or(0.0)
}

fn patch_brightness(d: &Daemon, value: f64, headers: &[(&str, &str)]) -> HttpResponse {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    let body = serde_json::json!({"image": {"brightness": value}}).to_string();
    http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video",
        &h,
        body.as_bytes(),
    )
}

#[test]
fn sessions_sign_in_guard_writes_and_sign_out_over_http() {
    let (d, _dir) = camera();
    let port = d.http_port;

    // Anonymous: told the camera is protected; the API refuses, with no Basic challenge for
    // the page's own requests (so the browser shows no prompt over the form).
    let who = d.get("/api/v1/session");
    assert_eq!(who.status, 200);
    assert_eq!(who.json()["role"], Value::Null);
    assert_eq!(who.json()["access"], "protected");
    assert_eq!(who.json()["sign_in"], true);
    let page = http_request(
        port,
        "GET",
        "/api/v1/status",
        &[("X-Requested-With", "camstream")],
        b"",
    );
    assert_eq!(page.status, 401);
    assert!(
        !page
            .header("www-authenticate")
            .unwrap_or("")
            .contains("Basic"),
        "{:?}",
        page.headers
    );
    let script = d.get("/api/v1/status");
    assert_eq!(script.status, 401);
    assert!(script.header("www-authenticate").unwrap().contains("Basic"));

    // Wrong passwords: 401, counted, logged (without the password).
    let before = d.metric("camstream_auth_failures_total").unwrap_or(0.0);
    for _ in 0..3 {
        let r = http_request(
            port,
            "POST",
            "/api/v1/session",
            &[
                ("Content-Type", "application/json"),
                ("Origin", "http://127.0.0.1"),
            ],
            br#"{"username": "vera", "password": "guess"}"#,
        );
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.header("set-cookie").is_none());
    }
    assert_eq!(
        d.metric("camstream_auth_failures_total"),
        Some(before + 3.0)
    );
    assert!(d.wait_log("Sign-in refused", Duration::from_secs(5)));
    assert!(
        !d.log().contains("guess"),
        "a tried password reached the log"
    );

    // A sign-in from another origin (login CSRF) is refused.
    let r = http_request(
        port,
        "POST",
        "/api/v1/session",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://127.0.0.1:9"),
        ],
        format!(r#"{{"username": "vera", "password": "{VIEWER_PW}"}}"#).as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());

    // A viewer: the cookie's attributes, reads work, writes are forbidden.
    let r = http_request(
        port,
        "POST",
        "/api/v1/session",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        format!("username=vera&password={VIEWER_PW}").as_bytes(),
    );
    assert_eq!(r.status, 303, "a form post goes back to the page");
    assert_eq!(r.header("location"), Some("/"));
    let set = r.header("set-cookie").unwrap();
    assert!(set.starts_with("camstream_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let (vcookie, vcsrf) = sign_in(&d, "vera", VIEWER_PW);
    let who = http_request(
        port,
        "GET",
        "/api/v1/session",
        &[("Cookie", vcookie.as_str())],
        b"",
    );
    let who = who.json();
    assert_eq!(who["name"], "vera");
    assert_eq!(who["role"], "viewer");
    assert_eq!(who["may"]["control"], false);
    assert_eq!(who["csrf"], vcsrf.as_str());
    let status = http_request(
        port,
        "GET",
        "/api/v1/status",
        &[("Cookie", vcookie.as_str())],
        b"",
    );
    assert_eq!(status.status, 200, "{}", status.text());
    let r = patch_brightness(
        &d,
        0.2,
        &[
            ("Cookie", vcookie.as_str()),
            ("Origin", "http://127.0.0.1"),
            ("X-CSRF-Token", vcsrf.as_str()),
        ],
    );
    assert_eq!(
        r.status,
        403,
        "a viewer may not change settings: {}",
        r.text()
    );

    // An operator: a write needs the same origin and the CSRF token.
    let (ocookie, ocsrf) = sign_in(&d, "otto", OPERATOR_PW);
    let start = brightness(&d);
    for (why, headers) in [
        (
            "no token",
            vec![("Cookie", ocookie.as_str()), ("Origin", "http://127.0.0.1")],
        ),
        (
            "a wrong token",
            vec![
                ("Cookie", ocookie.as_str()),
                ("Origin", "http://127.0.0.1"),
                ("X-CSRF-Token", vcsrf.as_str()),
            ],
        ),
        (
            "another origin",
            vec![
                ("Cookie", ocookie.as_str()),
                ("Origin", "http://127.0.0.1:9"),
                ("X-CSRF-Token", ocsrf.as_str()),
            ],
        ),
        (
            "another site's fetch",
            vec![
                ("Cookie", ocookie.as_str()),
                ("Sec-Fetch-Site", "same-site"),
                ("X-CSRF-Token", ocsrf.as_str()),
            ],
        ),
    ] {
        let r = patch_brightness(&d, -0.5, &headers);
        assert_eq!(r.status, 403, "{why}: {}", r.text());
        assert!(r.text().contains("cross-site"), "{why}: {}", r.text());
    }
    assert!(
        (brightness(&d) - start).abs() < 1e-6,
        "a refused request changed something"
    );
    assert!(d.wait_log("Cross-site request refused", Duration::from_secs(5)));
    let r = patch_brightness(
        &d,
        0.25,
        &[
            ("Cookie", ocookie.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
            ("X-CSRF-Token", ocsrf.as_str()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!((brightness(&d) - 0.25).abs() < 1e-6);
    // Scripts use Authorization and need no CSRF token.
    let r = patch_brightness(
        &d,
        0.1,
        &[("Authorization", basic("otto", OPERATOR_PW).as_str())],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Sign-out needs the token too, then the cookie opens nothing.
    let out = |headers: &[(&str, &str)]| {
        http_request(port, "DELETE", "/api/v1/session", headers, b"").status
    };
    assert_eq!(out(&[("Cookie", ocookie.as_str())]), 403);
    assert_eq!(
        out(&[
            ("Cookie", ocookie.as_str()),
            ("Origin", "http://127.0.0.1"),
            ("X-CSRF-Token", ocsrf.as_str())
        ]),
        204
    );
    let after = http_request(
        port,
        "GET",
        "/api/v1/status",
        &[("Cookie", ocookie.as_str())],
        b"",
    );
    assert_eq!(after.status, 401);
    // The viewer's own session is untouched.
    let still = http_request(
        port,
        "GET",
        "/api/v1/status",
        &[("Cookie", vcookie.as_str())],
        b"",
    );
    assert_eq!(still.status, 200);
}

#[test]
fn an_open_camera_says_so_and_still_needs_an_account_to_change() {
    let d = daemon()
        .set("auth.username", "vera")
        .set("auth.password", VIEWER_PW)
        .set("access.anonymous", "view")
        .start();
    let who = d.get("/api/v1/session").json();
    assert_eq!(who["access"], "open", "{who}");
    assert_eq!(who["role"], Value::Null, "{who}");
    assert_eq!(who["sign_in"], true, "{who}");
    assert_eq!(who["may"]["view"], true, "{who}");
    assert_eq!(who["may"]["control"], false, "{who}");
    assert_eq!(d.get("/api/v1/status").status, 200);
    let r = patch_brightness(&d, 0.5, &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    drop(d);

    // Without accounts there is nothing to sign in with; the camera is open as before.
    let d = daemon().start();
    let who = d.get("/api/v1/session").json();
    assert_eq!(who["access"], "open", "{who}");
    assert_eq!(who["sign_in"], false, "{who}");
}

#[test]
fn the_page_signs_in_shows_controls_by_role_and_refuses_other_origins_in_chromium() {
    let (d, _dir) = camera();
    let shot = common::screenshot_path("web-signin.png");
    let url = format!("http://127.0.0.1:{}/", d.http_port);
    let viewer = format!("vera:{VIEWER_PW}");
    let operator = format!("otto:{OPERATOR_PW}");
    let r = browser(&[
        "signin",
        &url,
        "video",
        &viewer,
        &operator,
        "--brightness",
        "0.3",
        "--screenshot",
        shot.to_str().unwrap(),
    ]);
    eprintln!("signin: {r}");
    assert_eq!(r["ok"], true, "{r}");
    common::publish_screenshot(&shot);

    // Anonymous, with accounts configured: the sign-in form and nothing else.
    assert_eq!(r["anonymous"]["form"], true, "{r}");
    assert_eq!(r["anonymous"]["cards"], 0, "{r}");
    assert_eq!(r["anonymous"]["session"]["access"], "protected", "{r}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 5_000);

    // A viewer plays WebRTC and sees no controls.
    assert_eq!(r["viewer_signed_in"], true, "{r}");
    assert_eq!(r["viewer"]["mode"], "webrtc", "{r}");
    assert!(r["viewer"]["frames"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["viewer"]["visible_controls"], 0, "{r}");
    assert_eq!(r["viewer"]["who"], "vera (viewer)", "{r}");

    // Sign-out ends access: the form again, and the API answers 401.
    assert_eq!(r["signed_out"]["form"], true, "{r}");
    assert_eq!(r["signed_out"]["status_api"], 401, "{r}");
    assert_eq!(r["signed_out"]["cookie_visible_to_js"], "", "HttpOnly: {r}");

    // An operator sees the controls and changes brightness; the API reports it.
    assert_eq!(r["operator_signed_in"], true, "{r}");
    assert_eq!(r["operator"]["mode"], "webrtc", "{r}");
    assert!(
        r["operator"]["visible_controls"].as_u64().unwrap() >= 2,
        "{r}"
    );
    assert!(
        r["operator"]["image_result"]
            .as_str()
            .unwrap_or("")
            .starts_with("applied"),
        "{r}"
    );
    assert!((brightness(&d) - 0.3).abs() < 1e-6, "{r}");
    assert_eq!(
        r["view_page"], "webrtc",
        "/view/ plays with the session: {r}"
    );

    // Another origin (another port on 127.0.0.1, the operator's cookie in the browser): the
    // PATCH never leaves the browser (no CORS), the no-cors POST and the form POST are refused,
    // and the brightness is still the operator's.
    let cross = &r["cross_origin"];
    assert!(
        cross["patch"].as_str().unwrap_or("").starts_with("blocked"),
        "{r}"
    );
    assert!(
        cross["form_post"]
            .as_str()
            .unwrap_or("")
            .contains("cross-site request refused"),
        "{r}"
    );
    // Both the no-cors POST and the form POST reached the daemon and were refused.
    assert!(
        d.wait_log_count("Cross-site request refused", 2, Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert!(
        (brightness(&d) - 0.3).abs() < 1e-6,
        "another origin changed the brightness"
    );
    let errors: Vec<&Value> = r["console_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e.as_str().unwrap_or("").contains("401"))
        .collect();
    assert!(errors.is_empty(), "{r}");
}
