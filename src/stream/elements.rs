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
    } else if device_plugin(element).is_some() && !absence(element).starts_with("not installed") {
        Err(CaptureError::NoDeviceFor {
            element,
            detail: absence(element),
        })
    } else {
        Err(CaptureError::MissingElement {
            element,
            package: package_for(element),
        })
    }
}

/// The plugin that registers `element`, and what it needs besides being installed, for the
/// elements that exist only when a matching device does (the plugin loads, but registers no
/// element without one).
fn device_plugin(element: &str) -> Option<(&'static str, &'static str)> {
    Some(match element {
        "v4l2h264enc" => (
            "video4linux2",
            "no V4L2 H.264 encoder device (on a Pi 4/CM4: /dev/video11; a Pi 5 has none)",
        ),
        "vah264enc" => (
            "va",
            "no VA-API device that encodes H.264 (/dev/dri/renderD*, with the vendor's VA driver)",
        ),
        "vaapih264enc" => (
            "vaapi",
            "no VA-API device that encodes H.264 (/dev/dri/renderD*, with the vendor's VA driver)",
        ),
        "nvh264enc" => ("nvcodec", "no NVIDIA GPU with NVENC (and its CUDA driver)"),
        "qsvh264enc" => ("qsv", "no Intel Quick Sync device (/dev/dri/renderD*)"),
        _ => return None,
    })
}

/// Why `element` is not available: its package is missing, or its plugin is installed but
/// registered no such element because there is no device for it.
pub fn absence(element: &str) -> String {
    match device_plugin(element) {
        Some((plugin, needs)) if gst::Registry::get().find_plugin(plugin).is_some() => {
            format!("plugin installed, {needs}")
        }
        _ => format!("not installed (Debian package {})", package_for(element)),
    }
}
