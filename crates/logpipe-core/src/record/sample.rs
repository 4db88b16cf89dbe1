//! The fields of a log record a window needs, read without building the
//! whole record: from the summary header the collector writes
//! ([`crate::record::summary`]), or else parsed from the JSON value by a borrowing
//! parser that skips every other field. This keeps the window job's cost
//! well below the raw→lake job's full parse, and sits here, beside the full
//! parser and the summary, so a change to the log's shape touches one
//! folder.

use std::borrow::Cow;

use serde::Deserialize;

use super::summary::LogSummary;
use super::view::RecordView;
use super::{Level, LogRecord, RecordKind, ValidationLimits, binary};
use crate::time::{epoch_seconds_to_micros, parse_iso8601_micros};

/// The fields of a log record a window needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub timestamp_micros: i64,
    pub level: Level,
    pub service: Cow<'a, str>,
    pub response_time_ms: Option<f64>,
    pub status_code: Option<i32>,
}

impl<'a> From<&'a LogRecord> for Sample<'a> {
    fn from(record: &'a LogRecord) -> Self {
        Sample {
            timestamp_micros: record.timestamp_micros,
            level: record.level,
            service: Cow::Borrowed(&record.service),
            response_time_ms: record.metadata.response_time_ms,
            status_code: record.metadata.status_code,
        }
    }
}

impl<'a> From<LogSummary<'a>> for Sample<'a> {
    fn from(summary: LogSummary<'a>) -> Self {
        Sample {
            timestamp_micros: summary.timestamp_micros,
            level: summary.level,
            service: Cow::Borrowed(summary.service),
            response_time_ms: summary.response_time_ms,
            status_code: summary.status_code,
        }
    }
}

/// The fields of a log record a window needs, borrowed from the JSON.
#[derive(Deserialize)]
struct LogFields<'a> {
    #[serde(borrow)]
    timestamp: TimeField<'a>,
    level: Level,
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(default)]
    metadata: Option<MetaFields>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TimeField<'a> {
    Seconds(f64),
    Text(#[serde(borrow)] Cow<'a, str>),
}

#[derive(Deserialize)]
struct MetaFields {
    #[serde(default)]
    response_time_ms: Option<f64>,
    #[serde(default)]
    status_code: Option<i64>,
}

/// Parses the window fields of a `logs.raw` value (`None`: not a log record).
pub fn parse_sample(value: &[u8]) -> Option<Sample<'_>> {
    if binary::is_binary(value) {
        let limits = ValidationLimits::structure_only();
        let Ok(RecordView::Log(log)) = binary::view(RecordKind::Log, value, &limits) else {
            return None;
        };
        return Some(Sample {
            timestamp_micros: log.timestamp_micros,
            level: log.level,
            response_time_ms: log.response_time_ms,
            status_code: log.status_code,
            service: Cow::Borrowed(log.service),
        });
    }
    let fields: LogFields<'_> = serde_json::from_slice(value).ok()?;
    let timestamp_micros = match &fields.timestamp {
        TimeField::Seconds(seconds) => epoch_seconds_to_micros(*seconds).ok()?,
        TimeField::Text(text) => parse_iso8601_micros(text).ok()?,
    };
    let metadata = fields.metadata.unwrap_or(MetaFields {
        response_time_ms: None,
        status_code: None,
    });
    Some(Sample {
        timestamp_micros,
        level: fields.level,
        service: fields.service,
        response_time_ms: metadata.response_time_ms,
        status_code: metadata.status_code.and_then(|c| i32::try_from(c).ok()),
    })
}

/// The window fields of a `logs.raw` record with headers `summary` (the
/// [`crate::record::summary::HEADER`] value, when the producer wrote one) and
/// JSON `value`.
pub fn sample_of<'a>(summary: Option<&'a [u8]>, value: &'a [u8]) -> Option<Sample<'a>> {
    match summary {
        Some(bytes) => LogSummary::decode(bytes).map(Sample::from),
        None => parse_sample(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{LogMetadata, Record};

    #[test]
    fn samples_parse_from_seed_records() {
        let raw =
            br#"{"timestamp": 1736645166.5, "level": "ERROR", "service": "api", "message": "m",
            "metadata": {"response_time_ms": 12.5, "status_code": 503, "endpoint": "/x"}}"#;
        let sample = parse_sample(raw).unwrap();
        assert_eq!(sample.timestamp_micros, 1_736_645_166_500_000);
        assert_eq!(sample.level, Level::Error);
        assert_eq!(sample.service, "api");
        assert_eq!(sample.response_time_ms, Some(12.5));
        assert_eq!(sample.status_code, Some(503));
        let iso = br#"{"timestamp": "2025-01-12T01:26:06.5Z", "level": "INFO", "service": "api", "message": "m"}"#;
        let sample = parse_sample(iso).unwrap();
        assert_eq!(sample.timestamp_micros, 1_736_645_166_500_000);
        assert_eq!(sample.response_time_ms, None);
        assert!(parse_sample(br#"{"level": "INFO"}"#).is_none());
        assert!(parse_sample(br#"{"timestamp": 1, "level": "LOUD", "service": "a"}"#).is_none());
    }

    /// The summary header, the JSON value and the binary value give the
    /// same sample, for records of every shape, so a window counts a record
    /// where the lake puts it whichever way it was read.
    #[test]
    fn the_summary_header_and_the_json_value_agree() {
        let mut rng = fastrand::Rng::with_seed(7);
        let services = ["api", "pay-ü", "quote\"d", "tab\tbed"];
        for i in 0..20_000 {
            let record = LogRecord {
                // 2001..2096, with any microsecond.
                timestamp_micros: rng.i64(1_000_000_000_000_000..4_000_000_000_000_000),
                level: Level::ALL[rng.usize(..4)],
                service: services[i % services.len()].to_string(),
                host: None,
                message: "m".into(),
                metadata: LogMetadata {
                    response_time_ms: rng.bool().then(|| rng.f64() * 10_000.0),
                    status_code: rng.bool().then(|| rng.i32(100..600)),
                    ..LogMetadata::default()
                },
            };
            let value = record.to_json();
            let summary = LogSummary::of(&record).encode();
            let from_header = sample_of(Some(&summary), &value).unwrap();
            assert_eq!(
                Some(from_header.clone()),
                parse_sample(&value),
                "{record:?}"
            );
            let binary = binary::encode(&Record::Log(record.clone()));
            assert_eq!(Some(from_header), parse_sample(&binary), "{record:?}");
        }
    }
}
