//! What a supervised pipeline reports: its state, why it last restarted, and its history. A leaf
//! module: the capture and every output that restarts on its own share these types.

use serde::Serialize;

/// Why a pipeline was restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// An element posted an error.
    Error,
    /// The source ended.
    Eos,
    /// The pipeline could not be built or started (camera missing, device busy, bad fragment).
    StateChangeFailure,
    /// No encoded frame within the stall timeout.
    Stall,
    /// No first frame within the start timeout.
    StartTimeout,
    /// A setting changed that the running pipeline cannot take live; not a failure.
    Reconfigure,
}

impl RestartReason {
    /// Every reason, for pre-registering metrics.
    pub const ALL: &'static [RestartReason] = &[
        RestartReason::Error,
        RestartReason::Eos,
        RestartReason::StateChangeFailure,
        RestartReason::Stall,
        RestartReason::StartTimeout,
        RestartReason::Reconfigure,
    ];

    /// The label value used in metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Error => "error",
            RestartReason::Eos => "eos",
            RestartReason::StateChangeFailure => "state_change_failure",
            RestartReason::Stall => "stall",
            RestartReason::StartTimeout => "start_timeout",
            RestartReason::Reconfigure => "reconfigure",
        }
    }
}

/// A supervised pipeline's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Building the pipeline and waiting for it to work (first frame, or a connection).
    Starting,
    /// Working: frames are flowing.
    Streaming,
    /// Waiting before the next restart.
    Backoff {
        /// Consecutive failures so far.
        attempt: u32,
        /// What failed.
        reason: RestartReason,
        /// The delay chosen, in ms.
        delay_ms: u64,
    },
    /// Turned off in the configuration (outputs only).
    Disabled,
    /// Shut down, or gave up after too many failures.
    Stopped,
}

impl State {
    /// Every state name, for pre-registering metrics.
    pub const NAMES: &'static [&'static str] =
        &["starting", "streaming", "backoff", "disabled", "stopped"];

    /// Name used in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Streaming => "streaming",
            State::Backoff { .. } => "backoff",
            State::Disabled => "disabled",
            State::Stopped => "stopped",
        }
    }
}

/// The most recent failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastError {
    /// What kind.
    pub reason: RestartReason,
    /// The message, with GStreamer's debug string where there was one.
    pub message: String,
    /// When (seconds since the Unix epoch).
    pub at_unix: u64,
}

/// State and history every supervised pipeline publishes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Current state.
    #[serde(flatten)]
    pub state: State,
    /// Restarts since start-up, failures and reconfigurations alike.
    pub restarts: u64,
    /// The last failure, if any.
    pub last_error: Option<LastError>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: State::Starting,
            restarts: 0,
            last_error: None,
        }
    }
}

/// What a camera's supervisor publishes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// State and history.
    #[serde(flatten)]
    pub health: Health,
    /// The source in use, e.g. "test pattern smpte".
    pub source: Option<String>,
    /// The encoder element in use.
    pub encoder: String,
    /// Why that encoder was chosen, and why each one tried before it was not.
    pub encoder_reason: String,
    /// Each `[image]` setting in use and what carries it (software costs CPU).
    pub image: Vec<ImageUse>,
}

/// How one image setting is carried out (`stream::image` decides).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageUse {
    /// The setting, e.g. `hflip`.
    pub setting: String,
    /// `libcamera`, `v4l2` or `software`.
    pub backend: String,
    /// Whether a change applies while playing.
    pub live: bool,
}

/// A published status that carries [`Health`], so one restart loop serves every pipeline.
pub trait HasHealth {
    /// The health part.
    fn health(&self) -> &Health;
    /// The health part, to change it.
    fn health_mut(&mut self) -> &mut Health;
}

impl HasHealth for Health {
    fn health(&self) -> &Health {
        self
    }
    fn health_mut(&mut self) -> &mut Health {
        self
    }
}

impl HasHealth for Status {
    fn health(&self) -> &Health {
        &self.health
    }
    fn health_mut(&mut self) -> &mut Health {
        &mut self.health
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
