//! `[hls]`: HTTP Live Streaming (low-latency, CMAF) of every stream, made in memory from the
//! stream's hub (docs/hls.md). Daemon-wide: the same settings for every stream.

use serde::{Deserialize, Serialize};

/// When a stream's HLS muxer runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HlsMode {
    /// Started by the first request, stopped after `idle_stop_s` without one.
    #[default]
    OnDemand,
    /// Runs while the stream runs, so the first viewer finds segments ready.
    Always,
    /// No HLS: its routes answer 404.
    Off,
}

/// `[hls]`: low-latency HLS from memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// `on_demand`, `always` or `off`. Default `on_demand`.
    pub mode: HlsMode,
    /// Seconds without a request after which an on-demand muxer stops, 5 to 3600. Default 30.
    pub idle_stop_s: u32,
    /// Complete segments (one GOP each) kept in memory and listed, 3 to 30. Default 7.
    pub segment_count: u32,
    /// Target duration of a partial segment in ms, 100 to 1000; parts hold whole frames.
    /// Default 200.
    pub part_ms: u32,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            mode: HlsMode::OnDemand,
            idle_stop_s: 30,
            segment_count: 7,
            part_ms: 200,
        }
    }
}

impl HlsConfig {
    /// Refuses values out of range, naming the key and the range.
    pub fn check(&self) -> Result<(), String> {
        for (key, v, lo, hi) in [
            ("hls.idle_stop_s", self.idle_stop_s, 5, 3600),
            ("hls.segment_count", self.segment_count, 3, 30),
            ("hls.part_ms", self.part_ms, 100, 1000),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{key} = {v} is outside {lo}..={hi}"));
            }
        }
        Ok(())
    }
}
