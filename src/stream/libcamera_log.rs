//! libcamera's own log, read by the daemon: libcamera writes it to stderr unless
//! `LIBCAMERA_LOG_FILE` names a file, so at start-up (before any thread or libcamera exists) the
//! variable is pointed at a FIFO this process reads. Every line is forwarded to our log (target
//! `libcamera`) and kept, bounded, so a failing camera can be explained in libcamera's words
//! ([`super::diagnose`]) and a known cause reported at once instead of after the start timeout.
//! An operator's own `LIBCAMERA_LOG_FILE` is respected: then nothing is captured.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use super::diagnose::{self, Diagnosis, Level, LogLine};

/// Lines kept: a few camera opens' worth (libcamera says ~5 lines per open at INFO).
const KEPT: usize = 256;

struct Entry {
    at: Instant,
    line: LogLine,
}

static LINES: OnceLock<Mutex<VecDeque<Entry>>> = OnceLock::new();

/// Removes the FIFO when the process ends normally.
pub struct Capture {
    path: PathBuf,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why libcamera's log is not captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The operator chose a log file (or syslog) for libcamera.
    #[error("LIBCAMERA_LOG_FILE is set ({0}); libcamera's reasons are read from there only by you")]
    OperatorChose(String),
    /// The FIFO could not be made or opened.
    #[error("cannot make a FIFO for libcamera's log at {path}: {error}")]
    Fifo {
        /// Where.
        path: String,
        /// What the system said.
        error: std::io::Error,
    },
}

/// Points libcamera's log at a FIFO this process reads.
///
/// # Safety
/// Sets an environment variable: call it before any other thread exists (first thing in `main`).
pub unsafe fn install() -> Result<Capture, CaptureError> {
    if let Some(v) = std::env::var_os("LIBCAMERA_LOG_FILE") {
        return Err(CaptureError::OperatorChose(
            v.to_string_lossy().into_owned(),
        ));
    }
    let dir = std::env::var_os("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("camstream-libcamera-{}.log", std::process::id()));
    let fail = |error: std::io::Error| CaptureError::Fifo {
        path: path.display().to_string(),
        error,
    };
    let _ = std::fs::remove_file(&path);
    remove_stale(&dir);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .map_err(|e| fail(e.into()))?;
    // Read and write: opening a FIFO this way never blocks, and as long as we hold a writer the
    // reader never sees end-of-file between libcamera's opens.
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| {
            let _ = std::fs::remove_file(&path);
            fail(e)
        })?;
    LINES.get_or_init(|| Mutex::new(VecDeque::with_capacity(KEPT)));
    // SAFETY: the caller guarantees no other thread exists yet.
    unsafe { std::env::set_var("LIBCAMERA_LOG_FILE", &path) };
    std::thread::Builder::new()
        .name("libcamera-log".into())
        .spawn(move || read(BufReader::new(fifo)))
        .map_err(|e| {
            let _ = std::fs::remove_file(&path);
            fail(e)
        })?;
    Ok(Capture { path })
}

/// Removes FIFOs left by camstream processes that no longer exist (killed, or a second signal).
fn remove_stale(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("camstream-libcamera-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let is_fifo = e.file_type().is_ok_and(|t| {
            use std::os::unix::fs::FileTypeExt;
            t.is_fifo()
        });
        if is_fifo && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether libcamera's log reaches this process.
pub fn captured() -> bool {
    LINES.get().is_some()
}

fn read(mut reader: impl BufRead) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = strip_ansi(&String::from_utf8_lossy(&buf));
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        let Some(line) = LogLine::parse(text) else {
            tracing::info!(target: "libcamera", "libcamera: {text}");
            continue;
        };
        match line.level {
            Level::Error | Level::Fatal => {
                tracing::error!(target: "libcamera", category = %line.category, "libcamera: {}", line.message)
            }
            Level::Warn => {
                tracing::warn!(target: "libcamera", category = %line.category, "libcamera: {}", line.message)
            }
            // libcamera's INFO is chatty (one line per configure); ours is for the operator.
            Level::Info | Level::Debug => {
                tracing::debug!(target: "libcamera", category = %line.category, "libcamera: {}", line.message)
            }
        }
        record(line);
    }
}

fn record(line: LogLine) {
    if let Some(lines) = LINES.get()
        && let Ok(mut l) = lines.lock()
    {
        if l.len() == KEPT {
            l.pop_front();
        }
        l.push_back(Entry {
            at: Instant::now(),
            line,
        });
    }
}

/// libcamera's lines logged at or after `t`.
pub fn since(t: Instant) -> Vec<LogLine> {
    LINES
        .get()
        .and_then(|l| l.lock().ok())
        .map(|l| {
            l.iter()
                .filter(|e| e.at >= t)
                .map(|e| e.line.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// How long a camera may still deliver its first frame after libcamera named a fatal cause:
/// with several pipeline handlers, one may complain about a resource the camera in use does
/// not need (a UVC camera needs no dma-buf heap).
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A fatal cause libcamera logged at or after `t`: reason enough to stop waiting for frames.
pub fn known_cause_since(t: Instant) -> Option<Diagnosis> {
    diagnose::fatal(&since(t))
}

/// libcamera's best explanation since `t`: a known cause, else its first error.
pub fn explain_since(t: Instant) -> Option<Diagnosis> {
    diagnose::explain(&since(t))
}

/// A failure message with libcamera's reason in front of GStreamer's, when libcamera (or the
/// message itself, for libcamerasrc's bus errors) says why.
pub fn explain_failure(message: &str, t: Instant) -> String {
    match explain_since(t).filter(|d| d.cause.is_some()) {
        Some(d) => format!("{d}; {message}"),
        None => match diagnose::diagnose(message) {
            Some(d) => format!(
                "{message} — {} (docs/troubleshooting.md#{})",
                d.hint,
                d.cause.map_or("", |c| c.anchor())
            ),
            None => match explain_since(t) {
                Some(d) => format!("{d}; {message}"),
                None => message.to_string(),
            },
        },
    }
}

/// Removes terminal colour sequences (libcamera colours its log when it thinks it is a tty).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stripped() {
        let raw = "[6:08:11.060397892] [24147] \u{1b}[1;31mERROR \u{1b}[1;37mDmaBufAllocator \u{1b}[1;34mdma_buf_allocator.cpp:119 \u{1b}[0mCould not open any dma-buf provider";
        let line = LogLine::parse(&strip_ansi(raw)).expect("parses");
        assert_eq!(line.message, "Could not open any dma-buf provider");
        assert_eq!(line.level, Level::Error);
    }

    #[test]
    fn lines_are_read_recorded_and_bounded() {
        LINES.get_or_init(|| Mutex::new(VecDeque::with_capacity(KEPT)));
        let t = Instant::now();
        let mut text = String::new();
        for i in 0..(KEPT + 10) {
            text.push_str(&format!(
                "[0:00:00.{i}] [1]  INFO Camera camera.cpp:1 line {i}\n"
            ));
        }
        text.push_str("[0:00:01.0] [1] ERROR DmaBufAllocator dma_buf_allocator.cpp:119 Could not open any dma-buf provider\n");
        read(std::io::Cursor::new(text));
        let lines = since(t);
        assert!(lines.len() <= KEPT);
        let d = known_cause_since(t).expect("a known cause");
        assert_eq!(d.cause, Some(diagnose::Cause::DmaBuf));
        let msg = explain_failure("no frame within the start timeout (10000 ms)", t);
        assert!(
            msg.starts_with("libcamera: Could not open any dma-buf provider"),
            "{msg}"
        );
        assert!(
            msg.ends_with("no frame within the start timeout (10000 ms)"),
            "{msg}"
        );
    }
}
