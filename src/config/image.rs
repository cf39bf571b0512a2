//! `[image]` / `[streams.image]`: what the picture looks like — orientation, exposure, white
//! balance, focus, digital zoom and a text overlay. Every setting at its default means "leave it
//! to the camera": nothing is sent to the camera and no processing is added. Which backend
//! honours a setting (libcamera, the V4L2 device, or software) is decided by `stream::image`.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Exposure program (`ae-exposure-mode` on libcamera).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exposure {
    /// The camera's automatic exposure. Default.
    #[default]
    Auto,
    /// Automatic, preferring short exposure times (motion).
    Short,
    /// Automatic, allowing long exposure times (low light).
    Long,
    /// Fixed: `shutter_us` (and `gain`) are used as given.
    Manual,
}

/// Which part of the picture the exposure is measured on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metering {
    /// Centre-weighted. Default.
    #[default]
    Centre,
    /// A small spot in the centre.
    Spot,
    /// The whole picture.
    Matrix,
}

/// White balance program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Awb {
    /// Automatic over the whole colour temperature range. Default.
    #[default]
    Auto,
    /// Incandescent light.
    Incandescent,
    /// Tungsten light.
    Tungsten,
    /// Fluorescent light.
    Fluorescent,
    /// Indoor light.
    Indoor,
    /// Daylight.
    Daylight,
    /// Cloudy daylight.
    Cloudy,
}

/// Noise reduction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Denoise {
    /// The camera's default. Default.
    #[default]
    Auto,
    /// Off.
    Off,
    /// Fast.
    Fast,
    /// High quality.
    HighQuality,
}

/// Autofocus mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfMode {
    /// The lens stays at `lens_position`.
    Manual,
    /// Focus once when triggered.
    Auto,
    /// Refocus continuously.
    Continuous,
}

/// The range of distances autofocus scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfRange {
    /// Infinity down to close distances.
    Normal,
    /// Close distances only.
    Macro,
    /// Everything, macro included.
    Full,
}

/// Where the overlay text sits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverlayPosition {
    /// Top left corner. Default.
    #[default]
    TopLeft,
    /// Top, centred.
    Top,
    /// Top right corner.
    TopRight,
    /// Bottom left corner.
    BottomLeft,
    /// Bottom, centred.
    Bottom,
    /// Bottom right corner.
    BottomRight,
}

/// `[image.overlay]`: text stamped on the picture (software, on every source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverlayConfig {
    /// Text with strftime fields (e.g. `"cam1 %Y-%m-%d %H:%M:%S"`), local time. Default empty:
    /// no overlay.
    pub text: String,
    /// Where it sits. Default `top-left`.
    pub position: OverlayPosition,
    /// Font height in pixels, 6 to 200. Default 24.
    pub font_size: u32,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            text: String::new(),
            position: OverlayPosition::TopLeft,
            font_size: 24,
        }
    }
}

/// `[image]` / `[streams.image]`: picture controls. See docs/image.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Mirror left-right. Default false.
    pub hflip: bool,
    /// Mirror top-bottom. Default false.
    pub vflip: bool,
    /// Clockwise rotation in degrees, applied after the flips: 0, 90, 180 or 270. 90 and 270
    /// swap width and height of the stream. Default 0.
    pub rotation: u32,
    /// -1 (darker) to 1 (brighter). Default 0.
    pub brightness: f64,
    /// 0 to 16; 1 is normal. Default 1.
    pub contrast: f64,
    /// 0 (grey) to 16; 1 is normal. Default 1.
    pub saturation: f64,
    /// 0 (none) to 16; 1 is the camera's normal. Default 1.
    pub sharpness: f64,
    /// Exposure program. Default `auto`.
    pub exposure: Exposure,
    /// Fixed exposure time in µs, 0 to 10000000; 0 = automatic. Default 0.
    pub shutter_us: u32,
    /// Fixed analogue gain, 1 to 64; 0 = automatic. Default 0.
    pub gain: f64,
    /// Exposure compensation in stops, -10 to 10. Default 0.
    pub ev: f64,
    /// Exposure metering. Default `centre`.
    pub metering: Metering,
    /// White balance program. Default `auto`.
    pub awb: Awb,
    /// Fixed red and blue gains `[red, blue]`, each 0 to 32; `[0, 0]` = automatic. Default
    /// `[0, 0]`.
    pub awb_gains: [f64; 2],
    /// Noise reduction. Default `auto`.
    pub denoise: Denoise,
    /// Autofocus mode. Default unset: the camera's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub af_mode: Option<AfMode>,
    /// Autofocus range. Default unset: the camera's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub af_range: Option<AfRange>,
    /// Lens position in dioptres (1 / distance in m; 0 = infinity), 0 to 32, used with
    /// `af_mode = "manual"`. Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lens_position: Option<f64>,
    /// High dynamic range. Default false.
    pub hdr: bool,
    /// Mains flicker period to avoid, in µs: 10000 for 50 Hz, 8333 for 60 Hz; 0 = the camera's
    /// default. 0 or 100 to 1000000. Default 0.
    pub flicker_period: u32,
    /// Region of interest `[x, y, w, h]`, normalised 0 to 1: a digital zoom on that part of the
    /// picture, scaled back to the stream's size. Default `[0, 0, 1, 1]` (all of it).
    pub roi: [f64; 4],
    /// libcamera sensor mode, e.g. "2304:1296:10:P". Default empty: chosen from the size.
    pub sensor_mode: String,
    /// libcamera tuning file (absolute path). Default empty: the camera's.
    pub tuning_file: String,
    /// Text overlay.
    pub overlay: OverlayConfig,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            hflip: false,
            vflip: false,
            rotation: 0,
            brightness: 0.0,
            contrast: 1.0,
            saturation: 1.0,
            sharpness: 1.0,
            exposure: Exposure::Auto,
            shutter_us: 0,
            gain: 0.0,
            ev: 0.0,
            metering: Metering::Centre,
            awb: Awb::Auto,
            awb_gains: [0.0, 0.0],
            denoise: Denoise::Auto,
            af_mode: None,
            af_range: None,
            lens_position: None,
            hdr: false,
            flicker_period: 0,
            roi: [0.0, 0.0, 1.0, 1.0],
            sensor_mode: String::new(),
            tuning_file: String::new(),
            overlay: OverlayConfig::default(),
        }
    }
}

fn bad(m: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(m))
}

fn range(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        bad(format!("{key} = {v} is out of range ({lo} to {hi})"))
    }
}

impl ImageConfig {
    /// Whether the rotation is a quarter turn, so the stream is height × width.
    pub fn swaps_dimensions(&self) -> bool {
        self.rotation % 180 == 90
    }

    /// Whether the region of interest is the whole picture.
    pub fn roi_is_full(&self) -> bool {
        self.roi == [0.0, 0.0, 1.0, 1.0]
    }

    /// Rejects values outside their ranges; `p` is the key prefix (e.g. `streams[cam1].image.`).
    pub fn validate(&self, p: &str) -> Result<(), ConfigError> {
        if ![0, 90, 180, 270].contains(&self.rotation) {
            return bad(format!(
                "{p}rotation = {} must be 0, 90, 180 or 270",
                self.rotation
            ));
        }
        range(&format!("{p}brightness"), self.brightness, -1.0, 1.0)?;
        range(&format!("{p}contrast"), self.contrast, 0.0, 16.0)?;
        range(&format!("{p}saturation"), self.saturation, 0.0, 16.0)?;
        range(&format!("{p}sharpness"), self.sharpness, 0.0, 16.0)?;
        if self.shutter_us > 10_000_000 {
            return bad(format!(
                "{p}shutter_us = {} is out of range (0 to 10000000)",
                self.shutter_us
            ));
        }
        if self.gain != 0.0 {
            range(&format!("{p}gain"), self.gain, 1.0, 64.0).map_err(|_| {
                ConfigError::Invalid(format!(
                    "{p}gain = {} is out of range (1 to 64, or 0 for automatic)",
                    self.gain
                ))
            })?;
        }
        range(&format!("{p}ev"), self.ev, -10.0, 10.0)?;
        if self.exposure == Exposure::Manual && self.shutter_us == 0 {
            return bad(format!(
                "{p}exposure = \"manual\" needs {p}shutter_us (the exposure time in µs)"
            ));
        }
        for (i, g) in self.awb_gains.iter().enumerate() {
            range(&format!("{p}awb_gains[{i}]"), *g, 0.0, 32.0)?;
        }
        if (self.awb_gains[0] == 0.0) != (self.awb_gains[1] == 0.0) {
            return bad(format!(
                "{p}awb_gains = {:?} needs both gains (red and blue) or neither",
                self.awb_gains
            ));
        }
        if let Some(l) = self.lens_position {
            range(&format!("{p}lens_position"), l, 0.0, 32.0)?;
        }
        if self.flicker_period != 0 && !(100..=1_000_000).contains(&self.flicker_period) {
            return bad(format!(
                "{p}flicker_period = {} is out of range (100 to 1000000 µs, or 0; 10000 for 50 Hz mains, 8333 for 60 Hz)",
                self.flicker_period
            ));
        }
        let [x, y, w, h] = self.roi;
        for (n, v) in ["x", "y", "w", "h"].iter().zip(self.roi) {
            range(&format!("{p}roi.{n}"), v, 0.0, 1.0)?;
        }
        if w < 0.05 || h < 0.05 || x + w > 1.0 + 1e-9 || y + h > 1.0 + 1e-9 {
            return bad(format!(
                "{p}roi = {:?} must be [x, y, w, h] inside the picture (x + w ≤ 1, y + h ≤ 1) \
                 with w and h at least 0.05",
                self.roi
            ));
        }
        if !self.tuning_file.is_empty() && !self.tuning_file.starts_with('/') {
            return bad(format!(
                "{p}tuning_file = {:?} must be an absolute path",
                self.tuning_file
            ));
        }
        if self.sensor_mode.chars().any(|c| c.is_control() || c == '"') {
            return bad(format!(
                "{p}sensor_mode = {:?} contains a control character or a quote",
                self.sensor_mode
            ));
        }
        let o = &self.overlay;
        if o.text.chars().any(|c| c.is_control() && c != '\n') || o.text.len() > 256 {
            return bad(format!(
                "{p}overlay.text must be at most 256 characters without control characters"
            ));
        }
        if !(6..=200).contains(&o.font_size) {
            return bad(format!(
                "{p}overlay.font_size = {} is out of range (6 to 200)",
                o.font_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_are_named() {
        ImageConfig::default().validate("image.").unwrap();
        let e = |c: ImageConfig| c.validate("image.").unwrap_err().to_string();
        let msg = e(ImageConfig {
            rotation: 45,
            ..Default::default()
        });
        assert!(msg.contains("image.rotation = 45"), "{msg}");
        let msg = e(ImageConfig {
            brightness: 1.5,
            ..Default::default()
        });
        assert!(
            msg.contains("image.brightness = 1.5 is out of range (-1 to 1)"),
            "{msg}"
        );
        let msg = e(ImageConfig {
            roi: [0.5, 0.5, 0.6, 0.5],
            ..Default::default()
        });
        assert!(msg.contains("image.roi"), "{msg}");
        let msg = e(ImageConfig {
            exposure: Exposure::Manual,
            ..Default::default()
        });
        assert!(msg.contains("shutter_us"), "{msg}");
        let msg = e(ImageConfig {
            awb_gains: [1.5, 0.0],
            ..Default::default()
        });
        assert!(msg.contains("both gains"), "{msg}");
        let msg = e(ImageConfig {
            gain: 0.5,
            ..Default::default()
        });
        assert!(msg.contains("image.gain = 0.5"), "{msg}");
        // Unset options are left out, so the effective configuration prints as TOML.
        assert!(toml::to_string(&ImageConfig::default()).is_ok());
        ImageConfig {
            roi: [0.25, 0.25, 0.5, 0.5],
            rotation: 270,
            flicker_period: 10_000,
            ..Default::default()
        }
        .validate("image.")
        .unwrap();
    }

    #[test]
    fn the_sample_file_lists_the_defaults() {
        let text = include_str!("../../config/camstream.toml");
        let file: toml::Value = toml::from_str(text).unwrap();
        let image: ImageConfig = file["image"].clone().try_into().unwrap();
        assert_eq!(image, ImageConfig::default());
    }
}
