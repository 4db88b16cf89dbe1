//! The records of one step: Arrow builders per (table, event hour), the
//! offset range each partition contributed, and the step's counts.

use std::collections::BTreeMap;

use logpipe_bus::ConsumedRecord;
use logpipe_core::record::{Record, RecordKind};
use logpipe_core::tables::{self, BatchBuilder};
use logpipe_core::time::HourPartition;
use logpipe_lake::{LakeError, Ranges, TableGroups};
use tokio::time::Instant;

use super::metrics::raw_metrics;
use crate::error::StreamError;
use crate::runtime::dedup::Dedups;
use crate::runtime::positions::partitions_of;

/// Invalid records logged per flush (all are counted in a metric).
const INVALID_LOGGED_PER_FLUSH: u64 = 5;

/// The records of one step, grouped for writing.
#[derive(Default)]
pub(super) struct Buffer {
    pub(super) builders: BTreeMap<(RecordKind, HourPartition), BatchBuilder>,
    pub(super) ranges: Ranges,
    pub(super) rows: usize,
    pub(super) invalid: u64,
    /// Second copies of a record not written (a client's retry).
    pub(super) duplicates: u64,
    /// When the first record of this step arrived.
    pub(super) since: Option<Instant>,
}

impl Buffer {
    /// Adds the next record of its partition; one that `dedups` finds to be
    /// a second copy only moves the range on.
    pub(super) fn add(
        &mut self,
        record: &ConsumedRecord,
        parsed: Option<Result<Record, String>>,
        dedups: &mut Dedups,
    ) -> Result<(), StreamError> {
        self.since.get_or_insert_with(Instant::now);
        let topic: &str = &record.topic;
        let range = partitions_of(&mut self.ranges, topic)
            .entry(record.partition)
            .or_insert((record.offset, record.offset));
        range.1 = record.offset + 1;
        let (Some(parsed), Some(kind)) = (parsed, RecordKind::of_topic(topic)) else {
            return Ok(());
        };
        if dedups.is_repeat(record) {
            self.duplicates += 1;
            raw_metrics().records_duplicate.inc(&[kind.table()]);
            return Ok(());
        }
        match parsed {
            Ok(parsed) => {
                let hour = HourPartition::of_micros(parsed.timestamp_micros());
                self.builders
                    .entry((kind, hour))
                    .or_insert_with(|| BatchBuilder::new(kind))
                    .append(&parsed)
                    .map_err(LakeError::from)?;
                self.rows += 1;
            }
            Err(reason) => {
                self.invalid += 1;
                raw_metrics().records_invalid.inc(&[kind.table()]);
                if self.invalid <= INVALID_LOGGED_PER_FLUSH {
                    tracing::warn!(
                        topic,
                        partition = record.partition,
                        offset = record.offset,
                        %reason,
                        "skipping an invalid record on the bus (produced by another client?)"
                    );
                }
            }
        }
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub(super) fn take_groups(&mut self) -> Result<TableGroups, StreamError> {
        let mut groups = TableGroups::new();
        for ((kind, hour), mut builder) in std::mem::take(&mut self.builders) {
            groups.insert(
                (tables::of_kind(kind), hour),
                builder.finish().map_err(LakeError::from)?,
            );
        }
        Ok(groups)
    }
}
