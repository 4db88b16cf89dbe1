//! Change data capture (seed 003): keep a database equal to a source
//! database's tables from their change events on the bus.
//!
//! - [`event`] reads Debezium's JSON change events (the format Debezium's
//!   connectors on Kafka Connect write, with or without schemas) into
//!   [`event::Change`]s whose values are ready for the target.
//! - [`plan`] turns a batch of changes into what one target transaction
//!   does: per key only the last change, columns added before the rows
//!   that have them, truncates in order.
//! - [`target`] is where a sink writes, by the URL's scheme: [`postgres`]
//!   or [`mariadb`]. Tables made and widened from the events' schemas,
//!   upserts and deletes by primary key, and the bus positions written in
//!   the same transaction (exactly once).
//! - [`sink::CdcSink`] runs one `[[cdc.sinks]]`: read, plan, apply, and
//!   start again from the target's positions after any failure.
//! - [`source::CdcSource`] runs one `[[cdc.sources]]`: a consistent
//!   snapshot of MariaDB tables, then their binlog, as the same change
//!   events Debezium writes, without Kafka Connect.

pub mod event;
pub mod mariadb;
pub mod metrics;
pub mod plan;
pub mod postgres;
pub mod score;
pub mod sink;
pub mod source;
pub mod step;
pub mod target;

pub use sink::{CdcError, CdcSink};
pub use source::CdcSource;
