//! How far a windowed job's event clock may move: not past the progress of
//! a partition that still has records to read. Partitions are read one
//! after another, and one read ahead must not make another's records late.

use std::collections::BTreeMap;

use logpipe_bus::Bus;
use logpipe_lake::Offsets;

/// The limit for the event clock over `topic`: `None` holds it (a
/// backlogged partition not read since start), `Some(None)` lets it follow
/// the largest event time seen, `Some(Some(t))` lets it go up to `t` (the
/// least progress of the backlogged partitions). `partition_max` is the
/// largest event time read from each partition since start.
pub fn limit(
    bus: &dyn Bus,
    topic: &str,
    positions: &Offsets,
    partition_max: &BTreeMap<u32, i64>,
) -> Option<Option<i64>> {
    let Ok(ends) = bus.end_offsets(topic) else {
        return None;
    };
    let consumed = positions.get(topic);
    let mut limit: Option<i64> = None;
    for (partition, end) in ends.iter().enumerate() {
        let partition = partition as u32;
        let at = consumed
            .and_then(|c| c.get(&partition))
            .copied()
            .unwrap_or(0);
        if at >= *end {
            continue;
        }
        match partition_max.get(&partition) {
            Some(&seen) => limit = Some(limit.map_or(seen, |l| l.min(seen))),
            // Backlogged and not read yet since start: hold the clock.
            None => return None,
        }
    }
    Some(limit)
}
