//! Batch jobs over the lake: the built-in reports (SPEC §1.6:
//! `daily_report`, `weekly_analysis`, `service_analysis`) and users' own.
//!
//! A job is a SQL file with a short header ([`job`]; docs/jobs.md): its
//! period (day, ISO week, range of days), its schedule and its output
//! directory. The built-in reports are three such files in `jobs/`,
//! compiled in; users' are read from `[jobs] dir`. [`runner`] runs one
//! period of a job with DataFusion over the lake and writes the result as
//! one Parquet file at a fixed name under the period's partition directory
//! (`reports/daily/date=YYYY-MM-DD/`, `jobs/NAME/date=…/`, …), replacing
//! what a previous run of the same period wrote in one atomic put, so a
//! re-run is idempotent; and, when PostgreSQL is configured, into a table
//! of the same name where the period's rows are replaced in one
//! transaction (the PostgreSQL sink of `logpipe_sinks`). Every run, failed,
//! skipped or not, is recorded in `job_runs` (lake and PostgreSQL) and in
//! the `logpipe_batch_*` metrics. [`schedule`] runs the jobs on their cron
//! schedules, a job after the jobs whose output it reads.

mod error;
pub mod job;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod schedule;

pub use error::{BatchError, Result};
pub use job::{JobDef, Period, PeriodKind};
pub use report::Report;
pub use runner::{BatchRunner, RunSummary};
