//! The two candidates as child processes: camstream (the release binary) and the baseline (this
//! bench binary re-executed with `--baseline-server`), started with the same picture, encoder
//! settings and source, on free loopback ports; plus what /proc says about them.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camstream::config::Config;
use camstream::stream::capture::describe;
use camstream::stream::encoder::{Encoder, Target, fragment};
use camstream::stream::source::Source as CaptureSource;
use gst::glib;
use gst_rtsp_server::prelude::*;

use crate::stamp;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The daemon under test.
    Camstream,
    /// The plain gst-rtsp-server launch-line server.
    Baseline,
}

impl Kind {
    /// Name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Camstream => "camstream",
            Kind::Baseline => "baseline",
        }
    }
}

/// Where raw pictures come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `videotestsrc is-live=true pattern=smpte`.
    Test,
    /// The stamped source on a shm socket (see `stamp`).
    Stamped(PathBuf),
    /// A test pattern that raises an error after this many frames.
    Faulty(u32),
}

/// What both candidates are asked to serve.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// x264 bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Frames between keyframes.
    pub gop: u32,
    /// Raw source.
    pub source: Source,
    /// camstream's first restart delay.
    pub backoff_ms: u64,
}

impl Setup {
    /// 1280x720@30, 2 Mb/s, 2 s GOP, test pattern.
    pub fn hd(source: Source) -> Setup {
        Setup {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2000,
            gop: 60,
            source,
            backoff_ms: 500,
        }
    }

    fn config(&self) -> Config {
        let mut c = Config::default();
        c.video.width = self.width;
        c.video.height = self.height;
        c.video.fps = self.fps;
        c.encoder.bitrate_kbps = self.bitrate_kbps;
        c.encoder.keyframe_interval = self.gop;
        c
    }

    /// The x264 part, taken from camstream itself so both candidates encode identically.
    pub fn encoder(&self) -> String {
        let stream = &self.config().streams().expect("bench config is valid")[0];
        let level = stream.level().expect("bench config has a level");
        fragment(Encoder::X264, "enc", &Target::of(stream, level))
    }

    /// camstream's capture description for a stamped source, cut before its `appsink`.
    pub fn camstream_capture_chain(&self) -> String {
        let Source::Stamped(path) = &self.source else {
            panic!("only the stamped source has a capture chain worth timing");
        };
        let fragment = stamp::source_fragment(path, self.width, self.height, self.fps);
        let full = describe(
            &self.config().streams().expect("bench config is valid")[0],
            &CaptureSource::Pipeline { fragment },
            Encoder::X264,
        );
        match full.rsplit_once(" ! appsink") {
            Some((chain, _)) => chain.to_string(),
            None => full,
        }
    }

    fn raw_caps(&self) -> String {
        format!(
            "video/x-raw,width={},height={},framerate={}/1",
            self.width, self.height, self.fps
        )
    }

    /// The baseline's whole media description.
    pub fn baseline_launch(&self) -> String {
        let src = match &self.source {
            Source::Test => format!(
                "videotestsrc is-live=true pattern=smpte ! {}",
                self.raw_caps()
            ),
            Source::Stamped(path) => {
                stamp::source_fragment(path, self.width, self.height, self.fps)
            }
            Source::Faulty(n) => format!(
                "videotestsrc is-live=true ! identity error-after={n} ! {}",
                self.raw_caps()
            ),
        };
        format!(
            "( {src} ! {} ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
            self.encoder()
        )
    }

    fn camstream_sets(&self) -> Vec<(String, String)> {
        let mut s: Vec<(String, String)> = vec![
            ("video.width".into(), self.width.to_string()),
            ("video.height".into(), self.height.to_string()),
            ("video.fps".into(), self.fps.to_string()),
            ("encoder.kind".into(), "x264".into()),
            ("encoder.bitrate_kbps".into(), self.bitrate_kbps.to_string()),
            ("encoder.keyframe_interval".into(), self.gop.to_string()),
            ("rtsp.address".into(), "127.0.0.1".into()),
            ("http.address".into(), "127.0.0.1".into()),
            (
                "supervisor.initial_backoff_ms".into(),
                self.backoff_ms.to_string(),
            ),
            // Exact delays, and every fault treated as the first, so recovery can be compared
            // with the configured backoff.
            ("supervisor.jitter".into(), "0".into()),
            ("supervisor.stable_period_ms".into(), "1000".into()),
            // The default viewer, connection and session caps (64/128/128) are admission
            // policy; capacity is what is measured here, and the baseline has no caps.
            ("rtsp.max_viewers".into(), "1000".into()),
            ("rtsp.max_connections".into(), "1000".into()),
            ("rtsp.max_sessions".into(), "1000".into()),
        ];
        match &self.source {
            Source::Test => {
                s.push(("source.kind".into(), "test".into()));
                s.push(("source.pattern".into(), "smpte".into()));
            }
            Source::Stamped(path) => {
                s.push(("source.kind".into(), "pipeline".into()));
                s.push((
                    "source.pipeline".into(),
                    stamp::source_fragment(path, self.width, self.height, self.fps),
                ));
            }
            Source::Faulty(n) => {
                s.push(("source.kind".into(), "pipeline".into()));
                s.push((
                    "source.pipeline".into(),
                    format!("videotestsrc is-live=true ! identity error-after={n}"),
                ));
            }
        }
        s
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The camstream binary: `CAMSTREAM_BIN`, else the one cargo built next to this bench.
pub fn camstream_bin() -> PathBuf {
    std::env::var_os("CAMSTREAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_camstream")))
}

/// A running candidate; killed on drop.
pub struct Server {
    child: Child,
    /// Its RTSP port.
    pub port: u16,
    /// Just before the process was spawned.
    pub spawned: Instant,
    logs: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Server {
    /// Spawns a candidate without waiting for anything.
    pub fn spawn(kind: Kind, setup: &Setup) -> Server {
        let port = free_port();
        let mut cmd = match kind {
            Kind::Camstream => {
                let mut cmd = Command::new(camstream_bin());
                cmd.arg("--set").arg(format!("rtsp.port={port}"));
                cmd.arg("--set").arg(format!("http.port={}", free_port()));
                for (k, v) in setup.camstream_sets() {
                    cmd.arg("--set").arg(format!("{k}={v}"));
                }
                cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
                cmd
            }
            Kind::Baseline => {
                let mut cmd = Command::new(std::env::current_exe().expect("own path"));
                cmd.arg("--baseline-server")
                    .arg(port.to_string())
                    .arg(setup.baseline_launch());
                cmd
            }
        };
        cmd.env_remove("GST_DEBUG").env_remove("GST_TRACERS");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = cmd.spawn().expect("spawn server");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().unwrap().push((Instant::now(), line));
                }
            });
        }
        Server {
            child,
            port,
            spawned,
            logs,
        }
    }

    /// Spawns a candidate and waits until its RTSP port accepts connections.
    pub fn start(kind: Kind, setup: &Setup) -> Server {
        let s = Server::spawn(kind, setup);
        if s.wait_bound(Duration::from_secs(20)).is_none() {
            panic!("{} did not bind its port:\n{}", kind.name(), s.log());
        }
        s
    }

    /// Polls the RTSP port; the time from spawn until it accepted a connection.
    pub fn wait_bound(&self, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Some(self.spawned.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// The stream URL.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/video", self.port)
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// When each log line containing `needle` arrived.
    pub fn log_times(&self, needle: &str) -> Vec<Instant> {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
            .collect()
    }

    /// CPU time used so far (user + system), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        proc_cpu_ticks(self.child.id())
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_rss_kib(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second for /proc/PID/stat (USER_HZ; 100 on every Linux we run on).
pub const CLK_TCK: f64 = 100.0;

/// utime + stime of a process, in clock ticks.
pub fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields are counted after its closing parenthesis,
    // where field 3 (state) comes first, so utime (14) and stime (15) are 11 and 12.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum()
}

/// VmRSS of a process in KiB.
pub fn proc_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The baseline server: what one writes in an afternoon with gst-rtsp-server. One shared
/// factory from a launch line; no keyframe on join, no supervisor, no session clean-up.
pub fn serve_baseline(port: &str, launch: &str) -> ! {
    gst::init().expect("gst init");
    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service(port);
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(launch);
    factory.set_shared(true);
    server
        .mount_points()
        .expect("mount points")
        .add_factory("/video", factory);
    let main_loop = glib::MainLoop::new(None, false);
    let _source = server.attach(None).expect("baseline binds its port");
    println!("baseline listening on rtsp://127.0.0.1:{port}/video");
    main_loop.run();
    std::process::exit(0);
}
