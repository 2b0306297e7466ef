//! Durations as people write them in the config and the API: `"1h"`, `"90m"`, `"1h30m"`, `"14d"`.
//!
//! The grammar is one or more `<number><unit>` parts, optionally separated by spaces, with the
//! units `s` (second), `m` (minute), `h` (hour), `d` (24 hours) and `w` (7 days). Days and weeks
//! are fixed lengths of elapsed time, not calendar days: a window of `"1d"` is 24 hours even
//! across a DST change. No sign: durations here are never negative.

use jiff::SignedDuration;

use crate::ServiceError;

/// Parse a duration such as `"1h"`, `"90m"` or `"1h 30m"`.
///
/// ```
/// use jiff::SignedDuration;
/// use tidemark_service_core::parse_duration;
/// assert_eq!(parse_duration("1h30m").unwrap(), SignedDuration::from_mins(90));
/// assert!(parse_duration("1 hour").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<SignedDuration, ServiceError> {
    let fail = |reason: &str| ServiceError::InvalidDuration { text: text.to_string(), reason: reason.to_string() };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(fail("it is empty"));
    }
    let mut total: i64 = 0;
    let mut last_unit = u8::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(fail("expected a number"));
        }
        let number: i64 = rest[..digits].parse().map_err(|_| fail("the number is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c.is_whitespace()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let (seconds, rank) = match unit {
            "" => return Err(fail("the last number has no unit")),
            "s" => (1, 0),
            "m" => (60, 1),
            "h" => (3_600, 2),
            "d" => (86_400, 3),
            "w" => (604_800, 4),
            other => return Err(fail(&format!("unknown unit {other:?}"))),
        };
        if rank >= last_unit {
            return Err(fail("units must go from the largest to the smallest, each once"));
        }
        last_unit = rank;
        rest = rest[unit_len..].trim_start();
        total = number
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .filter(|s| *s <= MAX_SECONDS)
            .ok_or_else(|| fail("it is longer than 100 years"))?;
    }
    Ok(SignedDuration::from_secs(total))
}

/// About 100 years: longer is always a typo, and staying far below `i64` keeps the arithmetic
/// on timestamps safe.
const MAX_SECONDS: i64 = 100 * 366 * 86_400;

/// Format a duration the way [`parse_duration`] reads it: `"1h30m"`, `"14d"`, `"0s"`.
///
/// Sub-second parts are dropped; a negative duration is written with a leading `-`.
///
/// ```
/// use jiff::SignedDuration;
/// use tidemark_service_core::format_duration;
/// assert_eq!(format_duration(SignedDuration::from_mins(90)), "1h30m");
/// assert_eq!(format_duration(SignedDuration::from_hours(48)), "2d");
/// ```
pub fn format_duration(duration: SignedDuration) -> String {
    let seconds = duration.as_secs();
    let mut out = String::new();
    if seconds < 0 {
        out.push('-');
    }
    let mut rest = seconds.unsigned_abs();
    if rest == 0 {
        return "0s".to_string();
    }
    for (unit, length) in [('d', 86_400u64), ('h', 3_600), ('m', 60), ('s', 1)] {
        if rest >= length {
            out.push_str(&(rest / length).to_string());
            out.push(unit);
            rest %= length;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_unit_and_combinations() {
        assert_eq!(parse_duration("45s").unwrap(), SignedDuration::from_secs(45));
        assert_eq!(parse_duration("90m").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(parse_duration("1h").unwrap(), SignedDuration::from_hours(1));
        assert_eq!(parse_duration("2d").unwrap(), SignedDuration::from_hours(48));
        assert_eq!(parse_duration("1w").unwrap(), SignedDuration::from_hours(168));
        assert_eq!(parse_duration(" 1h 30m 5s ").unwrap(), SignedDuration::from_secs(5_405));
        assert_eq!(parse_duration("0s").unwrap(), SignedDuration::ZERO);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in ["", "1", "h", "1x", "-1h", "1.5h", "1 hour", "30m1h", "1h1h", "99999999999999999999s", "6000w"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(matches!(err, ServiceError::InvalidDuration { ref text, .. } if text == bad), "{bad:?} gave {err}");
        }
    }

    #[test]
    fn the_message_says_the_fix() {
        let err = parse_duration("1hr").unwrap_err().to_string();
        assert!(err.contains("unknown unit \"hr\""), "{err}");
        assert!(err.contains("e.g. \"1h\""), "{err}");
    }

    #[test]
    fn format_round_trips() {
        for text in ["1h30m", "2d", "45s", "1d1h1m1s", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(format_duration(SignedDuration::from_secs(-60)), "-1m");
        assert_eq!(format_duration(SignedDuration::from_hours(168)), "7d");
    }
}
