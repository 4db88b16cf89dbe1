//! Validating what the job reads: the full record parser, structure only,
//! split over two threads off the async reactor.

use logpipe_bus::ConsumedRecord;
use logpipe_core::record::{Record, RecordKind, ValidationLimits};

use crate::error::StreamError;

/// Validation on the consuming side: structure only. The future-time check
/// depends on the clock and would make a roll-forward non-deterministic;
/// the collector already applied it.
pub(crate) fn consumer_limits() -> ValidationLimits {
    ValidationLimits {
        max_field_bytes: usize::MAX,
        max_future_skew_secs: i64::MAX / 1_000_000,
        now_micros: 0,
    }
}

/// A consumed record and the result of validating it (`None`: a topic this
/// job does not write).
pub(crate) type Parsed = (ConsumedRecord, Option<Result<Record, String>>);

/// Validates one record (`None`: a topic this job does not write).
pub(super) fn parse_one(record: &ConsumedRecord) -> Option<Result<Record, String>> {
    let kind = RecordKind::of_topic(&record.topic)?;
    Some(
        std::str::from_utf8(&record.value)
            .map_err(|e| format!("value is not UTF-8: {e}"))
            .and_then(|text| {
                Record::parse(kind, text, &consumer_limits()).map_err(|e| e.to_string())
            }),
    )
}

/// Parsing is most of the job's CPU: it runs on the blocking pool, split over
/// two threads (this machine class has two cores; the collector's parsing
/// already runs in parallel on the same pool), and keeps the input order.
pub(crate) async fn parse_all(records: Vec<ConsumedRecord>) -> Result<Vec<Parsed>, StreamError> {
    const PARALLEL_FROM_RECORDS: usize = 2048;
    tokio::task::spawn_blocking(move || {
        let parse = |chunk: Vec<ConsumedRecord>| -> Vec<Parsed> {
            chunk
                .into_iter()
                .map(|record| {
                    let parsed = parse_one(&record);
                    (record, parsed)
                })
                .collect()
        };
        if records.len() < PARALLEL_FROM_RECORDS {
            return parse(records);
        }
        let mut first = records;
        let second = first.split_off(first.len() / 2);
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| parse(second));
            let mut out = parse(first);
            out.extend(handle.join().unwrap_or_default());
            out
        })
    })
    .await
    .map_err(|e| StreamError::Task {
        what: "parse",
        reason: e.to_string(),
    })
}
