//! H.264 levels (ITU-T H.264 Annex A, table A-1): which level a picture size, frame rate and
//! bitrate need. The Pi hardware encoder refuses to negotiate unless the level is in its output
//! caps, so camstream always knows it.

use std::fmt;
use std::str::FromStr;

/// One H.264 level and its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    name: &'static str,
    /// Maximum frame size in macroblocks.
    max_fs: u64,
    /// Maximum macroblocks per second.
    max_mbps: u64,
    /// Maximum bitrate in kbit/s for Baseline and Main (High may use 1.25 ×).
    max_br_kbps: u64,
}

const fn l(name: &'static str, max_fs: u64, max_mbps: u64, max_br_kbps: u64) -> Level {
    Level {
        name,
        max_fs,
        max_mbps,
        max_br_kbps,
    }
}

/// Table A-1, lowest first (level 1b omitted: nobody streams cameras at it).
const LEVELS: &[Level] = &[
    l("1", 99, 1_485, 64),
    l("1.1", 396, 3_000, 192),
    l("1.2", 396, 6_000, 384),
    l("1.3", 396, 11_880, 768),
    l("2", 396, 11_880, 2_000),
    l("2.1", 792, 19_800, 4_000),
    l("2.2", 1_620, 20_250, 4_000),
    l("3", 1_620, 40_500, 10_000),
    l("3.1", 3_600, 108_000, 14_000),
    l("3.2", 5_120, 216_000, 20_000),
    l("4", 8_192, 245_760, 20_000),
    l("4.1", 8_192, 245_760, 50_000),
    l("4.2", 8_704, 522_240, 50_000),
    l("5", 22_080, 589_824, 135_000),
    l("5.1", 36_864, 983_040, 240_000),
    l("5.2", 36_864, 2_073_600, 240_000),
];

/// The level names camstream accepts, lowest first.
pub const LEVEL_NAMES: &[&str] = &[
    "1", "1.1", "1.2", "1.3", "2", "2.1", "2.2", "3", "3.1", "3.2", "4", "4.1", "4.2", "5", "5.1",
    "5.2",
];

fn macroblocks(px: u32) -> u64 {
    u64::from(px).div_ceil(16)
}

impl Level {
    /// Level 4 (1080p30), for descriptions built before validation caught a bad level.
    pub fn fallback() -> Level {
        LEVELS[10]
    }

    /// Whether a stream of this size and rate stays within this level's frame-size and
    /// macroblock-rate limits (including the per-dimension bound √(8·MaxFS)).
    pub fn fits(&self, width: u32, height: u32, fps: u32) -> bool {
        let (w, h) = (macroblocks(width), macroblocks(height));
        let fs = w * h;
        let max_dim_sq = 8 * self.max_fs;
        fs <= self.max_fs
            && w * w <= max_dim_sq
            && h * h <= max_dim_sq
            && fs * u64::from(fps) <= self.max_mbps
    }

    /// Whether `kbps` is within this level's bitrate limit for the profile (High gets 1.25 ×).
    pub fn allows_bitrate(&self, kbps: u32, high_profile: bool) -> bool {
        let limit = if high_profile {
            self.max_br_kbps * 5 / 4
        } else {
            self.max_br_kbps
        };
        u64::from(kbps) <= limit
    }

    /// The name as used in caps and by `H264_LEVEL`, e.g. "3.1".
    pub fn as_str(&self) -> &'static str {
        self.name
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A string that is not an H.264 level.
#[derive(Debug, thiserror::Error)]
#[error("not an H.264 level: {0:?}")]
pub struct UnknownLevel(String);

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        // "31" and "3.0" are common spellings of 3.1 and 3.
        let norm = match s {
            _ if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{}.{}", &s[..1], &s[1..])
            }
            _ => s.strip_suffix(".0").unwrap_or(s).to_string(),
        };
        let norm = norm.strip_suffix(".0").unwrap_or(&norm);
        LEVELS
            .iter()
            .find(|l| l.name == norm)
            .copied()
            .ok_or_else(|| UnknownLevel(s.to_string()))
    }
}

/// The lowest level that fits the size and rate, or `None` if even 5.2 does not.
pub fn derive_level(width: u32, height: u32, fps: u32) -> Option<Level> {
    LEVELS.iter().find(|l| l.fits(width, height, fps)).copied()
}

/// The lowest level that fits the size, rate and bitrate.
pub fn derive_level_for(
    width: u32,
    height: u32,
    fps: u32,
    kbps: u32,
    high_profile: bool,
) -> Option<Level> {
    LEVELS
        .iter()
        .find(|l| l.fits(width, height, fps) && l.allows_bitrate(kbps, high_profile))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi_reference_points() {
        let d = |w, h, f| derive_level(w, h, f).unwrap().to_string();
        assert_eq!(d(640, 480, 30), "3");
        assert_eq!(d(1280, 720, 30), "3.1");
        assert_eq!(d(1280, 720, 60), "3.2");
        assert_eq!(d(1920, 1080, 30), "4");
        assert_eq!(d(320, 240, 15), "1.2");
        assert!(derive_level(8192, 8192, 120).is_none());
    }

    #[test]
    fn bitrate_raises_level() {
        let l = derive_level_for(1280, 720, 30, 20_000, false).unwrap();
        assert_eq!(l.to_string(), "3.2");
        let l = derive_level_for(1280, 720, 30, 17_000, true).unwrap();
        assert_eq!(l.to_string(), "3.1");
    }

    #[test]
    fn parse_spellings() {
        assert_eq!("3.1".parse::<Level>().unwrap().as_str(), "3.1");
        assert_eq!("31".parse::<Level>().unwrap().as_str(), "3.1");
        assert_eq!("4.0".parse::<Level>().unwrap().as_str(), "4");
        assert!("3.9".parse::<Level>().is_err());
        assert!("".parse::<Level>().is_err());
    }

    #[test]
    fn level_too_low_does_not_fit() {
        let l3: Level = "3".parse().unwrap();
        assert!(!l3.fits(1280, 720, 30));
        assert!(l3.fits(640, 480, 30));
        // A very wide, short picture violates the per-dimension bound even when MaxFS allows it.
        assert!(!l3.fits(4096, 64, 1));
    }
}
