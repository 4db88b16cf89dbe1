//! raw topics → the PostgreSQL hot store: the newest records of `logs` and
//! `events` also in PostgreSQL, for the seed's hybrid advice (recent rows
//! where an application's SQL already is, history in the lake).
//!
//! The job reads every partition of its topics outside any consumer
//! group's assignment, from the positions the store's database holds, and
//! writes each batch's rows (by binary `COPY` into the day partitions of
//! their event time) and the positions it read up to in one transaction:
//! exactly once across crashes and restarts (see
//! [`logpipe_sinks::postgres::hot`]). A second copy of a retried record is
//! dropped by the same duplicate check the lake job uses, rebuilt from the
//! bus at start. Records older than the retention when read are not
//! written (they are in the lake); day partitions that end before the
//! retention cutoff are dropped every minute.
//!
//! One process should run it (a second one's transactions are fenced and
//! roll back, so nothing doubles, but the work is wasted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use logpipe_bus::{Bus, TopicPartition};
use logpipe_config::HotStoreConfig;
use logpipe_core::record::RecordKind;
use logpipe_core::tables::{self, BatchBuilder};
use logpipe_lake::{LakeError, Offsets};
use logpipe_sinks::postgres::PgError;
use logpipe_sinks::postgres::hot::{DayRows, HotStore, PositionMove};
use tokio::time::Instant;

use crate::error::StreamError;
use crate::raw::parse::parse_all;
use crate::runtime::dedup::Dedups;
use crate::runtime::{Job, Shutdown, run_restarting};

pub mod metrics;

use metrics::hot_metrics;

/// The store's rows in `logpipe_hot_positions`.
const STORE: &str = "hot";
/// The consumer group its progress is reported under (the database's
/// positions are what count).
pub const GROUP: &str = "logpipe-hot-store";
/// How often day partitions past the retention are looked for.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Invalid records logged per batch (all are counted).
const INVALID_LOGGED: u64 = 5;

/// The hot store job.
pub struct HotStoreJob {
    bus: Arc<dyn Bus>,
    url: String,
    config: HotStoreConfig,
    /// The raw tables `config.tables` names.
    kinds: Vec<RecordKind>,
    /// Offsets per partition within which a repeated record id is dropped
    /// (`lake.dedup_window`: the same rule as the lake's).
    dedup_window: u64,
}

impl HotStoreJob {
    pub fn new(
        bus: Arc<dyn Bus>,
        url: String,
        config: HotStoreConfig,
        dedup_window: u64,
    ) -> HotStoreJob {
        let kinds = RecordKind::ALL
            .into_iter()
            .filter(|kind| config.tables.iter().any(|t| t == kind.table()))
            .collect();
        HotStoreJob {
            bus,
            url,
            config,
            kinds,
            dedup_window,
        }
    }

    /// Runs until `shutdown`; starts again from the database's positions
    /// after a failure of PostgreSQL or the bus.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), StreamError> {
        hot_metrics();
        run_restarting(&self, shutdown).await
    }

    /// Event times before this are past the retention.
    fn cutoff(&self) -> DateTime<Utc> {
        Utc::now() - self.config.retention
    }
}

impl Job for HotStoreJob {
    type Error = StreamError;

    fn name(&self) -> &str {
        "hot_store"
    }

    async fn attempt(&self, shutdown: &mut Shutdown) -> Result<(), StreamError> {
        let mut store = HotStore::connect(&self.url, &self.config.schema).await?;
        let kinds = &self.kinds;
        for kind in kinds {
            let def = tables::of_kind(*kind);
            let schema = def.schema.map(|schema| schema()).ok_or(StreamError::Task {
                what: "hot store",
                reason: format!("table {} has no schema", def.name),
            })?;
            store.ensure_table(kind.table(), &schema).await?;
        }
        let held = store.positions(STORE).await?;
        let topics: Vec<&str> = kinds.iter().map(|kind| kind.topic()).collect();
        let mut consumer = self.bus.reader(GROUP, &topics).await?;
        // What the database holds per partition (`None`: no row yet), and
        // where reading starts.
        let mut positions: BTreeMap<(String, u32), Option<u64>> = BTreeMap::new();
        let mut starts = Offsets::new();
        for tp in consumer.assignment() {
            let oldest = consumer
                .start_offsets(&tp.topic)?
                .get(tp.partition as usize)
                .copied()
                .unwrap_or(0);
            let from = held.get(&(tp.topic.clone(), tp.partition)).copied();
            let start = match from {
                Some(next) if next < oldest => {
                    let lost = oldest - next;
                    if let Some(kind) = RecordKind::of_topic(&tp.topic) {
                        hot_metrics()
                            .records_skipped
                            .add(&[kind.table(), "lost"], lost);
                    }
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, next, oldest, lost, "the bus's retention deleted records the hot store had not written; continuing from the oldest kept (the lake has them)");
                    oldest
                }
                Some(next) => next,
                None => oldest,
            };
            consumer.seek(&tp.topic, tp.partition, start)?;
            starts
                .entry(tp.topic.clone())
                .or_default()
                .insert(tp.partition, start);
            positions.insert((tp.topic.clone(), tp.partition), from);
        }
        let mut dedups = Dedups::new(self.dedup_window);
        dedups
            .warm_up(self.bus.as_ref(), "hot_store", &starts)
            .await?;
        tracing::info!(target = %store.url(), schema = %self.config.schema, partitions = positions.len(), "hot store writing");
        let mut next_retention = Instant::now();
        loop {
            if *shutdown.borrow() {
                consumer.close().await;
                return Ok(());
            }
            if Instant::now() >= next_retention {
                self.expire(&mut store).await;
                next_retention = Instant::now() + RETENTION_EVERY;
            }
            let records = tokio::select! {
                records = consumer.poll(self.config.batch, self.config.linger) => records?,
                _ = shutdown.wait_for(|stopped| *stopped) => continue,
            };
            if records.is_empty() {
                self.show_lag(&positions);
                continue;
            }
            let cutoff = self.cutoff().timestamp_micros();
            let metrics = hot_metrics();
            let mut builders: BTreeMap<(RecordKind, NaiveDate), BatchBuilder> = BTreeMap::new();
            let mut moved: BTreeMap<(Arc<str>, u32), u64> = BTreeMap::new();
            let mut invalid = 0u64;
            for (record, parsed) in parse_all(records).await? {
                moved.insert((record.topic.clone(), record.partition), record.offset + 1);
                let (Some(parsed), Some(kind)) = (parsed, RecordKind::of_topic(&record.topic))
                else {
                    continue;
                };
                if dedups.is_repeat(&record) {
                    metrics.records_skipped.inc(&[kind.table(), "duplicate"]);
                    continue;
                }
                match parsed {
                    Ok(parsed) => {
                        let micros = parsed.timestamp_micros();
                        if micros < cutoff {
                            metrics.records_expired.inc(&[kind.table()]);
                            continue;
                        }
                        let day = DateTime::from_timestamp_micros(micros)
                            .unwrap_or_default()
                            .date_naive();
                        builders
                            .entry((kind, day))
                            .or_insert_with(|| BatchBuilder::new(kind))
                            .append(&parsed)
                            .map_err(LakeError::from)?;
                    }
                    Err(reason) => {
                        metrics.records_skipped.inc(&[kind.table(), "invalid"]);
                        invalid += 1;
                        if invalid <= INVALID_LOGGED {
                            tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, %reason, "hot store: skipping an invalid record on the bus");
                        }
                    }
                }
            }
            let mut batches = Vec::with_capacity(builders.len());
            for ((kind, day), mut builder) in builders {
                batches.push((kind, day, builder.finish().map_err(LakeError::from)?));
            }
            let rows: Vec<DayRows<'_>> = batches
                .iter()
                .map(|(kind, day, batch)| DayRows {
                    table: kind.table(),
                    day: *day,
                    batch,
                })
                .collect();
            let moves: Vec<PositionMove> = moved
                .iter()
                .map(|((topic, partition), to)| PositionMove {
                    topic: topic.to_string(),
                    partition: *partition,
                    from: positions
                        .get(&(topic.to_string(), *partition))
                        .copied()
                        .flatten(),
                    to: *to,
                })
                .collect();
            match store.write(STORE, &rows, &moves).await {
                Ok(_) => {}
                Err(error @ PgError::Fenced { .. }) => {
                    metrics.fenced.inc();
                    return Err(error.into());
                }
                Err(error) => return Err(error.into()),
            }
            metrics.transactions.inc();
            for (kind, _, batch) in &batches {
                metrics
                    .rows_written
                    .add(&[kind.table()], batch.num_rows() as u64);
            }
            for moved in &moves {
                positions.insert((moved.topic.clone(), moved.partition), Some(moved.to));
            }
            let progress: Vec<(TopicPartition, u64)> = moves
                .iter()
                .map(|moved| {
                    (
                        TopicPartition {
                            topic: moved.topic.clone(),
                            partition: moved.partition,
                        },
                        moved.to,
                    )
                })
                .collect();
            if let Err(error) = consumer.commit(&progress).await {
                tracing::debug!(%error, "hot store could not report its progress to the bus");
            }
            self.show_lag(&positions);
        }
    }
}

impl HotStoreJob {
    /// Drops the day partitions past the retention; a failure waits for
    /// the next pass (nothing is lost by keeping rows longer).
    async fn expire(&self, store: &mut HotStore) {
        let cutoff = self.cutoff();
        for kind in &self.kinds {
            match store.drop_before(kind.table(), cutoff).await {
                Ok(dropped) => {
                    for name in &dropped {
                        hot_metrics().partitions_dropped.inc(&[kind.table()]);
                        tracing::info!(partition = %name, "hot store: day past the retention dropped");
                    }
                }
                Err(error) => {
                    tracing::warn!(table = kind.table(), %error, "hot store: dropping old days failed; trying again in a minute");
                }
            }
        }
    }

    /// Sets the lag gauge from the bus's log ends.
    fn show_lag(&self, positions: &BTreeMap<(String, u32), Option<u64>>) {
        let mut behind = 0u64;
        for kind in &self.kinds {
            let Ok(ends) = self.bus.end_offsets(kind.topic()) else {
                continue;
            };
            for (partition, end) in ends.iter().enumerate() {
                let next = positions
                    .get(&(kind.topic().to_string(), partition as u32))
                    .copied()
                    .flatten()
                    .unwrap_or(0);
                behind += end.saturating_sub(next);
            }
        }
        hot_metrics().lag.set(behind as f64);
    }
}
