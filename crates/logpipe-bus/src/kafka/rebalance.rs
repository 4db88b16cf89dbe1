//! The rebalance hand-shake: librdkafka's callback hands the event to the
//! job and waits until it committed (revoke) or said where each partition
//! starts (assign).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::context::LogContext;
use super::{HashMap, lock};
use crate::{Rebalance, TopicPartition};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Membership {
    /// Subscribed in a consumer group: the group assigns partitions.
    Group,
    /// Every partition assigned by hand; no group membership.
    Reader,
}

/// A rebalance waiting for the job, and where to send its answer.
pub(super) struct PendingRebalance {
    pub(super) event: Rebalance,
    pub(super) reply: std_mpsc::SyncSender<Vec<(TopicPartition, Option<u64>)>>,
}

/// Rebalance requests waiting for the job: one, since the callback waits
/// for its answer before librdkafka can start another.
pub(super) const REBALANCES_IN_FLIGHT: usize = 1;

/// Shared between the consumer and its rebalance callback.
pub(super) struct Shared {
    /// Bounded at [`REBALANCES_IN_FLIGHT`]: the callback blocks until its
    /// request is answered, so no second one is ever sent before the first
    /// was taken.
    pub(super) requests: mpsc::Sender<PendingRebalance>,
    /// Set once the job is done: rebalances then proceed without asking.
    pub(super) closing: AtomicBool,
    /// Partitions revoked since the poll thread last looked: it drops what
    /// it read from them before the revoke (the job starts them again
    /// where it says, if they come back). Written by the rebalance
    /// callback, which librdkafka runs inside that thread's `poll`.
    pub(super) revoked: Mutex<Vec<TopicPartition>>,
    pub(super) assignment: Mutex<Vec<TopicPartition>>,
}

/// The rdkafka context of logpipe's consumers.
pub(super) struct RebalanceContext {
    pub(super) shared: Arc<Shared>,
    pub(super) log: LogContext,
}

impl ClientContext for RebalanceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

/// Whether the group rebalances incrementally (`cooperative-sticky`):
/// librdkafka then refuses `assign`/`unassign` for `incremental_*`.
pub(super) fn is_cooperative(consumer: &BaseConsumer<RebalanceContext>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    )
}

pub(super) fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: e.topic().to_string(),
            partition: e.partition().max(0) as u32,
        })
        .collect()
}

impl RebalanceContext {
    /// Hands `event` to the job and blocks this (librdkafka's poll) thread
    /// until the job answers.
    pub(super) fn ask(&self, event: Rebalance) -> Vec<(TopicPartition, Option<u64>)> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Vec::new();
        }
        let (reply, answer) = std_mpsc::sync_channel(1);
        // `try_send`: this runs on librdkafka's poll thread, which must
        // not wait on the async runtime. It cannot find the channel full
        // (see `Shared::requests`); if it ever did, the rebalance goes on
        // unanswered, as when the job is gone.
        if let Err(error) = self
            .shared
            .requests
            .try_send(PendingRebalance { event, reply })
        {
            tracing::error!(%error, "could not hand a rebalance to the job");
            return Vec::new();
        }
        // The job answers, or `close` does (it answers every request that
        // arrives while it waits for the poll), or the consumer is dropped
        // and the reply's sender with it.
        answer.recv().unwrap_or_default()
    }

    /// Gives `revoked` up: the job commits what it read of them, librdkafka
    /// stops fetching them, and the poll thread drops what it read of them
    /// but did not hand over yet.
    pub(super) fn give_up(
        &self,
        consumer: &BaseConsumer<Self>,
        revoked: Vec<TopicPartition>,
        cooperative: bool,
    ) {
        tracing::info!(?revoked, cooperative, "Kafka group revokes partitions");
        if !revoked.is_empty() {
            self.ask(Rebalance::Revoke(revoked.clone()));
        }
        let done = if cooperative {
            let mut list = TopicPartitionList::new();
            for tp in &revoked {
                list.add_partition(&tp.topic, tp.partition as i32);
            }
            consumer.incremental_unassign(&list)
        } else {
            consumer.unassign()
        };
        if let Err(error) = done {
            tracing::error!(%error, "Kafka unassign failed");
        }
        let held = {
            let mut assignment = lock(&self.shared.assignment);
            assignment.retain(|tp| !revoked.contains(tp));
            assignment.len()
        };
        tracing::info!(held, "Kafka group revoked partitions");
        lock(&self.shared.revoked).extend(revoked);
    }
}

impl ConsumerContext for RebalanceContext {
    /// Eager protocols (`range`, `roundrobin`: every rebalance revokes all
    /// partitions and assigns a full set) and the cooperative one
    /// (`cooperative-sticky`: only the partitions that move are revoked or
    /// assigned, the others keep being read) are both served: the job sees
    /// the partitions that come and go either way.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let cooperative = is_cooperative(consumer);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = partitions_of(list);
                // A cooperative rebalance can assign nothing new to this
                // member: nothing for the job to do.
                let starts = if assigned.is_empty() {
                    Vec::new()
                } else {
                    self.ask(Rebalance::Assign(assigned.clone()))
                };
                let starts: HashMap<TopicPartition, Option<u64>> = starts.into_iter().collect();
                for tp in &assigned {
                    let offset = match starts.get(tp).copied().flatten() {
                        Some(offset) => Offset::Offset(offset as i64),
                        None => Offset::Beginning,
                    };
                    if let Err(error) =
                        list.set_partition_offset(&tp.topic, tp.partition as i32, offset)
                    {
                        tracing::error!(%error, ?tp, "cannot set a start offset");
                    }
                }
                let done = if cooperative {
                    consumer.incremental_assign(list)
                } else {
                    consumer.assign(list)
                };
                if let Err(error) = done {
                    tracing::error!(%error, "Kafka assign failed");
                }
                let mut assignment = lock(&self.shared.assignment);
                if !cooperative {
                    assignment.clear();
                }
                assignment.extend(assigned.iter().cloned());
                tracing::info!(
                    ?assigned,
                    cooperative,
                    held = assignment.len(),
                    "Kafka group assigned partitions"
                );
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.give_up(consumer, partitions_of(list), cooperative);
            }
            other => {
                // librdkafka (2.12) calls this only with the two codes above;
                // its docs ask an application to drop its assignment on any
                // other. Do it the way a revoke does: the job commits what
                // it read first, and a cooperative group is answered with
                // `incremental_unassign` (it refuses `unassign`).
                tracing::error!(error = ?other, "Kafka rebalance failed; giving up every partition");
                let held = lock(&self.shared.assignment).clone();
                self.give_up(consumer, held, cooperative);
            }
        }
    }
}
