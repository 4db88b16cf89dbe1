//! Validating what the hot store reads: the full record parser, structure
//! only ([`ValidationLimits::structure_only`]: the future-time check depends
//! on the clock and would make a re-read non-deterministic; the collector
//! applied it), split over two threads off the async reactor. The lake job
//! appends through `Record::with_bus_view` (`buffer.rs`) on the same lanes.

use logpipe_bus::ConsumedRecord;
use logpipe_core::parallel::on_threads;
use logpipe_core::record::{Record, RecordKind, ValidationLimits};

use crate::error::StreamError;

/// A consumed record and the result of validating it (`None`: a topic this
/// job does not write).
pub(crate) type Parsed = (ConsumedRecord, Option<Result<Record, String>>);

/// Validates one record (`None`: a topic this job does not write).
pub(super) fn parse_one(record: &ConsumedRecord) -> Option<Result<Record, String>> {
    let kind = RecordKind::of_topic(&record.topic)?;
    Some(
        Record::from_bus(kind, &record.value, &ValidationLimits::structure_only())
            .map_err(|e| e.to_string()),
    )
}

/// Threads a poll's records are parsed on (this machine class has two
/// cores; the collector's parsing runs on the same pool).
pub(super) const LANES: usize = 2;

/// Polls smaller than this are parsed on one thread (a thread costs more).
pub(super) const PARALLEL_FROM_RECORDS: usize = 2048;

/// How many records of a poll of `len` each lane takes, in order.
pub(super) fn lane_share(len: usize) -> usize {
    if len < PARALLEL_FROM_RECORDS {
        len.max(1)
    } else {
        len.div_ceil(LANES)
    }
}

/// Parsing is most of the job's CPU: it runs on the blocking pool, split over
/// [`LANES`] threads, and keeps the input order.
pub(crate) async fn parse_all(records: Vec<ConsumedRecord>) -> Result<Vec<Parsed>, StreamError> {
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
        let share = lane_share(records.len());
        let mut shares = vec![records];
        while let Some(last) = shares.last_mut()
            && last.len() > share
        {
            let rest = last.split_off(share);
            shares.push(rest);
        }
        on_threads(shares, parse).into_iter().flatten().collect()
    })
    .await
    .map_err(|e| StreamError::Task {
        what: "parse",
        reason: e.to_string(),
    })
}
