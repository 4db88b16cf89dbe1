//! A log record's window fields in a few fixed bytes.
//!
//! The collector parses every log record to validate it. It writes the
//! fields the window job needs (event time, level, service, response time,
//! status code) into a bus record header ([`HEADER`]), so the window job
//! reads them without parsing the JSON value a second time; parsing was two
//! thirds of that job's CPU. Records without the header (written to Kafka by
//! another producer) are parsed from their JSON as before.
//!
//! The header is derived from the same validated [`LogRecord`] as the JSON
//! value, and the event time is the one the JSON carries after its
//! round trip (epoch seconds as shortest-round-trip f64), so a window counts
//! a record in the same window the lake puts it in.
//!
//! ```text
//! version          u8   1
//! level            u8   0 DEBUG, 1 INFO, 2 WARN, 3 ERROR
//! present          u8   bit 0: response_time_ms, bit 1: status_code
//! timestamp_micros i64
//! response_time_ms f64  (0 when absent)
//! status_code      i32  (0 when absent)
//! service          the rest, UTF-8
//! ```

use super::view::LogView;
use super::{Level, LogRecord, seconds_value};
use crate::time::epoch_seconds_to_micros;

/// The bus record header that carries a [`LogSummary`].
pub const HEADER: &str = "logpipe.summary";

const VERSION: u8 = 1;
const FIXED_BYTES: usize = 3 + 8 + 8 + 4;
const HAS_RESPONSE_TIME: u8 = 1;
const HAS_STATUS_CODE: u8 = 2;

/// The fields of a log record that windows aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSummary<'a> {
    pub timestamp_micros: i64,
    pub level: Level,
    pub service: &'a str,
    pub response_time_ms: Option<f64>,
    pub status_code: Option<i32>,
}

impl<'a> LogSummary<'a> {
    pub fn of(record: &'a LogRecord) -> LogSummary<'a> {
        LogSummary::of_view(&record.into())
    }

    /// [`LogSummary::of`] a view of the record.
    pub fn of_view(record: &LogView<'a>) -> LogSummary<'a> {
        // The time as a reader of the JSON value gets it back; the same as
        // the record's for any time validation accepts, and equal by
        // construction.
        let as_json = seconds_value(record.timestamp_micros);
        LogSummary {
            timestamp_micros: epoch_seconds_to_micros(as_json).unwrap_or(record.timestamp_micros),
            level: record.level,
            service: record.service,
            response_time_ms: record.response_time_ms,
            status_code: record.status_code,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    pub fn encoded_len(&self) -> usize {
        FIXED_BYTES + self.service.len()
    }

    /// Appends the [`encoded_len`](Self::encoded_len) bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let present = u8::from(self.response_time_ms.is_some()) * HAS_RESPONSE_TIME
            + u8::from(self.status_code.is_some()) * HAS_STATUS_CODE;
        out.extend_from_slice(&[VERSION, level_code(self.level), present]);
        out.extend_from_slice(&self.timestamp_micros.to_le_bytes());
        out.extend_from_slice(&self.response_time_ms.unwrap_or(0.0).to_le_bytes());
        out.extend_from_slice(&self.status_code.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(self.service.as_bytes());
    }

    /// `None` when the bytes are not a summary of this version.
    pub fn decode(bytes: &'a [u8]) -> Option<LogSummary<'a>> {
        let fixed: &[u8; FIXED_BYTES] = bytes.get(..FIXED_BYTES)?.try_into().ok()?;
        if fixed[0] != VERSION {
            return None;
        }
        let level = *Level::ALL
            .iter()
            .find(|level| level_code(**level) == fixed[1])?;
        let present = fixed[2];
        let timestamp_micros = i64::from_le_bytes(fixed[3..11].try_into().ok()?);
        let response_time_ms = f64::from_le_bytes(fixed[11..19].try_into().ok()?);
        let status_code = i32::from_le_bytes(fixed[19..23].try_into().ok()?);
        Some(LogSummary {
            timestamp_micros,
            level,
            service: std::str::from_utf8(&bytes[FIXED_BYTES..]).ok()?,
            response_time_ms: (present & HAS_RESPONSE_TIME != 0).then_some(response_time_ms),
            status_code: (present & HAS_STATUS_CODE != 0).then_some(status_code),
        })
    }
}

fn level_code(level: Level) -> u8 {
    match level {
        Level::Debug => 0,
        Level::Info => 1,
        Level::Warn => 2,
        Level::Error => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ValidationLimits;

    #[test]
    fn summaries_round_trip_and_refuse_other_bytes() {
        let raw = r#"{"timestamp": 1768137600.25, "level": "WARN", "service": "pay-ü",
            "message": "m", "metadata": {"response_time_ms": 12.5, "status_code": 503}}"#;
        let record = LogRecord::parse(raw, &ValidationLimits::now()).unwrap();
        let summary = LogSummary::of(&record);
        assert_eq!(summary.timestamp_micros, 1_768_137_600_250_000);
        assert_eq!(summary.response_time_ms, Some(12.5));
        let bytes = summary.encode();
        assert_eq!(LogSummary::decode(&bytes), Some(summary.clone()));

        let bare = r#"{"timestamp": 1768137600, "level": "DEBUG", "service": "s", "message": "m"}"#;
        let record = LogRecord::parse(bare, &ValidationLimits::now()).unwrap();
        let summary = LogSummary::of(&record);
        assert_eq!(summary.response_time_ms, None);
        assert_eq!(LogSummary::decode(&summary.encode()), Some(summary));

        assert_eq!(LogSummary::decode(&bytes[..FIXED_BYTES - 1]), None);
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert_eq!(LogSummary::decode(&other_version), None);
        let mut bad_level = bytes;
        bad_level[1] = 9;
        assert_eq!(LogSummary::decode(&bad_level), None);
    }
}
