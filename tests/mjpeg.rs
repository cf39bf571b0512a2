//! MJPEG and the raw-picture tap (issue 28), against the real binary with real clients: ffmpeg
//! decodes `/mjpeg/video` at the capped rate from one shared encoder, mjpg-streamer's
//! `/?action=stream|snapshot` answer as OctoPrint expects, a client that stops reading costs no
//! memory while another keeps its rate, Chromium shows a changing picture in an `<img>`, and
//! snapshots work in a process that has no H.264 decoder at all.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{daemon, wait_until};

/// ffmpeg reading a URL and decoding every picture, with its frame count over time.
struct Decoder {
    child: Child,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
}

impl Decoder {
    fn start(url: &str) -> Decoder {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i", url])
            .args([
                "-f",
                "null",
                "-",
                "-progress",
                "pipe:1",
                "-stats_period",
                "0.25",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg runs (scripts/setup.sh --test installs it)");
        let samples = Arc::new(Mutex::new(Vec::new()));
        let s = samples.clone();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line
                    .strip_prefix("frame=")
                    .and_then(|n| n.trim().parse().ok())
                {
                    s.lock().unwrap().push((Instant::now(), n));
                }
            }
        });
        Decoder { child, samples }
    }

    fn frames(&self) -> u64 {
        self.samples.lock().unwrap().last().map_or(0, |s| s.1)
    }

    /// Decoded pictures a second between `from` and the last report.
    fn fps_since(&self, from: Instant) -> f64 {
        let s = self.samples.lock().unwrap();
        let Some(first) = s.iter().find(|(t, _)| *t >= from) else {
            return 0.0;
        };
        let last = s.last().expect("a sample after from");
        let secs = last.0.duration_since(first.0).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (last.1 - first.1) as f64 / secs
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The head of a streaming answer and the bytes after it, read until `enough` says so.
fn read_stream(port: u16, path: &str, enough: impl Fn(&[u8]) -> bool) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n")
            && enough(&raw[i + 4..])
        {
            let head = String::from_utf8_lossy(&raw[..i]).into_owned();
            return (head, raw[i + 4..].to_vec());
        }
        assert!(
            n > 0 && Instant::now() < deadline,
            "stream ended early: {raw:?}"
        );
    }
}

/// The first JPEG of a multipart body (chunked or not): from SOI to EOI.
fn first_jpeg(body: &[u8]) -> Option<Vec<u8>> {
    let start = body.windows(2).position(|w| w == [0xFF, 0xD8])?;
    let end = body[start..].windows(2).position(|w| w == [0xFF, 0xD9])?;
    Some(body[start..start + end + 2].to_vec())
}

/// Width and height of a JPEG, decoded by ffprobe.
fn jpeg_size(jpeg: &[u8]) -> (u64, u64) {
    let path = std::env::temp_dir().join(format!("camstream-mjpeg-{}.jpg", std::process::id()));
    std::fs::write(&path, jpeg).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe runs");
    let _ = std::fs::remove_file(&path);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let s = &v["streams"][0];
    (
        s["width"].as_u64().expect("a width"),
        s["height"].as_u64().expect("a height"),
    )
}

#[test]
fn ffmpeg_decodes_the_capped_rate_from_one_shared_encoder() {
    let d = daemon().set("video.fps", 30).set("mjpeg.fps", 15).start();
    let url = format!("http://127.0.0.1:{}/mjpeg/video", d.http_port);
    let a = Decoder::start(&url);
    let b = Decoder::start(&format!("{url}?t=cache-buster"));
    assert!(
        wait_until(Duration::from_secs(15), || a.frames() > 5 && b.frames() > 5),
        "no pictures decoded: {}",
        d.log()
    );
    let from = Instant::now();
    assert!(wait_until(Duration::from_secs(20), || from.elapsed()
        > Duration::from_secs(5)
        && a.fps_since(from) > 0.0));
    let (fa, fb) = (a.fps_since(from), b.fps_since(from));
    let encoders = d.metric("camstream_mjpeg_encoders{stream=\"video\"}");
    let clients = d.metric("camstream_mjpeg_clients{stream=\"video\"}");
    println!(
        "MJPEG at mjpeg.fps = 15 (camera 30 fps): ffmpeg decodes {fa:.1} and {fb:.1} fps; {encoders:?} encoder(s) for {clients:?} clients"
    );
    assert!(fa >= 14.0 && fb >= 14.0, "{fa} {fb}");
    assert!(fa <= 16.5 && fb <= 16.5, "the cap holds: {fa} {fb}");
    assert_eq!(
        encoders,
        Some(1.0),
        "two clients of one size share one encoder"
    );
    assert_eq!(clients, Some(2.0));
    drop(a);
    drop(b);
    assert!(
        wait_until(Duration::from_secs(10), || d
            .metric("camstream_mjpeg_encoders{stream=\"video\"}")
            == Some(0.0)),
        "the encoder stops with its last client"
    );
}

#[test]
fn mjpg_streamer_urls_answer_as_octoprint_expects() {
    let d = daemon().start();
    // OctoPrint's snapshot URL.
    let r = d.get("/?action=snapshot");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(jpeg_size(&r.body), (320, 240));
    let r = d.get("/?action=snapshot&stream=video&width=160&_=1699999999");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jpeg_size(&r.body), (160, 120));
    let r = d.get("/api/v1/streams/video/snapshot.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(jpeg_size(&r.body), (320, 240));
    // The stream URL: multipart with the boundary its head names, JPEG parts that decode.
    let (head, body) = read_stream(d.http_port, "/?action=stream", |b| first_jpeg(b).is_some());
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: multipart/x-mixed-replace;boundary=boundarydonotcross"),
        "{head}"
    );
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("--boundarydonotcross\r\nContent-Type: image/jpeg\r\nContent-Length: "));
    assert_eq!(jpeg_size(&first_jpeg(&body).unwrap()), (320, 240));
    let (_, body) = read_stream(d.http_port, "/?action=stream&stream=video&width=160", |b| {
        first_jpeg(b).is_some()
    });
    assert_eq!(jpeg_size(&first_jpeg(&body).unwrap()), (160, 120));
    // The page is still the page; other actions and sizes are refused clearly.
    let page = d.get("/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert_eq!(d.get("/?action=command").status, 400);
    assert_eq!(d.get("/mjpeg/video?width=333").status, 400);
    assert_eq!(d.get("/mjpeg/nope").status, 404);
    assert_eq!(d.get("/?action=stream&stream=nope").status, 404);
}

#[test]
fn a_client_that_stops_reading_costs_no_memory_and_others_keep_their_rate() {
    // Big pictures (noise), so the stalled connection's buffers fill within seconds.
    let d = daemon()
        .set("video.width", 640)
        .set("video.height", 480)
        .set("video.fps", 15)
        .set("source.pattern", "snow")
        .set("mjpeg.quality", 98)
        .start();
    let port = d.http_port;
    // A small receive window (no autotuning to tens of MB), as a stuck client on a slow link.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(8192).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut stalled: TcpStream = sock.into();
    write!(
        stalled,
        "GET /mjpeg/video HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    // Its connection fills: it is sent no more pictures while the encoder goes on.
    let metric = |name: &str| {
        d.metric(&format!("camstream_mjpeg_{name}{{stream=\"video\"}}"))
            .unwrap_or(0.0)
    };
    let mut last = (Instant::now(), metric("frames_sent_total"));
    assert!(
        wait_until(Duration::from_secs(20), || {
            let sent = metric("frames_sent_total");
            if sent != last.1 {
                last = (Instant::now(), sent);
            }
            sent > 0.0 && last.0.elapsed() > Duration::from_secs(2)
        }),
        "the stalled client's connection never filled: {}",
        d.log()
    );
    let reader = Decoder::start(&format!("http://127.0.0.1:{port}/mjpeg/video"));
    assert!(wait_until(Duration::from_secs(10), || reader.frames() > 5));
    let rss0 = d.rss_kib();
    let (from, made0) = (Instant::now(), metric("frames_encoded_total"));
    let mut max = rss0;
    while from.elapsed() < Duration::from_secs(6) {
        max = max.max(d.rss_kib());
        std::thread::sleep(Duration::from_millis(250));
    }
    let fps = reader.fps_since(from);
    let made = (metric("frames_encoded_total") - made0) / from.elapsed().as_secs_f64();
    println!(
        "stalled client: RSS {rss0} → max {max} KiB over 6 s while the encoder made {made:.1} pictures/s; the other client decodes {fps:.1} fps (camera 15 fps)"
    );
    assert!(max < rss0 + 8 * 1024, "RSS grew from {rss0} to {max} KiB");
    // The stalled client holds up neither the shared encoder nor its other client (the rates
    // are compared with each other, as a loaded machine slows both).
    assert!(made >= 11.0, "the encoder fell to {made} pictures/s");
    assert!(
        fps >= 0.9 * made,
        "the reading client got {fps} of {made} pictures/s"
    );
    drop(stalled);
}

#[test]
fn chromium_shows_a_changing_picture_in_an_img() {
    let d = daemon().set("source.pattern", "ball").start();
    let url = format!("http://127.0.0.1:{}/mjpeg/video", d.http_port);
    let (a, b) = (
        common::screenshot_path("mjpeg-img-1.png"),
        common::screenshot_path("mjpeg-img-2.png"),
    );
    let r = common::chromium::browser(&["mjpeg", &url, a.to_str().unwrap(), b.to_str().unwrap()]);
    println!("{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["size"], serde_json::json!([320, 240]));
    assert_eq!(
        r["differ"], true,
        "the two screenshots are the same picture"
    );
}

/// Snapshots and MJPEG in a process whose GStreamer has no H.264 decoder at all (the plugins
/// that hold one are left out of its registry): the pictures come from the raw tap.
#[test]
fn snapshots_work_with_no_h264_decoder_in_the_process() {
    let out = Command::new("pkg-config")
        .args(["--variable=pluginsdir", "gstreamer-1.0"])
        .output()
        .expect("pkg-config runs");
    let system = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dir = std::env::temp_dir().join(format!("camstream-nodec-{}", std::process::id()));
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // Every plugin that can decode H.264: libav, openh264, the stateless V4L2 and VA decoders,
    // NVIDIA, Intel.
    let decoders = [
        "libgstlibav",
        "libgstopenh264",
        "libgstv4l2codecs",
        "libgstva",
        "libgstvaapi",
        "libgstnvcodec",
        "libgstmsdk",
        "libgstqsv",
        "libgstomx",
    ];
    for e in std::fs::read_dir(&system)
        .expect("the plugin directory")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !decoders.iter().any(|d| name.starts_with(&format!("{d}."))) {
            std::os::unix::fs::symlink(e.path(), plugins.join(&name)).unwrap();
        }
    }
    let env = [
        (
            "GST_PLUGIN_SYSTEM_PATH_1_0",
            plugins.to_str().unwrap().to_string(),
        ),
        ("GST_PLUGIN_PATH_1_0", String::new()),
        ("GST_PLUGIN_PATH", String::new()),
        (
            "GST_REGISTRY_1_0",
            dir.join("registry.bin").to_str().unwrap().to_string(),
        ),
    ];
    let listing = Command::new("gst-inspect-1.0")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("gst-inspect-1.0 runs");
    let listing = String::from_utf8_lossy(&listing.stdout).to_lowercase();
    assert!(listing.contains("x264enc"), "{listing}");
    for line in listing
        .lines()
        .filter(|l| l.contains("h264") || l.contains("avc"))
    {
        assert!(
            !line.contains("decoder"),
            "an H.264 decoder is left: {line}"
        );
    }
    let mut b = daemon();
    for (k, v) in &env {
        b = b.env(k, v);
    }
    let d = b.start();
    let r = d.get("/snapshot.jpg?width=160");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jpeg_size(&r.body), (160, 120));
    let (_, body) = read_stream(d.http_port, "/mjpeg/video", |b| first_jpeg(b).is_some());
    assert_eq!(jpeg_size(&first_jpeg(&body).unwrap()), (320, 240));
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
