//! Where a job's partitions stand: resuming at a commit's offsets, reporting
//! progress to the group, and the per-partition maps every job keeps.

use std::borrow::Cow;
use std::collections::BTreeMap;

use logpipe_bus::{BusError, Consumer, TopicPartition};
use logpipe_lake::Offsets;

use crate::error::StreamError;

/// Returns what a job read with `consumer`, closing the consumer first if
/// it failed: a group member then leaves at once (its partitions move
/// without waiting for the session timeout), and a subscribed Kafka
/// consumer must not be dropped without closing it. A job that ends well
/// closes its consumer itself, after its last commit.
pub async fn closed_on_error<T>(
    consumer: &mut dyn Consumer,
    read: Result<T, StreamError>,
) -> Result<T, StreamError> {
    if read.is_err() {
        consumer.close().await;
    }
    read
}

/// Where `offsets` (a commit's) says `tp` resumes.
pub fn offset_of(offsets: &Offsets, tp: &TopicPartition) -> Option<u64> {
    offsets.get(&tp.topic)?.get(&tp.partition).copied()
}

/// Seeks each assigned partition to its offset in `committed` (the job's
/// last commit), or to the oldest kept offset when the commit has none, and
/// returns where each assigned partition starts. Partitions not assigned
/// (another group member's) are left out.
pub fn resume(consumer: &mut dyn Consumer, committed: &Offsets) -> Result<Offsets, BusError> {
    let mut positions = Offsets::new();
    for tp in consumer.assignment() {
        let offset = match offset_of(committed, &tp) {
            Some(offset) => offset,
            None => consumer.start_offsets(&tp.topic)?[tp.partition as usize],
        };
        consumer.seek(&tp.topic, tp.partition, offset)?;
        positions
            .entry(tp.topic)
            .or_default()
            .insert(tp.partition, offset);
    }
    Ok(positions)
}

/// `positions` (the job's: after the last record it was handed) moved on
/// to where the bus stands when it read past offsets without a record for
/// the job (Kafka's transaction markers and aborted records; see
/// [`Consumer::read_positions`]). For telling a partition read to its end
/// from one with records left; never for what the lake commits.
pub fn read_through<'a>(consumer: &dyn Consumer, positions: &'a Offsets) -> Cow<'a, Offsets> {
    let ahead = consumer.read_positions();
    if ahead.is_empty() {
        return Cow::Borrowed(positions);
    }
    let mut moved = positions.clone();
    for (tp, offset) in ahead {
        // Only partitions the job holds a position for are its own.
        if let Some(at) = moved
            .get_mut(&tp.topic)
            .and_then(|partitions| partitions.get_mut(&tp.partition))
        {
            *at = (*at).max(offset);
        }
    }
    Cow::Owned(moved)
}

/// Reports `positions` (read through markers, so a partition read to its
/// end shows no lag) to the consumer group, for lag monitoring only: the
/// lake commit is the source of truth.
pub async fn report_progress(consumer: &mut dyn Consumer, positions: &Offsets) {
    let positions = read_through(consumer, positions);
    let offsets: Vec<(TopicPartition, u64)> = positions
        .iter()
        .flat_map(|(topic, partitions)| {
            partitions.iter().map(|(partition, offset)| {
                (
                    TopicPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    *offset,
                )
            })
        })
        .collect();
    if let Err(error) = consumer.commit(&offsets).await {
        tracing::warn!(%error, "could not record consumer progress (lag reporting only)");
    }
}

/// The per-partition map of `topic`, created when missing. Runs per record:
/// looking up first avoids allocating the topic name every time.
pub fn partitions_of<'a, V>(
    map: &'a mut BTreeMap<String, BTreeMap<u32, V>>,
    topic: &str,
) -> &'a mut BTreeMap<u32, V> {
    if !map.contains_key(topic) {
        map.insert(topic.to_string(), BTreeMap::new());
    }
    map.get_mut(topic).expect("inserted above")
}
