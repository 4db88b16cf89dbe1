//! Shared vocabulary of logpipe: no I/O here, only what every stage agrees on.
//!
//! - [`record`] — the two record kinds (system logs, user activity events),
//!   their validation, their canonical JSON form on the bus, a log's window
//!   fields in a few bytes as a bus header ([`record::summary`]), and those
//!   fields read cheaply ([`record::sample`]).
//! - [`tables`] — the catalog of lake tables (directory, partitioning,
//!   schema) and the builders that fill them.
//! - [`topics`] and [`api`]: the bus topics and the HTTP paths, spelled once.
//! - [`time`] — event-time parsing (epoch seconds or ISO-8601) and the hour
//!   partition a time falls into.
//! - [`partition`] — Kafka-compatible key → partition hashing.
//! - [`dedup`] — record ids from a client's `Idempotency-Key`, and the
//!   filter that drops a retried record's second copy.
//! - [`error`] — the kind of a failure ([`error::ErrorKind`]), which the HTTP
//!   edge, job restarts and sinks all read.
//! - [`retry`] — the one backoff.
//! - [`job`] — a job that runs until shutdown and starts again after a
//!   transient failure.
//! - [`telemetry`] — metric families, the registry behind `/metrics`, and the
//!   catalog of names.

pub mod api;
pub mod dedup;
pub mod error;
pub mod health;
pub mod job;
pub mod parallel;
pub mod partition;
pub mod record;
pub mod retry;
pub mod stream_sql;
pub mod tables;
pub mod telemetry;
pub mod time;
pub mod topics;

pub use error::{Classify, ErrorKind};
pub use record::{
    ActivityEvent, BodyError, EventType, Level, LogRecord, Record, RecordError, RecordKind,
    ValidationLimits,
};
pub use tables::{BatchBuilder, TableDef};
