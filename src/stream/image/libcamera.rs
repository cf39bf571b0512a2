//! The libcamera backend: image settings as `libcamerasrc` properties. Which properties exist is
//! read from the installed element's property specs (Debian 12's libcamera 0.0.3 has none,
//! libcamera 0.4 has most), never guessed from a version. The same [`PropSpec`] is built from a
//! live element here and from `gst-inspect-1.0` output in the tests, so what camstream would set
//! is checked against the real element of another release.

use gst::glib;
use gst::prelude::*;

use crate::config::image::{AfMode, AfRange, Awb, Denoise, Exposure, ImageConfig, Metering};

/// The type of a property, as far as camstream needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum PropKind {
    /// `gboolean`.
    Bool,
    /// An integer with its range.
    Int {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
    },
    /// A float with its range.
    Float {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
    },
    /// An enum, by its value nicks.
    Enum(Vec<String>),
    /// A `GstValueArray` of floats.
    FloatArray,
    /// A `GstValueArray` of integers.
    IntArray,
    /// A string.
    String,
    /// Anything else (never set by camstream).
    Other,
}

/// One property of the installed `libcamerasrc`.
#[derive(Debug, Clone, PartialEq)]
pub struct PropSpec {
    /// Property name.
    pub name: String,
    /// Its type.
    pub kind: PropKind,
    /// Whether it may be set while playing (controllable or mutable in PLAYING).
    pub live: bool,
}

impl PropSpec {
    /// Whether `value` (in launch syntax) is a valid value of this property; the reason if not.
    pub fn accepts(&self, value: &str) -> Result<(), String> {
        let num = |s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("{s:?} is not a number"))
        };
        match &self.kind {
            PropKind::Bool if value == "true" || value == "false" => Ok(()),
            PropKind::Bool => Err(format!("{value:?} is not a boolean")),
            PropKind::Int { min, max } => {
                let v: i64 = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not an integer"))?;
                if v < *min || v > *max {
                    return Err(format!("{v} is outside {min} to {max}"));
                }
                Ok(())
            }
            PropKind::Float { min, max } => {
                let v = num(value)?;
                if v < *min || v > *max {
                    return Err(format!("{v} is outside {min} to {max}"));
                }
                Ok(())
            }
            PropKind::Enum(nicks) if nicks.iter().any(|n| n == value) => Ok(()),
            PropKind::Enum(nicks) => Err(format!(
                "{value:?} is not one of its values ({})",
                nicks.join(", ")
            )),
            PropKind::FloatArray | PropKind::IntArray => {
                let inner = value
                    .strip_prefix('<')
                    .and_then(|v| v.strip_suffix('>'))
                    .ok_or_else(|| format!("{value:?} is not an array <a, b>"))?;
                for item in inner.split(',') {
                    if self.kind == PropKind::IntArray {
                        item.trim()
                            .parse::<i64>()
                            .map_err(|_| format!("{item:?} is not an integer"))?;
                    } else {
                        num(item)?;
                    }
                }
                Ok(())
            }
            PropKind::String => Ok(()),
            PropKind::Other => Err("camstream does not set properties of this type".into()),
        }
    }
}

/// Reads the property specs of a `libcamerasrc` element (the installed one, or a test's).
pub fn specs_of(element: &gst::Element) -> Vec<PropSpec> {
    element
        .list_properties()
        .iter()
        .map(|p| {
            let flags = p.flags();
            let live = flags.contains(gst::PARAM_FLAG_CONTROLLABLE)
                || flags.contains(gst::PARAM_FLAG_MUTABLE_PLAYING);
            let kind = if let Some(b) = p.downcast_ref::<glib::ParamSpecBoolean>() {
                let _ = b;
                PropKind::Bool
            } else if let Some(i) = p.downcast_ref::<glib::ParamSpecInt>() {
                PropKind::Int {
                    min: i.minimum().into(),
                    max: i.maximum().into(),
                }
            } else if let Some(i) = p.downcast_ref::<glib::ParamSpecUInt>() {
                PropKind::Int {
                    min: i.minimum().into(),
                    max: i.maximum().into(),
                }
            } else if let Some(i) = p.downcast_ref::<glib::ParamSpecInt64>() {
                PropKind::Int {
                    min: i.minimum(),
                    max: i.maximum(),
                }
            } else if let Some(i) = p.downcast_ref::<glib::ParamSpecUInt64>() {
                PropKind::Int {
                    min: i64::try_from(i.minimum()).unwrap_or(i64::MAX),
                    max: i64::try_from(i.maximum()).unwrap_or(i64::MAX),
                }
            } else if let Some(f) = p.downcast_ref::<glib::ParamSpecFloat>() {
                PropKind::Float {
                    min: f.minimum().into(),
                    max: f.maximum().into(),
                }
            } else if let Some(f) = p.downcast_ref::<glib::ParamSpecDouble>() {
                PropKind::Float {
                    min: f.minimum(),
                    max: f.maximum(),
                }
            } else if let Some(e) = p.downcast_ref::<glib::ParamSpecEnum>() {
                PropKind::Enum(
                    e.enum_class()
                        .values()
                        .iter()
                        .map(|v| v.nick().to_string())
                        .collect(),
                )
            } else if p.is::<glib::ParamSpecString>() {
                PropKind::String
            } else if let Some(a) = p.downcast_ref::<gst::ParamSpecArray>() {
                match a.element_spec().map(|e| e.value_type()) {
                    Some(t) if t == glib::Type::F32 || t == glib::Type::F64 => PropKind::FloatArray,
                    Some(t) if t == glib::Type::I32 || t == glib::Type::I64 => PropKind::IntArray,
                    _ => PropKind::Other,
                }
            } else {
                PropKind::Other
            };
            PropSpec {
                name: p.name().to_string(),
                kind,
                live,
            }
        })
        .collect()
}

/// Reads the property specs from `gst-inspect-1.0 ELEMENT` output, for an element that cannot
/// be loaded in this process (another release's, inside a chroot).
pub fn parse_inspect(text: &str) -> Vec<PropSpec> {
    let mut out: Vec<PropSpec> = Vec::new();
    let mut in_props = false;
    for line in text.lines() {
        if line.starts_with("Element Properties:") {
            in_props = true;
            continue;
        }
        if !in_props {
            continue;
        }
        if !line.is_empty() && !line.starts_with(' ') {
            break;
        }
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if indent == 2 {
            if let Some((name, _)) = body.split_once(':') {
                out.push(PropSpec {
                    name: name.trim().to_string(),
                    kind: PropKind::Other,
                    live: false,
                });
            }
            continue;
        }
        let Some(p) = out.last_mut() else { continue };
        if let Some(flags) = body.strip_prefix("flags:") {
            p.live = flags.contains("controllable")
                || flags.contains("changeable in NULL, READY, PAUSED or PLAYING state");
        } else if body.starts_with('(') && matches!(p.kind, PropKind::Enum(_)) {
            // "(1): short            - Exposure mode allowing ..."
            if let (PropKind::Enum(nicks), Some((_, rest))) = (&mut p.kind, body.split_once(':'))
                && let Some(nick) = rest.split_whitespace().next()
            {
                nicks.push(nick.to_string());
            }
        } else if p.kind == PropKind::Other {
            p.kind = kind_of_line(body);
        }
    }
    out
}

fn kind_of_line(body: &str) -> PropKind {
    let range = || {
        let r = body.split("Range:").nth(1)?;
        let r = r.split("Default:").next()?;
        let (a, b) = r.split_once(" - ")?;
        Some((a.trim().to_string(), b.trim().to_string()))
    };
    let int = || {
        let (a, b) = range()?;
        let clamp = |v: &str| {
            v.parse::<i128>()
                .ok()
                .map(|v| v.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
        };
        Some(PropKind::Int {
            min: clamp(&a)?,
            max: clamp(&b)?,
        })
    };
    let float = || {
        let (a, b) = range()?;
        Some(PropKind::Float {
            min: a.parse().ok()?,
            max: b.parse().ok()?,
        })
    };
    let kind = if body.starts_with("Boolean") {
        Some(PropKind::Bool)
    } else if body.starts_with("Integer")
        || body.starts_with("Unsigned Integer")
        || body.starts_with("Long")
        || body.starts_with("Unsigned Long")
    {
        int()
    } else if body.starts_with("Float") || body.starts_with("Double") {
        float()
    } else if body.starts_with("Enum ") {
        Some(PropKind::Enum(Vec::new()))
    } else if body.starts_with("String") {
        Some(PropKind::String)
    } else if body.starts_with("GstValueArray of GValues of type") {
        if body.contains("\"gfloat\"") || body.contains("\"gdouble\"") {
            Some(PropKind::FloatArray)
        } else if body.contains("\"gint\"") || body.contains("\"gint64\"") {
            Some(PropKind::IntArray)
        } else {
            None
        }
    } else {
        None
    };
    kind.unwrap_or(PropKind::Other)
}

/// Property specs of the installed `libcamerasrc`; empty when it is not installed.
pub fn installed_specs() -> Vec<PropSpec> {
    gst::ElementFactory::make("libcamerasrc")
        .build()
        .map(|e| specs_of(&e))
        .unwrap_or_default()
}

fn f(v: f64) -> String {
    // Shortest form that parses back to the same f32 libcamera stores.
    format!("{}", v as f32)
}

/// The properties (name, value in launch syntax) that carry one image setting on libcamera, or
/// `None` when the setting is at its default (nothing to send).
pub fn wanted(setting: &str, c: &ImageConfig) -> Option<Vec<(&'static str, String)>> {
    let v = match setting {
        "brightness" if c.brightness != 0.0 => vec![("brightness", f(c.brightness))],
        "contrast" if c.contrast != 1.0 => vec![("contrast", f(c.contrast))],
        "saturation" if c.saturation != 1.0 => vec![("saturation", f(c.saturation))],
        "sharpness" if c.sharpness != 1.0 => vec![("sharpness", f(c.sharpness))],
        "exposure" => match c.exposure {
            Exposure::Auto => return None,
            Exposure::Short => vec![("ae-exposure-mode", "short".into())],
            Exposure::Long => vec![("ae-exposure-mode", "long".into())],
            Exposure::Manual => vec![("ae-enable", "false".into())],
        },
        "shutter_us" if c.shutter_us != 0 => vec![("exposure-time", c.shutter_us.to_string())],
        "gain" if c.gain != 0.0 => vec![("analogue-gain", f(c.gain))],
        "ev" if c.ev != 0.0 => vec![("exposure-value", f(c.ev))],
        "metering" => match c.metering {
            Metering::Centre => return None,
            Metering::Spot => vec![("ae-metering-mode", "spot".into())],
            Metering::Matrix => vec![("ae-metering-mode", "matrix".into())],
        },
        "awb" => {
            let nick = match c.awb {
                Awb::Auto => return None,
                Awb::Incandescent => "incandescent",
                Awb::Tungsten => "tungsten",
                Awb::Fluorescent => "fluorescent",
                Awb::Indoor => "indoor",
                Awb::Daylight => "daylight",
                Awb::Cloudy => "cloudy",
            };
            vec![("awb-mode", nick.into())]
        }
        "awb_gains" if c.awb_gains != [0.0, 0.0] => vec![
            ("awb-enable", "false".into()),
            (
                "colour-gains",
                format!("<{}, {}>", f(c.awb_gains[0]), f(c.awb_gains[1])),
            ),
        ],
        "denoise" => {
            let nick = match c.denoise {
                Denoise::Auto => return None,
                Denoise::Off => "off",
                Denoise::Fast => "fast",
                Denoise::HighQuality => "high-quality",
            };
            vec![("noise-reduction-mode", nick.into())]
        }
        "af_mode" => {
            let nick = match c.af_mode? {
                AfMode::Manual => "manual",
                AfMode::Auto => "auto",
                AfMode::Continuous => "continuous",
            };
            vec![("af-mode", nick.into())]
        }
        "af_range" => {
            let nick = match c.af_range? {
                AfRange::Normal => "normal",
                AfRange::Macro => "macro",
                AfRange::Full => "full",
            };
            vec![("af-range", nick.into())]
        }
        "lens_position" => vec![("lens-position", f(c.lens_position?))],
        "hdr" if c.hdr => vec![("hdr-mode", "single-exposure".into())],
        "flicker_period" if c.flicker_period != 0 => {
            vec![("ae-flicker-period", c.flicker_period.to_string())]
        }
        "sensor_mode" if !c.sensor_mode.is_empty() => {
            vec![("sensor-mode", c.sensor_mode.clone())]
        }
        "tuning_file" if !c.tuning_file.is_empty() => {
            vec![("tuning-file", c.tuning_file.clone())]
        }
        _ => return None,
    };
    Some(v)
}

/// Where the installed element takes every property of `props` with its value: `Ok(live)`, or
/// why not.
pub fn supports(specs: &[PropSpec], props: &[(&'static str, String)]) -> Result<bool, String> {
    let mut live = true;
    for (name, value) in props {
        let Some(spec) = specs.iter().find(|s| s.name == *name) else {
            return Err(format!("this libcamerasrc has no property {name}"));
        };
        spec.accepts(value)
            .map_err(|e| format!("libcamerasrc property {name}: {e}"))?;
        live &= spec.live;
    }
    Ok(live)
}

/// Sets `props` on a running or new `libcamerasrc`.
pub fn apply(element: &gst::Element, props: &[(String, String)]) -> Result<(), String> {
    for (name, value) in props {
        let pspec = element
            .find_property(name)
            .ok_or_else(|| format!("libcamerasrc has no property {name}"))?;
        let v = glib::Value::deserialize_with_pspec(value, &pspec)
            .map_err(|_| format!("libcamerasrc property {name} does not take {value:?}"))?;
        element.set_property_from_value(name, &v);
    }
    Ok(())
}
