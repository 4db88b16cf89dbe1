//! The window job: 5-second aggregates and anomaly alerts from `logs.raw`.
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
//! Only the fields a window needs are parsed from each record (timestamp,
//! level, service, latency, status), borrowing from the bus buffer, which
//! keeps the job's cost well below the raw→lake job's full parse.
//!
//! If PostgreSQL is down the job retries with backoff and does not take the
//! next step until the write succeeds: records wait on the bus (the lag
//! metric shows it) and nothing is skipped.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use logpipe_bus::{Bus, BusRecord, ConsumedRecord};
use logpipe_config::{AlertsConfig, LakeConfig, WindowsConfig};
use logpipe_core::Level;
use logpipe_core::metrics::{WindowGauges, analytics};
use logpipe_core::schema::{alerts_schema, windows_schema};
use logpipe_core::summary::{self, LogSummary};
use logpipe_core::time::{
    HourPartition, epoch_seconds_to_micros, micros_to_rfc3339, now_micros, parse_iso8601_micros,
};
use logpipe_lake::{CommitRecord, Lake, LakeError, Offsets, TableGroups};
use logpipe_postgres::Postgres;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::DataLossPolicy;
use crate::alerts::{Alert, AlertRules, Detector, DetectorState};
use crate::consume::{Polled, Poller, closed_on_error, report_progress, resume};
use crate::dedup::Dedups;
use crate::raw_to_lake::{StreamError, partitions_of};
use crate::restart::{Restartable, run_restarting};
use crate::window::{ClosedWindow, Sample, WindowAggregator, WindowOptions, WindowSnapshot};

/// Lake directory (and query table) of window rows.
pub const WINDOWS_TABLE: &str = "windows";
/// Lake directory (and query table) of alerts.
pub const ALERTS_TABLE: &str = "alerts";
/// PostgreSQL table of window rows and its key.
pub const WINDOW_STATS_TABLE: &str = "window_stats";
pub const WINDOW_STATS_KEY: [&str; 3] = ["window_start", "service", "level"];

#[derive(Debug, Clone)]
pub struct WindowJobOptions {
    /// Names the commit records and files (`part-<job>-…`).
    pub job: String,
    /// Consumer group for lag reporting.
    pub group: String,
    pub logs_topic: String,
    pub alerts_topic: String,
    pub window: WindowOptions,
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
    /// The options `[windows]`, `[alerts]` and `lake.on_data_loss` describe.
    pub fn from_config(windows: &WindowsConfig, alerts: &AlertsConfig, lake: &LakeConfig) -> Self {
        WindowJobOptions {
            job: "windows".to_string(),
            group: "logpipe-windows".to_string(),
            logs_topic: "logs.raw".to_string(),
            alerts_topic: "alerts.realtime".to_string(),
            window: WindowOptions::from(windows),
            step_interval: Duration::from_secs(1),
            idle_close: windows.idle_close,
            rules: alerts.enabled.then(|| AlertRules::from(alerts)),
            on_data_loss: lake.on_data_loss,
            dedup_window: lake.dedup_window,
        }
    }
}

impl Default for WindowJobOptions {
    fn default() -> Self {
        WindowJobOptions::from_config(
            &WindowsConfig::default(),
            &AlertsConfig::default(),
            &LakeConfig::default(),
        )
    }
}

/// What a commit record holds for this job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct JobState {
    windows: WindowSnapshot,
    detector: DetectorState,
    /// This step's output.
    closed: Vec<ClosedWindow>,
    alerts: Vec<Alert>,
    /// When this step ran (the alerts' `detected_at`).
    step_micros: i64,
}

pub struct WindowJob {
    bus: Arc<dyn Bus>,
    lake: Lake,
    options: WindowJobOptions,
    postgres: Option<Postgres>,
    notify: Option<mpsc::Sender<Vec<AlertMessage>>>,
}

/// The fields of a log record a window needs, borrowed from the JSON.
#[derive(Deserialize)]
struct LogFields<'a> {
    #[serde(borrow)]
    timestamp: TimeField<'a>,
    level: Level,
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(default)]
    metadata: Option<MetaFields>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TimeField<'a> {
    Seconds(f64),
    Text(#[serde(borrow)] Cow<'a, str>),
}

#[derive(Deserialize)]
struct MetaFields {
    #[serde(default)]
    response_time_ms: Option<f64>,
    #[serde(default)]
    status_code: Option<i64>,
}

/// The window fields of a `logs.raw` record: from the summary header the
/// collector writes, or else (a record from another producer) parsed from
/// the JSON value.
pub fn sample_of(record: &ConsumedRecord) -> Option<Sample<'_>> {
    match record.headers.get(summary::HEADER) {
        Some(bytes) => LogSummary::decode(bytes).map(|s| Sample {
            timestamp_micros: s.timestamp_micros,
            level: s.level,
            service: Cow::Borrowed(s.service),
            response_time_ms: s.response_time_ms,
            status_code: s.status_code,
        }),
        None => parse_sample(&record.value),
    }
}

/// Parses the window fields of a `logs.raw` value.
pub fn parse_sample(value: &[u8]) -> Option<Sample<'_>> {
    let fields: LogFields<'_> = serde_json::from_slice(value).ok()?;
    let timestamp_micros = match &fields.timestamp {
        TimeField::Seconds(seconds) => epoch_seconds_to_micros(*seconds).ok()?,
        TimeField::Text(text) => parse_iso8601_micros(text).ok()?,
    };
    let metadata = fields.metadata.unwrap_or(MetaFields {
        response_time_ms: None,
        status_code: None,
    });
    Some(Sample {
        timestamp_micros,
        level: fields.level,
        service: fields.service,
        response_time_ms: metadata.response_time_ms,
        status_code: metadata.status_code.and_then(|c| i32::try_from(c).ok()),
    })
}

/// One row per (window, service, level), with the service's figures.
pub fn windows_batch(windows: &[ClosedWindow], size_micros: i64) -> Result<RecordBatch, LakeError> {
    let mut start = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut end = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut service = StringBuilder::new();
    let mut level = StringBuilder::new();
    let mut count = Int64Builder::new();
    let mut service_count = Int64Builder::new();
    let mut error_rate = Float64Builder::new();
    let mut quantiles = [
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
    ];
    let mut classes: [Int64Builder; 5] = std::array::from_fn(|_| Int64Builder::new());
    for window in windows {
        let figures = &window.figures;
        let latency = figures.latency_percentiles();
        for (row_level, row_count) in &figures.by_level {
            start.append_value(window.window_start_micros);
            end.append_value(window.window_start_micros + size_micros);
            service.append_value(&window.service);
            level.append_value(row_level.as_str());
            count.append_value(*row_count as i64);
            service_count.append_value(figures.count as i64);
            error_rate.append_value(figures.error_rate());
            for (builder, value) in quantiles.iter_mut().zip(latency) {
                builder.append_option(value);
            }
            for (builder, value) in classes.iter_mut().zip(figures.status_classes) {
                builder.append_value(value as i64);
            }
        }
    }
    let mut columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(service.finish()),
        Arc::new(level.finish()),
        Arc::new(count.finish()),
        Arc::new(service_count.finish()),
        Arc::new(error_rate.finish()),
    ];
    columns.extend(
        quantiles
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as arrow::array::ArrayRef),
    );
    columns.extend(
        classes
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as arrow::array::ArrayRef),
    );
    Ok(RecordBatch::try_new(windows_schema(), columns)?)
}

/// One row per alert.
pub fn alerts_batch(alerts: &[Alert], detected_at_micros: i64) -> Result<RecordBatch, LakeError> {
    let mut text: [StringBuilder; 6] = std::array::from_fn(|_| StringBuilder::new());
    let mut value = Float64Builder::new();
    let mut threshold = Float64Builder::new();
    let mut times: [TimestampMicrosecondBuilder; 4] =
        std::array::from_fn(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"));
    let mut summary = StringBuilder::new();
    for alert in alerts {
        for (builder, field) in text.iter_mut().zip([
            alert.alert_id.as_str(),
            alert.incident_id.as_str(),
            alert.state.as_str(),
            alert.rule.as_str(),
            alert.rule.severity(),
            alert.service.as_str(),
        ]) {
            builder.append_value(field);
        }
        value.append_value(alert.value);
        threshold.append_value(alert.threshold);
        for (builder, micros) in times.iter_mut().zip([
            alert.window_start_micros,
            alert.window_end_micros,
            alert.incident_start_micros,
            detected_at_micros,
        ]) {
            builder.append_value(micros);
        }
        summary.append_value(&alert.summary);
    }
    let mut columns: Vec<arrow::array::ArrayRef> = text
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as arrow::array::ArrayRef)
        .collect();
    columns.push(Arc::new(value.finish()));
    columns.push(Arc::new(threshold.finish()));
    columns.extend(
        times
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as arrow::array::ArrayRef),
    );
    columns.push(Arc::new(summary.finish()));
    Ok(RecordBatch::try_new(alerts_schema(), columns)?)
}

/// An alert as published on `alerts.realtime`, served by `/api/alerts` and
/// sent to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    pub alert_id: String,
    pub incident_id: String,
    pub state: String,
    pub rule: String,
    pub severity: String,
    pub service: String,
    pub value: f64,
    pub threshold: f64,
    pub window_start: String,
    pub window_end: String,
    pub incident_start: String,
    pub detected_at: String,
    pub summary: String,
}

impl AlertMessage {
    pub fn new(alert: &Alert, detected_at_micros: i64) -> AlertMessage {
        AlertMessage {
            alert_id: alert.alert_id.clone(),
            incident_id: alert.incident_id.clone(),
            state: alert.state.as_str().to_string(),
            rule: alert.rule.as_str().to_string(),
            severity: alert.rule.severity().to_string(),
            service: alert.service.clone(),
            value: alert.value,
            threshold: alert.threshold,
            window_start: micros_to_rfc3339(alert.window_start_micros),
            window_end: micros_to_rfc3339(alert.window_end_micros),
            incident_start: micros_to_rfc3339(alert.incident_start_micros),
            detected_at: micros_to_rfc3339(detected_at_micros),
            summary: alert.summary.clone(),
        }
    }
}

/// `items` grouped by the hour of their window start.
fn by_hour<T: Clone>(items: &[T], start: impl Fn(&T) -> i64) -> BTreeMap<HourPartition, Vec<T>> {
    let mut hours: BTreeMap<HourPartition, Vec<T>> = BTreeMap::new();
    for item in items {
        hours
            .entry(HourPartition::of_micros(start(item)))
            .or_default()
            .push(item.clone());
    }
    hours
}

/// A step's output as files: closed windows and alerts by table and hour.
fn output_groups(state: &JobState, size_micros: i64) -> Result<TableGroups, LakeError> {
    let mut groups = TableGroups::new();
    for (hour, rows) in by_hour(&state.closed, |w| w.window_start_micros) {
        groups.insert(
            (WINDOWS_TABLE.to_string(), hour),
            windows_batch(&rows, size_micros)?,
        );
    }
    for (hour, rows) in by_hour(&state.alerts, |a| a.window_start_micros) {
        groups.insert(
            (ALERTS_TABLE.to_string(), hour),
            alerts_batch(&rows, state.step_micros)?,
        );
    }
    Ok(groups)
}

impl WindowJob {
    pub fn new(
        bus: Arc<dyn Bus>,
        lake: Lake,
        options: WindowJobOptions,
        postgres: Option<Postgres>,
        notify: Option<mpsc::Sender<Vec<AlertMessage>>>,
    ) -> WindowJob {
        WindowJob {
            bus,
            lake,
            options,
            postgres,
            notify,
        }
    }

    fn size_micros(&self) -> i64 {
        (self.options.window.size.as_micros() as i64).max(1)
    }

    /// Runs until `shutdown` turns true, then drains, commits and returns.
    /// Windows still open at shutdown stay open in the checkpoint. Starts
    /// again from the last commit after a transient bus failure (see
    /// `restart`).
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), StreamError> {
        run_restarting(&self, shutdown).await
    }
}

impl Restartable for WindowJob {
    fn job(&self) -> &str {
        &self.options.job
    }

    async fn attempt(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), StreamError> {
        let job = self.options.job.clone();
        let latest = self.lake.latest_commit(&job).await?;
        let mut state: JobState = match latest.as_ref().and_then(|r| r.state.clone()) {
            Some(value) => serde_json::from_value(value).map_err(|e| StreamError::BadState {
                job: job.clone(),
                reason: e.to_string(),
            })?,
            None => JobState::default(),
        };
        let mut seq = latest.as_ref().map(|r| r.seq).unwrap_or(0);
        if let Some(record) = &latest {
            // The last step's output may not have reached everyone.
            let groups = output_groups(&state, self.size_micros())?;
            let missing = self.lake.missing_files(record).await?;
            if !missing.is_empty() {
                tracing::warn!(
                    seq,
                    files = missing.len(),
                    "completing the window job's interrupted commit"
                );
                let files = Lake::plan_table_files(&job, seq, &groups);
                let encoded = self
                    .lake
                    .encode_batches(groups.values().cloned().collect())
                    .await?;
                self.lake.put_missing(files, encoded, &missing).await?;
            }
            if !self.deliver(&state, &groups, shutdown).await {
                return Ok(());
            }
        }
        let mut aggregator =
            WindowAggregator::restore(self.options.window, std::mem::take(&mut state.windows));
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
                open_windows = aggregator.open_windows(),
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
                let records = match poller
                    .poll(consumer.as_mut(), wait, shutdown, &mut positions)
                    .await?
                {
                    Polled::Records(records) => records,
                    Polled::ShutdownStarted | Polled::Skipped { .. } => continue,
                    Polled::Rebalance(_) => {
                        // A reader has no group; nothing to hand back.
                        consumer.rebalance_done(Vec::new())?;
                        continue;
                    }
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
                        match sample_of(record) {
                            Some(sample) => {
                                max_micros = max_micros.max(sample.timestamp_micros);
                                aggregator.observe(&sample);
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
                self.advance_clock(&mut aggregator, &positions, &partition_max);
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
                let closed_through = aggregator
                    .watermark_micros()
                    .map(|w| w.div_euclid(self.size_micros()) * self.size_micros());
                let alerts = match &self.options.rules {
                    Some(_) => detector.observe(&closed, closed_through),
                    None => Vec::new(),
                };
                let moved = positions != committed_positions;
                if moved || !closed.is_empty() || !alerts.is_empty() {
                    seq += 1;
                    let step = JobState {
                        windows: aggregator.snapshot(),
                        detector: detector.state().clone(),
                        closed,
                        alerts,
                        step_micros: now_micros(),
                    };
                    let groups = output_groups(&step, self.size_micros())?;
                    self.commit(seq, &step, &groups, &positions).await?;
                    committed_positions = positions.clone();
                    report_progress(consumer.as_mut(), &positions).await;
                    self.update_gauges(&step, aggregator.late_records(), detector.firing());
                    if !self.deliver(&step, &groups, shutdown).await {
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
    /// Advances the event clock, but not past the progress of a partition
    /// that still has records to read: partitions are read one after
    /// another, and one read ahead must not make another's records late.
    fn advance_clock(
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

    async fn commit(
        &self,
        seq: u64,
        state: &JobState,
        groups: &TableGroups,
        positions: &Offsets,
    ) -> Result<(), StreamError> {
        let files = Lake::plan_table_files(&self.options.job, seq, groups);
        let record = CommitRecord {
            job: self.options.job.clone(),
            seq,
            ranges: BTreeMap::new(),
            offsets: positions.clone(),
            files,
            invalid_records: 0,
            duplicate_records: 0,
            dedup_window: 0,
            committed_at: micros_to_rfc3339(state.step_micros),
            state: Some(
                serde_json::to_value(state).map_err(|e| StreamError::BadState {
                    job: self.options.job.clone(),
                    reason: e.to_string(),
                })?,
            ),
        };
        let encoded = self
            .lake
            .encode_batches(groups.values().cloned().collect())
            .await?;
        self.lake.commit(&record, encoded).await?;
        Ok(())
    }

    fn update_gauges(&self, state: &JobState, late_records: u64, firing: i64) {
        let mut figures = analytics();
        figures.late_records = late_records;
        figures.alerts_firing = firing;
        figures.windows_closed += state.closed.len() as u64;
        for window in &state.closed {
            let latency = match window.figures.latency_percentiles() {
                [Some(p50), Some(p95), Some(p99)] => Some([p50, p95, p99]),
                _ => None,
            };
            figures.windows.insert(
                window.service.clone(),
                WindowGauges {
                    window_start_seconds: window.window_start_micros as f64 / 1e6,
                    records: window.figures.count,
                    error_rate: window.figures.error_rate(),
                    latency_ms: latency,
                },
            );
        }
        for alert in &state.alerts {
            *figures
                .alerts
                .entry((
                    alert.rule.as_str().to_string(),
                    alert.state.as_str().to_string(),
                ))
                .or_insert(0) += 1;
        }
    }

    /// Sends a step's output to PostgreSQL, the alerts topic and the
    /// webhook. Returns false when shutdown interrupted a PostgreSQL retry
    /// (the next start re-delivers the step).
    async fn deliver(
        &self,
        state: &JobState,
        groups: &TableGroups,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        if let Some(postgres) = &self.postgres {
            // The step's window files, one per hour (usually one).
            let window_rows = groups
                .iter()
                .filter(|((table, _), _)| table == WINDOWS_TABLE)
                .map(|(_, batch)| batch);
            for batch in window_rows {
                let mut delay = Duration::from_millis(500);
                loop {
                    match postgres
                        .upsert(WINDOW_STATS_TABLE, batch, &WINDOW_STATS_KEY)
                        .await
                    {
                        Ok(rows) => {
                            analytics().postgres_rows_written += rows;
                            break;
                        }
                        Err(error) => {
                            analytics().postgres_errors += 1;
                            tracing::warn!(%error, retry_in = ?delay, "writing windows to PostgreSQL failed; the window job waits for it");
                            if *shutdown.borrow() {
                                return false;
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = shutdown.changed() => return false,
                            }
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
        }
        if state.alerts.is_empty() {
            return true;
        }
        let messages: Vec<AlertMessage> = state
            .alerts
            .iter()
            .map(|alert| AlertMessage::new(alert, state.step_micros))
            .collect();
        for message in &messages {
            tracing::warn!(
                alert = message.alert_id,
                state = message.state,
                "{}",
                message.summary
            );
        }
        let records = messages
            .iter()
            .map(|message| {
                BusRecord::new(
                    message.service.clone().into_bytes(),
                    serde_json::to_vec(message).unwrap_or_default(),
                )
            })
            .collect();
        if let Err(error) = self.bus.append(&self.options.alerts_topic, records).await {
            tracing::warn!(%error, topic = self.options.alerts_topic, "could not publish alerts (they are in the lake table `alerts`)");
        }
        if let Some(notify) = &self.notify
            && notify.send(messages).await.is_err()
        {
            tracing::warn!("the alert webhook task is gone; alert not sent");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_from_seed_records() {
        let raw =
            br#"{"timestamp": 1736645166.5, "level": "ERROR", "service": "api", "message": "m",
            "metadata": {"response_time_ms": 12.5, "status_code": 503, "endpoint": "/x"}}"#;
        let sample = parse_sample(raw).unwrap();
        assert_eq!(sample.timestamp_micros, 1_736_645_166_500_000);
        assert_eq!(sample.level, Level::Error);
        assert_eq!(sample.service, "api");
        assert_eq!(sample.response_time_ms, Some(12.5));
        assert_eq!(sample.status_code, Some(503));
        let iso = br#"{"timestamp": "2025-01-12T01:26:06.5Z", "level": "INFO", "service": "api", "message": "m"}"#;
        let sample = parse_sample(iso).unwrap();
        assert_eq!(sample.timestamp_micros, 1_736_645_166_500_000);
        assert_eq!(sample.response_time_ms, None);
        assert!(parse_sample(br#"{"level": "INFO"}"#).is_none());
        assert!(parse_sample(br#"{"timestamp": 1, "level": "LOUD", "service": "a"}"#).is_none());
    }

    /// The summary header and the JSON value give the same sample, for
    /// records of every shape, so a window counts a record where the lake
    /// puts it whichever way it was read.
    #[test]
    fn the_summary_header_and_the_json_value_agree() {
        use logpipe_core::LogRecord;
        use logpipe_core::record::LogMetadata;
        let mut rng = fastrand::Rng::with_seed(7);
        let services = ["api", "pay-ü", "quote\"d", "tab\tbed"];
        for i in 0..20_000 {
            let record = LogRecord {
                // 2001..2096, with any microsecond.
                timestamp_micros: rng.i64(1_000_000_000_000_000..4_000_000_000_000_000),
                level: Level::ALL[rng.usize(..4)],
                service: services[i % services.len()].to_string(),
                host: None,
                message: "m".into(),
                metadata: LogMetadata {
                    response_time_ms: rng.bool().then(|| rng.f64() * 10_000.0),
                    status_code: rng.bool().then(|| rng.i32(100..600)),
                    ..LogMetadata::default()
                },
            };
            let value = record.to_json();
            let summary = LogSummary::of(&record).encode();
            let consumed = ConsumedRecord {
                topic: "logs.raw".into(),
                partition: 0,
                offset: i as u64,
                key: record.service.clone().into(),
                value: value.clone().into(),
                headers: [(summary::HEADER, &summary[..])].into_iter().collect(),
            };
            let from_header = sample_of(&consumed).unwrap();
            assert_eq!(Some(from_header), parse_sample(&value), "{record:?}");
        }
    }
}
