//! The window job: 5-second aggregates and anomaly alerts from `logs.raw`.
//! Its windows are a streaming SQL job's: the statement in
//! `jobs/windows.sql` ([`WINDOWS_SQL`]: one row per window, service and
//! level carrying the whole service's figures) run by the SQL jobs'
//! aggregator ([`crate::sql_job`]); each service's figures then feed the
//! detector of [`crate::alerts`]. What sets it apart from a job of your
//! own is where its rows go (the `windows` table and PostgreSQL's
//! `window_stats`, which dashboards and reports read), the detector, and
//! its reading: the columns it needs come from the summary header.
//!
//! **Exactly once, by checkpointing state with offsets.** Every step (one
//! second by default) the job writes a lake commit record holding the bus
//! offsets it has consumed *and* its whole state: the open windows (with
//! their latency sketches), the watermark, the detector's per-service state,
//! and this step's output (the windows that closed and the alerts raised).
//! Then it writes that output as Parquet (tables `windows`, `alerts`),
//! upserts the windows into PostgreSQL and publishes the alerts. A restart
//! resumes from the newest commit record: the state and the offsets belong
//! together, so no record is counted twice and no window is lost, and the
//! last step's output is re-delivered — rebuilt from the commit record if
//! its files are missing, upserted again (the upsert replaces by key), and
//! re-published with the same `alert_id` (notifications are at least once).
//!
//! Only the fields a window needs are read from each record (timestamp,
//! level, service, latency, status: `logpipe_core::record::sample`), from
//! the summary header or borrowing from the bus buffer, which keeps the
//! job's cost well below the raw→lake job's full parse.
//!
//! A step's output goes to the sinks the application gives the job. If a
//! blocking one (PostgreSQL) is down the job retries with backoff and does
//! not take the next step until the write succeeds: records wait on the
//! bus (the lag metric shows it) and nothing is skipped.
//!
//! | file | what |
//! |---|---|
//! | `builtin.rs` | the statement, and each service's figures from its rows |
//! | `clock.rs` | how far the event clock may move |
//! | `state.rs` | the state checkpointed in each commit record |
//! | `output.rs` | a step's rows for the `windows` and `alerts` tables |
//! | [`metrics`] | the `logpipe_window_*` and `logpipe_alerts_*` figures |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use logpipe_bus::Bus;
use logpipe_config::{AlertsConfig, DataLossPolicy, LakeConfig, WINDOWS_GROUP, WindowsConfig};
use logpipe_core::record::sample::sample_of;
use logpipe_core::record::summary;
use logpipe_core::stream_sql::StreamSpec;
use logpipe_core::tables::WINDOWS;
use logpipe_core::tables::windows::{WINDOW_STATS_KEY, WINDOW_STATS_TABLE};
use logpipe_core::time::now_micros;
use logpipe_core::topics;
use logpipe_lake::{Lake, LakeError, Offsets, TableGroups, plan_files};
use logpipe_sinks::{RowWrite, StepOutput, StepSink, TableRows, deliver_all};
use tokio::time::Instant;

use crate::alerts::{AlertRules, Detector, announce};
use crate::error::StreamError;
use crate::runtime::checkpoint::commit_checkpoint;
use crate::runtime::dedup::Dedups;
use crate::runtime::poller::Poller;
use crate::runtime::positions::{
    closed_on_error, partitions_of, read_through, report_progress, resume,
};
use crate::runtime::{Job, Shutdown, run_restarting};

mod builtin;
mod clock;
pub mod metrics;
pub(crate) mod output;
mod state;

use crate::sql_job::aggregator::SqlAggregator;
use builtin::Columns;
pub use builtin::WINDOWS_SQL;
use metrics::window_metrics;
use output::output_groups;
use state::JobState;

#[derive(Debug, Clone)]
pub struct WindowJobOptions {
    /// Names the commit records and files (`part-<job>-…`).
    pub job: String,
    /// Consumer group for lag reporting.
    pub group: String,
    pub logs_topic: String,
    /// The statement ([`WINDOWS_SQL`], its window set from `[windows]`).
    pub spec: Arc<StreamSpec>,
    /// How long after a window's end records for it are still counted.
    pub allowed_lateness: Duration,
    /// How often the job closes windows and commits.
    pub step_interval: Duration,
    /// With no new record for this long, event time advances with the
    /// clock so the last windows close (and silence is noticed).
    pub idle_close: Duration,
    /// `None`: no anomaly detection.
    pub rules: Option<AlertRules>,
    /// Second copies of a record (same id, within this many offsets) are
    /// not counted: `lake.dedup_window`, so windows count what the lake
    /// holds.
    pub dedup_window: u64,
    pub on_data_loss: DataLossPolicy,
}

impl WindowJobOptions {
    /// The options `[windows]`, `[alerts]` and `lake.on_data_loss` describe,
    /// running `spec` (the parsed [`WINDOWS_SQL`]) with `[windows] size` as
    /// its window. Refused when the statement cannot make the `windows`
    /// table's rows and each service's figures.
    pub fn from_config(
        spec: StreamSpec,
        windows: &WindowsConfig,
        alerts: &AlertsConfig,
        lake: &LakeConfig,
    ) -> Result<Self, String> {
        let mut spec = spec;
        let size = (windows.size.as_micros() as i64).max(1);
        spec.size_micros = size;
        spec.slide_micros = size;
        Columns::of(&spec)?;
        Ok(WindowJobOptions {
            job: "windows".to_string(),
            group: WINDOWS_GROUP.to_string(),
            logs_topic: topics::LOGS_RAW.to_string(),
            spec: Arc::new(spec),
            allowed_lateness: windows.allowed_lateness,
            step_interval: Duration::from_secs(1),
            idle_close: windows.idle_close,
            rules: alerts.enabled.then(|| AlertRules::from(alerts)),
            on_data_loss: lake.on_data_loss,
            dedup_window: lake.dedup_window,
        })
    }
}

pub struct WindowJob {
    bus: Arc<dyn Bus>,
    lake: Lake,
    options: WindowJobOptions,
    columns: Columns,
    /// Where each step's windows and alerts go besides the lake.
    sinks: Vec<Arc<dyn StepSink>>,
}

impl WindowJob {
    pub fn new(
        bus: Arc<dyn Bus>,
        lake: Lake,
        options: WindowJobOptions,
        sinks: Vec<Arc<dyn StepSink>>,
    ) -> WindowJob {
        let columns = Columns::of(&options.spec).expect("checked by WindowJobOptions::from_config");
        WindowJob {
            bus,
            lake,
            options,
            columns,
            sinks,
        }
    }

    fn size_micros(&self) -> i64 {
        self.options.spec.size_micros
    }

    fn spec(&self) -> &StreamSpec {
        &self.options.spec
    }

    /// Runs until `shutdown` turns true, then drains, commits and returns.
    /// Windows still open at shutdown stay open in the checkpoint. Starts
    /// again from the last commit after a transient bus failure (see
    /// `restart`).
    pub async fn run(self, shutdown: Shutdown) -> Result<(), StreamError> {
        run_restarting(&self, shutdown).await
    }
}

impl Job for WindowJob {
    type Error = StreamError;

    fn name(&self) -> &str {
        &self.options.job
    }

    async fn attempt(&self, shutdown: &mut Shutdown) -> Result<(), StreamError> {
        let job = self.options.job.clone();
        let latest = self.lake.latest_commit(&job).await?;
        let mut state: JobState = match latest.as_ref().and_then(|r| r.state.clone()) {
            Some(value) => serde_json::from_value(value).map_err(|e| StreamError::BadState {
                job: job.clone(),
                reason: e.to_string(),
            })?,
            None => JobState::default(),
        };
        // A record written before the job ran SQL.
        if let Some(old) = state.windows.take() {
            state.aggregator = Some(self.columns.migrate_state(self.spec(), old));
            state.groups = self
                .columns
                .migrate_closed(self.spec(), &std::mem::take(&mut state.closed));
        }
        let mut seq = latest.as_ref().map(|r| r.seq).unwrap_or(0);
        if let Some(record) = &latest {
            // The last step's output may not have reached everyone.
            let groups = output_groups(&state, self.spec()).map_err(LakeError::from)?;
            let missing = self.lake.missing_files(record).await?;
            if !missing.is_empty() {
                tracing::warn!(
                    seq,
                    files = missing.len(),
                    "completing the window job's interrupted commit"
                );
                let files = plan_files(&job, seq, &groups);
                let encoded = self
                    .lake
                    .encode_files(groups.values().cloned().collect())
                    .await?;
                self.lake.put_missing(files, encoded, &missing).await?;
            }
            if !self.deliver(seq, &state, &groups, shutdown).await {
                return Ok(());
            }
        }
        let mut aggregator = SqlAggregator::restore(
            self.options.spec.clone(),
            self.options.allowed_lateness.as_micros() as i64,
            state.aggregator.take().unwrap_or_default(),
        );
        let mut detector = Detector::new(
            self.options.rules.clone().unwrap_or_default(),
            self.size_micros(),
            std::mem::take(&mut state.detector),
        );
        let topic = self.options.logs_topic.clone();
        // A reader of every partition, not a group member: windows and
        // alerts are per service over all partitions, so one process runs
        // this job (a second one fails on the commit chain).
        let mut consumer = self.bus.reader(&self.options.group, &[&topic]).await?;
        let read: Result<(), StreamError> = async {
            let committed = latest.map(|r| r.offsets).unwrap_or_default();
            let mut positions = resume(consumer.as_mut(), &committed)?;
            let mut dedups = Dedups::new(self.options.dedup_window);
            dedups.warm_up(&*self.bus, &job, &positions).await?;
            tracing::info!(
                job,
                seq,
                open_windows = aggregator.open_rollups(),
                "window job resumes"
            );

            let mut committed_positions = positions.clone();
            let mut next_step = Instant::now() + self.options.step_interval;
            let mut last_record = Instant::now();
            let mut last_step = Instant::now();
            let mut poller = Poller::new("windows", self.options.on_data_loss);
            let mut invalid = 0u64;
            let mut duplicates = 0u64;
            // Largest event time read from each partition since start.
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
                if !drained {
                    last_record = Instant::now();
                }
                // A poll returns each partition's records together: the
                // bookkeeping per partition is done once per run of them.
                for run in records.chunk_by(|a, b| a.partition == b.partition && a.topic == b.topic) {
                    let mut max_micros = i64::MIN;
                    for record in run {
                        if dedups.is_repeat(record) {
                            duplicates += 1;
                            continue;
                        }
                        match sample_of(record.headers.get(summary::HEADER), &record.value) {
                            Some(sample) => {
                                max_micros = max_micros.max(sample.timestamp_micros);
                                aggregator.observe(&sample, sample.timestamp_micros);
                            }
                            None => invalid += 1,
                        }
                    }
                    let last = &run[run.len() - 1];
                    if max_micros > i64::MIN {
                        let seen = partition_max.entry(last.partition).or_insert(i64::MIN);
                        *seen = (*seen).max(max_micros);
                    }
                    partitions_of(&mut positions, &last.topic).insert(last.partition, last.offset + 1);
                }
                self.advance_clock(
                    &mut aggregator,
                    &read_through(consumer.as_ref(), &positions),
                    &partition_max,
                );
                let finishing = poller.finishing(drained);
                if Instant::now() < next_step && !finishing {
                    continue;
                }
                next_step = Instant::now() + self.options.step_interval;
                if invalid > 0 {
                    tracing::warn!(
                        invalid,
                        "log records the window job could not read were skipped (the raw→lake job reports them)"
                    );
                    invalid = 0;
                }
                if duplicates > 0 {
                    tracing::info!(
                        duplicates,
                        "second copies of retried log records were not counted in windows"
                    );
                    duplicates = 0;
                }
                let since_last_step = last_step.elapsed();
                last_step = Instant::now();
                if last_record.elapsed() >= self.options.idle_close && !finishing {
                    aggregator.advance_idle(since_last_step.as_micros() as i64);
                }
                let closed = aggregator.close_ready();
                let services = self.columns.service_windows(&closed);
                let closed_through = aggregator
                    .watermark_micros()
                    .map(|w| w.div_euclid(self.size_micros()) * self.size_micros());
                let alerts = match &self.options.rules {
                    Some(_) => detector.observe(&services, closed_through),
                    None => Vec::new(),
                };
                let moved = positions != committed_positions;
                if moved || !closed.is_empty() || !alerts.is_empty() {
                    seq += 1;
                    let step = JobState {
                        aggregator: Some(aggregator.snapshot()),
                        detector: detector.state().clone(),
                        groups: closed,
                        alerts,
                        step_micros: now_micros(),
                        ..JobState::default()
                    };
                    let groups = output_groups(&step, self.spec()).map_err(LakeError::from)?;
                    self.commit(seq, &step, &groups, &positions).await?;
                    committed_positions = positions.clone();
                    report_progress(consumer.as_mut(), &positions).await;
                    window_metrics().observe_step(
                        &services,
                        &step.alerts,
                        aggregator.late_records(),
                        detector.firing(),
                    );
                    if !self.deliver(seq, &step, &groups, shutdown).await {
                        consumer.close().await;
                        return Ok(());
                    }
                }
                if finishing {
                    consumer.close().await;
                    tracing::info!(job, seq, "window job drained and committed");
                    return Ok(());
                }
            }
        }
        .await;
        closed_on_error(consumer.as_mut(), read).await
    }
}

impl WindowJob {
    async fn commit(
        &self,
        seq: u64,
        state: &JobState,
        groups: &TableGroups,
        positions: &Offsets,
    ) -> Result<(), StreamError> {
        commit_checkpoint(
            &self.lake,
            &self.options.job,
            seq,
            state,
            state.step_micros,
            groups,
            positions,
        )
        .await
    }

    /// Sends a step's output to the sinks (see `logpipe_sinks`): the
    /// window rows to the blocking PostgreSQL sink, the alerts to the
    /// topic and the webhook. Returns false when shutdown interrupted a
    /// blocking sink's retry (the next start re-delivers the step).
    async fn deliver(
        &self,
        seq: u64,
        state: &JobState,
        groups: &TableGroups,
        shutdown: &mut Shutdown,
    ) -> bool {
        let alerts = announce(&self.options.job, &state.alerts, state.step_micros);
        // The step's window files, one per hour (usually one).
        let tables = groups
            .iter()
            .filter(|((table, _), _)| **table == WINDOWS)
            .flat_map(|(_, rows)| rows.parts())
            .map(|batch| TableRows {
                name: WINDOW_STATS_TABLE,
                batch,
                write: RowWrite::Upsert {
                    key: &WINDOW_STATS_KEY,
                },
            })
            .collect();
        let output = StepOutput {
            job: &self.options.job,
            step: seq,
            tables,
            alerts: &alerts,
        };
        deliver_all(&self.sinks, &output, shutdown).await
    }
}
