//! Stream jobs that consume the bus.
//!
//! - [`raw_to_lake::RawToLake`] writes `logs.raw` and `events.activity` into
//!   the Parquet lake, partitioned by event time, exactly once (see
//!   `logpipe_lake` for the commit protocol).
//! - [`windows_job::WindowJob`] aggregates `logs.raw` into event-time
//!   windows ([`window`], with the percentile [`sketch`]), runs the anomaly
//!   detector ([`alerts`]) on each closed window, and writes the results to
//!   the lake tables `windows` and `alerts`, PostgreSQL, `alerts.realtime`
//!   and an alert [`webhook`].

pub mod alerts;
mod consume;
mod dedup;
pub mod raw_to_lake;
mod restart;
pub mod sketch;
pub mod webhook;
pub mod window;
pub mod windows_job;

pub use raw_to_lake::{DataLossPolicy, RawToLake, RawToLakeOptions, StreamError};
pub use windows_job::{WindowJob, WindowJobOptions};
