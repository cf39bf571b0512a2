//! Which GStreamer elements are installed, and which Debian package ships each one, so a missing
//! element is reported with what to install.

use super::CaptureError;

/// Debian package that ships each element camstream may use.
pub fn package_for(element: &str) -> &'static str {
    match element {
        "libcamerasrc" => "gstreamer1.0-libcamera",
        "v4l2src" | "v4l2h264enc" | "rtph264pay" | "rtph264depay" | "jpegenc" | "udpsrc"
        | "udpsink" | "rtpbin" | "flvmux" | "rtpmp4gpay" | "splitmuxsink" | "mp4mux" | "qtmux"
        | "matroskamux" | "videoflip" | "videocrop" | "videobalance" => "gstreamer1.0-plugins-good",
        "clockoverlay" | "textoverlay" => "gstreamer1.0-x",
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "openh264enc" | "h264parse" | "vah264enc" | "rtmp2sink" | "srtsink" | "srtsrc"
        | "mpegtsmux" => "gstreamer1.0-plugins-bad",
        "vaapih264enc" => "gstreamer1.0-vaapi",
        "nvh264enc" | "qsvh264enc" => "gstreamer1.0-plugins-bad (with the vendor's driver)",
        "rtspclientsink" => "gstreamer1.0-rtsp",
        "avdec_h264" => "gstreamer1.0-libav",
        "identity" | "queue" | "valve" | "concat" | "fakesink" | "tee" => "libgstreamer1.0-0",
        _ => "gstreamer1.0-plugins-base",
    }
}

/// Whether an element factory is installed.
pub fn has_element(name: &str) -> bool {
    gst::ElementFactory::find(name).is_some()
}

/// Fails with the package name when `element` is missing.
pub fn require(element: &'static str) -> Result<(), CaptureError> {
    if has_element(element) {
        Ok(())
    } else {
        Err(CaptureError::MissingElement {
            element,
            package: package_for(element),
        })
    }
}
