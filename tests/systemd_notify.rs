//! The daemon speaks systemd's notify protocol the way `deploy/systemd/camstream.service`
//! (Type=notify, WatchdogSec=) expects: READY=1 once RTSP is bound, STATUS= lines, WATCHDOG=1
//! at half of WATCHDOG_USEC, and STOPPING=1 then exit 0 on SIGTERM.
//!
//! The test plays systemd: it binds the notification socket itself and runs the real binary
//! with a test-pattern source, so no camera and no systemd are needed.

use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Start-up includes a GStreamer registry scan, which is slow on a fresh CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// WATCHDOG_USEC is 1 s, so two pings are due within about 1 s of READY=1.
const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(10);
/// The daemon promises to exit within 2 s of SIGTERM; the margin absorbs a loaded CI host.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the daemon if the test fails half-way, so no stray process keeps the ports.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything systemd would have received, one assignment per entry, in arrival order.
struct Listener {
    socket: UnixDatagram,
    received: Vec<String>,
}

impl Listener {
    fn bind(path: &Path) -> Listener {
        let socket = UnixDatagram::bind(path).unwrap();
        // Short reads so the polling loops notice deadlines and a dead daemon promptly.
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Listener {
            socket,
            received: Vec::new(),
        }
    }

    /// Reads datagrams until `done` holds for what was received, or the deadline passes.
    fn wait_for(
        &mut self,
        daemon: &mut Daemon,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[String]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !done(&self.received) {
            if let Some(status) = daemon.exited() {
                panic!(
                    "daemon exited ({status}) while waiting for {what}; received {:?}\n--- daemon log ---\n{}",
                    self.received,
                    daemon.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no {what} within {timeout:?}; received {:?}\n--- daemon log ---\n{}",
                    self.received,
                    daemon.log()
                );
            }
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    // One datagram may carry several newline-separated assignments.
                    self.received
                        .extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading the notification socket: {e}"),
            }
        }
    }
}

fn count(received: &[String], line: &str) -> usize {
    received.iter().filter(|l| *l == line).count()
}

#[test]
fn daemon_notifies_systemd_through_its_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let mut listener = Listener::bind(&socket_path);

    let rtsp_port = free_port();
    let http_port = free_port();
    let config = dir.path().join("camstream.toml");
    let mut f = File::create(&config).unwrap();
    write!(
        f,
        r#"[source]
kind = "test"
[video]
width = 320
height = 240
fps = 15
[encoder]
kind = "x264"
[rtsp]
address = "127.0.0.1"
port = {rtsp_port}
[http]
address = "127.0.0.1"
port = {http_port}
"#
    )
    .unwrap();
    drop(f);

    let log = dir.path().join("daemon.log");
    let out = File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_camstream"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        // The test cannot know the child's pid in advance; without WATCHDOG_PID the
        // watchdog applies to whoever reads WATCHDOG_USEC, which is the daemon.
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, log };

    listener.wait_for(&mut daemon, READY_TIMEOUT, "READY=1", |r| {
        r.iter().any(|l| l == "READY=1")
    });
    // READY=1 promises a bound RTSP server: a viewer may connect from now on.
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{rtsp_port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .unwrap_or_else(|e| panic!("READY=1 sent but RTSP port {rtsp_port} refuses: {e}"));

    listener.wait_for(&mut daemon, WATCHDOG_TIMEOUT, "two WATCHDOG=1", |r| {
        count(r, "WATCHDOG=1") >= 2
    });
    assert!(
        listener.received.iter().any(|l| l.starts_with("STATUS=")),
        "no STATUS= line by the time the daemon is streaming: {:?}",
        listener.received
    );
    assert_eq!(
        count(&listener.received, "STOPPING=1"),
        0,
        "STOPPING=1 before SIGTERM: {:?}",
        listener.received
    );

    let pid = daemon.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success(), "kill -TERM {pid} failed");
    let stop_started = Instant::now();
    listener.wait_for(&mut daemon, STOP_TIMEOUT, "STOPPING=1", |r| {
        r.iter().any(|l| l == "STOPPING=1")
    });

    let status = loop {
        if let Some(status) = daemon.exited() {
            break status;
        }
        assert!(
            stop_started.elapsed() < STOP_TIMEOUT,
            "daemon still running {STOP_TIMEOUT:?} after SIGTERM\n--- daemon log ---\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "daemon exit status after SIGTERM: {status}\n--- daemon log ---\n{}",
        daemon.log()
    );
}
