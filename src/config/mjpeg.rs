//! `[mjpeg]`: MJPEG over HTTP (`/mjpeg/{stream}`, mjpg-streamer's `/?action=stream`) for
//! OctoPrint, crowsnest, Home Assistant's MJPEG camera and `<img>` tags (docs/mjpeg.md).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[mjpeg]` settings, shared by every stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MjpegConfig {
    /// Serve MJPEG (and mjpg-streamer's `?action=stream`). Default true.
    pub enabled: bool,
    /// Most pictures a second sent to a client (the camera's rate when lower). Default 15.
    pub fps: u32,
    /// JPEG quality, 1 to 100. Default 80.
    pub quality: u32,
    /// Most MJPEG clients at once, over all streams; more are refused with 503. Default 20.
    pub max_clients: u32,
}

impl Default for MjpegConfig {
    fn default() -> Self {
        MjpegConfig {
            enabled: true,
            fps: 15,
            quality: 80,
            max_clients: 20,
        }
    }
}

impl MjpegConfig {
    /// Refuses values that make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=60).contains(&self.fps) {
            return Err(ConfigError::Invalid(format!(
                "mjpeg.fps = {} must be between 1 and 60",
                self.fps
            )));
        }
        if !(1..=100).contains(&self.quality) {
            return Err(ConfigError::Invalid(format!(
                "mjpeg.quality = {} must be between 1 and 100",
                self.quality
            )));
        }
        if !(1..=1000).contains(&self.max_clients) {
            return Err(ConfigError::Invalid(format!(
                "mjpeg.max_clients = {} must be between 1 and 1000",
                self.max_clients
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        assert!(MjpegConfig::default().validate().is_ok());
        let c = MjpegConfig {
            quality: 0,
            ..MjpegConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("mjpeg.quality")
        );
        let c = MjpegConfig {
            fps: 0,
            ..MjpegConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("mjpeg.fps"));
    }
}
