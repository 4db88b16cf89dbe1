//! The event clock: how far windows may close, held back by partitions
//! that still have records to read.

use std::collections::BTreeMap;

use logpipe_lake::Offsets;

use super::WindowJob;
use crate::aggregate::WindowAggregator;

impl WindowJob {
    /// Advances the event clock, but not past the progress of a partition
    /// that still has records to read: partitions are read one after
    /// another, and one read ahead must not make another's records late.
    pub(super) fn advance_clock(
        &self,
        aggregator: &mut WindowAggregator,
        positions: &Offsets,
        partition_max: &BTreeMap<u32, i64>,
    ) {
        let topic = &self.options.logs_topic;
        let Ok(ends) = self.bus.end_offsets(topic) else {
            return;
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
                None => return,
            }
        }
        aggregator.advance_to(limit);
    }
}
