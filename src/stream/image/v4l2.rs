//! The V4L2 backend: image settings as the device's own controls, handed to `v4l2src` as its
//! `extra-controls` structure (applied when the device opens, and again on the open device when
//! the property changes while playing). The controls a device has are read with
//! `v4l2-ctl --list-ctrls` (package v4l-utils): names, types and ranges differ per device, so
//! every value is mapped into the device's own range.

use std::process::Command;
use std::time::Duration;

use crate::config::image::{AfMode, AfRange, Awb, Exposure, ImageConfig, Metering};

/// One control of a V4L2 device.
#[derive(Debug, Clone, PartialEq)]
pub struct Control {
    /// Name as `v4l2-ctl` and `extra-controls` spell it (e.g. `brightness`).
    pub name: String,
    /// `int`, `bool`, `menu`, `intmenu`, `button`, ...
    pub kind: String,
    /// Smallest value (0 for booleans).
    pub min: i64,
    /// Largest value (1 for booleans).
    pub max: i64,
    /// The driver's default.
    pub default: i64,
    /// The value now.
    pub value: i64,
}

/// Why the device's controls could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// `v4l2-ctl` is not installed.
    #[error(
        "v4l2-ctl is not installed (Debian package v4l-utils), so {0}'s controls cannot be read"
    )]
    NoTool(String),
    /// It ran but failed.
    #[error("v4l2-ctl --list-ctrls on {device} failed: {message}")]
    Failed {
        /// The device.
        device: String,
        /// What it said.
        message: String,
    },
}

/// Parses `v4l2-ctl --list-ctrls` output. Lines look like
/// `brightness 0x00980900 (int)    : min=-64 max=64 step=1 default=0 value=0`.
pub fn parse_list(text: &str) -> Vec<Control> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((head, tail)) = line.split_once(':') else {
            continue;
        };
        let mut words = head.split_whitespace();
        let (Some(name), Some(id), Some(kind)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if !id.starts_with("0x") {
            continue;
        }
        let kind = kind.trim_matches(|c| c == '(' || c == ')').to_string();
        let field = |key: &str| {
            tail.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<i64>().ok())
        };
        let value = field("value").unwrap_or(0);
        let default = field("default").unwrap_or(value);
        let (min, max) = if kind == "bool" {
            (0, 1)
        } else {
            (field("min").unwrap_or(0), field("max").unwrap_or(0))
        };
        out.push(Control {
            name: name.to_string(),
            kind,
            min,
            max,
            default,
            value,
        });
    }
    out
}

/// Reads a device's controls (blocking, bounded to 5 s).
pub fn list(device: &str) -> Result<Vec<Control>, ListError> {
    let mut child = Command::new("v4l2-ctl")
        .args(["-d", device, "--list-ctrls"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|_| ListError::NoTool(device.to_string()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ListError::Failed {
                    device: device.into(),
                    message: "timed out after 5 s".into(),
                });
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| ListError::Failed {
        device: device.into(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ListError::Failed {
            device: device.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
}

fn find<'a>(controls: &'a [Control], name: &str) -> Option<&'a Control> {
    controls.iter().find(|c| c.name == name)
}

/// -1..1 around the device's default: -1 is its minimum, 1 its maximum.
fn signed_unit(c: &Control, v: f64) -> i64 {
    let d = c.default as f64;
    let r = if v >= 0.0 {
        d + v * (c.max as f64 - d)
    } else {
        d + v * (d - c.min as f64)
    };
    (r.round() as i64).clamp(c.min, c.max)
}

/// 0..16 with 1 at the device's default: 0 is its minimum, 16 its maximum.
fn gain_unit(c: &Control, v: f64) -> i64 {
    let d = c.default as f64;
    let r = if v <= 1.0 {
        c.min as f64 + v * (d - c.min as f64)
    } else {
        d + (v - 1.0) / 15.0 * (c.max as f64 - d)
    };
    (r.round() as i64).clamp(c.min, c.max)
}

/// A linear map of `v` in `lo..=hi` onto the control's whole range.
fn linear(c: &Control, v: f64, lo: f64, hi: f64) -> i64 {
    let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
    ((c.min as f64 + t * (c.max - c.min) as f64).round() as i64).clamp(c.min, c.max)
}

/// Menu index for a value, when the device's menu has it in range.
fn menu(c: &Control, index: i64) -> Option<i64> {
    (index >= c.min && index <= c.max).then_some(index)
}

/// The controls (name, value) that carry one setting on this device, `Ok(None)` when the
/// setting is at its default, or why the device cannot.
pub fn wanted(
    setting: &str,
    cfg: &ImageConfig,
    controls: &[Control],
) -> Result<Option<Vec<(String, i64)>>, String> {
    let need = |name: &str| {
        find(controls, name).ok_or_else(|| format!("the device has no {name} control"))
    };
    let one = |name: &str, v: i64| Ok(Some(vec![(name.to_string(), v)]));
    match setting {
        "brightness" if cfg.brightness != 0.0 => {
            let c = need("brightness")?;
            one(&c.name, signed_unit(c, cfg.brightness))
        }
        "contrast" | "saturation" | "sharpness" => {
            let v = match setting {
                "contrast" => cfg.contrast,
                "saturation" => cfg.saturation,
                _ => cfg.sharpness,
            };
            if v == 1.0 {
                return Ok(None);
            }
            let c = need(setting)?;
            one(&c.name, gain_unit(c, v))
        }
        "exposure" => match cfg.exposure {
            Exposure::Auto => Ok(None),
            // V4L2_EXPOSURE_MANUAL.
            Exposure::Manual => one(&need("auto_exposure")?.name, 1),
            other => Err(format!(
                "V4L2 devices have no {:?} exposure program",
                format!("{other:?}").to_lowercase()
            )),
        },
        "shutter_us" if cfg.shutter_us != 0 => {
            let c = need("exposure_time_absolute")?;
            // The control counts 100 µs units.
            let v = (i64::from(cfg.shutter_us) / 100).clamp(c.min, c.max);
            one(&c.name, v)
        }
        "gain" if cfg.gain != 0.0 => {
            let c = need("gain")?;
            one(&c.name, linear(c, cfg.gain, 1.0, 64.0))
        }
        "ev" if cfg.ev != 0.0 => Err("V4L2 devices have no standard exposure compensation".into()),
        "metering" => {
            let index = match cfg.metering {
                Metering::Centre => return Ok(None),
                Metering::Spot => 2,
                Metering::Matrix => 3,
            };
            let c = need("exposure_metering_mode")?;
            let v = menu(c, index).ok_or("the device's metering menu lacks that mode")?;
            one(&c.name, v)
        }
        "awb" => {
            if cfg.awb == Awb::Auto {
                return Ok(None);
            }
            // V4L2_WHITE_BALANCE_* preset indexes, else a fixed colour temperature.
            let (preset, kelvin) = match cfg.awb {
                Awb::Incandescent => (2, 2700),
                Awb::Tungsten => (2, 3200),
                Awb::Fluorescent => (3, 4000),
                Awb::Indoor => (2, 3500),
                Awb::Daylight => (6, 5500),
                Awb::Cloudy => (8, 6500),
                Awb::Auto => unreachable!("handled above"),
            };
            if let Some(c) = find(controls, "white_balance_auto_preset")
                && let Some(v) = menu(c, preset)
            {
                return one(&c.name, v);
            }
            let auto = need("white_balance_automatic")?;
            let t = need("white_balance_temperature")?;
            Ok(Some(vec![
                (auto.name.clone(), 0),
                (t.name.clone(), i64::from(kelvin).clamp(t.min, t.max)),
            ]))
        }
        "awb_gains" if cfg.awb_gains != [0.0, 0.0] => {
            let auto = need("white_balance_automatic")?;
            let r = need("red_balance")?;
            let b = need("blue_balance")?;
            Ok(Some(vec![
                (auto.name.clone(), 0),
                (r.name.clone(), gain_unit(r, cfg.awb_gains[0])),
                (b.name.clone(), gain_unit(b, cfg.awb_gains[1])),
            ]))
        }
        "denoise" if cfg.denoise != Default::default() => {
            Err("V4L2 devices have no standard noise reduction control".into())
        }
        "af_mode" => match cfg.af_mode {
            None => Ok(None),
            Some(AfMode::Continuous) => one(&need("focus_automatic_continuous")?.name, 1),
            Some(AfMode::Manual) => one(&need("focus_automatic_continuous")?.name, 0),
            Some(AfMode::Auto) => Err("V4L2 devices have no triggered autofocus mode".into()),
        },
        "af_range" => {
            let index = match cfg.af_range {
                None => return Ok(None),
                Some(AfRange::Full) => 0,
                Some(AfRange::Normal) => 1,
                Some(AfRange::Macro) => 2,
            };
            let c = need("auto_focus_range")?;
            let v = menu(c, index).ok_or("the device's focus range menu lacks that range")?;
            one(&c.name, v)
        }
        "lens_position" => match cfg.lens_position {
            None => Ok(None),
            // 0 dioptres (infinity) to 10 (10 cm) across the device's focus range.
            Some(d) => {
                let c = need("focus_absolute")?;
                one(&c.name, linear(c, d, 0.0, 10.0))
            }
        },
        "hdr" if cfg.hdr => one(&need("wide_dynamic_range")?.name, 1),
        "flicker_period" if cfg.flicker_period != 0 => {
            let c = need("power_line_frequency")?;
            let index = match cfg.flicker_period {
                10_000 => 1,
                8_333 | 8_334 => 2,
                p => {
                    return Err(format!(
                        "V4L2 devices cancel 50 Hz (10000) or 60 Hz (8333) flicker only, not {p} µs"
                    ));
                }
            };
            one(
                &c.name,
                menu(c, index).ok_or("unsupported mains frequency")?,
            )
        }
        "sensor_mode" if !cfg.sensor_mode.is_empty() => {
            Err("sensor_mode is a libcamera setting".into())
        }
        "tuning_file" if !cfg.tuning_file.is_empty() => {
            Err("tuning_file is a libcamera setting".into())
        }
        _ => Ok(None),
    }
}

/// The flips the device itself does (`horizontal_flip`, `vertical_flip`), when it has both.
pub fn flips(hflip: bool, vflip: bool, controls: &[Control]) -> Option<Vec<(String, i64)>> {
    let h = find(controls, "horizontal_flip")?;
    let v = find(controls, "vertical_flip")?;
    Some(vec![
        (h.name.clone(), i64::from(hflip)),
        (v.name.clone(), i64::from(vflip)),
    ])
}

/// The `extra-controls` structure for a set of controls, in GStreamer's serialised form.
pub fn structure(controls: &[(String, i64)]) -> String {
    let mut s = String::from("controls");
    for (name, value) in controls {
        s.push_str(&format!(",{name}=(int){value}"));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `v4l2-ctl --list-ctrls` of a common UVC webcam (written out as the tool prints it).
    pub(crate) const UVC: &str = "
User Controls

                     brightness 0x00980900 (int)    : min=-64 max=64 step=1 default=0 value=0
                       contrast 0x00980901 (int)    : min=0 max=64 step=1 default=32 value=32
                     saturation 0x00980902 (int)    : min=0 max=128 step=1 default=64 value=64
        white_balance_automatic 0x0098090c (bool)   : default=1 value=1
                           gain 0x00980913 (int)    : min=0 max=100 step=1 default=0 value=0
           power_line_frequency 0x00980918 (menu)   : min=0 max=2 default=1 value=1 (50 Hz)
      white_balance_temperature 0x0098091a (int)    : min=2800 max=6500 step=1 default=4600 value=4600 flags=inactive
                      sharpness 0x0098091b (int)    : min=0 max=6 step=1 default=3 value=3

Camera Controls

                  auto_exposure 0x009a0901 (menu)   : min=0 max=3 default=3 value=3 (Aperture Priority Mode)
         exposure_time_absolute 0x009a0902 (int)    : min=1 max=5000 step=1 default=157 value=157 flags=inactive
                 focus_absolute 0x009a090a (int)    : min=0 max=250 step=5 default=0 value=0 flags=inactive
     focus_automatic_continuous 0x009a090c (bool)   : default=1 value=1
";

    #[test]
    fn parses_the_list_and_maps_into_the_device_range() {
        let c = parse_list(UVC);
        assert_eq!(c.len(), 12);
        let b = find(&c, "brightness").unwrap();
        assert_eq!((b.min, b.max, b.default), (-64, 64, 0));
        let wb = find(&c, "white_balance_automatic").unwrap();
        assert_eq!(
            (wb.kind.as_str(), wb.min, wb.max, wb.value),
            ("bool", 0, 1, 1)
        );
        let cfg = ImageConfig {
            brightness: 0.5,
            contrast: 0.5,
            saturation: 16.0,
            shutter_us: 20_000,
            exposure: Exposure::Manual,
            flicker_period: 8_333,
            af_mode: Some(AfMode::Manual),
            lens_position: Some(5.0),
            awb: Awb::Daylight,
            ..Default::default()
        };
        let get = |s: &str| wanted(s, &cfg, &c).unwrap().unwrap();
        assert_eq!(get("brightness"), vec![("brightness".into(), 32)]);
        assert_eq!(get("contrast"), vec![("contrast".into(), 16)]);
        assert_eq!(get("saturation"), vec![("saturation".into(), 128)]);
        assert_eq!(get("exposure"), vec![("auto_exposure".into(), 1)]);
        assert_eq!(
            get("shutter_us"),
            vec![("exposure_time_absolute".into(), 200)]
        );
        assert_eq!(
            get("flicker_period"),
            vec![("power_line_frequency".into(), 2)]
        );
        assert_eq!(get("lens_position"), vec![("focus_absolute".into(), 125)]);
        assert_eq!(
            get("awb"),
            vec![
                ("white_balance_automatic".into(), 0),
                ("white_balance_temperature".into(), 5500)
            ]
        );
        assert!(
            wanted(
                "ev",
                &ImageConfig {
                    ev: 1.0,
                    ..cfg.clone()
                },
                &c
            )
            .is_err()
        );
        assert!(
            wanted(
                "hdr",
                &ImageConfig {
                    hdr: true,
                    ..cfg.clone()
                },
                &c
            )
            .unwrap_err()
            .contains("wide_dynamic_range")
        );
        assert_eq!(wanted("gain", &ImageConfig::default(), &c).unwrap(), None);
        assert_eq!(
            structure(&[("brightness".into(), 32), ("auto_exposure".into(), 1)]),
            "controls,brightness=(int)32,auto_exposure=(int)1"
        );
    }
}
