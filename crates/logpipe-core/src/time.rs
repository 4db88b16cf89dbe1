//! Event-time parsing.
//!
//! The seed's worst bug was a timestamp parsed with the wrong format, which put
//! every row into `__HIVE_DEFAULT_PARTITION__`. Here a record's time is parsed
//! once, at the collector, into microseconds since the Unix epoch (UTC); a
//! value that cannot be parsed, or lies outside [`EARLIEST_ACCEPTED_MICROS`,
//! now + allowed future skew], rejects the record with a reason that says why.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// 2000-01-01T00:00:00Z. Older times are almost always a unit mistake
/// (milliseconds sent as seconds go the other way, seconds sent as
/// milliseconds land in 1970), so they are rejected rather than partitioned.
pub const EARLIEST_ACCEPTED_MICROS: i64 = 946_684_800 * MICROS_PER_SECOND;

/// Why a timestamp was refused. The `Display` text is what the client sees.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp {0} is not a finite number")]
    NotFinite(String),
    #[error("timestamp string {0:?} is not ISO-8601 (expected e.g. \"2024-01-15T10:30:00.123Z\")")]
    BadString(String),
    #[error(
        "timestamp {shown} is before 2000-01-01T00:00:00Z (seconds expected, not another unit)"
    )]
    TooOld { shown: String },
    #[error("timestamp {shown} is more than {max_future_secs} s in the future")]
    TooFarInFuture { shown: String, max_future_secs: i64 },
}

/// Converts epoch seconds (with fraction) to microseconds, rounding to the
/// nearest microsecond so that `1736645166.291045` stays `...291045`.
pub fn epoch_seconds_to_micros(seconds: f64) -> Result<i64, TimestampError> {
    if !seconds.is_finite() {
        return Err(TimestampError::NotFinite(seconds.to_string()));
    }
    let micros = (seconds * MICROS_PER_SECOND as f64).round();
    // Values past i64 saturate in `as`; the range check below refuses them.
    Ok(micros as i64)
}

/// Parses an ISO-8601 / RFC 3339 string. A string without an offset is taken
/// as UTC (the seed's generator sends `...T10:30:00.123` and means UTC).
pub fn parse_iso8601_micros(text: &str) -> Result<i64, TimestampError> {
    let trimmed = text.trim();
    // Years before 1 or past 9999 parse (chrono reads `-059-9-9 4:2:2`) but
    // have no RFC 3339 form to print back: refused as not a timestamp
    // (found by the `timestamp` fuzz target). Compared as integers: this
    // runs for every record with a text timestamp.
    parse_any_iso8601(trimmed)
        .filter(|micros| (YEAR_1_MICROS..YEAR_10000_MICROS).contains(micros))
        .ok_or_else(|| TimestampError::BadString(truncate_for_message(trimmed)))
}

/// 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z, in Unix microseconds.
const YEAR_1_MICROS: i64 = -62_135_596_800_000_000;
const YEAR_10000_MICROS: i64 = 253_402_300_800_000_000;

fn parse_any_iso8601(trimmed: &str) -> Option<i64> {
    if let Ok(parsed) = DateTime::parse_from_rfc3339(trimmed) {
        return Some(parsed.timestamp_micros());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(trimmed, format) {
            return Some(Utc.from_utc_datetime(&naive).timestamp_micros());
        }
    }
    // `2024-01-15 10:30:00+09:00` (space instead of T, with an offset).
    DateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f%:z")
        .ok()
        .map(|parsed| parsed.timestamp_micros())
}

/// Checks that `micros` lies in the accepted range relative to `now_micros`.
pub fn check_range(
    micros: i64,
    now_micros: i64,
    max_future_secs: i64,
) -> Result<i64, TimestampError> {
    if micros < EARLIEST_ACCEPTED_MICROS {
        return Err(TimestampError::TooOld {
            shown: format_seconds(micros),
        });
    }
    if micros > now_micros.saturating_add(max_future_secs.saturating_mul(MICROS_PER_SECOND)) {
        return Err(TimestampError::TooFarInFuture {
            shown: format_seconds(micros),
            max_future_secs,
        });
    }
    Ok(micros)
}

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Renders microseconds as RFC 3339 for messages and paths.
pub fn micros_to_rfc3339(micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(time) => time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        None => format!("{micros} µs since epoch"),
    }
}

fn format_seconds(micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(time) => time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format!("{} s since epoch", micros / MICROS_PER_SECOND),
    }
}

/// Error messages echo user input; a 10 MB string must not be echoed back.
pub fn truncate_for_message(text: &str) -> String {
    const MAX_ECHO_CHARS: usize = 64;
    if text.chars().count() <= MAX_ECHO_CHARS {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX_ECHO_CHARS).collect();
        format!("{head}…")
    }
}

/// The hour partition a time falls into, as UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourPartition {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
}

impl HourPartition {
    /// The UTC hour containing `micros`.
    pub fn of_micros(micros: i64) -> HourPartition {
        use chrono::{Datelike, Timelike};
        let time = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
        HourPartition {
            year: time.year(),
            month: time.month(),
            day: time.day(),
            hour: time.hour(),
        }
    }

    /// `year=2025/month=1/day=12/hour=1`: Hive layout, no zero padding, as
    /// the seed's Spark job wrote it and Spark/DuckDB infer as integers.
    pub fn hive_path(&self) -> String {
        format!(
            "year={}/month={}/day={}/hour={}",
            self.year, self.month, self.day, self.hour
        )
    }
}

/// The Monday of ISO week `YYYY-Www` (a weekly period's partition value,
/// e.g. `2026-W02`).
pub fn iso_week_monday(text: &str) -> Option<chrono::NaiveDate> {
    let (year, week) = text.split_once("-W")?;
    chrono::NaiveDate::from_isoywd_opt(year.parse().ok()?, week.parse().ok()?, chrono::Weekday::Mon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_year_bounds_are_the_first_and_the_ten_thousandth_new_year() {
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap().timestamp_micros();
        assert_eq!(YEAR_1_MICROS, at("0001-01-01T00:00:00Z"));
        assert_eq!(YEAR_10000_MICROS, at("9999-12-31T23:59:59Z") + 1_000_000);
    }

    #[test]
    fn epoch_float_keeps_microseconds() {
        assert_eq!(
            epoch_seconds_to_micros(1736645166.291045).unwrap(),
            1_736_645_166_291_045
        );
        assert!(epoch_seconds_to_micros(f64::NAN).is_err());
        assert!(epoch_seconds_to_micros(f64::INFINITY).is_err());
    }

    #[test]
    fn iso_forms_are_accepted_and_mean_utc_without_offset() {
        let expected = 1_705_314_600_123_000;
        assert_eq!(
            parse_iso8601_micros("2024-01-15T10:30:00.123Z").unwrap(),
            expected
        );
        assert_eq!(
            parse_iso8601_micros("2024-01-15T10:30:00.123").unwrap(),
            expected
        );
        assert_eq!(
            parse_iso8601_micros("2024-01-15 10:30:00.123").unwrap(),
            expected
        );
        assert_eq!(
            parse_iso8601_micros("2024-01-15T19:30:00.123+09:00").unwrap(),
            expected
        );
        assert_eq!(
            parse_iso8601_micros("2024-01-15 19:30:00.123+09:00").unwrap(),
            expected
        );
        assert!(matches!(
            parse_iso8601_micros("15/01/2024 10:30"),
            Err(TimestampError::BadString(_))
        ));
    }

    #[test]
    fn range_refuses_unit_mistakes_and_far_future() {
        let now = 1_763_800_000 * MICROS_PER_SECOND;
        assert!(check_range(now, now, 86_400).is_ok());
        // Milliseconds-as-seconds confusion in the other direction: 1970.
        assert!(matches!(
            check_range(1_736_645 * MICROS_PER_SECOND, now, 86_400),
            Err(TimestampError::TooOld { .. })
        ));
        assert!(matches!(
            check_range(now + 2 * 86_400 * MICROS_PER_SECOND, now, 86_400),
            Err(TimestampError::TooFarInFuture { .. })
        ));
        // i64::MAX from a saturated float conversion is refused, not wrapped.
        assert!(check_range(i64::MAX, now, 86_400).is_err());
    }

    #[test]
    fn hour_partition_is_utc_and_unpadded() {
        // 2025-01-12T01:26:06Z
        let partition = HourPartition::of_micros(1_736_645_166_291_045);
        assert_eq!(partition.hive_path(), "year=2025/month=1/day=12/hour=1");
    }

    #[test]
    fn a_year_without_an_rfc_3339_form_is_not_a_timestamp() {
        // Found by the `timestamp` fuzz target: chrono reads a negative
        // year, whose printed form did not read back.
        assert!(parse_iso8601_micros("-059-9-9 4:2:2").is_err());
        assert!(parse_iso8601_micros("10000-01-01T00:00:00Z").is_err());
        let micros = parse_iso8601_micros("0001-01-01 00:00:00").unwrap();
        assert_eq!(parse_iso8601_micros(&micros_to_rfc3339(micros)), Ok(micros));
    }
}
