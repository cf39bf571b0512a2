//! Restream pushes against real servers started here on loopback: nginx with the RTMP module,
//! ffmpeg listening for RTSP RECORD, srt-live-transmit as an SRT listener, and a GStreamer RTP
//! receiver. What is checked is what a user sees: the server hands back decodable H.264 of the
//! configured size, the status and metrics say what happened, credentials never show.

mod common;
// Audio (issue #24).
mod av_sync;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Proto, Viewer, daemon, free_port, http_request, wait_until};
use gst::prelude::*;

/// A program from a Debian package the test set-up installs; CI has it, a bare machine may not.
fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The nginx RTMP module, where Debian's libnginx-mod-rtmp puts it.
const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx with the RTMP module, its own configuration and files in a temp dir.
struct Nginx {
    dir: tempfile::TempDir,
    port: u16,
    proc: Option<Proc>,
}

impl Nginx {
    fn start() -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Nginx {
            dir,
            port: free_port(),
            proc: None,
        };
        n.run();
        n
    }

    /// (Re)starts nginx on the same port and waits until it accepts connections.
    fn run(&mut self) {
        let d = self.dir.path();
        let conf = d.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module {RTMP_MODULE};\n\
                 daemon off;\nmaster_process off;\n\
                 pid {pid};\nerror_log {log} info;\n\
                 events {{ worker_connections 64; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
                   application live {{ live on; record off; }} }} }}\n",
                pid = d.join("nginx.pid").display(),
                log = d.join("error.log").display(),
                port = self.port,
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs");
        self.proc = Some(Proc(child));
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "nginx did not listen on {port}: {}",
            self.log()
        );
    }

    fn kill(&mut self) {
        self.proc = None;
    }

    fn url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// Decodes up to `frames` video frames from `input` with ffmpeg; returns how many decoded.
/// `pre` goes before `-i` (input options).
fn ffmpeg_decode(pre: &[&str], input: &str, frames: u32, timeout: Duration) -> (u32, String) {
    let mut cmd = Command::new("timeout");
    cmd.arg(timeout.as_secs().to_string())
        .arg("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error"])
        .args(pre)
        .args(["-i", input, "-map", "0:v:0", "-frames:v"])
        .arg(frames.to_string())
        .args(["-f", "framemd5", "-"]);
    let out = cmd.output().expect("ffmpeg runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count() as u32;
    (n, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A daemon with `push` entries from a config file (arrays of tables do not fit `--set`).
fn daemon_with(toml: &str, dir: &Path) -> Daemon {
    let path = dir.join("camstream.toml");
    std::fs::write(&path, toml).unwrap();
    daemon().arg("--config").arg(path.display()).start()
}

/// The push's entry in the status API.
fn push_status(d: &Daemon, push: &str) -> serde_json::Value {
    let j = d.get("/api/v1/streams/video").json();
    j["outputs"]
        .as_array()
        .and_then(|o| {
            o.iter()
                .find(|o| o["name"] == format!("push:{push}"))
                .cloned()
        })
        .unwrap_or(serde_json::Value::Null)
}

fn wait_push_state(d: &Daemon, push: &str, state: &str, timeout: Duration) -> bool {
    wait_until(timeout, || push_status(d, push)["detail"]["state"] == state)
}

#[test]
fn rtmp_into_nginx_plays_back_at_the_configured_size() {
    if !have("nginx") || !Path::new(RTMP_MODULE).exists() {
        eprintln!(
            "skipped: nginx with libnginx-mod-rtmp is not installed (scripts/setup.sh --test)"
        );
        return;
    }
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with(
        &format!(
            "[[push]]\nname = \"media\"\nurl = \"{}\"\n",
            nginx.url("cam")
        ),
        dir.path(),
    );
    assert!(
        wait_push_state(&d, "media", "streaming", Duration::from_secs(20)),
        "{}\n{}",
        push_status(&d, "media"),
        d.log()
    );
    let probe = Command::new("timeout")
        .args([
            "20",
            "ffprobe",
            "-v",
            "error",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(nginx.url("cam"))
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap_or_default();
    let v = &j["streams"][0];
    assert_eq!(v["codec_name"], "h264", "{j}\n{}", nginx.log());
    assert_eq!(
        (v["width"].clone(), v["height"].clone()),
        (320.into(), 240.into())
    );
    let (n, err) = ffmpeg_decode(&[], &nginx.url("cam"), 15, Duration::from_secs(20));
    assert_eq!(n, 15, "decoded {n} frames from nginx: {err}");
    let bytes = push_status(&d, "media")["detail"]["bytes_sent"]
        .as_u64()
        .unwrap();
    assert!(bytes > 10_000, "{bytes} bytes sent");
    assert!(
        d.metric(
            "camstream_output_state{stream=\"video\",output=\"push:media\",state=\"streaming\"}"
        ) == Some(1.0),
        "{}",
        d.get("/metrics").text()
    );
}

/// gst-rtsp-server taking RECORD on `/cam` (TCP or UDP), decoding what it receives. Debian
/// 12's ffmpeg cannot stand in: in listen mode it refuses GStreamer's `mode=RECORD` (it wants
/// lower case) and anything but UDP.
struct RecordServer {
    main_loop: gst::glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    frames: Arc<AtomicU64>,
    size: Arc<Mutex<Option<(i32, i32)>>>,
    port: u16,
    /// Decoded audio buffers (a launch with an `asink`; audio, issue #24).
    audio: Arc<AtomicU64>,
}

impl RecordServer {
    fn start() -> RecordServer {
        Self::start_launch(
            "( rtph264depay name=depay0 ! avdec_h264 ! fakesink name=sink sync=false )",
        )
    }

    fn start_launch(launch: &str) -> RecordServer {
        use gst_rtsp_server::prelude::*;
        common::gst_init();
        let ctx = gst::glib::MainContext::new();
        let main_loop = gst::glib::MainLoop::new(Some(&ctx), false);
        let server = gst_rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let factory = gst_rtsp_server::RTSPMediaFactory::new();
        factory.set_transport_mode(gst_rtsp_server::RTSPTransportMode::RECORD);
        factory.set_launch(launch);
        let frames = Arc::new(AtomicU64::new(0));
        let audio = Arc::new(AtomicU64::new(0));
        let au = audio.clone();
        let size = Arc::new(Mutex::new(None));
        let (f, sz) = (frames.clone(), size.clone());
        factory.connect_media_configure(move |_, media| {
            let bin = media.element().downcast::<gst::Bin>().unwrap();
            if let Some(pad) = bin.by_name("asink").and_then(|s| s.static_pad("sink")) {
                let au = au.clone();
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    au.fetch_add(1, Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                });
            }
            let (f, sz) = (f.clone(), sz.clone());
            bin.by_name("sink")
                .unwrap()
                .static_pad("sink")
                .unwrap()
                .add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
                    f.fetch_add(1, Ordering::Relaxed);
                    if let Some(s) = pad.current_caps().and_then(|c| {
                        let s = c.structure(0)?;
                        Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
                    }) {
                        *sz.lock().unwrap() = Some(s);
                    }
                    gst::PadProbeReturn::Ok
                });
        });
        server.mount_points().unwrap().add_factory("/cam", factory);
        server.attach(Some(&ctx)).unwrap();
        let port = server.bound_port() as u16;
        let ml = main_loop.clone();
        let thread = std::thread::spawn(move || {
            let _server = server;
            ctx.with_thread_default(|| ml.run()).unwrap();
        });
        RecordServer {
            main_loop,
            thread: Some(thread),
            frames,
            size,
            port,
            audio,
        }
    }
}

impl Drop for RecordServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn rtsp_record_over_tcp_and_udp_decodes() {
    for transport in ["tcp", "udp"] {
        let server = RecordServer::start();
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "rec0rd-pw\n").unwrap();
        let d = daemon_with(
            &format!(
                "[[push]]\nname = \"rec\"\nurl = \"rtsp://cam:{{secret}}@127.0.0.1:{}/cam\"\n\
                 secret_file = \"{}\"\nrtsp_transport = \"{transport}\"\n",
                server.port,
                secret.display()
            ),
            dir.path(),
        );
        assert!(
            wait_until(Duration::from_secs(20), || server
                .frames
                .load(Ordering::Relaxed)
                >= 15),
            "{transport}: the server decoded {} frames\n{}",
            server.frames.load(Ordering::Relaxed),
            d.log()
        );
        assert_eq!(
            *server.size.lock().unwrap(),
            Some((320, 240)),
            "{transport}"
        );
        assert_eq!(push_status(&d, "rec")["detail"]["state"], "streaming");
        assert!(!d.log().contains("rec0rd-pw"));
    }
}

/// Reads a child's stdout and stderr to the end (bounded by `timeout`).
fn wait_output(child: &mut Child, timeout: Duration) -> (String, String) {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let out = rx.recv_timeout(timeout).unwrap_or_default();
    let _ = child.kill();
    (out, t.join().unwrap_or_default())
}

#[test]
fn srt_caller_with_a_passphrase_into_srt_live_transmit_decodes() {
    if !have("srt-live-transmit") {
        eprintln!(
            "skipped: srt-live-transmit is not installed (srt-tools, scripts/setup.sh --test)"
        );
        return;
    }
    let port = free_port();
    let passphrase = "s3cret-passphrase";
    // srt-live-transmit listens and writes the MPEG-TS to stdout; ffmpeg decodes it from there.
    let mut relay = Proc(
        Command::new("srt-live-transmit")
            .arg(format!(
                "srt://127.0.0.1:{port}?mode=listener&passphrase={passphrase}"
            ))
            .arg("file://con")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let decoder = Proc(
        Command::new("timeout")
            .arg("40")
            .arg("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-v", "error", "-f", "mpegts"])
            .args([
                "-i",
                "-",
                "-map",
                "0:v:0",
                "-frames:v",
                "15",
                "-f",
                "framemd5",
                "-",
            ])
            .stdin(relay.0.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("srt-passphrase");
    std::fs::write(&secret, format!("{passphrase}\n")).unwrap();
    let d = daemon_with(
        &format!(
            "[[push]]\nname = \"srt\"\n\
             url = \"srt://127.0.0.1:{port}?latency=120&passphrase={{secret}}\"\n\
             secret_file = \"{}\"\ninitial_backoff_ms = 300\nmax_backoff_ms = 1000\n",
            secret.display()
        ),
        dir.path(),
    );
    let mut decoder = decoder;
    let (out, err) = wait_output(&mut decoder.0, Duration::from_secs(40));
    let frames = out
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(frames, 15, "decoded {frames} over SRT: {err}\n{}", d.log());
    // The passphrase shows nowhere: not in the status, the stream API or the log.
    let everything = format!(
        "{}{}{}",
        d.get("/api/v1/status").text(),
        d.get("/api/v1/streams/video").text(),
        d.log()
    );
    assert!(!everything.contains(passphrase), "the passphrase leaked");
}

/// A GStreamer RTP receiver counting decoded frames.
struct RtpReceiver {
    pipeline: gst::Pipeline,
    frames: Arc<AtomicU64>,
    first: Arc<Mutex<Option<Instant>>>,
}

impl RtpReceiver {
    fn start(port: u16) -> RtpReceiver {
        common::gst_init();
        let p = gst::parse::launch(&format!(
            "udpsrc address=127.0.0.1 port={port} caps=\"application/x-rtp,media=video,\
             clock-rate=90000,encoding-name=H264,payload=96\" ! rtph264depay ! avdec_h264 \
             ! fakesink name=sink sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let frames = Arc::new(AtomicU64::new(0));
        let first = Arc::new(Mutex::new(None));
        let (f, t) = (frames.clone(), first.clone());
        p.by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                if f.fetch_add(1, Ordering::Relaxed) == 0 {
                    *t.lock().unwrap() = Some(Instant::now());
                }
                gst::PadProbeReturn::Ok
            });
        p.set_state(gst::State::Playing).unwrap();
        RtpReceiver {
            pipeline: p,
            frames,
            first,
        }
    }
}

impl Drop for RtpReceiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn udp_rtp_receiver_joining_late_decodes_within_a_second() {
    let port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    // A UDP receiver has no way to ask for a keyframe: it starts at the next IDR, which carries
    // SPS/PPS. With keyframes every 10 frames (0.67 s at 15 fps), as docs/push.md advises for
    // ground stations, that is within a second.
    let path = dir.path().join("camstream.toml");
    std::fs::write(
        &path,
        format!("[[push]]\nname = \"gcs\"\nurl = \"udp://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let d = daemon()
        .arg("--config")
        .arg(path.display())
        .set("encoder.keyframe_interval", 10)
        .start();
    assert!(
        wait_push_state(&d, "gcs", "streaming", Duration::from_secs(20)),
        "{}",
        push_status(&d, "gcs")
    );
    // Nobody listened for a while: the push keeps streaming and the receiver joins mid-GOP.
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    let r = RtpReceiver::start(port);
    assert!(
        wait_until(Duration::from_secs(5), || r.frames.load(Ordering::Relaxed)
            > 0),
        "no frame decoded\n{}",
        d.log()
    );
    let first = r.first.lock().unwrap().unwrap() - started;
    assert!(
        first <= Duration::from_secs(1),
        "first decoded frame after {first:?} (keyframes are 0.67 s apart; SPS/PPS ride on every IDR)"
    );
    assert_eq!(push_status(&d, "gcs")["health"]["restarts"], 0);
}

#[test]
fn rtmp_server_down_for_ten_seconds_reconnects_and_viewers_lose_nothing() {
    if !have("nginx") || !Path::new(RTMP_MODULE).exists() {
        eprintln!(
            "skipped: nginx with libnginx-mod-rtmp is not installed (scripts/setup.sh --test)"
        );
        return;
    }
    let mut nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with(
        &format!(
            "[[push]]\nname = \"media\"\nurl = \"{}\"\n\
             initial_backoff_ms = 500\nmax_backoff_ms = 2000\n",
            nginx.url("cam")
        ),
        dir.path(),
    );
    assert!(
        wait_push_state(&d, "media", "streaming", Duration::from_secs(20)),
        "{}",
        d.log()
    );
    let viewer = Viewer::start(&d.url(), Proto::Tcp);
    assert!(viewer.wait_frames(15, Duration::from_secs(20)), "viewer");
    let encoded = || {
        d.metric("camstream_frames_encoded_total{stream=\"video\"}")
            .unwrap_or(0.0) as u64
    };
    let (before, encoded_before) = (viewer.frames(), encoded());
    let t0 = Instant::now();
    nginx.kill();
    assert!(
        wait_push_state(&d, "media", "backoff", Duration::from_secs(15)),
        "the push did not notice the server died: {}",
        push_status(&d, "media")
    );
    while t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    nginx.run();
    let back = Instant::now();
    // The delay is capped at 2 s (±20 % jitter), plus the connection itself.
    assert!(
        wait_push_state(&d, "media", "streaming", Duration::from_secs(10)),
        "no reconnection: {}\n{}",
        push_status(&d, "media"),
        d.log()
    );
    let reconnect = back.elapsed();
    let outage = t0.elapsed();
    let (n, err) = ffmpeg_decode(&[], &nginx.url("cam"), 10, Duration::from_secs(20));
    assert_eq!(
        n, 10,
        "after the restart nginx serves the stream again: {err}"
    );
    // The RTSP viewer went on: it decoded every frame the camera encoded meanwhile (a few may
    // still be in flight when counted).
    let during = viewer.frames() - before;
    let produced = encoded() - encoded_before;
    assert!(
        during + 3 >= produced && produced as f64 >= outage.as_secs_f64() * 15.0 * 0.8,
        "viewer decoded {during} of {produced} frames encoded in {outage:?}"
    );
    let restarts = d
        .metric("camstream_output_restarts_total{stream=\"video\",output=\"push:media\",reason=\"error\"}")
        .unwrap_or(0.0);
    assert!(restarts >= 1.0, "{}", d.get("/metrics").text());
    let status = push_status(&d, "media");
    assert!(
        status["health"]["restarts"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(
        status["health"]["last_error"]["message"].is_string(),
        "{status}"
    );
    eprintln!(
        "reconnected {reconnect:?} after the server came back; {during} viewer frames in {outage:?}"
    );
}

#[test]
fn pushes_are_disabled_enabled_and_replaced_at_runtime_and_credentials_never_show() {
    let port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let token = "t0ken";
    let path = dir.path().join("camstream.toml");
    std::fs::write(
        &path,
        format!(
            "[[push]]\nname = \"gcs\"\nurl = \"udp://127.0.0.1:{port}\"\n\n\
             [[push]]\nname = \"media\"\nenabled = false\n\
             url = \"rtsp://cam:hunter22@127.0.0.1:1/cam\"\n"
        ),
    )
    .unwrap();
    let d = daemon()
        .arg("--config")
        .arg(path.display())
        .set("http.token", token)
        .start();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let get = |p: &str| http_request(d.http_port, "GET", p, &auth, b"");
    assert!(wait_until(Duration::from_secs(20), || {
        push_status_auth(&get, "gcs")["detail"]["state"] == "streaming"
    }));
    let media = push_status_auth(&get, "media");
    assert_eq!(media["detail"]["state"], "disabled", "{media}");
    assert_eq!(media["health"]["state"], "disabled", "{media}");
    // The password shows nowhere.
    let everything = format!(
        "{}{}",
        get("/api/v1/status").text(),
        get("/api/v1/streams/video").text()
    );
    assert!(
        !everything.contains("hunter22"),
        "password leaked: {everything}"
    );
    assert!(everything.contains("rtsp://cam:<redacted>@127.0.0.1:1/cam"));

    // Disable one push through its own endpoint: the other one is not touched.
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video/push/gcs",
        &auth,
        br#"{"enabled": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["applied"], "live");
    assert!(wait_until(Duration::from_secs(10), || {
        push_status_auth(&get, "gcs")["detail"]["state"] == "disabled"
    }));
    // A bad URL is refused with the key named; nothing changes.
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video/push/gcs",
        &auth,
        br#"{"url": "udp://127.0.0.1"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("push[gcs].url"), "{}", r.text());
    // Enable again.
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video/push/gcs",
        &auth,
        br#"{"enabled": true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(wait_until(Duration::from_secs(20), || {
        push_status_auth(&get, "gcs")["detail"]["state"] == "streaming"
    }));
    // The push list (URLs, stream keys) changes only in the configuration file: 400, naming it.
    let body = format!(r#"{{"push": [{{"name": "gcs", "url": "udp://127.0.0.1:{port}"}}]}}"#);
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video",
        &auth,
        body.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("SIGHUP"), "{}", r.text());
    // An unknown push is a 404.
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video/push/nope",
        &auth,
        br#"{"enabled": true}"#,
    );
    assert_eq!(r.status, 404);
    // Writes need the token.
    let r = http_request(
        d.http_port,
        "PATCH",
        "/api/v1/streams/video/push/gcs",
        &[],
        br#"{"enabled": false}"#,
    );
    assert_eq!(r.status, 401);
}

fn push_status_auth(get: &dyn Fn(&str) -> common::HttpResponse, push: &str) -> serde_json::Value {
    let j = get("/api/v1/streams/video").json();
    j["outputs"]
        .as_array()
        .and_then(|o| {
            o.iter()
                .find(|o| o["name"] == format!("push:{push}"))
                .cloned()
        })
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn check_reports_each_push_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("camstream.toml");
    std::fs::write(
        &path,
        "[source]\nkind = \"test\"\n[encoder]\nkind = \"x264\"\n\
         [[push]]\nname = \"gcs\"\nurl = \"udp://192.0.2.1:5600\"\n\
         [[push]]\nname = \"media\"\nurl = \"rtmp://u:pa55word@192.0.2.1/live/cam\"\n\
         [[push]]\nname = \"off\"\nenabled = false\nurl = \"srt://192.0.2.1:9000\"\n",
    )
    .unwrap();
    let rtsp = free_port().to_string();
    let http = free_port().to_string();
    let o = Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(&path)
        .args(["--rtsp-port", &rtsp, "--http-port", &http])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    for line in [
        "ok   video: push gcs: udp://192.0.2.1:5600 well formed; h264parse, rtph264pay, udpsink present",
        "ok   video: push media: rtmp://u:<redacted>@192.0.2.1/live/cam well formed; h264parse, flvmux, rtmp2sink present",
        "ok   video: push off: srt://192.0.2.1:9000 (disabled)",
    ] {
        assert!(t.contains(line), "missing {line:?} in:\n{t}");
    }
    assert!(!t.contains("pa55word"), "{t}");
    // A bad URL is refused before anything starts, with the key named.
    std::fs::write(
        &path,
        "[[push]]\nname = \"gcs\"\nurl = \"udp://192.0.2.1\"\n",
    )
    .unwrap();
    let o = Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        t.contains("push[gcs].url") && t.contains("needs a port"),
        "{t}"
    );
}

// ---- Audio (issue #24) ----

/// The test flash and beep through nginx-rtmp: the FLV carries AAC beside the H.264, and the
/// flash-to-beep offset of what nginx hands a player stays within ±40 ms.
#[test]
fn rtmp_into_nginx_carries_aac_in_sync() {
    if !have("nginx") || !Path::new(RTMP_MODULE).exists() {
        eprintln!(
            "skipped: nginx with libnginx-mod-rtmp is not installed (scripts/setup.sh --test)"
        );
        return;
    }
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with(
        &format!(
            "[source]\npattern = \"black\"\n[video]\nfps = 30\n[audio]\nkind = \"test\"\n\
             [[push]]\nname = \"media\"\nurl = \"{}\"\n",
            nginx.url("cam")
        ),
        dir.path(),
    );
    assert!(
        wait_push_state(&d, "media", "streaming", Duration::from_secs(20)),
        "{}\n{}",
        push_status(&d, "media"),
        d.log()
    );
    let file = dir.path().join("rtmp.mkv");
    av_sync::record(&[], &nginx.url("cam"), 6, &file);
    let durations = av_sync::durations(&file);
    assert!(
        durations.iter().any(|(c, d)| c == "h264" && *d > 3.0)
            && durations.iter().any(|(c, d)| c == "aac" && *d > 3.0),
        "{durations:?}\n{}",
        nginx.log()
    );
    let sync = av_sync::measure(&file);
    println!("RTMP via nginx flash-to-beep: {}", sync.summary());
    assert!(sync.offsets_ms.len() >= 3, "{sync:?}");
    assert!(sync.worst_ms().abs() <= 40.0, "{}", sync.summary());
}

/// An SRT (MPEG-TS) push carries the AAC track too.
#[test]
fn srt_push_carries_aac() {
    if !have("srt-live-transmit") {
        eprintln!("skipped: srt-live-transmit is not installed (scripts/setup.sh --test)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let file = dir.path().join("srt.ts");
    // srt-live-transmit listens and writes the MPEG-TS it receives into the file.
    let relay = Proc(
        Command::new("srt-live-transmit")
            .arg(format!("srt://127.0.0.1:{port}?mode=listener"))
            .arg("file://con")
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let d = daemon_with(
        &format!(
            "[audio]\nkind = \"test\"\n\
             [[push]]\nname = \"srt\"\nurl = \"srt://127.0.0.1:{port}\"\n"
        ),
        dir.path(),
    );
    assert!(
        wait_push_state(&d, "srt", "streaming", Duration::from_secs(20)),
        "{}",
        push_status(&d, "srt")
    );
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 200_000)
    }));
    drop(relay);
    let durations = av_sync::durations(&file);
    assert!(
        durations.iter().any(|(c, _)| c == "h264") && durations.iter().any(|(c, _)| c == "aac"),
        "SRT: {durations:?}"
    );
}

/// An RTSP RECORD push announces and sends the AAC track beside the picture. rtspclientsink
/// may announce the tracks in either order, so the server decodes each with decodebin and both
/// must deliver.
#[test]
fn rtsp_record_push_carries_aac() {
    let server = RecordServer::start_launch(
        "( decodebin name=depay0 ! fakesink name=sink sync=false async=false \
           decodebin name=depay1 ! fakesink name=asink sync=false async=false )",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with(
        &format!(
            "[audio]\nkind = \"test\"\n\
             [[push]]\nname = \"rec\"\nurl = \"rtsp://127.0.0.1:{}/cam\"\n",
            server.port
        ),
        dir.path(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || server
            .frames
            .load(Ordering::Relaxed)
            >= 15
            && server.audio.load(Ordering::Relaxed) >= 15),
        "the server decoded {} frames and {} audio buffers\n{}",
        server.frames.load(Ordering::Relaxed),
        server.audio.load(Ordering::Relaxed),
        d.log()
    );
}
