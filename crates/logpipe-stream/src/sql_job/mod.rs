//! Streaming jobs written in SQL: a windowed aggregation over `logs` or
//! `events` (the subset of `logpipe_query::stream_sql`, docs/jobs.md) into a
//! lake table of its own, exactly once across kill -9.
//!
//! The job works as the built-in window job does ([`crate::windows`]):
//! every step (one second) it writes a lake commit record holding the bus
//! offsets it consumed *and* its whole state (the open windows with their
//! accumulators, the event clock) *and* the step's output (the windows
//! that closed), then the output's Parquet files. A restart resumes from
//! the newest commit record and completes its files if they are missing:
//! state and offsets belong together, so no record is counted twice and no
//! window is lost or written twice.
//!
//! The jobs over one topic run together ([`SqlJobs`]): each record is read
//! and parsed once for all of them, and each keeps its own commit chain.
//! A job reads every partition of its topic, as the window job does; the
//! jobs spread over the processes running them by claims ([`claims`]).
//!
//! After each commit a job's step goes to its sinks, as the window job's
//! does: its rows upserted into PostgreSQL (a table named after the job,
//! unique on the window and keys), posted to its webhook, and the alerts
//! its `-- alert:` rules raised ([`alerts`]) to `alerts.realtime` and the
//! alert webhook. A restart re-delivers the last committed step (the
//! upsert replaces, the webhook sees the same `Idempotency-Key`, alerts
//! keep their `alert_id`).
//!
//! | file | what |
//! |---|---|
//! | [`aggregator`] | the open windows and their accumulators (the window job's too) |
//! | `eval.rs` | filters, keys and inputs compiled to column slots, per record |
//! | `output.rs` | closed windows as rows of the job's table |
//! | [`alerts`] | alert rules over the rows, with their streaks |
//! | [`metrics`] | the `logpipe_sql_job_*` figures, per job |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use logpipe_bus::Bus;
use logpipe_config::DataLossPolicy;
use logpipe_core::record::{Record, RecordKind, ValidationLimits};
use logpipe_core::stream_sql::{AlertRule, OutputColumn, StreamSource, StreamSpec};
use logpipe_core::tables::{ALERTS, TableDef};
use logpipe_core::time::now_micros;
use logpipe_core::topics;
use logpipe_lake::{Lake, LakeError, Offsets, TableGroups, plan_files};
use logpipe_sinks::{RowWrite, StepOutput, StepSink, TableRows, deliver_all};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::StreamError;
use crate::runtime::dedup::Dedups;
use crate::runtime::poller::Poller;
use crate::runtime::positions::{
    closed_on_error, partitions_of, read_through, report_progress, resume,
};
use crate::runtime::{Job, Shutdown, clock, run_restarting};

pub mod aggregator;
pub mod alerts;
pub mod claims;
mod eval;
pub mod metrics;
pub(crate) mod output;

use aggregator::{Group, Snapshot, SqlAggregator};
use alerts::{AlertsState, RowAlerts};

use crate::alerts::table::{alerts_batch, by_hour};
use crate::alerts::{Alert, announce};
use crate::runtime::checkpoint::commit_checkpoint;

/// One streaming SQL job.
#[derive(Debug, Clone)]
pub struct SqlJobOptions {
    /// Its name: its commit chain, its table, its files.
    pub name: String,
    pub spec: Arc<StreamSpec>,
    /// Its output table (`streams/NAME` unless the header says otherwise).
    pub table: &'static TableDef,
    /// How long after a window's end records for it still count.
    pub allowed_lateness: Duration,
    /// With no new record for this long, event time follows the clock so
    /// the last windows close.
    pub idle_close: Duration,
    pub step_interval: Duration,
    /// Second copies of a record within this many offsets are not counted
    /// (`lake.dedup_window`, as the lake does).
    pub dedup_window: u64,
    pub on_data_loss: DataLossPolicy,
    /// Its `-- alert:` rules (columns checked by [`check_alerts`]).
    pub alerts: Vec<AlertRule>,
    /// Whether its rows go to PostgreSQL when `postgres.url` is set.
    pub postgres: bool,
    /// Where its rows are posted each step (`-- webhook:`).
    pub webhook: Option<String>,
    /// How long its table's hours are kept (`-- retention:`).
    pub retention: Option<Duration>,
}

/// A job with the sinks its steps go to besides the lake.
#[derive(Clone)]
pub struct SqlJobSinks {
    pub options: SqlJobOptions,
    pub sinks: Vec<Arc<dyn StepSink>>,
}

/// The columns a job's rows are unique on in PostgreSQL: its window start
/// (or end) and its keys, as named in its SELECT; or why it has none.
pub fn upsert_key(spec: &StreamSpec) -> Result<Vec<String>, String> {
    let window = spec
        .output
        .iter()
        .find(|c| matches!(c, OutputColumn::WindowStart(_)))
        .or_else(|| {
            spec.output
                .iter()
                .find(|c| matches!(c, OutputColumn::WindowEnd(_)))
        })
        .ok_or("its SELECT has neither window_start nor window_end, so its rows have no key in PostgreSQL")?;
    let mut key = vec![spec.column_name(window)];
    for (index, name) in spec.keys.iter().enumerate() {
        if !spec.output.contains(&OutputColumn::Key(index)) {
            return Err(format!(
                "its SELECT leaves out the GROUP BY key {name}, so its rows have no key in PostgreSQL"
            ));
        }
        key.push(name.clone());
    }
    Ok(key)
}

/// Whether every `-- alert:` rule watches an aggregate column of the job.
pub fn check_alerts(spec: &StreamSpec, rules: &[AlertRule]) -> Result<(), (usize, String)> {
    for (index, rule) in rules.iter().enumerate() {
        alerts::watched_aggregate(spec, rule).map_err(|reason| (index, reason))?;
    }
    Ok(())
}

/// What a commit record holds for this job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct JobState {
    windows: Snapshot,
    #[serde(default)]
    alert_streaks: AlertsState,
    /// This step's output.
    closed: Vec<Group>,
    #[serde(default)]
    alerts: Vec<Alert>,
    step_micros: i64,
}

/// One job's part of a [`SqlJobs`] run.
struct Slot {
    options: SqlJobOptions,
    schema: SchemaRef,
    sinks: Vec<Arc<dyn StepSink>>,
    /// The upsert key, when a sink takes its rows.
    key: &'static [&'static str],
}

/// The streaming SQL jobs over one topic, run together: each record is
/// read and parsed once and fed to every job, while each job keeps its own
/// commit chain (offsets, state, output). A job whose chain is behind
/// another's (killed between their commits) is fed only the records past
/// its own committed offsets, so each counts every record once.
pub struct SqlJobs {
    bus: Arc<dyn Bus>,
    lake: Lake,
    topic: &'static str,
    name: String,
    slots: Vec<Slot>,
}

impl SqlJobs {
    /// The jobs grouped by the topic they read: one runner per topic.
    pub fn by_topic(bus: Arc<dyn Bus>, lake: Lake, jobs: Vec<SqlJobSinks>) -> Vec<SqlJobs> {
        let mut runners: Vec<SqlJobs> = Vec::new();
        for SqlJobSinks { options, sinks } in jobs {
            let topic = topic_of(options.spec.source);
            // Leaked once per job and process, as its table is.
            let key: Vec<&'static str> = upsert_key(&options.spec)
                .unwrap_or_default()
                .into_iter()
                .map(|name| &*Box::leak(name.into_boxed_str()))
                .collect();
            let slot = Slot {
                schema: output::schema(&options.spec),
                options,
                sinks,
                key: Box::leak(key.into_boxed_slice()),
            };
            match runners.iter_mut().find(|r| r.topic == topic) {
                Some(runner) => runner.slots.push(slot),
                None => runners.push(SqlJobs {
                    bus: bus.clone(),
                    lake: lake.clone(),
                    topic,
                    name: format!("sql jobs on {topic}"),
                    slots: vec![slot],
                }),
            }
        }
        runners
    }

    /// Runs until `shutdown` turns true, then drains, commits and returns.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), StreamError> {
        run_restarting(&self, shutdown).await
    }
}

fn topic_of(source: StreamSource) -> &'static str {
    match source {
        StreamSource::Logs => topics::LOGS_RAW,
        StreamSource::Events => topics::EVENTS_ACTIVITY,
    }
}

/// A job's running part: its aggregator, where its chain is, what it
/// committed last.
struct Running {
    aggregator: SqlAggregator,
    alerts: RowAlerts,
    seq: u64,
    /// Offsets its state includes: records below are not fed to it again.
    committed: Offsets,
    last_record: Instant,
    /// Counted and late records already added to the metrics.
    reported: (u64, u64),
}

impl Slot {
    /// A step's files: the job's rows and its alerts, by hour.
    fn groups(&self, state: &JobState) -> Result<TableGroups, StreamError> {
        let lake_error = |e| StreamError::from(LakeError::from(e));
        let mut groups = output::output_groups(
            &self.options.spec,
            &self.schema,
            self.options.table,
            &state.closed,
        )
        .map_err(lake_error)?;
        for (hour, rows) in by_hour(&state.alerts, |a| a.window_start_micros) {
            groups.insert(
                (&ALERTS, hour),
                alerts_batch(&rows, state.step_micros)
                    .map_err(lake_error)?
                    .into(),
            );
        }
        Ok(groups)
    }

    /// Gives a committed step to the job's sinks; false when shutdown
    /// came while a blocking one was retried (the next start re-delivers).
    async fn deliver(
        &self,
        seq: u64,
        state: &JobState,
        groups: &TableGroups,
        shutdown: &mut Shutdown,
    ) -> bool {
        if self.sinks.is_empty() {
            return true;
        }
        let alerts = announce(&self.options.name, &state.alerts, state.step_micros);
        let tables = groups
            .iter()
            .filter(|((table, _), _)| std::ptr::eq(*table, self.options.table))
            .flat_map(|(_, rows)| rows.parts())
            .map(|batch| TableRows {
                name: self.options.table.name,
                batch,
                write: RowWrite::UpsertCreating { key: self.key },
            })
            .collect();
        let output = StepOutput {
            job: &self.options.name,
            step: seq,
            tables,
            alerts: &alerts,
        };
        deliver_all(&self.sinks, &output, shutdown).await
    }

    /// Restores the job from its newest commit record, completing that
    /// step's files when they are missing; returns it with that step when
    /// the job has sinks (to deliver again).
    async fn restore(
        &self,
        lake: &Lake,
    ) -> Result<(Running, Option<(u64, JobState)>), StreamError> {
        let job = &self.options.name;
        let latest = lake.latest_commit(job).await?;
        let state: JobState = match latest.as_ref().and_then(|r| r.state.clone()) {
            Some(value) => serde_json::from_value(value).map_err(|e| StreamError::BadState {
                job: job.clone(),
                reason: e.to_string(),
            })?,
            None => JobState::default(),
        };
        let seq = latest.as_ref().map(|r| r.seq).unwrap_or(0);
        if let Some(record) = &latest {
            let missing = lake.missing_files(record).await?;
            if !missing.is_empty() {
                tracing::warn!(
                    job,
                    seq,
                    files = missing.len(),
                    "completing the job's interrupted commit"
                );
                let groups = self.groups(&state)?;
                let files = plan_files(job, seq, &groups);
                let encoded = lake.encode(groups).await?;
                lake.put_missing(files, encoded, &missing).await?;
            }
        }
        let lateness = self.options.allowed_lateness.as_micros() as i64;
        let alerts = RowAlerts::new(
            job,
            self.options.spec.clone(),
            &self.options.alerts,
            state.alert_streaks.clone(),
        )
        .map_err(|reason| StreamError::BadState {
            job: job.clone(),
            reason,
        })?;
        // Only a job with sinks needs its last step again.
        let last_step = latest
            .as_ref()
            .filter(|_| !self.sinks.is_empty())
            .map(|_| (seq, state.clone()));
        let running = Running {
            aggregator: SqlAggregator::restore(self.options.spec.clone(), lateness, state.windows),
            alerts,
            seq,
            committed: latest.map(|r| r.offsets).unwrap_or_default(),
            last_record: Instant::now(),
            reported: (0, 0),
        };
        Ok((running, last_step))
    }

    async fn commit(
        &self,
        lake: &Lake,
        seq: u64,
        state: &JobState,
        groups: &TableGroups,
        positions: &Offsets,
    ) -> Result<(), StreamError> {
        commit_checkpoint(
            lake,
            &self.options.name,
            seq,
            state,
            state.step_micros,
            groups,
            positions,
        )
        .await
    }
}

/// The least of every job's committed offset, per partition: where the
/// shared read starts. A partition some job has never committed is left
/// out, so the read starts it from the beginning.
fn least(chains: &[Running]) -> Offsets {
    let mut least = Offsets::new();
    let Some((first, rest)) = chains.split_first() else {
        return least;
    };
    for (topic, partitions) in &first.committed {
        for (partition, offset) in partitions {
            let others: Option<Vec<u64>> = rest
                .iter()
                .map(|other| {
                    other
                        .committed
                        .get(topic)
                        .and_then(|p| p.get(partition))
                        .copied()
                })
                .collect();
            if let Some(others) = others {
                let at = others.into_iter().fold(*offset, u64::min);
                partitions_of(&mut least, topic).insert(*partition, at);
            }
        }
    }
    least
}

impl Job for SqlJobs {
    type Error = StreamError;

    fn name(&self) -> &str {
        &self.name
    }

    async fn attempt(&self, shutdown: &mut Shutdown) -> Result<(), StreamError> {
        let mut chains = Vec::new();
        for slot in &self.slots {
            let (running, last_step) = slot.restore(&self.lake).await?;
            // The last step's output may not have reached the sinks.
            if let Some((seq, state)) = last_step {
                let groups = slot.groups(&state)?;
                if !slot.deliver(seq, &state, &groups, shutdown).await {
                    return Ok(());
                }
            }
            chains.push(running);
        }
        let topic = self.topic;
        let mut consumer = self
            .bus
            .reader(&format!("logpipe-sql-{topic}"), &[topic])
            .await?;
        let read: Result<(), StreamError> = async {
            let mut positions = resume(consumer.as_mut(), &least(&chains))?;
            let dedup_window = self.slots.iter().map(|s| s.options.dedup_window).max().unwrap_or(0);
            let mut dedups = Dedups::new(dedup_window);
            dedups.warm_up(&*self.bus, &self.name, &positions).await?;
            for (slot, running) in self.slots.iter().zip(&chains) {
                tracing::info!(
                    job = slot.options.name,
                    seq = running.seq,
                    open_groups = running.aggregator.open_groups(),
                    "streaming SQL job resumes"
                );
            }
            let kind = RecordKind::of_topic(topic);
            let limits = ValidationLimits::structure_only();
            let step_interval = self.slots.iter().map(|s| s.options.step_interval).min().unwrap_or(Duration::from_secs(1));
            let on_data_loss = self.slots[0].options.on_data_loss;
            let mut next_step = Instant::now() + step_interval;
            let mut last_step = Instant::now();
            let mut poller = Poller::new("sql jobs", on_data_loss);
            let mut invalid = 0u64;
            let mut partition_max: BTreeMap<u32, i64> = BTreeMap::new();
            loop {
                let wait = next_step.saturating_duration_since(Instant::now());
                let Some(records) = poller
                    .poll_reader(consumer.as_mut(), wait, shutdown, &mut positions)
                    .await?
                else {
                    continue;
                };
                let drained = records.is_empty();
                for record in &records {
                    partitions_of(&mut positions, &record.topic).insert(record.partition, record.offset + 1);
                    if dedups.is_repeat(record) {
                        continue;
                    }
                    let parsed =
                        kind.and_then(|kind| Record::from_bus(kind, &record.value, &limits).ok());
                    let Some(parsed) = parsed else {
                        invalid += 1;
                        continue;
                    };
                    let micros = parsed.timestamp_micros();
                    let seen = partition_max.entry(record.partition).or_insert(i64::MIN);
                    *seen = (*seen).max(micros);
                    for running in chains.iter_mut() {
                        // Already in this job's state (its chain is ahead).
                        let done = running
                            .committed
                            .get(&*record.topic)
                            .and_then(|p| p.get(&record.partition))
                            .is_some_and(|at| record.offset < *at);
                        if !done {
                            running.aggregator.observe(&parsed, micros);
                            running.last_record = Instant::now();
                        }
                    }
                }
                if let Some(limit) = clock::limit(
                    &*self.bus,
                    topic,
                    &read_through(consumer.as_ref(), &positions),
                    &partition_max,
                ) {
                    for running in chains.iter_mut() {
                        running.aggregator.advance_to(limit);
                    }
                }
                let finishing = poller.finishing(drained);
                if Instant::now() < next_step && !finishing {
                    continue;
                }
                next_step = Instant::now() + step_interval;
                if invalid > 0 {
                    tracing::warn!(topic, invalid, "records the streaming SQL jobs could not read were skipped (the raw→lake job reports them)");
                    invalid = 0;
                }
                let since_last_step = last_step.elapsed();
                last_step = Instant::now();
                let metrics = metrics::sql_job_metrics();
                for (slot, running) in self.slots.iter().zip(chains.iter_mut()) {
                    let name = slot.options.name.as_str();
                    if running.last_record.elapsed() >= slot.options.idle_close && !finishing {
                        running.aggregator.advance_idle(since_last_step.as_micros() as i64);
                    }
                    let closed = running.aggregator.close_ready();
                    let alerts = running.alerts.observe(&closed);
                    if positions != running.committed || !closed.is_empty() || !alerts.is_empty() {
                        running.seq += 1;
                        let step = JobState {
                            windows: running.aggregator.snapshot(),
                            alert_streaks: running.alerts.state().clone(),
                            closed,
                            alerts,
                            step_micros: now_micros(),
                        };
                        let groups = slot.groups(&step)?;
                        slot.commit(&self.lake, running.seq, &step, &groups, &positions).await?;
                        running.committed = positions.clone();
                        metrics.windows_closed.add(&[name], step.closed.len() as u64);
                        for alert in &step.alerts {
                            metrics.alerts.inc(&[name, alert.rule.as_str(), alert.state.as_str()]);
                        }
                        metrics.alerts_firing.set(&[name], running.alerts.firing() as f64);
                        if !slot.deliver(running.seq, &step, &groups, shutdown).await {
                            consumer.close().await;
                            return Ok(());
                        }
                    }
                    let aggregator = &running.aggregator;
                    let (counted, late) = (aggregator.counted(), aggregator.late_records());
                    metrics.records.add(&[name], counted.saturating_sub(running.reported.0));
                    // The first step after a start adds the checkpointed
                    // late count, later steps what is new.
                    metrics.late_records.add(&[name], late.saturating_sub(running.reported.1));
                    running.reported = (counted, late);
                    metrics.open_windows.set(&[name], aggregator.open_groups() as f64);
                    if let Some(micros) = aggregator.event_time_micros() {
                        metrics.event_time_seconds.set(&[name], micros as f64 / 1e6);
                    }
                }
                report_progress(consumer.as_mut(), &positions).await;
                if finishing {
                    consumer.close().await;
                    for (slot, running) in self.slots.iter().zip(&chains) {
                        tracing::info!(
                            job = slot.options.name,
                            seq = running.seq,
                            late = running.aggregator.late_records(),
                            "streaming SQL job drained and committed"
                        );
                    }
                    return Ok(());
                }
            }
        }
        .await;
        closed_on_error(consumer.as_mut(), read).await
    }
}
