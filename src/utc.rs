//! UTC instants as the recorder names files and the API speaks them: nanoseconds since the Unix
//! epoch, printed as ISO 8601 basic format for file names (`20261202T025317.123Z`, no ':' so the
//! names are valid on every file system) and parsed from RFC 3339. Written here rather than
//! pulling a date crate: the recorder needs only these three conversions, in UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
pub type Nanos = i64;

/// One second in nanoseconds.
pub const SECOND: Nanos = 1_000_000_000;

/// The current time.
pub fn now() -> Nanos {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as Nanos,
        Err(e) => -(e.duration().as_nanos() as Nanos),
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// The civil (UTC) fields of an instant.
pub struct Parts {
    /// Year.
    pub y: i64,
    /// Month, 1-12.
    pub mo: i64,
    /// Day of the month, 1-31.
    pub d: i64,
    /// Hour, 0-23.
    pub h: i64,
    /// Minute.
    pub mi: i64,
    /// Second.
    pub s: i64,
    /// Millisecond.
    pub ms: i64,
}

/// Splits an instant into its civil UTC fields.
pub fn split(t: Nanos) -> Parts {
    let ms_total = t.div_euclid(1_000_000);
    let secs = ms_total.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    Parts {
        y,
        mo,
        d,
        h: rem / 3600,
        mi: rem % 3600 / 60,
        s: rem % 60,
        ms: ms_total.rem_euclid(1000),
    }
}

/// The number written in `s[r]`, only ASCII digits (no sign, no spaces).
fn digits(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let t = s.get(r)?;
    t.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| t.parse().ok())?
}

/// Seconds since the epoch of a UTC date and time, or None when a field is out of range (a
/// leap second, 60, is accepted as the parsers' inputs may carry one).
fn civil_seconds((y, mo, d): (i64, i64, i64), (h, mi, sec): (i64, i64, i64)) -> Option<i64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

/// `20261202T025317.123Z`: the file-name form, to the millisecond.
pub fn basic(t: Nanos) -> String {
    let p = split(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    )
}

/// Parses the file-name form back (the exact form [`basic`] writes).
pub fn parse_basic(s: &str) -> Option<Nanos> {
    let b = s.as_bytes();
    if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    let num = |r| digits(s, r);
    let secs = civil_seconds(
        (num(0..4)?, num(4..6)?, num(6..8)?),
        (num(9..11)?, num(11..13)?, num(13..15)?),
    )?;
    // Nanoseconds since 1970 in an i64 reach only 2262: later years are refused, not wrapped.
    secs.checked_mul(SECOND)?
        .checked_add(num(16..19)? * 1_000_000)
}

/// `2026-12-02T02:53:17.123Z`: RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: Nanos) -> String {
    let p = split(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    )
}

/// Parses RFC 3339 (`2026-12-02T02:53:17Z`, `...17.5+01:00`; `t`/`z` and a space for `T`
/// accepted). Fractions beyond nanoseconds are cut.
pub fn parse_rfc3339(s: &str) -> Option<Nanos> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r| digits(s, r);
    let secs = civil_seconds(
        (num(0..4)?, num(5..7)?, num(8..10)?),
        (num(11..13)?, num(14..16)?, num(17..19)?),
    )?;
    let mut i = 19;
    let mut frac: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale = 100_000_000;
        while i < b.len() && b[i].is_ascii_digit() {
            frac += i64::from(b[i] - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = (oh * 3600 + om * 60) * SECOND;
            if *c == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Nanoseconds since 1970 in an i64 reach only 2262: later years are refused, not wrapped
    // (the fuzz target found `9999-12-31T23:59:59Z` overflowing).
    secs.checked_mul(SECOND)?
        .checked_add(frac)?
        .checked_sub(offset)
}

/// Runs a stranger's time (a recording query's `from`/`to`, or a file name's stamp) through both
/// parsers, as the fuzz target and its stable smoke test do: whatever parses must print and parse
/// back to the same instant. Panics on a violated invariant.
pub fn fuzz_time(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    // The printed forms keep milliseconds; an offset can move the instant out of years
    // 0000-9999, which print in a form that is not parsed back.
    let ms = |t: Nanos| t - t.rem_euclid(1_000_000);
    let four_digit_year = |p: &str| p.len() > 4 && p.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    if let Some(t) = parse_rfc3339(&s) {
        let printed = rfc3339(t);
        if four_digit_year(&printed) {
            assert_eq!(
                parse_rfc3339(&printed),
                Some(ms(t)),
                "{s:?} printed {printed:?}"
            );
        }
    }
    if let Some(t) = parse_basic(&s) {
        let printed = basic(t);
        assert_eq!(
            parse_basic(&printed),
            Some(ms(t)),
            "{s:?} printed {printed:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = parse_rfc3339("2026-12-02T02:53:17.123Z").unwrap();
        assert_eq!(basic(t), "20261202T025317.123Z");
        assert_eq!(parse_basic("20261202T025317.123Z"), Some(t));
        assert_eq!(rfc3339(t), "2026-12-02T02:53:17.123Z");
        assert_eq!(parse_rfc3339("2026-12-02T03:53:17.123+01:00"), Some(t));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.5Z"),
            Some(951_782_400 * SECOND + SECOND / 2)
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn refuses_junk() {
        for s in [
            "",
            "2026-12-02",
            "2026-13-02T00:00:00Z",
            "2026-12-02T00:00:00",
            "2026-12-02T00:00:00.Z",
            "2026-12-02T00:00:00+0100",
            "2026-12-02T00:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
        assert_eq!(parse_basic("20261202T025317Z"), None);
        assert_eq!(parse_basic("2026120xT025317.123Z"), None);
    }
}
