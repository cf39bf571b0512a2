//! systemd service notifications (the `sd_notify` protocol), with nothing but std.
//!
//! Under `Type=notify` systemd passes a datagram socket in `NOTIFY_SOCKET` and waits for
//! `READY=1` before it considers the unit started; with `WatchdogSec=` it also passes
//! `WATCHDOG_USEC` and kills the service unless `WATCHDOG=1` arrives often enough. Outside
//! systemd (a terminal, a container) `NOTIFY_SOCKET` is unset and [`Notifier::from_env`]
//! returns `None`, so callers hold an `Option<Notifier>` and do nothing in that case.
//!
//! Notifications are best effort: a lost datagram must never take the daemon down, so the
//! convenience methods log the first failure and ignore the rest. [`Notifier::send`] returns
//! the error for callers that want it.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Why a notification socket could not be set up or written to.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` names something other than a path or an abstract (`@`) socket.
    #[error("unsupported NOTIFY_SOCKET address {0:?}: expected an absolute path or @abstract name")]
    UnsupportedAddress(String),
    /// The address could not be turned into a socket address (too long, embedded NUL, ...).
    #[error("invalid NOTIFY_SOCKET address {address:?}: {source}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What the OS said about it.
        source: io::Error,
    },
    /// The local datagram socket could not be created.
    #[error("cannot create a datagram socket for systemd notifications: {0}")]
    Socket(#[source] io::Error),
    /// The datagram was not accepted by the receiver.
    #[error("cannot send {state:?} to NOTIFY_SOCKET {address:?}: {source}")]
    Send {
        /// The notification that was lost.
        state: String,
        /// Where it was going.
        address: String,
        /// What the OS said about it.
        source: io::Error,
    },
}

/// A handle on systemd's notification socket; cheap to clone and share between threads.
#[derive(Clone, Debug)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Kept for messages: `SocketAddr` does not print abstract names readably.
    address: String,
    /// Shared by all clones so a missing receiver produces one warning, not one per ping.
    warned: AtomicBool,
}

impl Notifier {
    /// Connects to `NOTIFY_SOCKET`; `None` when it is unset, empty or unusable (logged).
    pub fn from_env() -> Option<Notifier> {
        let address = std::env::var_os("NOTIFY_SOCKET")?;
        let address = address.to_string_lossy();
        if address.is_empty() {
            return None;
        }
        match Notifier::from_address(&address) {
            Ok(notifier) => Some(notifier),
            Err(err) => {
                tracing::warn!(error = %err, "systemd notifications disabled");
                None
            }
        }
    }

    /// Targets the given address: an absolute path, or `@name` for an abstract socket.
    pub fn from_address(address: &str) -> Result<Notifier, NotifyError> {
        let addr = if let Some(name) = address.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes())
        } else if address.starts_with('/') {
            SocketAddr::from_pathname(address)
        } else {
            return Err(NotifyError::UnsupportedAddress(address.to_owned()));
        }
        .map_err(|source| NotifyError::InvalidAddress {
            address: address.to_owned(),
            source,
        })?;
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        Ok(Notifier {
            inner: Arc::new(Inner {
                socket,
                addr,
                address: address.to_owned(),
                warned: AtomicBool::new(false),
            }),
        })
    }

    /// Sends one raw notification datagram such as `"READY=1"` and reports failure.
    pub fn send(&self, state: &str) -> Result<(), NotifyError> {
        let sent = self
            .inner
            .socket
            .send_to_addr(state.as_bytes(), &self.inner.addr);
        match sent {
            Ok(n) if n == state.len() => Ok(()),
            Ok(n) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short datagram: {n} of {} bytes", state.len()),
            )),
            Err(err) => Err(err),
        }
        .map_err(|source| NotifyError::Send {
            state: state.to_owned(),
            address: self.inner.address.clone(),
            source,
        })
    }

    /// Tells systemd that start-up has finished (`READY=1`).
    pub fn ready(&self) {
        self.send_best_effort("READY=1");
    }

    /// Sets the one-line status shown by `systemctl status` (`STATUS=...`).
    pub fn status(&self, status: &str) {
        // A newline would start a new assignment in the datagram, so fold the text to one line.
        let line: String = status
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send_best_effort(&format!("STATUS={line}"));
    }

    /// Resets systemd's watchdog timer (`WATCHDOG=1`).
    pub fn watchdog(&self) {
        self.send_best_effort("WATCHDOG=1");
    }

    /// Tells systemd that shutdown has begun (`STOPPING=1`).
    pub fn stopping(&self) {
        self.send_best_effort("STOPPING=1");
    }

    /// The watchdog timeout systemd expects us to beat, if any; ping at half of it.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
    }

    fn send_best_effort(&self, state: &str) {
        if let Err(err) = self.send(state)
            && !self.inner.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %err, "systemd notification failed; further failures are not logged");
        }
    }
}

/// `WATCHDOG_USEC` as a duration, unless `WATCHDOG_PID` says the watchdog is someone else's
/// (systemd sets it for the main process; a child that inherited the environment must not ping).
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid.filter(|p| !p.is_empty())
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (dir, path, socket)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_exact_datagrams_to_a_path_socket() {
        let (_dir, path, socket) = receiver();
        let notifier = Notifier::from_address(path.to_str().unwrap()).unwrap();
        notifier.ready();
        notifier.status("Streaming 1280x720@30");
        notifier.watchdog();
        notifier.stopping();
        assert_eq!(recv(&socket), "READY=1");
        assert_eq!(recv(&socket), "STATUS=Streaming 1280x720@30");
        assert_eq!(recv(&socket), "WATCHDOG=1");
        assert_eq!(recv(&socket), "STOPPING=1");
    }

    #[test]
    fn status_is_folded_to_one_line() {
        let (_dir, path, socket) = receiver();
        let notifier = Notifier::from_address(path.to_str().unwrap()).unwrap();
        notifier.status("Camera failed to open\nREADY=1");
        assert_eq!(recv(&socket), "STATUS=Camera failed to open READY=1");
    }

    #[test]
    fn clones_share_the_socket_across_threads() {
        let (_dir, path, socket) = receiver();
        let notifier = Notifier::from_address(path.to_str().unwrap()).unwrap();
        let clone = notifier.clone();
        std::thread::spawn(move || clone.watchdog()).join().unwrap();
        assert_eq!(recv(&socket), "WATCHDOG=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!(
            "camstream-notify-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::from_address(&format!("@{name}")).unwrap();
        notifier.ready();
        assert_eq!(recv(&socket), "READY=1");
    }

    #[test]
    fn missing_receiver_is_reported_by_send_and_ignored_by_the_rest() {
        let (dir, path, socket) = receiver();
        let notifier = Notifier::from_address(path.to_str().unwrap()).unwrap();
        drop(socket);
        drop(dir);
        assert!(matches!(
            notifier.send("READY=1"),
            Err(NotifyError::Send { .. })
        ));
        // Twice: the second failure takes the already-warned path.
        notifier.watchdog();
        notifier.watchdog();
    }

    #[test]
    fn rejects_relative_and_vsock_addresses() {
        assert!(matches!(
            Notifier::from_address("notify.sock"),
            Err(NotifyError::UnsupportedAddress(_))
        ));
        assert!(matches!(
            Notifier::from_address("vsock:2:1234"),
            Err(NotifyError::UnsupportedAddress(_))
        ));
        let too_long = format!("/{}", "x".repeat(200));
        assert!(matches!(
            Notifier::from_address(&too_long),
            Err(NotifyError::InvalidAddress { .. })
        ));
    }

    #[test]
    fn watchdog_interval_honours_watchdog_pid() {
        let secs30 = Some(Duration::from_secs(30));
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 42), secs30);
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some(""), 42),
            secs30
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("42"), 42),
            secs30
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("43"), 42),
            None
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("junk"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
    }

    #[test]
    fn notifier_is_clone_send_sync() {
        fn assert_traits<T: Clone + Send + Sync + 'static>() {}
        assert_traits::<Notifier>();
    }
}
