//! The headless Chromium driver (tests/webrtc/browser.py) as the tests run it: its venv made
//! once per test binary, a bounded run, its JSON answer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use serde_json::Value;

/// The project's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv with websocket-client the Chromium driver needs (made once per run).
pub fn python() -> PathBuf {
    static VENV: Once = Once::new();
    VENV.call_once(|| {
        let ok = Command::new("bash")
            .arg(root().join("tests/recording/setup-venv.sh"))
            .status()
            .expect("bash runs");
        assert!(ok.success(), "tests/recording/setup-venv.sh failed");
    });
    root().join("target/recording-venv/bin/python")
}

/// Runs tests/webrtc/browser.py with `args` (at most 180 s) and returns its JSON.
pub fn browser(args: &[&str]) -> Value {
    let out = Command::new("timeout")
        .arg("180")
        .arg(python())
        .arg(root().join("tests/webrtc/browser.py"))
        .args(args)
        .output()
        .expect("the Chromium driver runs (scripts/setup.sh --test installs it)");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "driver output: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
