//! Which process runs which streaming SQL job: claimed through a consumer
//! group, so jobs spread over the `logpipe stream --jobs sql` processes
//! and move to a survivor when one dies.
//!
//! A job reads every partition of its topic (its windows need all of
//! them), so a job is the unit that moves, not a partition. Each process
//! joins the group `<bus.kafka.group>-sql-jobs` on the claims topic
//! ([`CLAIMS_TOPIC`], empty: nothing is ever written to it) and runs the
//! jobs whose claim partition (the job's place in name order, modulo the
//! topic's partitions) the group gave it. When the group moves a claim
//! away (a member joined), the process stops its jobs first — each
//! commits what it has — and then lets the partition go; when a member
//! dies, the survivor gets its claims after the session timeout and
//! resumes each job from its last commit record.
//!
//! The claim is not what keeps the output exactly once: the commit chain
//! is. A job's commit *n* is created only if absent, so two processes that
//! both believe they run a job (a paused one that has not noticed it lost
//! its claim) cannot both commit the same step: the loser fails, restores
//! from the winner's commit and goes on from there.
//!
//! On the embedded bus the one process holds every claim.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use logpipe_bus::{Bus, Rebalance, TopicPartition, TopicSpec};
use logpipe_core::job::Shutdown;
use logpipe_lake::Lake;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{SqlJobSinks, SqlJobs};
use crate::error::StreamError;

/// The topic whose partitions are the claims.
pub const CLAIMS_TOPIC: &str = "logpipe.sql-job-claims";
/// Claims: jobs past this many share partitions (and so processes).
pub const CLAIMS_PARTITIONS: u32 = 12;

/// The claims topic, replicated as `like` (the logs topic).
pub fn claims_topic(like: &TopicSpec) -> TopicSpec {
    TopicSpec {
        name: CLAIMS_TOPIC.to_string(),
        partitions: CLAIMS_PARTITIONS,
        retention: Duration::from_secs(3600),
        retention_bytes: 0,
        replication_factor: like.replication_factor,
        min_insync_replicas: like.min_insync_replicas,
    }
}

/// The jobs of this process, run by claim.
pub struct ClaimedJobs {
    bus: Arc<dyn Bus>,
    lake: Lake,
    /// In name order: a job's claim is its index modulo the partitions.
    jobs: Vec<SqlJobSinks>,
    group: String,
    claims: TopicSpec,
}

/// The runners of one set of claimed jobs.
struct Generation {
    stop: watch::Sender<bool>,
    runners: JoinSet<Result<(), StreamError>>,
}

impl Generation {
    /// Stops the runners (each drains and commits) and waits for them.
    async fn stop(mut self) -> Result<(), StreamError> {
        let _ = self.stop.send(true);
        let mut outcome = Ok(());
        while let Some(joined) = self.runners.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(error)) => outcome = Err(error),
                Err(panic) => std::panic::resume_unwind(panic.into_panic()),
            }
        }
        outcome
    }
}

impl ClaimedJobs {
    pub fn new(
        bus: Arc<dyn Bus>,
        lake: Lake,
        mut jobs: Vec<SqlJobSinks>,
        group: String,
        claims: TopicSpec,
    ) -> ClaimedJobs {
        jobs.sort_by(|a, b| a.options.name.cmp(&b.options.name));
        ClaimedJobs {
            bus,
            lake,
            jobs,
            group,
            claims,
        }
    }

    fn claim_of(&self, index: usize) -> u32 {
        (index as u32) % self.claims.partitions.max(1)
    }

    /// The jobs whose claims are in `partitions`.
    fn jobs_of(&self, partitions: &BTreeSet<u32>) -> BTreeSet<usize> {
        (0..self.jobs.len())
            .filter(|index| partitions.contains(&self.claim_of(*index)))
            .collect()
    }

    fn start(&self, owned: &BTreeSet<usize>) -> Generation {
        let (stop, stopped) = watch::channel(false);
        let mut runners = JoinSet::new();
        let jobs: Vec<SqlJobSinks> = owned.iter().map(|i| self.jobs[*i].clone()).collect();
        let names: Vec<&str> = owned
            .iter()
            .map(|i| self.jobs[*i].options.name.as_str())
            .collect();
        tracing::info!(
            group = self.group,
            jobs = ?names,
            "streaming SQL jobs this process runs now"
        );
        for runner in SqlJobs::by_topic(self.bus.clone(), self.lake.clone(), jobs) {
            runners.spawn(runner.run(stopped.clone()));
        }
        Generation { stop, runners }
    }

    /// Runs the claimed jobs until `shutdown`, following the claims.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), StreamError> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        self.bus
            .create_topics(std::slice::from_ref(&self.claims))
            .await?;
        let mut consumer = self.bus.consumer(&self.group, &[CLAIMS_TOPIC]).await?;
        let mut owned: BTreeSet<usize> = BTreeSet::new();
        // The claims this process holds, and whether the group has told it
        // any (else the bus gives every partition: see below).
        let mut held: BTreeSet<u32> = BTreeSet::new();
        let mut told = false;
        let mut running: Option<Generation> = None;
        let outcome: Result<(), StreamError> = loop {
            let polled = tokio::select! {
                polled = consumer.poll(16, Duration::from_millis(500)) => polled,
                _ = shutdown.wait_for(|stopped| *stopped) => break Ok(()),
            };
            if let Err(error) = polled {
                break Err(error.into());
            }
            if let Some(event) = consumer.rebalance() {
                // What the group says, not `assignment()`, which Kafka's
                // consumer updates only after the answer below.
                let claims = |partitions: &[TopicPartition]| -> BTreeSet<u32> {
                    partitions
                        .iter()
                        .filter(|tp| tp.topic == CLAIMS_TOPIC)
                        .map(|tp| tp.partition)
                        .collect()
                };
                match &event {
                    Rebalance::Revoke(revoked) => {
                        let lost = claims(revoked);
                        // Stop before letting go, so the next owner starts
                        // from this process's last commit.
                        if !self.jobs_of(&lost).is_disjoint(&owned)
                            && let Some(generation) = running.take()
                        {
                            tracing::info!(
                                group = self.group,
                                "claims move away: stopping this process's streaming SQL jobs"
                            );
                            if let Err(error) = generation.stop().await {
                                break Err(error);
                            }
                            owned.clear();
                        }
                        held.retain(|partition| !lost.contains(partition));
                    }
                    Rebalance::Assign(assigned) => held.extend(claims(assigned)),
                }
                told = true;
                if let Err(error) = consumer.rebalance_done(Vec::new()) {
                    break Err(error.into());
                }
            } else if !told {
                // A bus without group events (the embedded one): its
                // assignment is every partition, and stays so.
                held = consumer
                    .assignment()
                    .into_iter()
                    .filter(|tp| tp.topic == CLAIMS_TOPIC)
                    .map(|tp| tp.partition)
                    .collect();
            }
            let now = self.jobs_of(&held);
            if now != owned {
                if let Some(generation) = running.take()
                    && let Err(error) = generation.stop().await
                {
                    break Err(error);
                }
                owned = now;
                if owned.is_empty() {
                    tracing::info!(
                        group = self.group,
                        "no streaming SQL job is this process's now"
                    );
                } else {
                    running = Some(self.start(&owned));
                }
            }
            // A runner that ended on its own failed for good.
            if let Some(generation) = running.as_mut()
                && let Some(joined) = generation.runners.try_join_next()
            {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => break Err(error),
                    Err(panic) => std::panic::resume_unwind(panic.into_panic()),
                }
            }
        };
        let stopped = match running.take() {
            Some(generation) => generation.stop().await,
            None => Ok(()),
        };
        consumer.close().await;
        outcome.and(stopped)
    }
}
