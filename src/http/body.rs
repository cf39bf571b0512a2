//! JSON bodies shared by several HTTP handlers.

use serde::Serialize;

/// The body of every refusal: `{"error": "..."}`.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    /// What went wrong, in words a user can act on.
    pub error: &'a str,
}
