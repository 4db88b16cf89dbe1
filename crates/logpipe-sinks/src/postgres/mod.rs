//! PostgreSQL as a sink: the client ([`client`]: migrations, array-bound
//! upserts and period replacement), the [`StepSink`] over it, and the hot
//! store's tables of raw records ([`hot`]).
//!
//! Blocking: the window job takes no further step until PostgreSQL has this
//! one, so `window_stats` never misses a window while the database is down
//! (records wait on the bus; the lag metric shows it). Idempotent by key:
//! a replayed step replaces its rows.

use logpipe_core::error::{Classify, ErrorKind};
use logpipe_core::health::{checks, readiness};

use crate::metrics::sink_metrics;
use crate::{Delivery, RowWrite, SinkError, StepOutput, StepSink};

mod client;
pub mod hot;

pub use client::{PgError, Postgres, redact};

impl Classify for PgError {
    fn kind(&self) -> ErrorKind {
        match self {
            PgError::Connect { .. } => ErrorKind::Transient,
            PgError::Query { source, .. } if source.is_closed() || passes(source) => {
                ErrorKind::Transient
            }
            PgError::Query { .. } => ErrorKind::Internal,
            PgError::UnsupportedType { .. } => ErrorKind::Internal,
            PgError::Fenced { .. } => ErrorKind::Transient,
        }
    }
}

/// Whether the server's answer is one waiting can get past (by SQLSTATE):
/// the connection ended (08: connection exception; 57P01–57P03: the
/// server or an administrator shut it down, or it is starting), the server
/// is out of resources (53), the transaction lost a race (40:
/// serialization failure, deadlock; 55P03: a lock not available in time)
/// or was cancelled (57014). Anything else (a missing column, a type
/// mismatch) is the same on the next attempt.
fn passes(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|state| {
        let code = state.code();
        ["08", "53", "40", "57P"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "55P03"
            || code == "57014"
    })
}

/// Writes a step's table rows into PostgreSQL.
pub struct PostgresSink {
    client: Postgres,
}

impl PostgresSink {
    pub fn new(client: Postgres) -> PostgresSink {
        PostgresSink { client }
    }

    pub fn client(&self) -> &Postgres {
        &self.client
    }
}

#[async_trait::async_trait]
impl StepSink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn delivery(&self) -> Delivery {
        Delivery::Blocking
    }

    async fn deliver(&self, output: &StepOutput<'_>) -> Result<(), SinkError> {
        let metrics = sink_metrics();
        for rows in &output.tables {
            let written = match &rows.write {
                RowWrite::Upsert { key } => self.client.upsert(rows.name, rows.batch, key).await,
                RowWrite::UpsertCreating { key } => {
                    self.client
                        .upsert_creating(rows.name, rows.batch, key)
                        .await
                }
                RowWrite::ReplacePeriod { column, value } => {
                    self.client
                        .replace(rows.name, rows.batch, column, value)
                        .await
                }
            };
            match written {
                Ok(rows) => {
                    metrics.postgres_rows_written.add(rows);
                    readiness().pass(checks::POSTGRES);
                }
                Err(error) => {
                    metrics.postgres_errors.inc();
                    readiness().fail(
                        checks::POSTGRES,
                        format!("the last write to PostgreSQL failed: {error}"),
                    );
                    return Err(error.into());
                }
            }
        }
        Ok(())
    }
}
