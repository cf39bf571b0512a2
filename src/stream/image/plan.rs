//! Which backend carries each image setting: the camera itself (libcamera properties or V4L2
//! controls) where it can, else software elements in the capture pipeline, else a clear error.
//! The plan is a pure function of the settings and what the source offers ([`Caps`]), so the
//! same decision is made at start, in `camstream check`, for the controls API and for a live
//! change.

use serde::Serialize;

use super::libcamera::{self, PropSpec};
pub use super::orientation::Orientation;
use super::v4l2;
use crate::config::image::{ImageConfig, OverlayConfig};

/// What carries a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A `libcamerasrc` property.
    Libcamera,
    /// A V4L2 device control.
    V4l2,
    /// GStreamer elements in the capture pipeline (costs CPU).
    Software,
}

impl Backend {
    /// The name shown in status, logs and the controls API.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Libcamera => "libcamera",
            Backend::V4l2 => "v4l2",
            Backend::Software => "software",
        }
    }
}

/// What a source offers for image settings.
#[derive(Debug, Clone)]
pub enum Caps {
    /// No camera controls (test pattern, operator pipeline): software only.
    SoftwareOnly {
        /// What the source is, for messages.
        source: String,
    },
    /// `libcamerasrc` with the installed element's property specs.
    Libcamera(Vec<PropSpec>),
    /// A V4L2 device and its controls, or why they could not be read.
    V4l2 {
        /// Device path.
        device: String,
        /// Its controls.
        controls: Result<Vec<v4l2::Control>, String>,
    },
}

/// How one setting is carried out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Use {
    /// The setting (`image.<name>`).
    pub setting: &'static str,
    /// What carries it.
    pub backend: Backend,
    /// Whether a change applies to the running pipeline (else the camera restarts).
    pub live: bool,
}

/// The decision for a whole `[image]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every setting that is not at its default, and what carries it.
    pub uses: Vec<Use>,
    /// The orientation done in software (`Identity` when none or done by the camera).
    pub orientation: Orientation,
    /// Software brightness, contrast and saturation (videobalance's neutral values when none).
    pub balance: [f64; 3],
    /// Software digital zoom.
    pub roi: Option<[f64; 4]>,
    /// Software text overlay.
    pub overlay: Option<OverlayConfig>,
    /// `libcamerasrc` properties to set (name, value in launch syntax).
    pub libcamera: Vec<(String, String)>,
    /// V4L2 controls to set.
    pub v4l2: Vec<(String, i64)>,
    /// Software fallbacks used where the camera itself could not (for logs and `check`).
    pub warnings: Vec<String>,
}

/// Why an image section cannot be honoured; nothing starts.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ImageError(pub Vec<String>);

/// Every setting, in documentation order.
pub const SETTINGS: &[&str] = &[
    "hflip",
    "vflip",
    "rotation",
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "exposure",
    "shutter_us",
    "gain",
    "ev",
    "metering",
    "awb",
    "awb_gains",
    "denoise",
    "af_mode",
    "af_range",
    "lens_position",
    "hdr",
    "flicker_period",
    "roi",
    "sensor_mode",
    "tuning_file",
    "overlay",
];

/// Largest contrast and saturation `videobalance` takes.
const SOFTWARE_BALANCE_MAX: f64 = 2.0;

/// Whether a setting is away from its default.
pub fn is_set(setting: &str, c: &ImageConfig) -> bool {
    let d = ImageConfig::default();
    match setting {
        "hflip" => c.hflip,
        "vflip" => c.vflip,
        "rotation" => c.rotation != 0,
        "brightness" => c.brightness != d.brightness,
        "contrast" => c.contrast != d.contrast,
        "saturation" => c.saturation != d.saturation,
        "sharpness" => c.sharpness != d.sharpness,
        "exposure" => c.exposure != d.exposure,
        "shutter_us" => c.shutter_us != 0,
        "gain" => c.gain != 0.0,
        "ev" => c.ev != 0.0,
        "metering" => c.metering != d.metering,
        "awb" => c.awb != d.awb,
        "awb_gains" => c.awb_gains != d.awb_gains,
        "denoise" => c.denoise != d.denoise,
        "af_mode" => c.af_mode.is_some(),
        "af_range" => c.af_range.is_some(),
        "lens_position" => c.lens_position.is_some(),
        "hdr" => c.hdr,
        "flicker_period" => c.flicker_period != 0,
        "roi" => !c.roi_is_full(),
        "sensor_mode" => !c.sensor_mode.is_empty(),
        "tuning_file" => !c.tuning_file.is_empty(),
        "overlay" => !c.overlay.text.is_empty(),
        _ => false,
    }
}

/// The setting's current value as JSON (for the controls API).
pub fn value_of(setting: &str, c: &ImageConfig) -> serde_json::Value {
    let v = serde_json::to_value(c).unwrap_or_default();
    v.get(setting).cloned().unwrap_or(serde_json::Value::Null)
}

/// What the camera itself can do for one setting: `Ok(Some((backend, props/controls, live)))`,
/// `Ok(None)` when it has no way, or `Err` with the reason when it has none and says why.
enum Hardware {
    Libcamera(Vec<(String, String)>, bool),
    V4l2(Vec<(String, i64)>),
    No(String),
}

fn hardware(setting: &str, cfg: &ImageConfig, caps: &Caps) -> Hardware {
    match caps {
        Caps::SoftwareOnly { source } => {
            Hardware::No(format!("the {source} has no camera controls"))
        }
        Caps::Libcamera(specs) => {
            let Some(props) = libcamera::wanted(setting, cfg) else {
                return Hardware::No("nothing to set".into());
            };
            match libcamera::supports(specs, &props) {
                Ok(live) => Hardware::Libcamera(
                    props.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
                    live,
                ),
                Err(e) => Hardware::No(e),
            }
        }
        Caps::V4l2 { device, controls } => match controls {
            Err(e) => Hardware::No(e.clone()),
            Ok(list) => match v4l2::wanted(setting, cfg, list) {
                Ok(Some(c)) => Hardware::V4l2(c),
                Ok(None) => Hardware::No("nothing to set".into()),
                Err(e) => Hardware::No(format!("{device}: {e}")),
            },
        },
    }
}

/// Decides every setting's backend.
pub fn plan(cfg: &ImageConfig, caps: &Caps) -> Result<Plan, ImageError> {
    let mut p = Plan {
        uses: Vec::new(),
        orientation: Orientation::Identity,
        balance: [0.0, 1.0, 1.0],
        roi: None,
        overlay: None,
        libcamera: Vec::new(),
        v4l2: Vec::new(),
        warnings: Vec::new(),
    };
    let mut errors = Vec::new();
    let using = |p: &mut Plan, setting: &'static str, backend, live| {
        p.uses.push(Use {
            setting,
            backend,
            live,
        });
    };

    // Orientation: one method for the three settings.
    let method = Orientation::of(cfg.hflip, cfg.vflip, cfg.rotation);
    let orientation_settings: Vec<&'static str> = ["hflip", "vflip", "rotation"]
        .into_iter()
        .filter(|s| is_set(s, cfg))
        .collect();
    if !orientation_settings.is_empty() {
        let hw = match caps {
            Caps::Libcamera(specs) if !method.swaps() => {
                let props = vec![("orientation", method.nick().to_string())];
                libcamera::supports(specs, &props)
                    .ok()
                    .map(|live| (Backend::Libcamera, live, props))
            }
            Caps::V4l2 {
                controls: Ok(list), ..
            } if !method.swaps() => {
                let (h, v) = match method {
                    Orientation::Identity => (false, false),
                    Orientation::Horizontal => (true, false),
                    Orientation::Vertical => (false, true),
                    _ => (true, true),
                };
                v4l2::flips(h, v, list).map(|c| {
                    p.v4l2.extend(c);
                    (Backend::V4l2, true, Vec::new())
                })
            }
            _ => None,
        };
        match hw {
            Some((backend, live, props)) => {
                p.libcamera
                    .extend(props.into_iter().map(|(n, v)| (n.to_string(), v)));
                for s in orientation_settings {
                    using(&mut p, s, backend, live);
                }
            }
            None => {
                if !matches!(caps, Caps::SoftwareOnly { .. }) {
                    p.warnings.push(format!(
                        "image orientation ({}) is done in software (videoflip): the camera \
                         cannot {}",
                        orientation_settings.join(", "),
                        if method.swaps() {
                            "rotate by 90°"
                        } else {
                            "flip"
                        }
                    ));
                }
                p.orientation = method;
                for s in orientation_settings {
                    using(&mut p, s, Backend::Software, true);
                }
            }
        }
    }

    // Colour balance: the camera's, else videobalance.
    for (i, setting) in ["brightness", "contrast", "saturation"]
        .into_iter()
        .enumerate()
    {
        if !is_set(setting, cfg) {
            continue;
        }
        let value = [cfg.brightness, cfg.contrast, cfg.saturation][i];
        match hardware(setting, cfg, caps) {
            Hardware::Libcamera(props, live) => {
                p.libcamera.extend(props);
                using(&mut p, setting, Backend::Libcamera, live);
            }
            Hardware::V4l2(c) => {
                p.v4l2.extend(c);
                using(&mut p, setting, Backend::V4l2, true);
            }
            Hardware::No(why) => {
                if i > 0 && value > SOFTWARE_BALANCE_MAX {
                    errors.push(format!(
                        "image.{setting} = {value}: {why}, and the software fallback \
                         (videobalance) takes 0 to {SOFTWARE_BALANCE_MAX}"
                    ));
                    continue;
                }
                if !matches!(caps, Caps::SoftwareOnly { .. }) {
                    p.warnings.push(format!(
                        "image.{setting} is done in software (videobalance): {why}"
                    ));
                }
                p.balance[i] = value;
                using(&mut p, setting, Backend::Software, true);
            }
        }
    }

    // Settings only a camera can honour.
    for setting in SETTINGS {
        if matches!(
            *setting,
            "hflip"
                | "vflip"
                | "rotation"
                | "brightness"
                | "contrast"
                | "saturation"
                | "roi"
                | "overlay"
        ) || !is_set(setting, cfg)
        {
            continue;
        }
        match hardware(setting, cfg, caps) {
            Hardware::Libcamera(props, live) => {
                // A restart-only property (sensor mode, tuning file) never changes live.
                p.libcamera.extend(props);
                using(&mut p, setting, Backend::Libcamera, live);
            }
            Hardware::V4l2(c) => {
                p.v4l2.extend(c);
                using(&mut p, setting, Backend::V4l2, true);
            }
            Hardware::No(why) => errors.push(format!(
                "image.{setting} = {} cannot be applied: {why}, and there is no software fallback",
                value_of(setting, cfg)
            )),
        }
    }

    if is_set("roi", cfg) {
        p.roi = Some(cfg.roi);
        if !matches!(caps, Caps::SoftwareOnly { .. }) {
            p.warnings.push(
                "image.roi is done in software (videocrop + videoscale): the camera's own crop \
                 is not exposed in picture coordinates"
                    .into(),
            );
        }
        using(&mut p, "roi", Backend::Software, false);
    }
    if is_set("overlay", cfg) {
        if gst::ElementFactory::find("clockoverlay").is_none() {
            errors.push(
                "image.overlay needs the GStreamer element clockoverlay (install the Debian \
                 package gstreamer1.0-x)"
                    .into(),
            );
        }
        p.overlay = Some(cfg.overlay.clone());
        using(&mut p, "overlay", Backend::Software, true);
    }
    if errors.is_empty() {
        Ok(p)
    } else {
        Err(ImageError(errors))
    }
}

/// What would carry a setting on this source, with whether it is live, or why nothing can
/// (for the controls API: asked with a representative non-default value).
pub fn carrier(setting: &'static str, caps: &Caps) -> Result<(Backend, bool), String> {
    let mut c = ImageConfig::default();
    match setting {
        "hflip" => c.hflip = true,
        "vflip" => c.vflip = true,
        "rotation" => c.rotation = 90,
        "brightness" => c.brightness = 0.5,
        "contrast" => c.contrast = 1.5,
        "saturation" => c.saturation = 1.5,
        "sharpness" => c.sharpness = 2.0,
        "exposure" => c.exposure = crate::config::image::Exposure::Short,
        "shutter_us" => c.shutter_us = 10_000,
        "gain" => c.gain = 2.0,
        "ev" => c.ev = 1.0,
        "metering" => c.metering = crate::config::image::Metering::Spot,
        "awb" => c.awb = crate::config::image::Awb::Daylight,
        "awb_gains" => c.awb_gains = [1.5, 1.5],
        "denoise" => c.denoise = crate::config::image::Denoise::Fast,
        "af_mode" => c.af_mode = Some(crate::config::image::AfMode::Continuous),
        "af_range" => c.af_range = Some(crate::config::image::AfRange::Normal),
        "lens_position" => c.lens_position = Some(1.0),
        "hdr" => c.hdr = true,
        "flicker_period" => c.flicker_period = 10_000,
        "roi" => c.roi = [0.25, 0.25, 0.5, 0.5],
        "sensor_mode" => c.sensor_mode = "1920:1080:10:P".into(),
        "tuning_file" => c.tuning_file = "/usr/share/libcamera/ipa/rpi/vc4/imx219.json".into(),
        "overlay" => c.overlay.text = "%H:%M:%S".into(),
        _ => return Err("unknown setting".into()),
    }
    let p = plan(&c, caps).map_err(|e| e.to_string())?;
    p.uses
        .iter()
        .find(|u| u.setting == setting)
        .map(|u| (u.backend, u.live))
        .ok_or_else(|| "nothing carries it".into())
}

impl Plan {
    /// Whether `new` can be applied to a pipeline built for `self` by setting properties:
    /// the same elements, the same backend for every setting, the same picture size, and no
    /// change to a setting that is restart-only.
    pub fn live_to(&self, new: &Plan, old_cfg: &ImageConfig, new_cfg: &ImageConfig) -> bool {
        // The software flip and balance elements are always in the pipeline, so only the
        // camera's settings must keep their carriers.
        let carriers = |p: &Plan| {
            p.uses
                .iter()
                .filter(|u| u.backend != Backend::Software)
                .map(|u| (u.setting, u.backend))
                .collect::<Vec<_>>()
        };
        let mut a = carriers(self);
        let mut b = carriers(new);
        a.sort_by_key(|x| x.0);
        b.sort_by_key(|x| x.0);
        if a != b
            || self.orientation.swaps() != new.orientation.swaps()
            || self.roi != new.roi
            || self.overlay.is_some() != new.overlay.is_some()
        {
            return false;
        }
        // A setting that is not live may not change at all.
        new.uses
            .iter()
            .filter(|u| !u.live)
            .all(|u| value_of(u.setting, old_cfg) == value_of(u.setting, new_cfg))
    }

    /// The status view: each setting in use and its backend.
    pub fn summary(&self) -> Vec<Use> {
        self.uses.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::image::Exposure;

    #[test]
    fn orientation_composes_flips_then_rotation() {
        assert_eq!(Orientation::of(false, false, 0), Orientation::Identity);
        assert_eq!(Orientation::of(true, false, 0), Orientation::Horizontal);
        assert_eq!(Orientation::of(true, true, 0), Orientation::Rotate180);
        assert_eq!(Orientation::of(false, false, 90), Orientation::Rotate90);
        assert_eq!(Orientation::of(false, false, 270), Orientation::Rotate270);
        assert_eq!(Orientation::of(true, true, 180), Orientation::Identity);
        // Mirror, then a quarter turn clockwise: the picture's left edge ends at the bottom…
        assert_eq!(
            Orientation::of(true, false, 90),
            Orientation::OtherTranspose
        );
        assert_eq!(Orientation::of(false, true, 90), Orientation::Transpose);
        assert!(Orientation::Rotate90.swaps() && !Orientation::Rotate180.swaps());
    }

    #[test]
    fn test_pattern_uses_software_and_refuses_camera_only_settings() {
        gst::init().unwrap();
        let caps = Caps::SoftwareOnly {
            source: "test pattern".into(),
        };
        let cfg = ImageConfig {
            hflip: true,
            brightness: 0.3,
            ..Default::default()
        };
        let p = plan(&cfg, &caps).unwrap();
        assert_eq!(p.orientation, Orientation::Horizontal);
        assert_eq!(p.balance, [0.3, 1.0, 1.0]);
        assert!(
            p.uses
                .iter()
                .all(|u| u.backend == Backend::Software && u.live)
        );
        let err = plan(
            &ImageConfig {
                exposure: Exposure::Short,
                contrast: 4.0,
                ..Default::default()
            },
            &caps,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("image.exposure = \"short\" cannot be applied"),
            "{err}"
        );
        assert!(err.contains("image.contrast = 4"), "{err}");
        // A brightness change is live; a rotation by 90° or a new zoom is not.
        let brighter = ImageConfig {
            brightness: 0.8,
            ..cfg.clone()
        };
        assert!(p.live_to(&plan(&brighter, &caps).unwrap(), &cfg, &brighter));
        let turned = ImageConfig {
            rotation: 90,
            ..cfg.clone()
        };
        assert!(!p.live_to(&plan(&turned, &caps).unwrap(), &cfg, &turned));
        let plain = ImageConfig::default();
        assert!(p.live_to(&plan(&plain, &caps).unwrap(), &cfg, &plain));
        let zoomed = ImageConfig {
            roi: [0.0, 0.0, 0.5, 0.5],
            ..cfg.clone()
        };
        assert!(!p.live_to(&plan(&zoomed, &caps).unwrap(), &cfg, &zoomed));
    }

    #[test]
    fn v4l2_controls_first_then_software_with_a_warning() {
        gst::init().unwrap();
        let caps = Caps::V4l2 {
            device: "/dev/video0".into(),
            controls: Ok(v4l2::parse_list(v4l2::tests::UVC)),
        };
        let cfg = ImageConfig {
            hflip: true,
            brightness: 0.5,
            flicker_period: 10_000,
            ..Default::default()
        };
        let p = plan(&cfg, &caps).unwrap();
        let b = |s| p.uses.iter().find(|u| u.setting == s).unwrap().backend;
        assert_eq!(b("brightness"), Backend::V4l2);
        assert_eq!(b("flicker_period"), Backend::V4l2);
        // This webcam has no flip controls.
        assert_eq!(b("hflip"), Backend::Software);
        assert!(
            p.warnings.iter().any(|w| w.contains("videoflip")),
            "{:?}",
            p.warnings
        );
        assert_eq!(
            p.v4l2,
            vec![
                ("brightness".to_string(), 32),
                ("power_line_frequency".to_string(), 1)
            ]
        );
        assert_eq!(carrier("sharpness", &caps), Ok((Backend::V4l2, true)));
        assert!(carrier("ev", &caps).is_err());
    }
}
