//! Stream jobs that consume the bus.
//!
//! [`raw_to_lake::RawToLake`] writes `logs.raw` and `events.activity` into the
//! Parquet lake, partitioned by event time, exactly once (see
//! `logpipe_lake` for the commit protocol).
//!
//! [`window`] and [`sketch`] are the event-time window aggregation and the
//! mergeable percentile sketch the window aggregator job is built from.

pub mod raw_to_lake;
pub mod sketch;
pub mod window;

pub use raw_to_lake::{DataLossPolicy, RawToLake, RawToLakeOptions, StreamError};
