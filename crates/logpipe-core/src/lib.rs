//! Shared vocabulary of logpipe.
//!
//! - [`record`]: the two record kinds (system logs, user activity events),
//!   their validation and their canonical JSON form on the bus.
//! - [`time`]: event-time parsing (epoch seconds or ISO-8601) and the hour
//!   partition a time falls into.
//! - [`schema`]: Arrow schemas of the lake tables and builders that fill them.
//! - [`partition`]: Kafka-compatible key → partition hashing.
//! - [`metrics`]: the process-wide Prometheus metrics.
//! - [`dedup`]: record ids from a client's `Idempotency-Key`, and the
//!   filter that drops a retried record's second copy.
//! - [`summary`]: a log record's window fields in a few bytes, carried as a
//!   bus record header.

pub mod dedup;
pub mod metrics;
pub mod partition;
pub mod record;
pub mod schema;
pub mod summary;
pub mod time;

pub use record::{
    ActivityEvent, BodyError, EventType, Level, LogRecord, RecordError, RecordKind,
    ValidationLimits,
};
pub use schema::{BatchBuilder, Record};

impl Record {
    /// Parses a record of `kind` from its JSON text.
    pub fn parse(
        kind: RecordKind,
        raw: &str,
        limits: &ValidationLimits,
    ) -> Result<Record, RecordError> {
        match kind {
            RecordKind::Log => LogRecord::parse(raw, limits).map(Record::Log),
            RecordKind::Event => ActivityEvent::parse(raw, limits).map(Record::Event),
        }
    }

    /// The bus key.
    pub fn key(&self) -> &str {
        match self {
            Record::Log(record) => record.key(),
            Record::Event(event) => event.key(),
        }
    }

    /// Canonical JSON for the bus.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Record::Log(record) => record.to_json(),
            Record::Event(event) => event.to_json(),
        }
    }
}
