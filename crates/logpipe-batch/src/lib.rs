//! Batch reports over the lake (SPEC §1.6): `daily_report`,
//! `weekly_analysis`, `service_analysis`.
//!
//! Each report is a SQL file in `sql/` run by DataFusion over the lake
//! tables. Its result is written as one Parquet file at a fixed name under
//! the report's partition directory (`reports/daily/date=YYYY-MM-DD/`, …),
//! replacing what a previous run of the same date wrote, so a re-run is
//! idempotent; and, when PostgreSQL is configured, into a table of the same
//! name where the period's rows are replaced in one transaction. Every run,
//! failed or not, is recorded in `job_runs` (lake and PostgreSQL) and in the
//! `logpipe_batch_*` metrics.

use std::path::Path;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{Datelike, Duration as Days, NaiveDate, Utc};
use futures::TryStreamExt;
use logpipe_core::metrics::analytics;
use logpipe_core::schema::job_runs_schema;
use logpipe_lake::{Codec, Lake, encode_parquet};
use logpipe_postgres::Postgres;
use logpipe_query::QueryEngine;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub mod schedule;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{0}")]
    Query(#[from] logpipe_query::QueryError),
    #[error("{0}")]
    Lake(#[from] logpipe_lake::LakeError),
    #[error("lake storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("{0}")]
    Postgres(#[from] logpipe_postgres::PgError),
    #[error("building the result failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = BatchError> = std::result::Result<T, E>;

/// Which report, for which period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Daily {
        date: NaiveDate,
    },
    /// The ISO week starting on `monday`.
    Weekly {
        monday: NaiveDate,
    },
    /// Whole UTC days `start..=end`.
    Service {
        start: NaiveDate,
        end: NaiveDate,
    },
}

impl Report {
    /// The ISO week (`2026-W02`) containing `date`.
    pub fn weekly_of(date: NaiveDate) -> Report {
        let monday = date - Days::days(i64::from(date.weekday().num_days_from_monday()));
        Report::Weekly { monday }
    }

    /// Parses `YYYY-Www` (ISO week).
    pub fn parse_week(text: &str) -> Result<Report> {
        let bad = || BatchError::Invalid(format!("{text:?} is not an ISO week like 2026-W02"));
        let (year, week) = text.split_once("-W").ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let week: u32 = week.parse().map_err(|_| bad())?;
        let monday =
            NaiveDate::from_isoywd_opt(year, week, chrono::Weekday::Mon).ok_or_else(bad)?;
        Ok(Report::Weekly { monday })
    }

    /// The job name: the report's table.
    pub fn job(&self) -> &'static str {
        match self {
            Report::Daily { .. } => "daily_report",
            Report::Weekly { .. } => "weekly_analysis",
            Report::Service { .. } => "service_analysis",
        }
    }

    fn sql_template(&self) -> &'static str {
        match self {
            Report::Daily { .. } => include_str!("../sql/daily_report.sql"),
            Report::Weekly { .. } => include_str!("../sql/weekly_analysis.sql"),
            Report::Service { .. } => include_str!("../sql/service_analysis.sql"),
        }
    }

    /// First and last day covered.
    fn days(&self) -> (NaiveDate, NaiveDate) {
        match self {
            Report::Daily { date } => (*date, *date),
            Report::Weekly { monday } => (*monday, *monday + Days::days(6)),
            Report::Service { start, end } => (*start, *end),
        }
    }

    /// What the run is for, as written in `job_runs.target`.
    pub fn target(&self) -> String {
        match self {
            Report::Daily { date } => date.to_string(),
            Report::Weekly { monday } => {
                let week = monday.iso_week();
                format!("{}-W{:02}", week.year(), week.week())
            }
            Report::Service { start, end } => format!("{start}..{end}"),
        }
    }

    /// Output directory under the lake root (Hive-style partitions).
    pub fn output_dir(&self) -> String {
        match self {
            Report::Daily { date } => format!("reports/daily/date={date}"),
            Report::Weekly { .. } => format!("reports/weekly/week={}", self.target()),
            Report::Service { start, end } => {
                format!("analysis/service/start_date={start}/end_date={end}")
            }
        }
    }

    /// PostgreSQL: the period column and its value.
    fn period_column(&self) -> (&'static str, String) {
        match self {
            Report::Daily { date } => ("date", date.to_string()),
            Report::Weekly { .. } => ("week", self.target()),
            Report::Service { .. } => ("period", self.target()),
        }
    }

    /// The report's SQL with the period filled in.
    pub fn sql(&self) -> String {
        let (first, last) = self.days();
        let ymd = |d: NaiveDate| d.year() * 10000 + d.month() as i32 * 100 + d.day() as i32;
        self.sql_template()
            .replace("{year}", &first.year().to_string())
            .replace("{month}", &first.month().to_string())
            .replace("{day}", &first.day().to_string())
            .replace("{start_ymd}", &ymd(first).to_string())
            .replace("{end_ymd}", &ymd(last).to_string())
            .replace("{start}", &format!("{first}T00:00:00Z"))
            .replace("{end}", &format!("{}T00:00:00Z", last + Days::days(1)))
    }
}

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub job: &'static str,
    pub target: String,
    pub rows: u64,
    pub duration: std::time::Duration,
    pub output: String,
    pub postgres: bool,
}

/// Runs reports over a local lake.
pub struct BatchRunner {
    engine: QueryEngine,
    lake: Lake,
    postgres: Option<Postgres>,
}

/// Name of a report's single output file.
const OUTPUT_FILE: &str = "part-0.parquet";

impl BatchRunner {
    pub async fn open_local(
        data_dir: &Path,
        lake: Lake,
        postgres: Option<Postgres>,
    ) -> Result<BatchRunner> {
        Ok(BatchRunner {
            engine: QueryEngine::open_local(data_dir).await?,
            lake,
            postgres,
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
        {
            let mut figures = analytics();
            let job = figures.batch.entry(report.job().to_string()).or_default();
            if error.is_none() {
                job.succeeded += 1;
            } else {
                job.failed += 1;
            }
            job.last_duration_seconds = duration.as_secs_f64();
            job.last_rows = rows;
            job.last_success = error.is_none();
        }
        if let Err(record_error) = self
            .record_run(report, started_at, duration, rows, error.as_deref())
            .await
        {
            tracing::warn!(%record_error, job = report.job(), "could not record the run in job_runs");
        }
        outcome.map(|(rows, postgres)| RunSummary {
            job: report.job(),
            target: report.target(),
            rows,
            duration,
            output: format!("{}/{OUTPUT_FILE}", report.output_dir()),
            postgres,
        })
    }

    /// Writes the report; returns its rows and whether PostgreSQL got them.
    async fn run_inner(
        &self,
        report: &Report,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(u64, bool)> {
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
        let bytes = encode_parquet(&batch, Codec::Zstd)?;
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
        let postgres = match &self.postgres {
            Some(postgres) => {
                stage("writing to PostgreSQL");
                let (column, value) = report.period_column();
                let written = postgres
                    .replace(report.job(), &batch, column, &value)
                    .await?;
                analytics().postgres_rows_written += written;
                true
            }
            None => false,
        };
        Ok((rows, postgres))
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
            job_runs_schema(),
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
        let bytes = encode_parquet(&batch, Codec::Zstd)?;
        let path = StorePath::from(format!("job_runs/run-{started}-{}.parquet", report.job()));
        self.lake
            .store()
            .put(&path, PutPayload::from(bytes))
            .await?;
        if let Some(postgres) = &self.postgres {
            postgres.upsert("job_runs", &batch, &["run_id"]).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_paths() {
        let date = NaiveDate::from_ymd_opt(2026, 1, 11).unwrap();
        let daily = Report::Daily { date };
        assert_eq!(daily.output_dir(), "reports/daily/date=2026-01-11");
        assert!(
            daily
                .sql()
                .contains("year = 2026 AND month = 1 AND day = 11")
        );
        // 2026-01-11 is a Sunday: ISO week 2 runs Monday 5th to Sunday 11th.
        let weekly = Report::weekly_of(date);
        assert_eq!(weekly.target(), "2026-W02");
        assert_eq!(weekly, Report::parse_week("2026-W02").unwrap());
        assert!(weekly.sql().contains("BETWEEN 20260105 AND 20260111"));
        assert!(
            weekly
                .sql()
                .contains("timestamp < TIMESTAMP '2026-01-12T00:00:00Z'")
        );
        assert!(Report::parse_week("2026-02").is_err());
        assert!(Report::parse_week("2026-W54").is_err());
    }
}
