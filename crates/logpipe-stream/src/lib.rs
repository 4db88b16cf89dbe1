//! Stream jobs: the job runtime, and the jobs that consume the bus.
//!
//! - [`runtime`] — what every job does with the bus (restarts, polling and
//!   draining, positions, exact range reads, the duplicate check). It sits
//!   below the jobs and never imports one.
//! - [`raw`] — [`RawToLake`] writes `logs.raw` and `events.activity` into the
//!   Parquet lake, partitioned by event time, exactly once (the commit
//!   protocol is `logpipe_lake::commit`).
//! - [`aggregate`] — each service's figures in a window, as the detector
//!   and the window metrics read them.
//! - [`alerts`] — the anomaly detector: rules over closed windows.
//! - [`windows`] — [`WindowJob`] runs the statement `jobs/windows.sql`
//!   ([`WINDOWS_SQL`]) over `logs.raw` with the SQL jobs' aggregator, runs
//!   the anomaly detector on each service's closed window, and writes the
//!   results to the lake tables `windows` and `alerts` and to its sinks
//!   (`logpipe_sinks`).
//! - [`sql_job`] — [`SqlJobs`] runs the streaming jobs written in SQL (a
//!   windowed aggregation over `logs` or `events`), each into its own table.
//! - [`hot`] — [`HotStoreJob`] writes `logs` and `events` into PostgreSQL
//!   tables partitioned by event day, exactly once, with retention.
//! - [`error`] — [`StreamError`], whose kind decides what restarts.
//!
//! A new job (a CDC upsert, a job written in SQL) is one more folder that
//! implements [`runtime::Job`] and uses the runtime.

pub mod aggregate;
pub mod alerts;
pub mod error;
pub mod hot;
pub mod raw;
pub mod runtime;
pub mod sql_job;
pub mod windows;

pub use error::StreamError;
pub use hot::HotStoreJob;
pub use raw::{RawToLake, RawToLakeOptions};
pub use sql_job::claims::{ClaimedJobs, claims_topic};
pub use sql_job::{SqlJobOptions, SqlJobSinks, SqlJobs, check_alerts, upsert_key};
pub use windows::{WINDOWS_SQL, WindowJob, WindowJobOptions};
