//! libcamera for real, without a camera: the binary built here runs inside the Debian 13 root
//! (scripts/trixie-root.sh, the one deploy/deb/verify.sh reuses) with libcamera 0.4's virtual
//! camera configured. Where the kernel offers a dma-buf provider (`/dev/dma_heap/*` or
//! `/dev/udmabuf`) frames are captured through libcamerasrc and played over RTSP; where it
//! offers none (CI and these machines) the failure must be told in libcamera's words: `camstream
//! check` fails naming the dma-buf provider within 5 s, and the daemon's status and its
//! `camera_down` event carry libcamera's reason within 2 s of start while RTSP and HTTP stay up.
//! Needs root and debootstrap; without them the test says loudly that it skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Packages the test needs in the root: libcamera's GStreamer element and tools, and what the
/// camstream binary links.
const PACKAGES: &[&str] = &[
    "gstreamer1.0-libcamera",
    "libcamera-tools",
    "gstreamer1.0-tools",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
    "libgstrtspserver-1.0-0",
];

/// libcamera's virtual pipeline handler reads its cameras from here (Debian builds it).
const VIRTUAL_YAML: &str = "usr/share/libcamera/pipeline/virtual/virtual.yaml";

const VIRTUAL_CAMERA: &str = r#"%YAML 1.1
---
"Virtual0":
  supported_formats:
    - width: 640
      height: 480
      frame_rates:
        - 15
        - 30
  test_pattern: "bars"
  location: "CameraLocationFront"
  model: "camstream test camera"
"#;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The root with libcamera and a virtual camera, and the binary under test copied in; `None`
/// (with a loud message) when this machine cannot make the root.
fn prepare() -> Option<(PathBuf, String)> {
    let has_debootstrap = Command::new("sh")
        .args(["-c", "command -v debootstrap"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !is_root() || !has_debootstrap {
        eprintln!(
            "\n\n*** SKIPPED: the libcamera virtual-camera test needs root and debootstrap \
             (root: {}, debootstrap: {has_debootstrap}); run scripts/setup.sh --test as root ***\n",
            is_root()
        );
        return None;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(repo.join("scripts/trixie-root.sh"))
        .args(PACKAGES)
        .status()
        .expect("scripts/trixie-root.sh runs");
    assert!(status.success(), "scripts/trixie-root.sh failed");
    let root = repo.join("target/trixie-root");
    let yaml = root.join(VIRTUAL_YAML);
    std::fs::create_dir_all(yaml.parent().expect("a parent")).expect("mkdir virtual");
    std::fs::write(&yaml, VIRTUAL_CAMERA).expect("write virtual.yaml");
    // One copy per test process: another test binary may be copying its own.
    let bin = format!("/usr/local/bin/camstream-test-{}", std::process::id());
    std::fs::copy(env!("CARGO_BIN_EXE_camstream"), root.join(&bin[1..])).expect("copy binary");
    Some((root, bin))
}

/// Mounts /proc, /sys and /dev into the root for as long as it lives (only those not mounted
/// already, and only those are unmounted again).
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn new(root: &Path) -> Mounts {
        let mut mounted = Vec::new();
        for fs in ["proc", "sys", "dev"] {
            let at = root.join(fs);
            let already = Command::new("mountpoint")
                .arg("-q")
                .arg(&at)
                .status()
                .is_ok_and(|s| s.success());
            if already {
                continue;
            }
            let ok = Command::new("mount")
                .args(["--bind", &format!("/{fs}")])
                .arg(&at)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot bind-mount /{fs} into {}", root.display());
            mounted.push(at);
        }
        Mounts(mounted)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// A dma-buf provider on this kernel: then libcamera can capture.
fn dma_buf_provider() -> Option<String> {
    let mut nodes: Vec<String> = std::fs::read_dir("/dev/dma_heap")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    if Path::new("/dev/udmabuf").exists() {
        nodes.push("/dev/udmabuf".into());
    }
    (!nodes.is_empty()).then(|| nodes.join(", "))
}

/// `camstream check` inside the root: (passed, stdout, how long it took).
fn check(root: &Path, bin: &str, kind: &str, encoder: &str) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = Command::new("chroot")
        .arg(root)
        .args([bin, "check", "--source", kind])
        .args([
            "--width",
            "640",
            "--height",
            "480",
            "--fps",
            "15",
            "--encoder",
            encoder,
        ])
        .args(["--set", "rtsp.port=0", "--set", "http.port=0"])
        .env("NO_COLOR", "1")
        .output()
        .expect("chroot runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        t.elapsed(),
    )
}

/// The daemon inside the root, with a `camera_down` hook writing the event's message to
/// `hook_file` (a path inside the root).
fn start_daemon(root: &Path, bin: &str, kind: &str, hook_file: &str) -> (Daemon, Instant) {
    let config = format!("/tmp/camstream-test-{}-{kind}.toml", std::process::id());
    std::fs::write(
        root.join(&config[1..]),
        format!(
            "[[hooks]]\non = \"camera_down\"\nrun = [\"sh\", \"-c\", 'echo \"$CAMSTREAM_EVENT $CAMSTREAM_MESSAGE\" >> {hook_file}']\n"
        ),
    )
    .expect("write config");
    let builder = daemon()
        .arg("--config")
        .arg(&config)
        .set("source.kind", kind)
        .set("video.width", 640)
        .set("video.height", 480)
        .no_wait();
    let inner = builder.command();
    let mut cmd = Command::new("chroot");
    cmd.arg(root).arg(bin).args(inner.get_args());
    let t0 = Instant::now();
    (builder.start_command(cmd), t0)
}

#[test]
fn libcamera_virtual_camera_in_trixie() {
    let Some((root, bin)) = prepare() else {
        return;
    };
    let _mounts = Mounts::new(&root);
    let mut leftovers = vec![root.join(&bin[1..])];
    for kind in ["libcamera", "auto"] {
        leftovers.push(root.join(format!(
            "tmp/camstream-test-{}-{kind}.toml",
            std::process::id()
        )));
    }
    let cleanup = Cleanup(leftovers);
    match dma_buf_provider() {
        Some(nodes) => {
            eprintln!("*** RAN: the capture path (dma-buf provider: {nodes})");
            capture_path(&root, &bin);
        }
        None => {
            eprintln!(
                "*** RAN: the error path (this kernel has no /dev/dma_heap/* nor /dev/udmabuf)"
            );
            error_path(&root, &bin);
        }
    }
    drop(cleanup);
}

/// Removes the copied binary and the configurations written into the root.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn error_path(root: &Path, bin: &str) {
    // The check lists the camera, then fails capturing it, naming the dma-buf provider.
    for kind in ["libcamera", "auto"] {
        let (ok, out, took) = check(root, bin, kind, "auto");
        assert!(!ok, "check passed with source {kind}:\n{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("FAIL video: capture:"))
            .unwrap_or_else(|| panic!("no failed capture finding ({kind}):\n{out}"));
        assert!(
            line.contains("libcamera: Could not open any dma-buf provider"),
            "{line}"
        );
        assert!(line.contains("/dev/dma_heap"), "no hint: {line}");
        assert!(
            took < Duration::from_secs(5),
            "check took {took:?} ({kind})"
        );
        // GStreamer 1.26's v4l2 plugin is installed; the element exists only with a device.
        let encoder = out
            .lines()
            .find(|l| l.starts_with("ok   video: encoder "))
            .unwrap_or_else(|| panic!("no encoder finding:\n{out}"));
        assert!(
            encoder.contains("v4l2h264enc: plugin installed, no V4L2 H.264 encoder device"),
            "{encoder}"
        );
        if kind == "auto" {
            eprintln!("encoder probe in the trixie root: {encoder}");
            assert!(
                out.contains("ok   video: camera: found libcamera camera Virtual0"),
                "auto did not pick the virtual camera:\n{out}"
            );
        }
        eprintln!(
            "check --source {kind}: failed in {} ms: {line}",
            took.as_millis()
        );
    }

    for kind in ["libcamera", "auto"] {
        let hook_file = format!("/tmp/camstream-test-{}-{kind}.events", std::process::id());
        let host_hook_file = root.join(&hook_file[1..]);
        let _ = std::fs::remove_file(&host_hook_file);
        let (d, t0) = start_daemon(root, bin, kind, &hook_file);
        let mut status = serde_json::Value::Null;
        let said = wait_until(Duration::from_secs(2), || {
            let r = d.get("/api/v1/status");
            if r.status != 200 {
                return false;
            }
            status = r.json();
            status["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Could not open any dma-buf provider"))
        });
        let took = t0.elapsed();
        assert!(
            said,
            "no libcamera reason in last_error within 2 s ({kind}): {status}\n{}",
            d.log()
        );
        eprintln!(
            "daemon --source {kind}: last_error after {} ms: {}",
            took.as_millis(),
            status["last_error"]["message"]
        );
        let event = wait_until(Duration::from_secs(2), || {
            std::fs::read_to_string(&host_hook_file).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.starts_with("camera_down ")
                        && l.contains("libcamera: Could not open any dma-buf provider")
                })
            })
        });
        assert!(
            event,
            "no camera_down event with libcamera's reason ({kind}): {:?}\n{}",
            std::fs::read_to_string(&host_hook_file),
            d.log()
        );
        eprintln!(
            "daemon --source {kind}: camera_down event within {} ms of start",
            t0.elapsed().as_millis()
        );
        assert!(
            d.log().lines().any(|l| l.contains("Camera failed to open")
                && l.contains("Could not open any dma-buf provider")),
            "the log line lacks libcamera's reason:\n{}",
            d.log()
        );
        if kind == "auto" {
            assert_eq!(
                status["source"], "libcamera camera Virtual0",
                "auto did not pick the virtual camera: {status}"
            );
        }
        // HTTP and RTSP stay up; not ready.
        assert_eq!(
            d.get("/readyz").status,
            503,
            "readyz while the camera is down"
        );
        assert_eq!(
            d.get("/healthz").status,
            200,
            "healthz while the camera is down"
        );
        let reply = raw_exchange(
            d.rtsp_port,
            b"OPTIONS rtsp://127.0.0.1/video RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            Duration::from_secs(5),
        );
        assert!(
            String::from_utf8_lossy(&reply).starts_with("RTSP/1.0 200"),
            "RTSP did not answer OPTIONS: {:?}",
            String::from_utf8_lossy(&reply)
        );
        // libcamerasrc's own properties, read from the real element in the root.
        let controls = d.get("/api/v1/streams/video/controls").json();
        let from_libcamera: Vec<&str> = controls["controls"]
            .as_array()
            .expect("a controls list")
            .iter()
            .filter(|c| c["backend"] == "libcamera")
            .filter_map(|c| c["name"].as_str())
            .collect();
        for name in ["brightness", "contrast", "exposure"] {
            assert!(
                from_libcamera.contains(&name),
                "{name} is not a libcamera control: {controls}"
            );
        }
        let _ = std::fs::remove_file(&host_hook_file);
    }
}

fn capture_path(root: &Path, bin: &str) {
    let (ok, out, took) = check(root, bin, "libcamera", "x264");
    assert!(ok, "check failed with a dma-buf provider present:\n{out}");
    eprintln!("check --source libcamera passed in {} ms", took.as_millis());
    let hook_file = format!("/tmp/camstream-test-{}.events", std::process::id());
    let (d, _) = start_daemon(root, bin, "auto", &hook_file);
    assert!(
        d.wait_log("Streaming source=", Duration::from_secs(20)),
        "no frames from the virtual camera:\n{}",
        d.log()
    );
    let probe = ffprobe(&d.url(), "tcp");
    let stream = &probe["streams"][0];
    assert_eq!(stream["codec_name"], "h264", "{probe}");
    assert_eq!(stream["width"], 640, "{probe}");
    assert_eq!(stream["height"], 480, "{probe}");
    let viewer = Viewer::start(&d.url(), Proto::Tcp);
    assert!(
        viewer.wait_frames(15, Duration::from_secs(20)),
        "the RTSP viewer got no frames"
    );
    let _ = std::fs::remove_file(root.join(&hook_file[1..]));
}
