//! The small value rules every part of the configuration's checks shares (ranges, names). A
//! leaf beside `validate`, `nvr` and `push_url`, so that they use it without using each other.

use super::ConfigError;

type Checked = Result<(), ConfigError>;

fn bad(m: String) -> Checked {
    Err(ConfigError::Invalid(m))
}

/// Fails with the key and the allowed range when `value` is outside `lo..=hi` (or NaN).
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
) -> Checked {
    if value >= lo && value <= hi {
        Ok(())
    } else {
        bad(format!("{key} = {value} is out of range ({lo} to {hi})"))
    }
}

/// A stream or rendition name: what the API, metrics and file names can carry safely.
pub(crate) fn check_name(key: &str, name: &str) -> Checked {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return bad(format!(
            "{key} = {name:?} must be 1 to 64 characters of a-z, 0-9, '_' and '-'"
        ));
    }
    Ok(())
}
