//! Reads from gst-rtsp-server objects that the Rust bindings (0.25) give no getter for: a
//! request's headers and a client's peer address. Each is one borrowed FFI call whose result is
//! copied at once.

use gst::glib;
use gst_rtsp_server::gst_rtsp;

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
