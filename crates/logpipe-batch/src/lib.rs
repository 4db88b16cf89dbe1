//! Batch reports over the lake (SPEC §1.6): `daily_report`,
//! `weekly_analysis`, `service_analysis`.
//!
//! Each report is a SQL file in `sql/` run by DataFusion over the lake
//! tables ([`report`]; [`runner`] runs one). Its result is written as one Parquet file at a fixed name under
//! the report's partition directory (`reports/daily/date=YYYY-MM-DD/`, …),
//! replacing what a previous run of the same date wrote, so a re-run is
//! idempotent; and, when PostgreSQL is configured, into a table of the same
//! name where the period's rows are replaced in one transaction (the
//! PostgreSQL sink of `logpipe_sinks`). Every run,
//! failed or not, is recorded in `job_runs` (lake and PostgreSQL) and in the
//! `logpipe_batch_*` metrics.

mod error;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod schedule;

pub use error::{BatchError, Result};
pub use report::Report;
pub use runner::{BatchRunner, RunSummary};
