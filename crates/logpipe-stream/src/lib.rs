//! Stream jobs that consume the bus.
//!
//! [`raw_to_lake::RawToLake`] writes `logs.raw` and `events.activity` into the
//! Parquet lake, partitioned by event time, exactly once (see
//! `logpipe_lake` for the commit protocol).

pub mod raw_to_lake;

pub use raw_to_lake::{DataLossPolicy, RawToLake, RawToLakeOptions, StreamError};
