//! PostgreSQL as a CDC target: tables made and widened from the events'
//! schemas, changes applied as upserts and deletes by primary key, and the
//! bus positions they came from written in the same transaction.
//!
//! That last point is the whole exactly-once argument: a crash before the
//! commit leaves neither the rows nor the positions, so the events are
//! read again; a crash after it leaves both, so they are not. The sink
//! reads its positions back from `logpipe_cdc_positions` at every start
//! and after every failed transaction (whose commit may or may not have
//! happened).
//!
//! Rows go as one JSON array parameter per statement, unpacked by
//! `jsonb_populate_recordset(NULL::table, $1)`: PostgreSQL casts each value
//! to its column's type, one round trip per table and batch, and no SQL is
//! ever built from values (only from quoted identifiers).

use std::collections::HashMap;
use std::str::FromStr;

use serde_json::Value;
use tokio_postgres::{Client, NoTls};

use logpipe_sinks::postgres::redact;

use crate::event::SqlType;
use crate::step::{
    ColumnChange, TableStep, TargetError, TargetTable, described, quoted_list, table_definition,
};

fn query_error(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> TargetError {
    let context = context.into();
    move |source| TargetError::Query { context, source }
}

/// `"name"` with inner quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
fn sql_name(table: &TargetTable) -> String {
    format!("{}.{}", quote(&table.schema), quote(&table.name))
}

/// A connection to the target.
pub struct PgTarget {
    url: String,
    client: Client,
    positions: String,
}

/// The table of the sinks' positions.
const POSITIONS: &str = "logpipe_cdc_positions";

impl PgTarget {
    /// Connects (with `password` when the URL has none) and makes the
    /// positions table in `schema`.
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        schema: &str,
    ) -> Result<PgTarget, TargetError> {
        let shown = redact(url);
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|source| TargetError::Url {
                url: shown.clone(),
                source,
            })?;
        if let Some(password) = password {
            config.password(password);
        }
        config.application_name("logpipe-cdc");
        let (client, connection) =
            config
                .connect(NoTls)
                .await
                .map_err(|source| TargetError::Connect {
                    url: shown.clone(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "CDC target connection ended");
            }
        });
        let positions = format!("{}.{}", quote(schema), quote(POSITIONS));
        let target = PgTarget {
            url: shown,
            client,
            positions,
        };
        target
            .client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {positions} (
                    sink text NOT NULL,
                    topic text NOT NULL,
                    partition integer NOT NULL,
                    next_offset bigint NOT NULL,
                    source_ts timestamptz,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (sink, topic, partition)
                 )",
                schema = quote(schema),
                positions = target.positions,
            ))
            .await
            .map_err(query_error("creating logpipe_cdc_positions"))?;
        Ok(target)
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next offset to apply per (topic, partition) of `sink`.
    pub async fn positions(&self, sink: &str) -> Result<HashMap<(String, u32), u64>, TargetError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT topic, partition, next_offset FROM {} WHERE sink = $1",
                    self.positions
                ),
                &[&sink],
            )
            .await
            .map_err(query_error("reading logpipe_cdc_positions"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let topic: String = row.get(0);
                let partition: i32 = row.get(1);
                let offset: i64 = row.get(2);
                ((topic, partition as u32), offset as u64)
            })
            .collect())
    }

    /// The table as it is in the target (`None`: it does not exist).
    pub async fn describe(
        &self,
        schema: &str,
        name: &str,
    ) -> Result<Option<TargetTable>, TargetError> {
        let rows = self
            .client
            .query(
                "SELECT column_name::text, udt_name::text FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&schema, &name],
            )
            .await
            .map_err(query_error(format!("describing {schema}.{name}")))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let columns = rows
            .iter()
            .map(|row| {
                let column: String = row.get(0);
                let udt: String = row.get(1);
                (column, SqlType::from_udt(&udt))
            })
            .collect();
        let key_rows = self
            .client
            .query(
                "SELECT a.attname::text FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass
                   AND i.indisprimary
                 ORDER BY array_position(i.indkey, a.attnum)",
                &[&schema, &name],
            )
            .await
            .map_err(query_error(format!(
                "reading the primary key of {schema}.{name}"
            )))?;
        Ok(Some(TargetTable {
            schema: schema.to_string(),
            name: name.to_string(),
            columns,
            key: key_rows.iter().map(|row| row.get(0)).collect(),
        }))
    }

    /// Applies `steps` to their tables and moves `sink`'s positions, all in
    /// one transaction. `tables` is updated with the columns added.
    pub async fn apply(
        &mut self,
        sink: &str,
        tables: &mut HashMap<String, TargetTable>,
        steps: Vec<(String, TableStep)>,
        positions: &[(String, u32, u64, Option<i64>)],
    ) -> Result<(), TargetError> {
        let transaction = self
            .client
            .transaction()
            .await
            .map_err(query_error("starting a transaction"))?;
        for (table_key, step) in steps {
            let table = described(tables, &table_key)?;
            match step {
                TableStep::Columns(columns) => {
                    for (column, sql) in columns {
                        let (statement, done) = match table.column_change(&column, sql) {
                            None => continue,
                            Some(ColumnChange::Add) => (
                                format!(
                                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                                    sql_name(table),
                                    quote(&column),
                                    sql.sql()
                                ),
                                format!("added as {}", sql.sql()),
                            ),
                            Some(ColumnChange::Widen { from }) => (
                                format!(
                                    "ALTER TABLE {table} ALTER COLUMN {column} TYPE {sql} USING {column}::{sql}",
                                    table = sql_name(table),
                                    column = quote(&column),
                                    sql = sql.sql()
                                ),
                                format!("changed from {} to {}", from.sql(), sql.sql()),
                            ),
                        };
                        transaction
                            .batch_execute(&statement)
                            .await
                            .map_err(query_error(format!(
                                "column {column} of {}, to be {done}",
                                table.display()
                            )))?;
                        tracing::info!(table = %table.display(), %column, "CDC target: column {done}");
                        table.columns.insert(column, Some(sql));
                    }
                }
                TableStep::Upserts { columns, rows } => {
                    let list = quoted_list(&columns, quote);
                    let key = quoted_list(&table.key, quote);
                    let updates: Vec<String> = table
                        .updated(&columns)
                        .map(|c| format!("{0} = EXCLUDED.{0}", quote(c)))
                        .collect();
                    let conflict = if updates.is_empty() {
                        "DO NOTHING".to_string()
                    } else {
                        format!("DO UPDATE SET {}", updates.join(", "))
                    };
                    let statement = format!(
                        "INSERT INTO {name} ({list}) SELECT {list} FROM jsonb_populate_recordset(NULL::{name}, $1::text::jsonb) ON CONFLICT ({key}) {conflict}",
                        name = sql_name(table)
                    );
                    let json =
                        Value::Array(rows.into_iter().map(Value::Object).collect()).to_string();
                    transaction
                        .execute(&statement, &[&json])
                        .await
                        .map_err(query_error(format!("upserting into {}", table.display())))?;
                }
                TableStep::Deletes(keys) => {
                    let matches = table
                        .key
                        .iter()
                        .map(|c| format!("t.{0} = d.{0}", quote(c)))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    let statement = format!(
                        "DELETE FROM {name} AS t USING jsonb_populate_recordset(NULL::{name}, $1::text::jsonb) AS d WHERE {matches}",
                        name = sql_name(table)
                    );
                    let json =
                        Value::Array(keys.into_iter().map(Value::Object).collect()).to_string();
                    transaction
                        .execute(&statement, &[&json])
                        .await
                        .map_err(query_error(format!("deleting from {}", table.display())))?;
                }
                TableStep::Truncate => {
                    transaction
                        .batch_execute(&format!("TRUNCATE {}", sql_name(table)))
                        .await
                        .map_err(query_error(format!("truncating {}", table.display())))?;
                }
            }
        }
        let topics: Vec<&str> = positions.iter().map(|p| p.0.as_str()).collect();
        let partitions: Vec<i32> = positions.iter().map(|p| p.1 as i32).collect();
        let offsets: Vec<i64> = positions.iter().map(|p| p.2 as i64).collect();
        let source_ms: Vec<Option<i64>> = positions.iter().map(|p| p.3).collect();
        transaction
            .execute(
                &format!(
                    "INSERT INTO {} (sink, topic, partition, next_offset, source_ts, updated_at)
                     SELECT $1, t, p, o, to_timestamp(s / 1000.0), now()
                     FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[]) AS u(t, p, o, s)
                     ON CONFLICT (sink, topic, partition) DO UPDATE SET
                        next_offset = EXCLUDED.next_offset,
                        source_ts = COALESCE(EXCLUDED.source_ts, {0}.source_ts),
                        updated_at = EXCLUDED.updated_at",
                    self.positions
                ),
                &[&sink, &topics, &partitions, &offsets, &source_ms],
            )
            .await
            .map_err(query_error("writing logpipe_cdc_positions"))?;
        transaction
            .commit()
            .await
            .map_err(query_error("committing"))?;
        Ok(())
    }

    /// Creates `table` with `columns` and primary key `key` unless it exists.
    pub async fn create(
        &self,
        schema: &str,
        name: &str,
        columns: &[(String, SqlType)],
        key: &[String],
    ) -> Result<(), TargetError> {
        let definition = table_definition(columns, key, quote, |sql, _| sql.sql());
        self.client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {}.{} ({})",
                quote(schema),
                quote(schema),
                quote(name),
                definition
            ))
            .await
            .map_err(query_error(format!("creating {schema}.{name}")))?;
        Ok(())
    }
}
