//! Sources: everything that puts records on the bus.
//!
//! A source turns what arrives from outside into bus records on the topics
//! of `logpipe_core::topics`, and appends them to an `Arc<dyn Bus>`; the
//! bus's `append` resolving is what makes a record acknowledged. Each
//! source is a folder of the same shape (`mod.rs` with the source,
//! `metrics.rs`, its parts):
//!
//! - [`collector`] — clients POST JSON or NDJSON over HTTP.
//! - [`otlp`] — OpenTelemetry SDKs export logs over OTLP/HTTP (`/v1/logs`),
//!   mapped to log records and taken through the collector's path.
//! - `cdc/` (next): a MariaDB/MySQL replication client, a
//!   `logpipe_core::job::Job` that restarts from its binlog checkpoint and
//!   appends Debezium-format change events to `<prefix>.<table>` topics.
//!
//! The built-in generator is a client of the collector (`logpipe_gen`),
//! not a source: it exercises the same path a user's services take.

pub mod collector;
pub mod otlp;

pub use collector::{Collector, CollectorSettings};
