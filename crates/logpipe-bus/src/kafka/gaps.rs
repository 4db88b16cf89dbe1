//! Offsets a broker passes over between the records it returns
//! (transaction markers, compaction, or records it failed to return):
//! counted in `logpipe_bus_offsets_skipped_total`.

use super::HashMap;
use crate::metrics::bus_metrics;
use crate::{ConsumedRecord, TopicPartition};

/// The first and last offset one poll returned for a partition, and how
/// many offsets between them it passed over.
pub(super) struct PartitionSpan {
    pub(super) partition: TopicPartition,
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) skipped: u64,
}

/// One pass over a poll's records (in offset order within a partition):
/// where each partition's records start and end, and the offsets missing
/// in between (each gap is logged at debug level).
pub(super) fn partition_spans(records: &[ConsumedRecord]) -> Vec<PartitionSpan> {
    let mut spans: Vec<PartitionSpan> = Vec::new();
    for record in records {
        match spans.iter_mut().find(|span| {
            span.partition.partition == record.partition && *span.partition.topic == *record.topic
        }) {
            Some(span) => {
                span.skipped += passed_over(&span.partition, span.last + 1, record.offset);
                span.last = span.last.max(record.offset);
            }
            None => spans.push(PartitionSpan {
                partition: TopicPartition {
                    topic: record.topic.to_string(),
                    partition: record.partition,
                },
                first: record.offset,
                last: record.offset,
                skipped: 0,
            }),
        }
    }
    spans
}

/// How many offsets lie in `from..to` (none when `to <= from`), logged at
/// debug level with the partition when there are some.
pub(super) fn passed_over(partition: &TopicPartition, from: u64, to: u64) -> u64 {
    let skipped = to.saturating_sub(from);
    if skipped > 0 {
        tracing::debug!(
            topic = %partition.topic,
            partition = partition.partition,
            from,
            to,
            "the broker passed over offsets"
        );
    }
    skipped
}

/// Counts the offsets passed over in `spans`, per topic, in
/// `logpipe_bus_offsets_skipped_total`: those between the records of a
/// poll and those between a partition's position and its first record
/// (`positions`, before this poll moves them). Kafka leaves such gaps for
/// transaction markers and compacted records; with plain producers and
/// `cleanup.policy=delete` topics, any gap is a record the broker did not
/// return, which no later check can notice (the lake's commit chain
/// follows offsets, not gaps).
pub(super) fn count_skipped(spans: &[PartitionSpan], positions: &HashMap<TopicPartition, u64>) {
    for span in spans {
        let before = positions.get(&span.partition).map_or(0, |expected| {
            passed_over(&span.partition, *expected, span.first)
        });
        let skipped = span.skipped + before;
        if skipped == 0 {
            continue;
        }
        bus_metrics()
            .offsets_skipped
            .add(&[&span.partition.topic], skipped);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::Headers;

    fn record(topic: &Arc<str>, partition: u32, offset: u64) -> ConsumedRecord {
        ConsumedRecord {
            topic: topic.clone(),
            partition,
            offset,
            key: Bytes::new(),
            value: Bytes::new(),
            headers: Headers::default(),
        }
    }

    #[test]
    fn spans_follow_interleaved_partitions_and_topics() {
        let (logs, events): (Arc<str>, Arc<str>) = ("logs.raw".into(), "events.activity".into());
        let records = [
            record(&logs, 0, 7),
            record(&logs, 1, 3),
            record(&events, 0, 10),
            record(&logs, 0, 8),
            record(&logs, 1, 4),
            record(&logs, 0, 9),
        ];
        let spans: Vec<(String, u32, u64, u64)> = partition_spans(&records)
            .into_iter()
            .map(|s| (s.partition.topic, s.partition.partition, s.first, s.last))
            .collect();
        assert_eq!(
            spans,
            [
                ("logs.raw".to_string(), 0, 7, 9),
                ("logs.raw".to_string(), 1, 3, 4),
                ("events.activity".to_string(), 0, 10, 10),
            ]
        );
        assert!(partition_spans(&[]).is_empty());
    }

    #[test]
    fn offsets_passed_over_are_counted_per_topic() {
        let (logs, events): (Arc<str>, Arc<str>) = ("logs.raw".into(), "events.activity".into());
        // logs.raw/0 was asked for from 5: 6 and 9..=10 are missing; 1 has
        // no position (just assigned), so its first record counts nothing.
        let records = [
            record(&logs, 0, 5),
            record(&logs, 0, 7),
            record(&logs, 1, 40),
            record(&logs, 0, 8),
            record(&logs, 0, 11),
            record(&events, 2, 12),
        ];
        let spans = partition_spans(&records);
        let skipped: Vec<u64> = spans.iter().map(|s| s.skipped).collect();
        assert_eq!(skipped, [3, 0, 0]);
        // events.activity/2 was asked for from 10: 10 and 11 are missing.
        let positions = HashMap::from([
            (
                TopicPartition {
                    topic: "logs.raw".into(),
                    partition: 0,
                },
                5,
            ),
            (
                TopicPartition {
                    topic: "events.activity".into(),
                    partition: 2,
                },
                10,
            ),
        ]);
        let counted = || {
            let metrics = bus_metrics();
            ["logs.raw", "events.activity"].map(|topic| metrics.offsets_skipped.get(&[topic]))
        };
        let before = counted();
        count_skipped(&spans, &positions);
        let after = counted();
        assert_eq!([after[0] - before[0], after[1] - before[1]], [3, 2]);
    }
}
