//! Running a report: its SQL over the lake, its file replacing the
//! period's previous one, its rows to the sinks, and the run recorded.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::Utc;
use futures::TryStreamExt;
use logpipe_core::tables::{JOB_RUNS, job_runs};
use logpipe_lake::Lake;
use logpipe_query::QueryEngine;
use logpipe_sinks::{RowWrite, StepOutput, StepSink, TableRows};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};

use crate::Report;
use crate::error::Result;
use crate::metrics::batch_metrics;

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub job: &'static str,
    pub target: String,
    pub rows: u64,
    pub duration: std::time::Duration,
    pub output: String,
    /// The sinks that took the report besides the lake.
    pub sinks: Vec<&'static str>,
}

/// Runs reports over a lake, delivering their rows and runs to sinks.
pub struct BatchRunner {
    engine: QueryEngine,
    lake: Lake,
    sinks: Vec<Arc<dyn StepSink>>,
}

/// Name of a report's single output file.
const OUTPUT_FILE: &str = "part-0.parquet";

impl BatchRunner {
    /// A runner over `lake` (queried through the same store) whose
    /// reports and runs also go to `sinks`.
    pub async fn open(lake: Lake, sinks: Vec<Arc<dyn StepSink>>) -> Result<BatchRunner> {
        Ok(BatchRunner {
            engine: QueryEngine::open(lake.lake_store()).await?,
            lake,
            sinks,
        })
    }

    /// Runs `report`, records the run, and returns what it wrote.
    pub async fn run(
        &self,
        report: &Report,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<RunSummary> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let outcome = self.run_inner(report, progress).await;
        let duration = clock.elapsed();
        let (rows, error) = match &outcome {
            Ok((rows, _)) => (*rows, None),
            Err(error) => (0, Some(error.to_string())),
        };
        batch_metrics().observe_run(report.job(), duration, rows, error.is_none());
        if let Err(record_error) = self
            .record_run(report, started_at, duration, rows, error.as_deref())
            .await
        {
            tracing::warn!(%record_error, job = report.job(), "could not record the run in job_runs");
        }
        outcome.map(|(rows, sinks)| RunSummary {
            job: report.job(),
            target: report.target(),
            rows,
            duration,
            output: format!("{}/{OUTPUT_FILE}", report.output_dir()),
            sinks,
        })
    }

    /// Writes the report; returns its rows and the sinks that took them.
    async fn run_inner(
        &self,
        report: &Report,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(u64, Vec<&'static str>)> {
        let stage = |what: &str| progress(&format!("{} {}: {what}", report.job(), report.target()));
        stage("querying the lake");
        let result = self.engine.sql(&report.sql(), usize::MAX).await?;
        let batch = if result.batches.is_empty() {
            RecordBatch::new_empty(result.schema.clone())
        } else {
            arrow::compute::concat_batches(&result.schema, &result.batches)?
        };
        let rows = batch.num_rows() as u64;
        stage(&format!("writing {rows} rows"));
        let dir = report.output_dir();
        let bytes = self.encode(&batch).await?;
        let path = StorePath::from(format!("{dir}/{OUTPUT_FILE}"));
        // One atomic put replaces a previous run's file; then anything else
        // in the directory (written by another version) goes.
        self.lake
            .store()
            .put(&path, PutPayload::from(bytes))
            .await?;
        let stale: Vec<_> = self
            .lake
            .store()
            .list(Some(&StorePath::from(dir.as_str())))
            .try_filter(|meta| futures::future::ready(meta.location != path))
            .try_collect()
            .await?;
        for meta in stale {
            self.lake.store().delete(&meta.location).await?;
        }
        let (column, value) = report.period_column();
        let rows_out = TableRows {
            name: report.job(),
            batch: &batch,
            write: RowWrite::ReplacePeriod { column, value },
        };
        let sinks = self
            .deliver(report.job(), vec![rows_out], &|sink| {
                stage(&format!("writing to {sink}"))
            })
            .await?;
        Ok((rows, sinks))
    }

    async fn record_run(
        &self,
        report: &Report,
        started_at: chrono::DateTime<Utc>,
        duration: std::time::Duration,
        rows: u64,
        error: Option<&str>,
    ) -> Result<()> {
        let started = started_at.timestamp_micros();
        let run_id = format!("{}-{}-{started}", report.job(), report.target());
        let status = if error.is_none() {
            "succeeded"
        } else {
            "failed"
        };
        let utc = |v: i64| TimestampMicrosecondArray::from(vec![v]).with_timezone("UTC");
        let batch = RecordBatch::try_new(
            job_runs::schema(),
            vec![
                std::sync::Arc::new(StringArray::from(vec![run_id.as_str()])),
                std::sync::Arc::new(StringArray::from(vec![report.job()])),
                std::sync::Arc::new(StringArray::from(vec![report.target()])),
                std::sync::Arc::new(utc(started)),
                std::sync::Arc::new(utc(started + duration.as_micros() as i64)),
                std::sync::Arc::new(Int64Array::from(vec![duration.as_millis() as i64])),
                std::sync::Arc::new(StringArray::from(vec![status])),
                std::sync::Arc::new(Int64Array::from(vec![rows as i64])),
                std::sync::Arc::new(StringArray::from(vec![error])),
            ],
        )?;
        let bytes = self.encode(&batch).await?;
        let path = StorePath::from(format!(
            "{}/run-{started}-{}.parquet",
            JOB_RUNS.dir,
            report.job()
        ));
        self.lake
            .store()
            .put(&path, PutPayload::from(bytes))
            .await?;
        let rows = TableRows {
            name: JOB_RUNS.name,
            batch: &batch,
            write: RowWrite::Upsert { key: &["run_id"] },
        };
        self.deliver("job_runs", vec![rows], &|_| {}).await?;
        Ok(())
    }

    /// Encodes one batch as Parquet, off the async reactor.
    async fn encode(&self, batch: &RecordBatch) -> Result<bytes::Bytes> {
        let mut encoded = self.lake.encode_batches(vec![batch.clone()]).await?;
        Ok(encoded.pop().unwrap_or_default())
    }

    /// Gives `tables` to every sink once (a batch run fails, and is
    /// recorded as failed, when a sink refuses; there is no step to hold).
    /// Returns the sinks that took them.
    async fn deliver(
        &self,
        job: &str,
        tables: Vec<TableRows<'_>>,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Vec<&'static str>> {
        let output = StepOutput {
            job,
            step: 0,
            tables,
            alerts: &[],
        };
        let mut took = Vec::new();
        for sink in &self.sinks {
            progress(sink.name());
            sink.deliver(&output).await?;
            took.push(sink.name());
        }
        Ok(took)
    }
}
