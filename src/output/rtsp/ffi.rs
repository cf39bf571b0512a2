//! All unsafe code of the RTSP output: reads from gst-rtsp-server objects that the Rust bindings
//! (0.25) give no getter for (a request's headers and request line, a client's peer address and
//! socket), the calls the bindings model too narrowly (handing over a connection with raw
//! bytes, the connection-time auth check, a bit set of auth schemes), and the Linux socket
//! queries the request guard uses. Each is one FFI call whose result is copied at once.

use gst::glib;
use gst_rtsp_server::{gio, gst_rtsp};

/// The peer address of a client.
pub fn peer_ip(client: &gst_rtsp_server::RTSPClient) -> String {
    use glib::translate::ToGlibPtr;
    // SAFETY: the bindings do not expose the connection; both calls only read from objects the
    // client owns and keeps alive while the borrowed pointer is in use, and the returned string
    // is copied before the client can go away. A null at either step is handled.
    unsafe {
        let conn = gst_rtsp_server::ffi::gst_rtsp_client_get_connection(client.to_glib_none().0);
        if conn.is_null() {
            return String::new();
        }
        let ip = gst_rtsp::ffi::gst_rtsp_connection_get_ip(conn);
        if ip.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(ip).to_string_lossy().into_owned()
    }
}

/// One header of an RTSP message, if present.
pub fn header(
    msg: &gst_rtsp::rtsp_message::RTSPMessage,
    field: gst_rtsp::RTSPHeaderField,
) -> Option<String> {
    use glib::translate::{IntoGlib, ToGlibPtr};
    let mut value: *mut std::ffi::c_char = std::ptr::null_mut();
    // SAFETY: the bindings offer no getter. The message outlives this call, `value` points into
    // the message and is copied before returning, and a missing header leaves it null.
    unsafe {
        let res = gst_rtsp::ffi::gst_rtsp_message_get_header(
            msg.to_glib_none().0,
            field.into_glib(),
            &mut value,
            0,
        );
        if res != gst_rtsp::ffi::GST_RTSP_OK || value.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(value)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// The request URI of a request message, as sent, and whether its version is RTSP/1.0.
pub fn request_line(msg: &gst_rtsp::rtsp_message::RTSPMessage) -> Option<(String, bool)> {
    use glib::translate::ToGlibPtr;
    let mut method: gst_rtsp::ffi::GstRTSPMethod = 0;
    let mut uri: *const std::ffi::c_char = std::ptr::null();
    let mut version: gst_rtsp::ffi::GstRTSPVersion = 0;
    // SAFETY: the bindings offer no getter; `uri` points into the message, which outlives this
    // call, and is copied before returning. A non-request message returns an error.
    unsafe {
        let res = gst_rtsp::ffi::gst_rtsp_message_parse_request(
            msg.to_glib_none().0,
            &mut method,
            &mut uri,
            &mut version,
        );
        if res != gst_rtsp::ffi::GST_RTSP_OK || uri.is_null() {
            return None;
        }
        let uri = std::ffi::CStr::from_ptr(uri).to_string_lossy().into_owned();
        Some((uri, version == gst_rtsp::ffi::GST_RTSP_VERSION_1_0))
    }
}

/// The socket a client reads from, with our own reference.
pub fn client_socket(client: &gst_rtsp_server::RTSPClient) -> Option<gio::Socket> {
    use glib::translate::{FromGlibPtrNone, ToGlibPtr};
    // SAFETY: the connection and its socket belong to the client, which is alive for this
    // call; from_glib_none takes our own reference to the socket. Nulls are handled.
    unsafe {
        let conn = gst_rtsp_server::ffi::gst_rtsp_client_get_connection(client.to_glib_none().0);
        if conn.is_null() {
            return None;
        }
        let sock = gst_rtsp::ffi::gst_rtsp_connection_get_read_socket(conn);
        if sock.is_null() {
            return None;
        }
        Some(gio::Socket::from_glib_none(sock))
    }
}

/// Offers a set of authentication schemes. The C type is a bit set, but the bindings model it
/// as a single-valued enum, which cannot say "Basic and Digest".
pub fn set_auth_methods(auth: &gst_rtsp_server::RTSPAuth, bits: gst_rtsp::ffi::GstRTSPAuthMethod) {
    use glib::translate::ToGlibPtr;
    // SAFETY: a live auth object and a value made only of the C enum's defined bits.
    unsafe {
        gst_rtsp_server::ffi::gst_rtsp_auth_set_supported_methods(auth.to_glib_none().0, bits);
    }
}

/// Hands an accepted connection to the server, with the bytes already read from it (the first
/// request head). The bindings take the initial buffer as `&str`, but a request may carry any
/// bytes but NUL, so the C function is called directly with a C string.
pub fn transfer_connection(
    server: &gst_rtsp_server::RTSPServer,
    socket: gio::Socket,
    ip: &str,
    port: u16,
    initial: &std::ffi::CStr,
) -> bool {
    use glib::translate::{IntoGlibPtr, ToGlibPtr};
    let ip = std::ffi::CString::new(ip).unwrap_or_default();
    // SAFETY: the socket reference is transferred to the server (transfer full), the strings
    // are copied by the callee, and the server is alive for the call.
    unsafe {
        gst_rtsp_server::ffi::gst_rtsp_server_transfer_connection(
            server.to_glib_none().0,
            socket.into_glib_ptr(),
            ip.as_ptr(),
            i32::from(port),
            initial.as_ptr(),
        ) != glib::ffi::GFALSE
    }
}

/// Runs the server's connection check on a client's connection, as gst-rtsp-server does for
/// connections it accepts itself (`transfer_connection` skips it). With a certificate set on
/// the auth object, this is what puts TLS on the connection. Returns false when refused.
pub fn connect_check(
    server: &gst_rtsp_server::RTSPServer,
    client: &gst_rtsp_server::RTSPClient,
) -> bool {
    use glib::translate::ToGlibPtr;
    use gst_rtsp_server::prelude::*;
    let Some(auth) = server.auth() else {
        return true;
    };
    // SAFETY: the context lives on this stack frame for exactly the push/pop pair, holds
    // borrowed pointers to objects that outlive the call, and is zeroed elsewhere as the C
    // code does (`GstRTSPContext ctx = { NULL }`).
    unsafe {
        let conn = gst_rtsp_server::ffi::gst_rtsp_client_get_connection(client.to_glib_none().0);
        if conn.is_null() {
            return false;
        }
        let mut ctx: gst_rtsp_server::ffi::GstRTSPContext = std::mem::zeroed();
        ctx.server = server.to_glib_none().0;
        ctx.conn = conn;
        ctx.client = client.to_glib_none().0;
        ctx.auth = auth.to_glib_none().0;
        gst_rtsp_server::ffi::gst_rtsp_context_push_current(&mut ctx);
        let ok = gst_rtsp_server::ffi::gst_rtsp_auth_check(
            gst_rtsp_server::ffi::GST_RTSP_AUTH_CHECK_CONNECT
                .as_ptr()
                .cast(),
        );
        gst_rtsp_server::ffi::gst_rtsp_context_pop_current(&mut ctx);
        ok != glib::ffi::GFALSE
    }
}

mod sys {
    use std::ffi::{c_int, c_uint, c_ulong, c_void};
    unsafe extern "C" {
        pub fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
        pub fn getsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *mut c_void,
            len: *mut c_uint,
        ) -> c_int;
        pub fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_void,
            len: c_uint,
        ) -> c_int;
    }
    /// `FIONREAD` (= `SIOCINQ`): bytes received and not yet read.
    pub const FIONREAD: c_ulong = 0x541B;
    /// `SIOCOUTQ`: bytes sent and not yet acknowledged.
    pub const SIOCOUTQ: c_ulong = 0x5411;
    pub const SOL_SOCKET: c_int = 1;
    pub const SO_RCVBUF: c_int = 8;
    pub const IPPROTO_TCP: c_int = 6;
    pub const TCP_INFO: c_int = 11;
    /// Offset of `tcpi_bytes_received` in `struct tcp_info` (Linux 4.1+).
    pub const TCPI_BYTES_RECEIVED: usize = 128;
}

#[cfg(target_os = "linux")]
fn ioctl_int(fd: std::os::fd::BorrowedFd<'_>, request: std::ffi::c_ulong) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: std::ffi::c_int = 0;
    // SAFETY: both requests write one int through the pointer, which is valid for the call;
    // the descriptor is borrowed, so open.
    let rc = unsafe { sys::ioctl(fd.as_raw_fd(), request, &mut n as *mut std::ffi::c_int) };
    if rc == 0 { n.max(0) as usize } else { 0 }
}

/// Bytes received on a socket and not yet read by anyone (Linux `FIONREAD`).
#[cfg(target_os = "linux")]
pub fn unread(fd: std::os::fd::BorrowedFd<'_>) -> usize {
    ioctl_int(fd, sys::FIONREAD)
}

/// Bytes in a socket's send queue not yet acknowledged by the peer (Linux `SIOCOUTQ`).
#[cfg(target_os = "linux")]
pub fn unsent(fd: std::os::fd::BorrowedFd<'_>) -> usize {
    ioctl_int(fd, sys::SIOCOUTQ)
}

/// Bytes the peer has sent on a TCP connection since it opened (`tcpi_bytes_received`), read or
/// not. `None` on kernels without the field.
#[cfg(target_os = "linux")]
pub fn bytes_received(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; 256];
    let mut len = info.len() as std::ffi::c_uint;
    // SAFETY: the kernel writes at most `len` bytes into the buffer and updates `len`.
    let rc = unsafe {
        sys::getsockopt(
            fd.as_raw_fd(),
            sys::IPPROTO_TCP,
            sys::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let end = sys::TCPI_BYTES_RECEIVED + 8;
    if rc != 0 || (len as usize) < end {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&info[sys::TCPI_BYTES_RECEIVED..end]);
    Some(u64::from_ne_bytes(b))
}

/// Caps a socket's receive buffer, which bounds what the kernel holds unread for it.
#[cfg(target_os = "linux")]
pub fn set_receive_buffer(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) {
    use std::os::fd::AsRawFd;
    let v = bytes.min(i32::MAX as usize) as std::ffi::c_int;
    // SAFETY: an int option read from a valid pointer for the call.
    unsafe {
        sys::setsockopt(
            fd.as_raw_fd(),
            sys::SOL_SOCKET,
            sys::SO_RCVBUF,
            (&v as *const std::ffi::c_int).cast(),
            std::mem::size_of::<std::ffi::c_int>() as std::ffi::c_uint,
        );
    }
}

/// Unread bytes (unknown off Linux: 0).
#[cfg(not(target_os = "linux"))]
pub fn unread(_: std::os::fd::BorrowedFd<'_>) -> usize {
    0
}

/// Unsent bytes (unknown off Linux: 0).
#[cfg(not(target_os = "linux"))]
pub fn unsent(_: std::os::fd::BorrowedFd<'_>) -> usize {
    0
}

/// Bytes received (unknown off Linux).
#[cfg(not(target_os = "linux"))]
pub fn bytes_received(_: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    None
}

/// Receive buffer cap (not applied off Linux).
#[cfg(not(target_os = "linux"))]
pub fn set_receive_buffer(_: std::os::fd::BorrowedFd<'_>, _: usize) {}
