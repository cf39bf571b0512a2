//! `[motion]` / `[streams.motion]`: motion detection on a small grey copy of the raw picture
//! (docs/motion.md). Only the section's shape, defaults and ranges live here; the detector is
//! `stream::motion`.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Whether a zone adds picture to the analysis or takes it away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneMode {
    /// Only the picture inside include zones is analysed (with none, the whole picture is).
    #[default]
    Include,
    /// The picture inside is never analysed (a road, a tree, a clock).
    Exclude,
}

/// One zone: a polygon in normalised picture coordinates (0,0 top left, 1,1 bottom right).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneConfig {
    /// Name reported as the event's `zone`, `[a-z0-9_-]+`. Default `zone<index>`.
    pub name: String,
    /// The polygon's corners, `[[x, y], ...]`, each coordinate 0 to 1; at least 3. Required.
    pub points: Vec<[f64; 2]>,
    /// `include` or `exclude`. Default `include`.
    pub mode: ZoneMode,
}

impl ZoneConfig {
    /// The name events carry: the configured one, else `zone<index>`.
    pub fn label(&self, index: usize) -> String {
        if self.name.is_empty() {
            format!("zone{index}")
        } else {
            self.name.clone()
        }
    }
}

/// `[motion]` / `[streams.motion]`: motion detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Whether the picture is analysed. Default false. Live through `PATCH`.
    pub enabled: bool,
    /// Width of the analysed picture, even, 32 to 640. Default 160.
    pub width: u32,
    /// Height of the analysed picture, even, 18 to 480. Default 90.
    pub height: u32,
    /// Pictures analysed per second, 1 to 30 and at most `video.fps`. Default 5.
    pub fps: u32,
    /// Grey levels (of 255) a pixel must differ from the background by to count as changed,
    /// 1 to 255, before `sensitivity` scales it. Default 25.
    pub threshold: u32,
    /// Fraction of the analysed area that must change, 0.0001 to 1. Default 0.005.
    pub min_area: f64,
    /// How long (ms) changes must last before `motion_start`, 0 to 60000. Default 200.
    pub min_duration_ms: u32,
    /// 0 (least) to 1 (most): scales `threshold` and `min_area` (0.5 leaves them as set; 1
    /// halves them, 0 doubles them). Default 0.5.
    pub sensitivity: f64,
    /// Quiet time (ms) after the last change before `motion_end`, 0 to 600000. Default 3000.
    pub cooldown_ms: u32,
    /// Include and exclude zones, as `[[motion.zones]]` tables. Default none: the whole
    /// picture.
    pub zones: Vec<ZoneConfig>,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            enabled: false,
            width: 160,
            height: 90,
            fps: 5,
            threshold: 25,
            min_area: 0.005,
            min_duration_ms: 200,
            sensitivity: 0.5,
            cooldown_ms: 3000,
            zones: Vec::new(),
        }
    }
}

fn bad(m: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(m))
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    // Written so that NaN (which compares false) is out of range too.
    if !(v >= lo && v <= hi) {
        return bad(format!("{key} = {v} is out of range ({lo} to {hi})"));
    }
    Ok(())
}

impl MotionConfig {
    /// Checks ranges and zones; `p` is the key prefix (e.g. `streams[cam].motion.`) and
    /// `video_fps` the stream's rate.
    pub fn validate(&self, p: &str, video_fps: u32) -> Result<(), ConfigError> {
        range(&format!("{p}width"), self.width, 32, 640)?;
        range(&format!("{p}height"), self.height, 18, 480)?;
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return bad(format!(
                "{p}width and {p}height must be even ({}x{})",
                self.width, self.height
            ));
        }
        range(&format!("{p}fps"), self.fps, 1, 30)?;
        if self.fps > video_fps {
            return bad(format!(
                "{p}fps = {} is above the stream's video.fps ({video_fps})",
                self.fps
            ));
        }
        range(&format!("{p}threshold"), self.threshold, 1, 255)?;
        range(&format!("{p}min_area"), self.min_area, 0.0001, 1.0)?;
        range(
            &format!("{p}min_duration_ms"),
            self.min_duration_ms,
            0,
            60_000,
        )?;
        range(&format!("{p}sensitivity"), self.sensitivity, 0.0, 1.0)?;
        range(&format!("{p}cooldown_ms"), self.cooldown_ms, 0, 600_000)?;
        let mut names = std::collections::HashSet::new();
        for (i, z) in self.zones.iter().enumerate() {
            let label = z.label(i);
            let zp = format!("{p}zones[{label}]");
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return bad(format!(
                    "{zp}.name = {label:?} may hold only a-z, 0-9, '_' and '-'"
                ));
            }
            if !names.insert(label.clone()) {
                return bad(format!("{zp}: two zones are named {label:?}"));
            }
            if z.points.len() < 3 {
                return bad(format!(
                    "{zp}.points has {} corners; a zone needs at least 3, e.g. \
                     [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0]]",
                    z.points.len()
                ));
            }
            if let Some([x, y]) = z
                .points
                .iter()
                .find(|[x, y]| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y))
            {
                return bad(format!(
                    "{zp}.points has [{x}, {y}]; coordinates are fractions of the picture, 0 to 1"
                ));
            }
        }
        Ok(())
    }

    /// Whether `key` (below `motion.`) changes while the camera runs, without a restart.
    pub fn is_live_key(key: &str) -> bool {
        !matches!(key, "width" | "height" | "fps")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        MotionConfig::default().validate("motion.", 30).unwrap();
        let m = MotionConfig {
            fps: 40,
            ..MotionConfig::default()
        };
        let e = m.validate("motion.", 30).unwrap_err().to_string();
        assert!(e.contains("motion.fps = 40"), "{e}");
        let m = MotionConfig {
            fps: 10,
            ..MotionConfig::default()
        };
        let e = m.validate("motion.", 5).unwrap_err().to_string();
        assert!(e.contains("above the stream's video.fps"), "{e}");
        let m = MotionConfig {
            min_area: f64::NAN,
            ..MotionConfig::default()
        };
        assert!(m.validate("motion.", 30).is_err());
        let m = MotionConfig {
            zones: vec![ZoneConfig {
                points: vec![[0.0, 0.0], [1.0, 0.0]],
                ..ZoneConfig::default()
            }],
            ..MotionConfig::default()
        };
        let e = m.validate("motion.", 30).unwrap_err().to_string();
        assert!(
            e.contains("motion.zones[zone0].points has 2 corners"),
            "{e}"
        );
        let m = MotionConfig {
            zones: vec![ZoneConfig {
                points: vec![[0.0, 0.0], [1.5, 0.0], [0.0, 1.0]],
                mode: ZoneMode::Exclude,
                ..ZoneConfig::default()
            }],
            ..MotionConfig::default()
        };
        let e = m.validate("motion.", 30).unwrap_err().to_string();
        assert!(e.contains("[1.5, 0]"), "{e}");
    }
}
