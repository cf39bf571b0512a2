//! Command-line interface: the sub-commands and the flags that form the last configuration
//! layer.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, Sources, parse_override};

/// camstream: a camera to RTSP streaming daemon.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file (default: /etc/camstream/camstream.toml when present).
    #[arg(short, long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Source kind: auto, libcamera, v4l2, test or pipeline.
    #[arg(long, global = true, value_name = "KIND")]
    pub source: Option<String>,
    /// Camera device for the v4l2 source, e.g. /dev/video0.
    #[arg(long, global = true, value_name = "PATH")]
    pub device: Option<String>,
    /// Picture width in pixels.
    #[arg(long, global = true)]
    pub width: Option<u32>,
    /// Picture height in pixels.
    #[arg(long, global = true)]
    pub height: Option<u32>,
    /// Frames per second.
    #[arg(long, global = true)]
    pub fps: Option<u32>,
    /// Encoder kind: auto, v4l2, x264 or openh264.
    #[arg(long, global = true, value_name = "KIND")]
    pub encoder: Option<String>,
    /// Encoder bitrate in kbit/s.
    #[arg(long, global = true, value_name = "KBPS")]
    pub bitrate: Option<u32>,
    /// RTSP listen address.
    #[arg(long, global = true, value_name = "ADDR")]
    pub rtsp_address: Option<String>,
    /// RTSP port.
    #[arg(long, global = true, value_name = "PORT")]
    pub rtsp_port: Option<u16>,
    /// HTTP sidecar port.
    #[arg(long, global = true, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Log level or tracing filter.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Any setting as KEY=VALUE with a dotted key, e.g. --set supervisor.max_retries=3.
    #[arg(short = 's', long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Sub-commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run,
    /// Print the effective configuration and check that everything it needs is present.
    Check,
}

impl Cli {
    /// The configuration sources these flags describe.
    pub fn sources(&self) -> Result<Sources, ConfigError> {
        let mut overrides = Vec::new();
        let mut push = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                overrides.push((key.to_string(), v));
            }
        };
        push("source.kind", self.source.clone());
        push("source.device", self.device.clone());
        push("video.width", self.width.map(|v| v.to_string()));
        push("video.height", self.height.map(|v| v.to_string()));
        push("video.fps", self.fps.map(|v| v.to_string()));
        push("encoder.kind", self.encoder.clone());
        push("encoder.bitrate_kbps", self.bitrate.map(|v| v.to_string()));
        push("rtsp.address", self.rtsp_address.clone());
        push("rtsp.port", self.rtsp_port.map(|v| v.to_string()));
        push("http.port", self.http_port.map(|v| v.to_string()));
        push("log.level", self.log_level.clone());
        push("log.format", self.log_format.clone());
        for s in &self.set {
            overrides.push(parse_override(s)?);
        }
        Ok(Sources {
            file: self.config.clone(),
            use_default_file: true,
            overrides,
        })
    }
}
