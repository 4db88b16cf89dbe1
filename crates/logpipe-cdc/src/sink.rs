//! One `[[cdc.sinks]]` running: read change topics, apply each batch and
//! its positions in one target transaction, repeat.
//!
//! The sink reads every partition of its topics outside any consumer
//! group's assignment (one process per sink: a second would apply the same
//! changes twice, harmless but wasteful) and starts where the target says
//! it stopped. Any failure of the target or the bus is retried with
//! backoff from those positions again, so a transaction whose commit was
//! lost on the way is neither skipped nor applied twice. Two failures are
//! not retried, because waiting cannot fix them: a record that is not a
//! change event, and changes deleted by the topic's retention before the
//! sink applied them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use logpipe_bus::{Bus, BusError};
use logpipe_config::CdcSinkConfig;
use logpipe_core::error::{Classify, ErrorKind};
use logpipe_core::job::Shutdown;
use logpipe_core::retry::Backoff;

use crate::event::{Decoded, EventError, SqlType, decode};
use crate::metrics::cdc_metrics;
use crate::plan::{Mapping, Planner};
use crate::score::{ScoreError, Scorer};
use crate::step::TableStep;
use crate::target::{Target, TargetError, TargetTable};

/// Why a sink stopped or had to start over.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("the bus: {0}")]
    Bus(#[from] BusError),
    #[error(
        "sink {sink}: {topic} partition {partition} offset {offset} cannot be applied: {source}"
    )]
    Event {
        sink: String,
        topic: String,
        partition: u32,
        offset: u64,
        #[source]
        source: EventError,
    },
    #[error(
        "sink {sink}: {topic} partition {partition} holds changes from offset {oldest} on, but the target has applied them only up to offset {next}: the topic's retention deleted {lost} change(s) this sink never applied. The target is missing them; take a new snapshot of the source (Debezium: a new connector name or snapshot.mode) and drop the sink's rows in logpipe_cdc_positions"
    )]
    Lost {
        sink: String,
        topic: String,
        partition: u32,
        next: u64,
        oldest: u64,
        lost: u64,
    },
    /// `who`: "sink NAME" or "source NAME".
    #[error("{who}: {what}")]
    Setting { who: String, what: String },
    #[error("the source database, {context}: {source}")]
    Source {
        context: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("finding where to resume: {0}")]
    Resume(String),
    #[error(transparent)]
    Score(#[from] ScoreError),
}

impl CdcError {
    /// Waiting does not fix it.
    pub(crate) fn is_permanent(&self) -> bool {
        !self.is_transient()
    }
}

impl Classify for CdcError {
    fn kind(&self) -> ErrorKind {
        match self {
            CdcError::Setting { .. } => ErrorKind::Config,
            CdcError::Event { .. } => ErrorKind::Input,
            CdcError::Lost { .. } => ErrorKind::DataLoss,
            CdcError::Target(_)
            | CdcError::Bus(_)
            | CdcError::Source { .. }
            | CdcError::Resume(_)
            | CdcError::Score(_) => ErrorKind::Transient,
        }
    }
}

/// A password from `password_env` or `password_file`; `Err` says which
/// is missing.
pub(crate) fn read_password(
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    logpipe_config::read_secret(env, file).map_err(|reason| {
        let setting = if env.is_some() {
            "password_env"
        } else {
            "password_file"
        };
        format!("{setting}: {reason}")
    })
}

/// A configured sink and the bus it reads.
pub struct CdcSink {
    config: CdcSinkConfig,
    bus: Arc<dyn Bus>,
}

/// Waits between attempts after a failure.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

impl CdcSink {
    pub fn new(config: CdcSinkConfig, bus: Arc<dyn Bus>) -> CdcSink {
        CdcSink { config, bus }
    }

    /// The consumer group whose committed offsets show the sink's progress.
    pub fn group(&self) -> String {
        format!("logpipe-cdc-{}", self.config.name)
    }

    /// The target's password from `password_env` or `password_file`.
    fn password(&self) -> Result<Option<String>, CdcError> {
        read_password(
            self.config.password_env.as_deref(),
            self.config.password_file.as_deref(),
        )
        .map_err(|what| CdcError::Setting {
            who: format!("sink {}", self.config.name),
            what,
        })
    }

    /// Runs until `shutdown`, or a failure waiting cannot fix.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), CdcError> {
        let password = self.password()?;
        let name = self.config.name.clone();
        let metrics = cdc_metrics();
        metrics.transactions.touch(&[&name]);
        metrics.errors.touch(&[&name]);
        let mut backoff = BACKOFF;
        loop {
            match self
                .session(password.as_deref(), &mut shutdown, &mut backoff)
                .await
            {
                Ok(()) => return Ok(()),
                Err(error) if error.is_permanent() => return Err(error),
                Err(error) => {
                    metrics.errors.inc(&[&name]);
                    let delay = backoff.next_delay();
                    tracing::warn!(sink = %name, %error, retry_in = ?delay, "CDC sink failed; starting again from the positions in the target");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|stopped| *stopped) => return Ok(()),
                    }
                }
            }
        }
    }

    /// Waits until every topic exists (Debezium makes a table's topic with
    /// its first change). `false`: stopped while waiting.
    async fn wait_for_topics(&self, shutdown: &mut Shutdown) -> Result<bool, CdcError> {
        let mut told = false;
        loop {
            let bus = self.bus.clone();
            let topics = self.config.topics.clone();
            let missing: Vec<String> = tokio::task::spawn_blocking(move || {
                topics
                    .into_iter()
                    .filter(|topic| matches!(bus.partitions(topic), Err(BusError::UnknownTopic(_))))
                    .collect()
            })
            .await
            .unwrap_or_default();
            if missing.is_empty() {
                return Ok(true);
            }
            if !told {
                tracing::info!(sink = %self.config.name, topics = %missing.join(", "), "CDC sink waiting for its topics (a Debezium connector makes each with the table's first change)");
                told = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|stopped| *stopped) => return Ok(false),
            }
        }
    }

    async fn session(
        &self,
        password: Option<&str>,
        shutdown: &mut Shutdown,
        backoff: &mut Backoff,
    ) -> Result<(), CdcError> {
        let name = self.config.name.as_str();
        let metrics = cdc_metrics();
        if !self.wait_for_topics(shutdown).await? {
            return Ok(());
        }
        let mut target = Target::connect(&self.config.url, password, &self.config.schema).await?;
        let applied = target.positions(name).await?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        let mut consumer = self.bus.reader(&self.group(), &topics).await?;
        // Next offset per partition, from the target (else the oldest kept).
        let mut positions: BTreeMap<(String, u32), u64> = BTreeMap::new();
        let mut oldest: HashMap<String, Vec<u64>> = HashMap::new();
        for tp in consumer.assignment() {
            if !oldest.contains_key(&tp.topic) {
                oldest.insert(tp.topic.clone(), consumer.start_offsets(&tp.topic)?);
            }
            let first = oldest[&tp.topic]
                .get(tp.partition as usize)
                .copied()
                .unwrap_or(0);
            let next = match applied.get(&(tp.topic.clone(), tp.partition)) {
                Some(&next) if next < first => {
                    return Err(CdcError::Lost {
                        sink: name.to_string(),
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        next,
                        oldest: first,
                        lost: first - next,
                    });
                }
                Some(&next) => next,
                None => first,
            };
            consumer.seek(&tp.topic, tp.partition, next)?;
            positions.insert((tp.topic.clone(), tp.partition), next);
        }
        tracing::info!(sink = %name, target = %target.url(), partitions = positions.len(), "CDC sink applying changes");
        let schema = target.default_schema(&self.config.schema).to_string();
        let mappings: HashMap<String, Mapping> = self
            .config
            .topics
            .iter()
            .map(|topic| (topic.clone(), Mapping::of(&self.config, topic, &schema)))
            .collect();
        // The scoring hooks, by target table.
        let scorers: HashMap<String, Scorer> = self
            .config
            .tables
            .iter()
            .filter_map(|t| Some((mappings.get(&t.topic)?.key(), Scorer::new(t.score.clone()?))))
            .collect();
        let mut tables: HashMap<String, TargetTable> = HashMap::new();
        let mut newest_source_ms: Option<i64> = None;
        loop {
            if *shutdown.borrow() {
                consumer.close().await;
                return Ok(());
            }
            let records = tokio::select! {
                records = consumer.poll(self.config.batch, self.config.linger) => records?,
                _ = shutdown.wait_for(|stopped| *stopped) => continue,
            };
            if records.is_empty() {
                self.show_lag(&positions, newest_source_ms);
                continue;
            }
            let mut planner = Planner::default();
            // Per partition: the next offset and the newest source time.
            // Keyed by the records' shared topic name: no copy per record.
            let mut moved: BTreeMap<(Arc<str>, u32), (u64, Option<i64>)> = BTreeMap::new();
            for record in &records {
                let decoded =
                    decode(&record.key, &record.value).map_err(|source| CdcError::Event {
                        sink: name.to_string(),
                        topic: record.topic.to_string(),
                        partition: record.partition,
                        offset: record.offset,
                        source,
                    })?;
                let entry = moved
                    .entry((record.topic.clone(), record.partition))
                    .or_insert((0, None));
                entry.0 = record.offset + 1;
                if let Decoded::Change(change) = decoded {
                    if let Some(ms) = change.source_ms {
                        entry.1 = Some(entry.1.map_or(ms, |m: i64| m.max(ms)));
                    }
                    let mapping = &mappings[record.topic.as_ref()];
                    planner.add(mapping, change);
                }
            }
            for plan in planner.tables() {
                let key = plan.mapping.key();
                if tables.contains_key(&key) {
                    continue;
                }
                let (schema, table) = (&plan.mapping.schema, &plan.mapping.table);
                let described = match target.describe(schema, table).await? {
                    Some(described) => described,
                    None => {
                        target
                            .create(schema, table, &plan.first_columns(), &plan.key)
                            .await?;
                        target
                            .describe(schema, table)
                            .await?
                            .ok_or_else(|| TargetError::Table {
                                table: key.clone(),
                                reason: "missing right after it was created".into(),
                            })?
                    }
                };
                if described.key.is_empty() {
                    return Err(CdcError::Setting {
                        who: format!("sink {name}"),
                        what: format!(
                            "target table {} has no primary key: changes are applied by key; add PRIMARY KEY ({})",
                            described.display(),
                            plan.key.join(", ")
                        ),
                    });
                }
                tables.insert(key, described);
            }
            let counts = std::mem::take(&mut planner.counts);
            let mut steps = planner.steps();
            if !scorers.is_empty() {
                steps = score(name, &scorers, steps).await?;
            }
            let written: Vec<(String, u32, u64, Option<i64>)> = moved
                .iter()
                .map(|((topic, partition), (next, ms))| (topic.to_string(), *partition, *next, *ms))
                .collect();
            target.apply(name, &mut tables, steps, &written).await?;
            backoff.reset();
            metrics.transactions.inc(&[name]);
            for ((table, op), count) in counts {
                metrics.changes_applied.add(&[name, &table, op], count);
            }
            for ((topic, partition), (next, ms)) in moved {
                positions.insert((topic.to_string(), partition), next);
                if let Some(ms) = ms {
                    newest_source_ms = Some(newest_source_ms.map_or(ms, |m| m.max(ms)));
                }
            }
            // Progress for `kafka-consumer-groups` and lag dashboards; the
            // target's positions are what counts.
            let progress: Vec<(logpipe_bus::TopicPartition, u64)> = positions
                .iter()
                .map(|((topic, partition), next)| {
                    (
                        logpipe_bus::TopicPartition {
                            topic: topic.clone(),
                            partition: *partition,
                        },
                        *next,
                    )
                })
                .collect();
            if let Err(error) = consumer.commit(&progress).await {
                tracing::debug!(sink = %name, %error, "CDC sink could not report its progress to the bus");
            }
            self.show_lag(&positions, newest_source_ms);
        }
    }

    /// Sets the lag gauges from the bus's log ends.
    fn show_lag(&self, positions: &BTreeMap<(String, u32), u64>, newest_source_ms: Option<i64>) {
        let name = self.config.name.as_str();
        let mut behind = 0u64;
        for topic in &self.config.topics {
            let Ok(ends) = self.bus.end_offsets(topic) else {
                continue;
            };
            for (partition, end) in ends.iter().enumerate() {
                let next = positions
                    .get(&(topic.clone(), partition as u32))
                    .copied()
                    .unwrap_or(0);
                behind += end.saturating_sub(next);
            }
        }
        let metrics = cdc_metrics();
        metrics.lag_events.set(&[name], behind as f64);
        let seconds = match newest_source_ms {
            Some(ms) if behind > 0 => {
                (chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0
            }
            _ => 0.0,
        };
        metrics.lag_seconds.set(&[name], seconds);
    }
}

/// Scores the upserted rows of the tables that have a scoring hook, the
/// score column added before them.
async fn score(
    sink: &str,
    scorers: &HashMap<String, Scorer>,
    steps: Vec<(String, TableStep)>,
) -> Result<Vec<(String, TableStep)>, CdcError> {
    let mut scored = Vec::with_capacity(steps.len());
    for (table, step) in steps {
        match (scorers.get(&table), step) {
            (
                Some(scorer),
                TableStep::Upserts {
                    mut columns,
                    mut rows,
                },
            ) => {
                scorer.score(sink, &mut rows).await?;
                let column = scorer.column().to_string();
                scored.push((
                    table.clone(),
                    TableStep::Columns(vec![(column.clone(), SqlType::Double)]),
                ));
                if !columns.contains(&column) {
                    columns.push(column);
                }
                scored.push((table, TableStep::Upserts { columns, rows }));
            }
            (_, step) => scored.push((table, step)),
        }
    }
    Ok(scored)
}
