//! Logging set-up: `tracing` to stderr as text or JSON lines, through a writer that can neither
//! panic nor block the thread that logs.
//!
//! Whoever reads the daemon's stderr can go away (a closed terminal or SSH login, `| head`, a
//! restarted log shipper) or stop reading (a stuck shipper, a full pipe). tracing-subscriber's
//! own stderr writer would then report the failed write with `eprintln!`, which panics on a
//! broken stderr, and a full pipe would block the streaming or GLib thread that logged. Here a
//! log line is handed to a bounded queue instead, and one `log-writer` thread writes the queue
//! to stderr: a line that finds the queue full, or whose write fails, is dropped and counted
//! (`camstream_log_lines_dropped_total`). GLib and GStreamer warnings, which GLib would write to
//! stderr itself, go the same way.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use gst::glib;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogConfig, LogFormat};

/// Log lines the queue holds before new ones are dropped: several seconds of the busiest
/// logging the daemon does, a few hundred KiB at most.
pub const QUEUE_LINES: usize = 2048;

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines queued and not yet written (or dropped), for [`flush`].
static UNWRITTEN: AtomicUsize = AtomicUsize::new(0);
static DROP_COUNTER: OnceLock<metrics::Counter> = OnceLock::new();

/// Log lines dropped since start-up because stderr was gone, failing or not keeping up.
pub fn lines_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn dropped(n: u64) {
    let total = DROPPED.fetch_add(n, Ordering::Relaxed) + n;
    if let Some(c) = DROP_COUNTER.get() {
        // absolute() keeps the maximum, so racing updates still end at the true total.
        c.absolute(total);
    }
}

/// Reports dropped lines through `counter` from now on (drops before the metrics recorder
/// existed included).
pub fn count_drops_in(counter: metrics::Counter) {
    counter.absolute(lines_dropped());
    let _ = DROP_COUNTER.set(counter);
}

/// A `MakeWriter` whose writers queue each formatted line for the `log-writer` thread.
#[derive(Clone)]
pub struct QueuedStderr {
    tx: SyncSender<Vec<u8>>,
}

/// Queues one line (tracing formats an event into one buffer and writes it at once).
pub struct QueuedLine {
    tx: SyncSender<Vec<u8>>,
}

impl Write for QueuedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        UNWRITTEN.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(buf.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                UNWRITTEN.fetch_sub(1, Ordering::Relaxed);
                dropped(1);
            }
        }
        // Never an error: tracing would report it on stderr, the very thing that failed.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueuedStderr {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            tx: self.tx.clone(),
        }
    }
}

/// Writes queued lines to `out` until every sender is gone. A failed write (EPIPE once the
/// reader left; SIGPIPE is ignored by Rust programs) drops the line.
fn write_lines(rx: Receiver<Vec<u8>>, mut out: impl Write) {
    for line in rx {
        if out.write_all(&line).is_err() {
            dropped(1);
        }
        UNWRITTEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts the `log-writer` thread and returns the writer to give tracing. Without the thread
/// (it could not be spawned) every line is dropped and counted rather than written inline.
pub fn queued_stderr(capacity: usize) -> QueuedStderr {
    queued_to(capacity, std::io::stderr())
}

fn queued_to(capacity: usize, out: impl Write + Send + 'static) -> QueuedStderr {
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(rx, out));
    if spawned.is_err() {
        let _ = writeln!(std::io::stderr(), "camstream: cannot start the log writer");
    }
    QueuedStderr { tx }
}

/// Waits up to `timeout` for queued lines to reach stderr (or be dropped), so the last lines
/// before exit are not lost with the process.
pub fn flush(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while UNWRITTEN.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Prints a message for a person on stderr, ignoring a stderr that is gone (`eprintln!` would
/// panic). For the few messages printed before or after logging runs.
pub fn print_error(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Sends GLib's own log messages (GStreamer warnings among them) through tracing: GLib's
/// default handler writes them to stderr inline, on streaming and GLib threads.
fn route_glib_logs() {
    glib::log_set_default_handler(|domain, level, message| {
        let domain = domain.unwrap_or("");
        match level {
            glib::LogLevel::Error | glib::LogLevel::Critical => {
                tracing::error!(domain, "{message}")
            }
            glib::LogLevel::Warning => tracing::warn!(domain, "{message}"),
            glib::LogLevel::Message | glib::LogLevel::Info => tracing::info!(domain, "{message}"),
            glib::LogLevel::Debug => tracing::debug!(domain, "{message}"),
        }
    });
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(config: &LogConfig) {
    // Set once per process: tests call init more than once.
    static WRITER: Mutex<Option<QueuedStderr>> = Mutex::new(None);
    let writer = WRITER
        .lock()
        .unwrap()
        .get_or_insert_with(|| queued_stderr(QUEUE_LINES))
        .clone();
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .log_internal_errors(false)
        .with_target(false)
        // Colour codes only on a terminal: journald and log collectors get plain text.
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_ok() {
        route_glib_logs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails like a pipe whose reader left.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A writer that never returns, like a pipe nobody reads.
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_and_blocked_writes_drop_lines_without_blocking() {
        let before = lines_dropped();
        let broken = queued_to(4, Broken);
        for _ in 0..3 {
            assert_eq!(broken.make_writer().write(b"line\n").unwrap(), 5);
        }
        flush(Duration::from_secs(5));
        assert!(lines_dropped() >= before + 3);

        let stuck = queued_to(4, Stuck);
        let t0 = Instant::now();
        let before = lines_dropped();
        for _ in 0..100 {
            stuck.make_writer().write_all(b"line\n").unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "logging blocked");
        // One line is stuck in the write, four wait in the queue, the rest are dropped.
        assert!(lines_dropped() >= before + 95);
    }
}
