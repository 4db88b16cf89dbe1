//! The records of one step: Arrow builders per (table, event hour), the
//! offset range each partition contributed, and the step's counts.
//!
//! Parsing a record and appending it to the builders is most of the job's
//! CPU, so a poll's records are split in order over [`LANES`] threads of the
//! blocking pool, each appending to builders of its own (a lane); the
//! lanes' batches of one (table, hour) become one file's rows, encoded one
//! after another without being joined into one batch first, so a file
//! holds its rows lane by lane, not in offset order (no reader
//! depends on the order of rows in a file). Ranges and the duplicate check
//! stay on the job's task, in offset order.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use logpipe_bus::ConsumedRecord;
use logpipe_core::parallel::on_threads;
use logpipe_core::record::view::RecordView;
use logpipe_core::record::{Record, RecordKind, ValidationLimits};
use logpipe_core::tables::{self, BatchBuilder};
use logpipe_core::time::HourPartition;
use logpipe_lake::{FileRows, LakeError, Ranges, TableGroups};
use tokio::time::Instant;

use super::metrics::raw_metrics;
use super::parse::{LANES, lane_share};
use crate::error::StreamError;
use crate::runtime::dedup::Dedups;
use crate::runtime::positions::partitions_of;

/// Invalid records logged per flush (all are counted in a metric).
const INVALID_LOGGED_PER_FLUSH: u64 = 5;

/// The builders of one lane, per (table, event hour): by kind and hours
/// since the epoch, a division per record (the calendar hour is worked
/// out once per builder, in [`Buffer::take_groups`]).
type Lane = BTreeMap<(RecordKind, i64), BatchBuilder>;

const HOUR_MICROS: i64 = 3600 * logpipe_core::time::MICROS_PER_SECOND;

/// A record on the bus that is not a valid record of its topic.
struct Refused {
    topic: Arc<str>,
    partition: u32,
    offset: u64,
    reason: String,
}

/// What a lane did with its share of a poll.
#[derive(Default)]
struct LaneOutcome {
    rows: usize,
    refused: Vec<Refused>,
    /// An Arrow error appending a valid record (stops the step).
    failed: Option<arrow::error::ArrowError>,
}

/// The records of one step, grouped for writing.
#[derive(Default)]
pub(super) struct Buffer {
    lanes: Vec<Lane>,
    pub(super) ranges: Ranges,
    pub(super) rows: usize,
    pub(super) invalid: u64,
    /// Second copies of a record not written (a client's retry).
    pub(super) duplicates: u64,
    /// When the first record of this step arrived.
    pub(super) since: Option<Instant>,
}

/// Parses `record` and appends it to `lane`, or counts it refused. A
/// record in the bus's binary form goes to the builders borrowed from the
/// bus buffer, without owned strings in between.
fn append(lane: &mut Lane, kind: RecordKind, record: &ConsumedRecord, outcome: &mut LaneOutcome) {
    let limits = ValidationLimits::structure_only();
    let added = Record::with_bus_view(kind, &record.value, &limits, |view| {
        add(lane, kind, view, outcome);
    });
    if let Err(error) = added {
        outcome.refused.push(Refused {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            reason: error.to_string(),
        });
    }
}

/// Appends a valid record to its (table, hour) builder of `lane`.
fn add(lane: &mut Lane, kind: RecordKind, record: &RecordView<'_>, outcome: &mut LaneOutcome) {
    let hour = record.timestamp_micros().div_euclid(HOUR_MICROS);
    let appended = lane
        .entry((kind, hour))
        .or_insert_with(|| BatchBuilder::new(kind))
        .append_view(record);
    match appended {
        Ok(()) => outcome.rows += 1,
        Err(e) => outcome.failed = outcome.failed.take().or(Some(e)),
    }
}

/// Appends `records` in order to `lane`.
fn build(lane: &mut Lane, records: &[(RecordKind, ConsumedRecord)]) -> LaneOutcome {
    let mut outcome = LaneOutcome::default();
    for (kind, record) in records {
        append(lane, *kind, record, &mut outcome);
    }
    outcome
}

impl Buffer {
    /// Moves its partition's range on and checks for a second copy: the
    /// kind to write `record` as, if it is to be written.
    fn admit(&mut self, record: &ConsumedRecord, dedups: &mut Dedups) -> Option<RecordKind> {
        self.since.get_or_insert_with(Instant::now);
        let topic: &str = &record.topic;
        let range = partitions_of(&mut self.ranges, topic)
            .entry(record.partition)
            .or_insert((record.offset, record.offset));
        range.1 = record.offset + 1;
        let kind = RecordKind::of_topic(topic)?;
        if dedups.is_repeat(record) {
            self.duplicates += 1;
            raw_metrics().records_duplicate.inc(&[kind.table()]);
            return None;
        }
        Some(kind)
    }

    /// Adds the next record of its partition on this thread (the
    /// roll-forward's path); one that `dedups` finds to be a second copy
    /// only moves the range on.
    pub(super) fn add(
        &mut self,
        record: &ConsumedRecord,
        dedups: &mut Dedups,
    ) -> Result<(), StreamError> {
        let Some(kind) = self.admit(record, dedups) else {
            return Ok(());
        };
        if self.lanes.is_empty() {
            self.lanes.push(Lane::new());
        }
        let mut outcome = LaneOutcome::default();
        append(&mut self.lanes[0], kind, record, &mut outcome);
        self.settle(outcome)
    }

    /// Adds a poll's records, in order: ranges and the duplicate check
    /// here, parsing and appending on [`LANES`] threads off the reactor.
    pub(super) async fn add_all(
        &mut self,
        records: Vec<ConsumedRecord>,
        dedups: &mut Dedups,
    ) -> Result<(), StreamError> {
        let admitted: Vec<(RecordKind, ConsumedRecord)> = records
            .into_iter()
            .filter_map(|record| Some((self.admit(&record, dedups)?, record)))
            .collect();
        if admitted.is_empty() {
            return Ok(());
        }
        let mut lanes = std::mem::take(&mut self.lanes);
        lanes.resize_with(LANES, Lane::new);
        let (lanes, outcomes) = tokio::task::spawn_blocking(move || {
            let shares: Vec<_> = lanes
                .iter_mut()
                .zip(admitted.chunks(lane_share(admitted.len())))
                .collect();
            let outcomes = on_threads(shares, |(lane, records)| build(lane, records));
            (lanes, outcomes)
        })
        .await
        .map_err(|e| StreamError::Task {
            what: "parse",
            reason: e.to_string(),
        })?;
        self.lanes = lanes;
        for outcome in outcomes {
            self.settle(outcome)?;
        }
        Ok(())
    }

    /// Counts what a lane wrote and refused; logs the first refusals.
    fn settle(&mut self, outcome: LaneOutcome) -> Result<(), StreamError> {
        if let Some(e) = outcome.failed {
            return Err(LakeError::from(e).into());
        }
        self.rows += outcome.rows;
        for refused in outcome.refused {
            self.invalid += 1;
            let table = RecordKind::of_topic(&refused.topic).map_or("", RecordKind::table);
            raw_metrics().records_invalid.inc(&[table]);
            if self.invalid <= INVALID_LOGGED_PER_FLUSH {
                tracing::warn!(
                    topic = &*refused.topic,
                    partition = refused.partition,
                    offset = refused.offset,
                    reason = %refused.reason,
                    "skipping an invalid record on the bus (produced by another client?)"
                );
            }
        }
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The rows of each (table, hour): the lanes' batches of it, not
    /// joined (the file is encoded from them as they are).
    pub(super) fn take_groups(&mut self) -> Result<TableGroups, StreamError> {
        let mut parts: BTreeMap<(RecordKind, HourPartition), Vec<RecordBatch>> = BTreeMap::new();
        for lane in std::mem::take(&mut self.lanes) {
            for ((kind, hour), mut builder) in lane {
                if builder.is_empty() {
                    continue;
                }
                let batch = builder.finish().map_err(LakeError::from)?;
                // Hours the calendar cannot name (out of range) all fall
                // into one partition, as `HourPartition::of_micros` has it.
                let hour = HourPartition::of_micros(hour * HOUR_MICROS);
                parts.entry((kind, hour)).or_default().push(batch);
            }
        }
        Ok(parts
            .into_iter()
            .map(|((kind, hour), batches)| ((tables::of_kind(kind), hour), FileRows::new(batches)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use logpipe_bus::Headers;
    use logpipe_core::topics;

    fn log(offset: u64, second: u64) -> ConsumedRecord {
        let value = format!(
            r#"{{"timestamp":{},"level":"INFO","service":"s","message":"m{offset}"}}"#,
            1_736_640_000 + second
        );
        ConsumedRecord {
            topic: Arc::from(topics::LOGS_RAW),
            partition: 0,
            offset,
            key: Bytes::from_static(b"s"),
            value: Bytes::from(value),
            headers: Headers::default(),
        }
    }

    fn messages(groups: &TableGroups) -> Vec<String> {
        use arrow::array::AsArray;
        groups
            .values()
            .flat_map(|rows| rows.parts().iter())
            .flat_map(|batch| {
                let column = batch.column_by_name("message").unwrap().as_string::<i32>();
                column
                    .iter()
                    .map(|m| m.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A poll split over the lanes gives the same rows per hour as the
    /// records added one at a time; an invalid record is counted, not
    /// written.
    #[tokio::test]
    async fn lanes_keep_every_record_once() {
        // Two hours, interleaved; one invalid record in the middle.
        let mut records: Vec<ConsumedRecord> = (0..5000)
            .map(|offset| log(offset, if offset % 3 == 0 { 3600 } else { 0 }))
            .collect();
        records[2500].value = Bytes::from_static(b"{\"level\":\"INFO\"}");
        let mut dedups = Dedups::new(0);

        let mut parallel = Buffer::default();
        parallel
            .add_all(records[..3000].to_vec(), &mut dedups)
            .await
            .unwrap();
        parallel
            .add_all(records[3000..].to_vec(), &mut dedups)
            .await
            .unwrap();
        let mut serial = Buffer::default();
        for record in &records {
            serial.add(record, &mut dedups).unwrap();
        }
        assert_eq!((parallel.rows, parallel.invalid), (4999, 1));
        assert_eq!((serial.rows, serial.invalid), (4999, 1));
        assert_eq!(parallel.ranges, serial.ranges);
        let (parallel, serial) = (
            parallel.take_groups().unwrap(),
            serial.take_groups().unwrap(),
        );
        assert_eq!(parallel.len(), 2);
        assert_eq!(
            parallel.keys().collect::<Vec<_>>(),
            serial.keys().collect::<Vec<_>>()
        );
        for (hour, batch) in &parallel {
            assert_eq!(batch.num_rows(), serial[hour].num_rows());
        }
        let sorted = |groups: &TableGroups| {
            let mut messages = messages(groups);
            messages.sort_by_key(|m| m[1..].parse::<u64>().unwrap());
            messages
        };
        let expected: Vec<String> = (0..5000)
            .filter(|offset| *offset != 2500)
            .map(|offset| format!("m{offset}"))
            .collect();
        assert_eq!(sorted(&parallel), expected);
        assert_eq!(sorted(&serial), expected);
    }
}
