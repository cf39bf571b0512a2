//! Shared test harness: starts the real `camstream` binary on free loopback ports and drives it
//! with real clients (GStreamer `rtspsrc` viewers, ffprobe, a raw HTTP client). Every wait polls
//! with a deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use gst::prelude::*;

pub mod chromium;
pub mod rtsp_wire;

/// Path of the daemon under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_camstream");

/// A port nobody listens on right now (bind :0, read, release).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds the command line of a daemon under test.
pub struct DaemonBuilder {
    sets: Vec<(String, String)>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    wait_streaming: bool,
}

/// The settings every test starts from: test pattern, x264, small picture, loopback, free ports.
pub fn daemon() -> DaemonBuilder {
    DaemonBuilder {
        sets: vec![
            ("source.kind".into(), "test".into()),
            ("video.width".into(), "320".into()),
            ("video.height".into(), "240".into()),
            ("video.fps".into(), "15".into()),
            ("encoder.kind".into(), "x264".into()),
            ("encoder.bitrate_kbps".into(), "500".into()),
            ("encoder.keyframe_interval".into(), "30".into()),
            ("rtsp.address".into(), "127.0.0.1".into()),
            ("http.address".into(), "127.0.0.1".into()),
            ("webrtc.address".into(), "127.0.0.1".into()),
            ("webrtc.udp_port".into(), "0".into()),
            // No ICE-TCP listener: tests that find the daemon's ports from /proc expect two
            // TCP listeners (RTSP and HTTP). tests/webrtc.rs turns it on where it is tested.
            ("webrtc.transports".into(), "[\"udp\"]".into()),
            ("supervisor.initial_backoff_ms".into(), "200".into()),
            ("supervisor.max_backoff_ms".into(), "1000".into()),
        ],
        env: Vec::new(),
        args: Vec::new(),
        wait_streaming: true,
    }
}

impl DaemonBuilder {
    /// The daemon's command line (both ports 0), for tests that wire its output themselves.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args);
        cmd.arg("--set").arg("rtsp.port=0");
        cmd.arg("--set").arg("http.port=0");
        for (k, v) in &self.sets {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        cmd.env_remove("RUST_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Sets a configuration key (dotted) through `--set`.
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.sets.push((key.into(), value.to_string()));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.into(), value.to_string()));
        self
    }

    /// Adds a raw argument.
    pub fn arg(mut self, a: impl ToString) -> Self {
        self.args.push(a.to_string());
        self
    }

    /// Do not wait for the first frame in `start` (for sources meant to fail).
    pub fn no_wait(mut self) -> Self {
        self.wait_streaming = false;
        self
    }

    /// Starts the daemon and waits until RTSP listens (and, unless `no_wait`, frames flow).
    /// Both servers bind port 0 and the test reads the ports back from the daemon's log: a port
    /// picked by the test and released could be taken by anyone before the daemon binds it.
    pub fn start(self) -> Daemon {
        let cmd = self.command();
        self.start_command(cmd)
    }

    /// [`DaemonBuilder::start`] with the command line given (this builder's, wrapped, e.g. run
    /// inside a chroot).
    pub fn start_command(self, cmd: Command) -> Daemon {
        let wait_streaming = self.wait_streaming;
        let mut d = Daemon::spawn(cmd, 0, 0);
        assert!(
            d.wait_log("RTSP server listening", Duration::from_secs(20)),
            "daemon did not start listening:\n{}",
            d.log()
        );
        // The HTTP listeners are logged just after RTSP (they are bound before it, so a daemon
        // with the sidecar on always logs them).
        let http_on = !self
            .sets
            .iter()
            .any(|(k, v)| k == "http.enabled" && v == "false");
        if http_on {
            assert!(
                d.wait_log("HTTP sidecar listening", Duration::from_secs(10)),
                "no HTTP listener logged:\n{}",
                d.log()
            );
        }
        let log = d.log();
        d.rtsp_port = port_after(&log, "RTSP server listening", "url=").expect("RTSP port in log");
        // The main HTTP listener (probes); a separate API listener logs endpoints=Api.
        d.http_port = log
            .lines()
            .filter(|l| l.contains("HTTP sidecar listening") && !l.contains("endpoints=Api"))
            .find_map(|l| port_after(l, "HTTP sidecar listening", "address="))
            .unwrap_or(0);
        if wait_streaming {
            assert!(
                d.wait_log("Streaming source=", Duration::from_secs(20)),
                "daemon did not start streaming:\n{}",
                d.log()
            );
        }
        d
    }
}

/// The port in the first log line containing `line`, from the `field` after it
/// (`url=rtsp://127.0.0.1:PORT/video` or `address=127.0.0.1:PORT`).
fn port_after(log: &str, line: &str, field: &str) -> Option<u16> {
    let l = log.lines().find(|l| l.contains(line))?;
    let value = l.split(field).nth(1)?.split_whitespace().next()?;
    let after_host = value.rsplit_once(':')?.1;
    after_host
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A running daemon; killed on drop.
pub struct Daemon {
    child: Child,
    /// RTSP port.
    pub rtsp_port: u16,
    /// HTTP port.
    pub http_port: u16,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Spawns `cmd`, collecting stderr and stdout lines (ANSI colours stripped).
    pub fn spawn(mut cmd: Command, rtsp_port: u16, http_port: u16) -> Daemon {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        cmd.env("NO_COLOR", "1");
        let mut child = cmd.spawn().expect("spawn camstream");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().unwrap().push(strip_ansi(&line));
                }
            });
        }
        Daemon {
            child,
            rtsp_port,
            http_port,
            logs,
        }
    }

    /// The stream URL.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/video", self.rtsp_port)
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// How many log lines contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.count_log(needle) > 0)
    }

    /// Waits for at least `n` log lines containing `needle`.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.count_log(needle) >= n)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (TERM, INT, KILL).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and returns the exit status and how long the exit took.
    pub fn terminate(&mut self) -> (Option<ExitStatus>, Duration) {
        let t0 = Instant::now();
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(10));
        (status, t0.elapsed())
    }

    /// GET a path on the HTTP sidecar.
    pub fn get(&self, path: &str) -> HttpResponse {
        http_request(self.http_port, "GET", path, &[], b"")
    }

    /// The value of a metric sample (name with labels exactly as exposed, or bare name).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let r = self.get("/metrics");
        metric_value(&r.text(), sample)
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_field(self.child.id(), "VmRSS:")
    }

    /// Open file descriptors.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Threads.
    pub fn thread_count(&self) -> u64 {
        proc_status_field(self.child.id(), "Threads:")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code (0 when the connection failed).
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close` over loopback.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let failed = HttpResponse {
        status: 0,
        headers: Vec::new(),
        body: Vec::new(),
    };
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return failed;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).is_err() || s.write_all(body).is_err() {
        return failed;
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_http(&raw).unwrap_or(failed)
}

fn parse_http(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..pos]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        b = &b[pos + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

/// Finds a sample in Prometheus text: `sample` is a metric name, optionally with labels.
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok()).flatten()
    })
}

static GST_INIT: Once = Once::new();

/// Initialises GStreamer once per test binary.
pub fn gst_init() {
    GST_INIT.call_once(|| gst::init().expect("gst init"));
}

/// Which lower transport a viewer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Interleaved TCP.
    Tcp,
    /// Unicast UDP.
    Udp,
}

/// A real RTSP viewer: `rtspsrc` → depayloader that waits for a keyframe → decoder that drops
/// corrupt output → appsink counting decoded pictures.
pub struct Viewer {
    pipeline: gst::Pipeline,
    started: Instant,
    frames: Arc<AtomicU64>,
    first: Arc<Mutex<Option<Instant>>>,
    last: Arc<Mutex<Option<Instant>>>,
    size: Arc<Mutex<Option<(i32, i32)>>>,
    pts: Arc<Mutex<Vec<u64>>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    errored: Arc<AtomicBool>,
    eos: Arc<AtomicBool>,
}

impl Viewer {
    /// Connects and starts playing.
    pub fn start(url: &str, proto: Proto) -> Viewer {
        Self::start_with(url, proto, "")
    }

    /// Connects with extra `rtspsrc` properties (e.g. "user-id=a user-pw=b").
    pub fn start_with(url: &str, proto: Proto, extra: &str) -> Viewer {
        gst_init();
        let protocols = match proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        let desc = format!(
            "rtspsrc location={url} protocols={protocols} latency=0 {extra} \
             ! rtph264depay wait-for-keyframe=true ! h264parse \
             ! avdec_h264 output-corrupt=false ! appsink name=out sync=false"
        );
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let frames = Arc::new(AtomicU64::new(0));
        let first = Arc::new(Mutex::new(None));
        let last = Arc::new(Mutex::new(None));
        let size = Arc::new(Mutex::new(None));
        let pts = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let sink = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        {
            let (frames, first, last, size, pts, arrivals) = (
                frames.clone(),
                first.clone(),
                last.clone(),
                size.clone(),
                pts.clone(),
                arrivals.clone(),
            );
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let now = Instant::now();
                        frames.fetch_add(1, Ordering::SeqCst);
                        first.lock().unwrap().get_or_insert(now);
                        *last.lock().unwrap() = Some(now);
                        arrivals.lock().unwrap().push(now);
                        if let Some(caps) = sample.caps()
                            && let Some(st) = caps.structure(0)
                            && let (Ok(w), Ok(h)) =
                                (st.get::<i32>("width"), st.get::<i32>("height"))
                        {
                            *size.lock().unwrap() = Some((w, h));
                        }
                        if let Some(p) = sample.buffer().and_then(|b| b.pts()) {
                            pts.lock().unwrap().push(p.nseconds());
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
        let errored = Arc::new(AtomicBool::new(false));
        let eos = Arc::new(AtomicBool::new(false));
        let bus = pipeline.bus().unwrap();
        {
            let (errored, eos) = (errored.clone(), eos.clone());
            bus.set_sync_handler(move |_, msg| {
                match msg.view() {
                    gst::MessageView::Error(_) => errored.store(true, Ordering::SeqCst),
                    gst::MessageView::Eos(_) => eos.store(true, Ordering::SeqCst),
                    _ => {}
                }
                gst::BusSyncReply::Drop
            });
        }
        let started = Instant::now();
        pipeline.set_state(gst::State::Playing).unwrap();
        Viewer {
            pipeline,
            started,
            frames,
            first,
            last,
            size,
            pts,
            arrivals,
            errored,
            eos,
        }
    }

    /// The longest time between two decoded pictures that arrived after `since`.
    pub fn max_gap_since(&self, since: Instant) -> Duration {
        let a = self.arrivals.lock().unwrap();
        let mut prev = since;
        let mut gap = Duration::ZERO;
        for t in a.iter().filter(|t| **t >= since) {
            gap = gap.max(*t - prev);
            prev = *t;
        }
        gap
    }

    /// Decoded pictures so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` pictures were decoded.
    pub fn wait_frames(&self, n: u64, timeout: Duration) -> bool {
        wait_until(timeout, || self.frames() >= n)
    }

    /// Time from connect to the first decoded picture.
    pub fn first_picture_after(&self) -> Option<Duration> {
        self.first.lock().unwrap().map(|t| t - self.started)
    }

    /// When the last picture was decoded.
    pub fn last_picture(&self) -> Option<Instant> {
        *self.last.lock().unwrap()
    }

    /// Decoded picture size.
    pub fn size(&self) -> Option<(i32, i32)> {
        *self.size.lock().unwrap()
    }

    /// Presentation timestamps seen, in ns.
    pub fn pts(&self) -> Vec<u64> {
        self.pts.lock().unwrap().clone()
    }

    /// Whether the client pipeline posted an error.
    pub fn errored(&self) -> bool {
        self.errored.load(Ordering::SeqCst)
    }

    /// Whether the client saw end-of-stream.
    pub fn saw_eos(&self) -> bool {
        self.eos.load(Ordering::SeqCst)
    }

    /// Stops the client.
    pub fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Runs ffprobe against `url` and returns its JSON `streams` output.
pub fn ffprobe(url: &str, transport: &str) -> serde_json::Value {
    let out = Command::new("timeout")
        .args([
            "30",
            "ffprobe",
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,profile",
            "-of",
            "json",
            url,
        ])
        .output()
        .expect("ffprobe runs (install ffmpeg)");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("ffprobe failed: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Sends raw bytes to the RTSP port and returns what came back before close or `timeout`.
pub fn raw_exchange(port: u16, data: &[u8], timeout: Duration) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = s.write_all(data);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    out
}

/// TCP ports process `pid` listens on, from /proc (socket inodes of its descriptors matched
/// against /proc/net/tcp and tcp6): for a daemon whose log the test cannot read.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode.
            if f.len() > 9
                && f[3] == "0A"
                && inodes.iter().any(|i| i == f[9])
                && let Some(port) = f[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Fails unless promtool (Debian package prometheus) accepts the exposition.
pub fn promtool_accepts(text: &str) {
    use std::io::Write;
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("promtool runs (install the prometheus package)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- screenshots (signin branch) ---------------------------------------------------------------

/// Where a test writes the page screenshot `name` (e.g. "web-page.png"): under target/, so a
/// test run leaves the work tree clean. `publish_screenshot` copies it into docs/ on request.
pub fn screenshot_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("target/screenshots can be made");
    dir.join(name)
}

/// With `CAMSTREAM_UPDATE_SCREENSHOTS=1`, copies a screenshot made by `screenshot_path` into
/// docs/ (docs/web.md shows them); otherwise leaves docs/ alone.
pub fn publish_screenshot(path: &std::path::Path) {
    if std::env::var("CAMSTREAM_UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let name = path.file_name().expect("a screenshot has a file name");
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::copy(path, docs.join(name)).expect("the screenshot is copied into docs/");
}
