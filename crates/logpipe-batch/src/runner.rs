//! Running a job: its SQL over the lake, its file replacing the period's
//! previous one, its rows to the sinks, and the run recorded. The runner
//! holds every job in dependency order (a job after those whose output it
//! reads) and can plan them all without running them (`logpipe jobs
//! check`, and `logpipe up` at start).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::Utc;
use futures::TryStreamExt;
use logpipe_core::tables::{JOB_RUNS, job_runs};
use logpipe_lake::Lake;
use logpipe_query::QueryEngine;
use logpipe_sinks::webhook::rows::WebhookClient;
use logpipe_sinks::{RowWrite, StepOutput, StepSink, TableRows};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};

use crate::Report;
use crate::error::{BatchError, Result};
use crate::job::{JobDef, Period};
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

/// Runs jobs over a lake, delivering their rows and runs to sinks.
pub struct BatchRunner {
    engine: QueryEngine,
    lake: Lake,
    sinks: Vec<Arc<dyn StepSink>>,
    /// In dependency order.
    jobs: Vec<Arc<JobDef>>,
    /// Posts the rows of jobs with a `-- webhook:`.
    webhooks: WebhookClient,
}

/// What planning one job found: its result's columns, or what is wrong.
pub struct JobCheck {
    pub job: Arc<JobDef>,
    pub outcome: Result<arrow::datatypes::SchemaRef>,
}

/// `job`'s SQL problem at its place in the job's file.
fn job_error(job: &JobDef, period: &Period, problem: logpipe_query::SqlProblem) -> BatchError {
    let (line, column) = match problem.at {
        Some((line, column)) => job.file_position(period, line, column),
        None => (1, 1),
    };
    BatchError::Job {
        origin: job.origin.clone(),
        line,
        column,
        reason: problem.message,
    }
}

/// The jobs in dependency order: each job's inputs (the other jobs whose
/// tables its SQL reads) found with DataFusion's parser, then sorted so a
/// job comes after its inputs, keeping the given order otherwise.
fn order(engine: &QueryEngine, jobs: Vec<JobDef>) -> Result<Vec<Arc<JobDef>>> {
    let names: Vec<&'static str> = jobs.iter().map(|job| job.name).collect();
    let mut pending = Vec::new();
    for mut job in jobs {
        let period = job.period.scheduled(Utc::now().date_naive());
        let read = engine
            .tables_read(&job.sql(&period))
            .map_err(|problem| job_error(&job, &period, problem))?;
        job.inputs = names
            .iter()
            .copied()
            .filter(|name| *name != job.name && read.iter().any(|t| t == name))
            .collect();
        pending.push(job);
    }
    let mut ordered: Vec<Arc<JobDef>> = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|job| {
            job.inputs
                .iter()
                .all(|i| ordered.iter().any(|o| o.name == *i))
        });
        match ready {
            Some(index) => ordered.push(Arc::new(pending.remove(index))),
            None => {
                let circle: Vec<String> = pending
                    .iter()
                    .map(|job| format!("{} reads {}", job.name, job.inputs.join(", ")))
                    .collect();
                return Err(BatchError::Cycle(circle.join("; ")));
            }
        }
    }
    Ok(ordered)
}

/// Name of a report's single output file.
const OUTPUT_FILE: &str = "part-0.parquet";

impl BatchRunner {
    /// The client jobs' webhooks are posted with (one trusting
    /// `tls.ca_file`; by default the public roots only).
    pub fn set_webhook_client(&mut self, client: WebhookClient) {
        self.webhooks = client;
    }

    /// A runner of `jobs` (from [`crate::job::load`]) over `lake`
    /// (queried through the same store) whose rows and runs also go to
    /// `sinks`. Fails when a job's SQL does not parse or jobs read each
    /// other in a circle.
    pub async fn open(
        lake: Lake,
        sinks: Vec<Arc<dyn StepSink>>,
        jobs: Vec<JobDef>,
    ) -> Result<BatchRunner> {
        let engine = QueryEngine::open(lake.lake_store()).await?;
        let tables: Vec<_> = jobs.iter().map(|job| job.table).collect();
        engine.add_tables(&tables);
        let jobs = order(&engine, jobs)?;
        Ok(BatchRunner {
            engine,
            lake,
            sinks,
            jobs,
            webhooks: WebhookClient::default(),
        })
    }

    /// The engine the jobs run on (the lake's tables and the jobs').
    pub fn engine(&self) -> &QueryEngine {
        &self.engine
    }

    /// Every job, a job after the jobs whose output it reads.
    pub fn jobs(&self) -> &[Arc<JobDef>] {
        &self.jobs
    }

    /// The job named `name`.
    pub fn job(&self, name: &str) -> Result<Arc<JobDef>> {
        self.jobs
            .iter()
            .find(|job| job.name == name)
            .cloned()
            .ok_or_else(|| BatchError::UnknownJob {
                name: name.to_string(),
                known: self
                    .jobs
                    .iter()
                    .map(|job| job.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The tables of users' jobs, for other query engines over the lake.
    pub fn job_tables(&self) -> Vec<&'static logpipe_core::tables::TableDef> {
        self.jobs
            .iter()
            .filter(|job| !job.is_built_in())
            .map(|job| job.table)
            .collect()
    }

    /// Plans every job for the period a run on `today` would cover,
    /// without running it: a job reading another job's output is planned
    /// against that job's planned columns when it has not run yet.
    pub async fn check(&self, today: chrono::NaiveDate) -> Vec<JobCheck> {
        let mut checks = Vec::new();
        for job in &self.jobs {
            let period = job.period.scheduled(today);
            let outcome = match self.engine.plan(&job.sql(&period)).await {
                Ok(schema) => {
                    // As the table will read: its columns, then its
                    // partition columns (text).
                    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
                    fields.extend(job.period.columns().iter().map(|column| {
                        Arc::new(arrow::datatypes::Field::new(
                            *column,
                            arrow::datatypes::DataType::Utf8,
                            false,
                        ))
                    }));
                    let table = Arc::new(arrow::datatypes::Schema::new(fields));
                    let registered = self.engine.register_planned(job.name, table).await;
                    registered.map(|()| schema).map_err(BatchError::from)
                }
                Err(problem) => Err(job_error(job, &period, problem)),
            };
            checks.push(JobCheck {
                job: job.clone(),
                outcome,
            });
        }
        checks
    }

    /// Whether `report`'s output exists (a backfill skips it).
    pub async fn done(&self, report: &Report) -> Result<bool> {
        let path = StorePath::from(format!("{}/{OUTPUT_FILE}", report.output_dir()));
        match self.lake.store().head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Records that `report` did not run because `reason`.
    pub async fn skip(&self, report: &Report, reason: &str) {
        batch_metrics().observe_run(report.job(), std::time::Duration::ZERO, 0, false);
        if let Err(record_error) = self
            .record_run(
                report,
                Utc::now(),
                std::time::Duration::ZERO,
                0,
                Some(reason),
                "skipped",
            )
            .await
        {
            tracing::warn!(%record_error, job = report.job(), "could not record the skipped run in job_runs");
        }
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
        let status = if error.is_none() {
            "succeeded"
        } else {
            "failed"
        };
        if let Err(record_error) = self
            .record_run(report, started_at, duration, rows, error.as_deref(), status)
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
        let sql = report.sql();
        let result = match self.engine.sql(&sql, usize::MAX).await {
            Ok(result) => result,
            // A statement DataFusion refuses: say where in the job's file.
            Err(logpipe_query::QueryError::Sql(_)) => {
                let problem = self.engine.plan(&sql).await.err().unwrap_or_else(|| {
                    logpipe_query::SqlProblem {
                        message: "the statement was refused".to_string(),
                        at: None,
                    }
                });
                return Err(job_error(&report.job, &report.period, problem));
            }
            Err(error) => return Err(error.into()),
        };
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
        // `-- postgres: false`: not to PostgreSQL (the run is still
        // recorded everywhere).
        let mut sinks = Vec::new();
        if report.job.postgres {
            sinks = self
                .deliver(report.job(), vec![rows_out.clone()], &|sink| {
                    stage(&format!("writing to {sink}"))
                })
                .await?;
        }
        if let Some(url) = &report.job.webhook {
            stage("posting to its webhook");
            let webhook = self.webhooks.to(url);
            let output = StepOutput {
                job: report.job(),
                step: 0,
                tables: vec![rows_out],
                alerts: &[],
            };
            webhook.deliver(&output).await?;
            sinks.push(webhook.name());
        }
        Ok((rows, sinks))
    }

    async fn record_run(
        &self,
        report: &Report,
        started_at: chrono::DateTime<Utc>,
        duration: std::time::Duration,
        rows: u64,
        error: Option<&str>,
        status: &str,
    ) -> Result<()> {
        let started = started_at.timestamp_micros();
        let run_id = format!("{}-{}-{started}", report.job(), report.target());
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
