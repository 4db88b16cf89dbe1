//! PostgreSQL as a sink: schema migrations at start, idempotent upserts of
//! window rows, replace-by-key writes of report rows, and job runs.
//!
//! Writes take Arrow record batches (the same batches the lake stores) and
//! send each column as one array parameter (`INSERT … SELECT * FROM
//! UNNEST($1::timestamptz[], $2::text[], …)`): one statement and one round
//! trip per batch, whatever its row count, with no SQL built from values.
//!
//! Idempotence is by key: windows are upserted on `(window_start, service,
//! level)` with the new figures *replacing* the old, so replaying a window
//! after a restart writes the same row again instead of adding to it;
//! reports delete their key range and insert in one transaction.

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, RecordBatch,
    types::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt64Type},
};
use arrow::datatypes::{DataType, TimeUnit};
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL {context}: {source}")]
    Query {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("column {column} has type {data_type}, which the PostgreSQL sink does not write")]
    UnsupportedType { column: String, data_type: String },
    /// A compare-and-set of bus positions found another writer's: the
    /// transaction was rolled back, nothing of it stored.
    #[error("{what}; starting again from the positions in PostgreSQL")]
    Fenced { what: String },
}

impl PgError {
    fn query(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        let context = context.into();
        move |source| PgError::Query { context, source }
    }
}

pub type Result<T, E = PgError> = std::result::Result<T, E>;

/// Schema versions, applied in order, each once (recorded in
/// `logpipe_migrations`). Never edit a released step; add one.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "window_stats and job_runs",
    "CREATE TABLE window_stats (
        window_start timestamptz NOT NULL,
        window_end timestamptz NOT NULL,
        service text NOT NULL,
        level text NOT NULL,
        count bigint NOT NULL,
        service_count bigint NOT NULL,
        error_rate double precision NOT NULL,
        p50_ms double precision,
        p95_ms double precision,
        p99_ms double precision,
        status_1xx bigint NOT NULL,
        status_2xx bigint NOT NULL,
        status_3xx bigint NOT NULL,
        status_4xx bigint NOT NULL,
        status_5xx bigint NOT NULL,
        PRIMARY KEY (window_start, service, level)
    );
    CREATE INDEX window_stats_service_time ON window_stats (service, window_start);
    CREATE TABLE job_runs (
        run_id text PRIMARY KEY,
        job text NOT NULL,
        target text NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz NOT NULL,
        duration_ms bigint NOT NULL,
        status text NOT NULL,
        rows bigint NOT NULL,
        error text
    );",
)];

/// Any number: the lock only serialises concurrent migrations.
const MIGRATION_LOCK: i64 = 0x006c_6f67_7069_7065; // "logpipe"

/// A connection that reconnects when the server went away.
#[derive(Clone)]
pub struct Postgres {
    url: String,
    client: Arc<Mutex<Option<Client>>>,
    /// Tables [`Postgres::upsert_creating`] has made ready, with the
    /// columns it saw (it looks again when a step brings others).
    ensured: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>,
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Postgres {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Postgres> {
        let postgres = Postgres::lazy(url);
        postgres.migrate().await?;
        Ok(postgres)
    }

    /// A handle that connects on first use and migrates nothing (for
    /// administration and tests).
    pub fn lazy(url: &str) -> Postgres {
        Postgres {
            url: url.to_string(),
            client: Arc::new(Mutex::new(None)),
            ensured: Arc::default(),
        }
    }

    pub fn url_redacted(&self) -> String {
        redact(&self.url)
    }

    async fn open(&self) -> Result<Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(|source| PgError::Connect {
                    url: redact(&self.url),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// The live client, reconnecting when the last one closed.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.open().await?);
        }
        Ok(guard)
    }

    /// Applies the migrations not yet applied, under an advisory lock so
    /// two processes starting together do not race.
    pub async fn migrate(&self) -> Result<()> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().expect("connected by client()");
        let tx = client
            .transaction()
            .await
            .map_err(PgError::query("starting the migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(PgError::query("locking for migration"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS logpipe_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(PgError::query("creating logpipe_migrations"))?;
        let applied: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM logpipe_migrations",
                &[],
            )
            .await
            .map_err(PgError::query("reading logpipe_migrations"))?
            .get(0);
        for (version, name, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > applied) {
            tx.batch_execute(sql)
                .await
                .map_err(PgError::query(format!("migration {version} ({name})")))?;
            tx.execute(
                "INSERT INTO logpipe_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await
            .map_err(PgError::query("recording a migration"))?;
            tracing::info!(version, name, "PostgreSQL schema migrated");
        }
        tx.commit()
            .await
            .map_err(PgError::query("committing the migration"))?;
        Ok(())
    }

    /// Inserts `batch` into `table`, replacing rows with the same `key`.
    pub async fn upsert(&self, table: &str, batch: &RecordBatch, key: &[&str]) -> Result<u64> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let columns = Columns::of(batch)?;
        let names: Vec<&str> = columns.names();
        let updates: Vec<String> = names
            .iter()
            .filter(|name| !key.contains(name))
            .map(|name| format!("{name} = EXCLUDED.{name}"))
            .collect();
        let conflict = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let sql = format!(
            "{} ON CONFLICT ({}) {conflict}",
            columns.insert_sql(table),
            key.join(", ")
        );
        let mut guard = self.client().await?;
        let client = guard.as_mut().expect("connected by client()");
        client
            .execute(&sql, &columns.params())
            .await
            .map_err(PgError::query(format!("upserting into {table}")))
    }

    /// [`Postgres::upsert`] into a table created from `batch`'s schema when
    /// missing, unique on `key` with NULLs equal (PostgreSQL 15 or later),
    /// and given the columns `batch` has and it lacks (a job's SELECT that
    /// gained a column). Done once per table and set of columns.
    pub async fn upsert_creating(
        &self,
        table: &str,
        batch: &RecordBatch,
        key: &[&str],
    ) -> Result<u64> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let columns = Columns::of(batch)?;
        let names: Vec<String> = columns.names().iter().map(|n| n.to_string()).collect();
        let ready = self
            .ensured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
            .is_some_and(|seen| *seen == names);
        if !ready {
            let mut statements = vec![format!(
                "CREATE TABLE IF NOT EXISTS {table} ({})",
                columns.definitions().join(", ")
            )];
            for (name, param, _) in &columns.columns {
                statements.push(format!(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {}",
                    param.sql_type()
                ));
            }
            statements.push(format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {table}_logpipe_key ON {table} ({}) NULLS NOT DISTINCT",
                key.join(", ")
            ));
            let mut guard = self.client().await?;
            let client = guard.as_mut().expect("connected by client()");
            client
                .batch_execute(&statements.join(";\n"))
                .await
                .map_err(PgError::query(format!("creating {table}")))?;
            drop(guard);
            self.ensured
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(table.to_string(), names);
        }
        self.upsert(table, batch, key).await
    }

    /// Replaces the rows of `table` where `column = value` by `batch`, in
    /// one transaction, creating the table from the batch's schema (plus
    /// `column` as text) when it does not exist.
    pub async fn replace(
        &self,
        table: &str,
        batch: &RecordBatch,
        column: &str,
        value: &str,
    ) -> Result<u64> {
        let columns = Columns::of(batch)?;
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} ({column} text NOT NULL, {})",
            columns.definitions().join(", ")
        );
        let insert = format!(
            "INSERT INTO {table} ({column}, {}) SELECT $1::text, * FROM UNNEST({})",
            columns.names().join(", "),
            columns.unnest_args(2)
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&value];
        params.extend(columns.params());
        let mut guard = self.client().await?;
        let client = guard.as_mut().expect("connected by client()");
        let tx = client
            .transaction()
            .await
            .map_err(PgError::query(format!("replacing {table}")))?;
        tx.batch_execute(&create)
            .await
            .map_err(PgError::query(format!("creating {table}")))?;
        tx.execute(
            &format!("DELETE FROM {table} WHERE {column} = $1"),
            &[&value],
        )
        .await
        .map_err(PgError::query(format!("deleting old rows of {table}")))?;
        let rows = if batch.num_rows() > 0 {
            tx.execute(&insert, &params)
                .await
                .map_err(PgError::query(format!("inserting into {table}")))?
        } else {
            0
        };
        tx.commit()
            .await
            .map_err(PgError::query(format!("committing {table}")))?;
        Ok(rows)
    }

    /// Drops database `name` if it exists, creates it empty, and returns its
    /// URL on the same server (for tests and setup scripts; `name` must be a
    /// plain identifier).
    pub async fn fresh_database(&self, name: &str) -> Result<String> {
        self.query_text(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        self.query_text(&format!("CREATE DATABASE {name}")).await?;
        let base = self
            .url
            .rsplit_once('/')
            .map_or(self.url.as_str(), |(base, _)| base);
        Ok(format!("{base}/{name}"))
    }

    /// Runs a query and returns each row's columns as text (for tests and
    /// diagnostics).
    pub async fn query_text(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().expect("connected by client()");
        let messages = client
            .simple_query(sql)
            .await
            .map_err(PgError::query("running a query"))?;
        Ok(messages
            .into_iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }
}

/// One column as an array parameter.
enum Param {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i32>>),
    BigInt(Vec<Option<i64>>),
    Double(Vec<Option<f64>>),
    Timestamp(Vec<Option<chrono::DateTime<chrono::Utc>>>),
    Date(Vec<Option<chrono::NaiveDate>>),
}

impl Param {
    fn sql_type(&self) -> &'static str {
        match self {
            Param::Text(_) => "text",
            Param::Int(_) => "integer",
            Param::BigInt(_) => "bigint",
            Param::Double(_) => "double precision",
            Param::Timestamp(_) => "timestamptz",
            Param::Date(_) => "date",
        }
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Text(v) => v,
            Param::Int(v) => v,
            Param::BigInt(v) => v,
            Param::Double(v) => v,
            Param::Timestamp(v) => v,
            Param::Date(v) => v,
        }
    }
}

fn values<T, U>(
    array: &dyn Array,
    get: impl Fn(usize) -> T,
    map: impl Fn(T) -> U,
) -> Vec<Option<U>> {
    (0..array.len())
        .map(|i| (!array.is_null(i)).then(|| map(get(i))))
        .collect()
}

struct Columns {
    columns: Vec<(String, Param, bool)>,
}

impl Columns {
    fn of(batch: &RecordBatch) -> Result<Columns> {
        let schema = batch.schema();
        let mut columns = Vec::new();
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            let array = array.as_ref();
            let param = match array.data_type() {
                DataType::Utf8 => {
                    let a = array.as_string::<i32>();
                    Param::Text(values(array, |i| a.value(i), str::to_string))
                }
                DataType::LargeUtf8 => {
                    let a = array.as_string::<i64>();
                    Param::Text(values(array, |i| a.value(i), str::to_string))
                }
                DataType::Utf8View => {
                    let a = array.as_string_view();
                    Param::Text(values(array, |i| a.value(i), str::to_string))
                }
                DataType::Int32 => {
                    let a = array.as_primitive::<Int32Type>();
                    Param::Int(values(array, |i| a.value(i), |v| v))
                }
                DataType::Int64 => {
                    let a = array.as_primitive::<Int64Type>();
                    Param::BigInt(values(array, |i| a.value(i), |v| v))
                }
                DataType::UInt64 => {
                    let a = array.as_primitive::<UInt64Type>();
                    Param::BigInt(values(array, |i| a.value(i), |v| v as i64))
                }
                DataType::Float64 => {
                    let a = array.as_primitive::<Float64Type>();
                    Param::Double(values(array, |i| a.value(i), |v| v))
                }
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    let a = array.as_primitive::<TimestampMicrosecondType>();
                    Param::Timestamp(values(
                        array,
                        |i| a.value(i),
                        |v| chrono::DateTime::from_timestamp_micros(v).unwrap_or_default(),
                    ))
                }
                DataType::Date32 => {
                    let a = array.as_primitive::<Date32Type>();
                    Param::Date(values(
                        array,
                        |i| a.value(i),
                        |days| {
                            chrono::NaiveDate::default() + chrono::Duration::days(i64::from(days))
                        },
                    ))
                }
                other => {
                    return Err(PgError::UnsupportedType {
                        column: field.name().clone(),
                        data_type: other.to_string(),
                    });
                }
            };
            columns.push((field.name().clone(), param, field.is_nullable()));
        }
        Ok(Columns { columns })
    }

    fn names(&self) -> Vec<&str> {
        self.columns
            .iter()
            .map(|(name, ..)| name.as_str())
            .collect()
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.columns
            .iter()
            .map(|(_, param, _)| param.as_sql())
            .collect()
    }

    /// `$first::type[], $first+1::type[], …`
    fn unnest_args(&self, first: usize) -> String {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, (_, param, _))| format!("${}::{}[]", first + i, param.sql_type()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn insert_sql(&self, table: &str) -> String {
        format!(
            "INSERT INTO {table} ({}) SELECT * FROM UNNEST({})",
            self.names().join(", "),
            self.unnest_args(1)
        )
    }

    fn definitions(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|(name, param, nullable)| {
                format!(
                    "{name} {}{}",
                    param.sql_type(),
                    if *nullable { "" } else { " NOT NULL" }
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://logpipe:secret@127.0.0.1:5432/db"),
            "postgres://logpipe:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact("postgres://logpipe@127.0.0.1/db"),
            "postgres://logpipe@127.0.0.1/db"
        );
        assert_eq!(redact("host=/tmp user=x"), "host=/tmp user=x");
    }
}
