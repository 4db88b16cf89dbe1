//! The event clock: how far windows may close, held back by partitions
//! that still have records to read ([`crate::runtime::clock`]).

use std::collections::BTreeMap;

use logpipe_lake::Offsets;

use super::WindowJob;
use crate::runtime::clock;
use crate::sql_job::aggregator::SqlAggregator;

impl WindowJob {
    /// Advances the event clock as far as [`clock::limit`] allows.
    pub(super) fn advance_clock(
        &self,
        aggregator: &mut SqlAggregator,
        positions: &Offsets,
        partition_max: &BTreeMap<u32, i64>,
    ) {
        let topic = &self.options.logs_topic;
        if let Some(limit) = clock::limit(&*self.bus, topic, positions, partition_max) {
            aggregator.advance_to(limit);
        }
    }
}
