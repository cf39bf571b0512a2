//! What ships for operators refers only to what camstream exports: every series named in the
//! alert rules (deploy/prometheus/camstream-rules.yaml) and the Grafana dashboard
//! (deploy/grafana/camstream.json) is in the `/metrics` of a running daemon with recording, a
//! push and WebRTC in use, every expression passes promtool, and every runbook link lands on a
//! section of docs/troubleshooting.md.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `camstream_*` and `process_*` names in a text (recording rules' `camstream:` names are not
/// series of ours).
fn series_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["camstream_", "process_"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix) {
            let start = from + i;
            let before_ok = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |e| start + e);
            if before_ok && !text[end..].starts_with(':') {
                out.insert(text[start..end].to_string());
            }
            from = end;
        }
    }
    out
}

/// The expressions of the dashboard, as the generator wraps them for promtool.
fn dashboard_rules() -> String {
    let out = Command::new("python3")
        .arg(repo().join("deploy/grafana/generate.py"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "deploy/grafana/generate.py --check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    read("target/grafana-exprs.rules.yaml")
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (install the prometheus package)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rules_and_dashboard_pass_promtool() {
    let prom = repo().join("deploy/prometheus");
    promtool(&["check", "rules", "camstream-rules.yaml"], &prom);
    promtool(&["test", "rules", "camstream-rules.test.yaml"], &prom);
    let rules = dashboard_rules();
    assert!(rules.matches("expr:").count() >= 20, "{rules}");
    promtool(
        &["check", "rules", "target/grafana-exprs.rules.yaml"],
        repo(),
    );
}

#[test]
fn every_runbook_link_lands_on_a_section() {
    let rules = read("deploy/prometheus/camstream-rules.yaml");
    let doc = read("docs/troubleshooting.md");
    let alerts = rules.matches("- alert: ").count();
    let links: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .collect();
    assert_eq!(links.len(), alerts, "every alert has a runbook_url");
    for link in links {
        let anchor = link
            .trim_matches('"')
            .strip_prefix("docs/troubleshooting.md#")
            .unwrap_or_else(|| panic!("runbook {link} is not in docs/troubleshooting.md"));
        assert!(
            doc.contains(&format!("<a id=\"{anchor}\"></a>")),
            "docs/troubleshooting.md has no section {anchor}"
        );
    }
}

/// Series a daemon exports only once a WebRTC viewer has connected (checked against the names in
/// src/metrics.rs instead).
const ONLY_AFTER_A_SESSION: &[&str] = &["camstream_webrtc_viewers"];

#[test]
fn rules_and_dashboard_name_only_series_a_daemon_exports() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("camstream.toml");
    // A push to a UDP port nobody reads: it streams, and its output series exist.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        &config,
        format!(
            "[[push]]\nname = \"ground\"\nurl = \"udp://{}\"\n",
            sink.local_addr().unwrap()
        ),
    )
    .unwrap();
    let recordings = dir.path().join("rec");
    std::fs::create_dir(&recordings).unwrap();
    let d = daemon()
        .arg("--config")
        .arg(config.display())
        .set("record.enabled", "true")
        .set("record.path", recordings.display())
        .set("record.min_free_mb", "0")
        .start();
    // A refused WHEP offer registers the WebRTC series.
    let r = http_request(
        d.http_port,
        "POST",
        "/whep/video",
        &[("Content-Type", "application/sdp")],
        b"not an offer",
    );
    assert!(r.status >= 400, "a bad offer was accepted: {}", r.status);
    let mut exported = BTreeSet::new();
    let wanted: BTreeSet<String> = series_names(&read("deploy/prometheus/camstream-rules.yaml"))
        .into_iter()
        .chain(series_names(&read("deploy/grafana/camstream.json")))
        .collect();
    assert!(wanted.len() >= 20, "{wanted:?}");
    // Some series appear a moment after start (the recorder's first check, the push's state).
    let all_there = wait_until(Duration::from_secs(15), || {
        let text = d.get("/metrics").text();
        exported = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect();
        wanted
            .iter()
            .filter(|n| !ONLY_AFTER_A_SESSION.contains(&n.as_str()))
            .all(|n| exported.contains(n))
    });
    let metrics_rs = read("src/metrics.rs");
    for name in ONLY_AFTER_A_SESSION {
        assert!(
            metrics_rs.contains(&format!("\"{name}\"")),
            "{name} is not a name in src/metrics.rs"
        );
        exported.insert(name.to_string());
    }
    let all_there = all_there || wanted.is_subset(&exported);
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        all_there,
        "named in the rules or dashboard but not exported: {missing:?}\nexported: {exported:?}"
    );
}
