//! MariaDB/MySQL as a CDC target (seed 003's `inventory_db`): the same
//! plan and exactly-once protocol as PostgreSQL's — rows and the bus
//! positions in one transaction — with MariaDB's statements.
//!
//! Two differences matter. DDL commits implicitly in MariaDB, so the
//! columns a batch needs are added (or widened) before its transaction;
//! both are idempotent, so a crash between them only leaves a column
//! that the replayed batch finds already there. And a truncate inside the
//! transaction is a `DELETE` (a `TRUNCATE` would commit it).
//!
//! Rows go as one multi-row `INSERT … ON DUPLICATE KEY UPDATE` per table
//! and batch (chunked under the protocol's 65,535 parameters), values as
//! parameters, never as SQL.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, TxOpts, Value};
use serde_json::{Map, Value as Json};

use crate::event::SqlType;
use crate::step::{
    ColumnChange, TableStep, TargetError, TargetTable, described, quoted_list, table_definition,
};

/// The connection options of a `mysql://` or `mariadb://` URL, with
/// `password` when given; TCP even to localhost (the source's and the
/// target's).
pub(crate) fn opts(url: &str, password: Option<&str>) -> Result<Opts, mysql_async::UrlError> {
    let opts = Opts::from_url(&url.replacen("mariadb://", "mysql://", 1))?;
    let mut builder = OptsBuilder::from_opts(opts).prefer_socket(false);
    if let Some(password) = password {
        builder = builder.pass(Some(password));
    }
    Ok(builder.into())
}

/// `` `name` `` with inner backticks doubled.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn error(context: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> TargetError {
    let context = context.into();
    move |source| TargetError::MariaDb { context, source }
}

/// A column type in MariaDB's DDL (`key`: part of the primary key, where
/// text and bytes need a length).
fn ddl(sql: SqlType, key: bool) -> &'static str {
    match sql {
        SqlType::SmallInt => "SMALLINT",
        SqlType::Integer => "INT",
        SqlType::BigInt => "BIGINT",
        SqlType::Real => "FLOAT",
        SqlType::Double => "DOUBLE",
        SqlType::Boolean => "BOOLEAN",
        SqlType::Text if key => "VARCHAR(255)",
        SqlType::Text => "LONGTEXT",
        SqlType::Bytea if key => "VARBINARY(255)",
        SqlType::Bytea => "LONGBLOB",
        SqlType::Date => "DATE",
        SqlType::Timestamp | SqlType::TimestampTz => "DATETIME(6)",
        SqlType::Time => "TIME(6)",
        SqlType::Numeric => "DECIMAL(38,10)",
        SqlType::Jsonb => "JSON",
    }
}

/// The type a MariaDB `DATA_TYPE` is, when it is one this sink makes.
fn from_data_type(data_type: &str) -> Option<SqlType> {
    Some(match data_type {
        "smallint" | "tinyint" => SqlType::SmallInt,
        "int" | "mediumint" => SqlType::Integer,
        "bigint" => SqlType::BigInt,
        "float" => SqlType::Real,
        "double" => SqlType::Double,
        "longtext" | "varchar" => SqlType::Text,
        "longblob" | "varbinary" => SqlType::Bytea,
        "date" => SqlType::Date,
        "datetime" => SqlType::Timestamp,
        "time" => SqlType::Time,
        "decimal" => SqlType::Numeric,
        _ => return None,
    })
}

/// A JSON value as PostgreSQL would read it, as a MariaDB parameter.
fn param(value: &Json, sql: Option<SqlType>) -> Value {
    match value {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Int(i64::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (_, Some(u)) => Value::UInt(u),
            _ => Value::Double(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => match sql {
            // `\x0102…` (how the plan carries bytes) → the bytes.
            Some(SqlType::Bytea) if s.starts_with("\\x") => {
                let hex = &s[2..];
                let bytes = (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect();
                Value::Bytes(bytes)
            }
            // `2024-03-01T10:11:12.345678Z` → a DATETIME in UTC.
            Some(SqlType::Timestamp | SqlType::TimestampTz) => {
                Value::Bytes(s.trim_end_matches('Z').replacen('T', " ", 1).into_bytes())
            }
            _ => Value::Bytes(s.clone().into_bytes()),
        },
        other => Value::Bytes(other.to_string().into_bytes()),
    }
}

/// `count` tuples of `width` placeholders: `(?, ?), (?, ?)`.
fn placeholders(width: usize, count: usize) -> String {
    let one = format!("({})", vec!["?"; width].join(", "));
    vec![one.as_str(); count].join(", ")
}

/// The `columns` of each of `rows` as parameters, typed by `table`.
fn row_params(table: &TargetTable, rows: &[Map<String, Json>], columns: &[String]) -> Vec<Value> {
    rows.iter()
        .flat_map(|row| {
            columns.iter().map(|c| {
                param(
                    row.get(c).unwrap_or(&Json::Null),
                    table.columns.get(c).copied().flatten(),
                )
            })
        })
        .collect()
}

/// A MariaDB connection as a target.
pub struct MariaDbTarget {
    url: String,
    conn: Conn,
    /// Tables named without a database go here: the URL's database.
    database: String,
}

const POSITIONS: &str = "logpipe_cdc_positions";
/// Most parameters one statement may carry.
const MAX_PARAMS: usize = 60_000;

impl MariaDbTarget {
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        schema: &str,
    ) -> Result<MariaDbTarget, TargetError> {
        let shown = logpipe_sinks::postgres::redact(url);
        let opts = opts(url, password).map_err(|e| TargetError::Table {
            table: shown.clone(),
            reason: format!("not a MariaDB URL: {e}"),
        })?;
        let database = match (opts.db_name(), schema) {
            (_, schema) if schema != "public" && !schema.is_empty() => schema.to_string(),
            (Some(db), _) => db.to_string(),
            (None, _) => {
                return Err(TargetError::Table {
                    table: shown,
                    reason: "names no database: give it in the URL (mysql://USER@HOST:PORT/DATABASE) or as schema".into(),
                });
            }
        };
        let mut conn = Conn::new(opts)
            .await
            .map_err(error(format!("connecting to {shown}")))?;
        conn.query_drop("SET SESSION time_zone = '+00:00'")
            .await
            .map_err(error("setting the session"))?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (
                sink VARCHAR(255) NOT NULL,
                topic VARCHAR(255) NOT NULL,
                `partition` INT NOT NULL,
                next_offset BIGINT NOT NULL,
                source_ts DATETIME(3),
                updated_at DATETIME(6) NOT NULL,
                PRIMARY KEY (sink, topic, `partition`)
            )",
            quote(&database),
            quote(POSITIONS)
        ))
        .await
        .map_err(error("creating logpipe_cdc_positions"))?;
        Ok(MariaDbTarget {
            url: shown,
            conn,
            database,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database of tables named without one.
    pub fn default_schema(&self) -> &str {
        &self.database
    }

    pub async fn positions(
        &mut self,
        sink: &str,
    ) -> Result<HashMap<(String, u32), u64>, TargetError> {
        let rows: Vec<(String, u32, u64)> = self
            .conn
            .exec(
                format!(
                    "SELECT topic, `partition`, next_offset FROM {}.{} WHERE sink = ?",
                    quote(&self.database),
                    quote(POSITIONS)
                ),
                (sink,),
            )
            .await
            .map_err(error("reading logpipe_cdc_positions"))?;
        Ok(rows.into_iter().map(|(t, p, o)| ((t, p), o)).collect())
    }

    pub async fn describe(
        &mut self,
        schema: &str,
        name: &str,
    ) -> Result<Option<TargetTable>, TargetError> {
        let rows: Vec<(String, String, String)> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_KEY FROM information_schema.COLUMNS
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (schema, name),
            )
            .await
            .map_err(error(format!("describing {schema}.{name}")))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(TargetTable {
            schema: schema.to_string(),
            name: name.to_string(),
            key: rows
                .iter()
                .filter(|r| r.2 == "PRI")
                .map(|r| r.0.clone())
                .collect(),
            columns: rows
                .into_iter()
                .map(|(column, data_type, _)| (column, from_data_type(&data_type)))
                .collect(),
        }))
    }

    pub async fn create(
        &mut self,
        schema: &str,
        name: &str,
        columns: &[(String, SqlType)],
        key: &[String],
    ) -> Result<(), TargetError> {
        let definition = table_definition(columns, key, quote, ddl);
        self.conn
            .query_drop(format!("CREATE DATABASE IF NOT EXISTS {}", quote(schema)))
            .await
            .map_err(error(format!("creating database {schema}")))?;
        self.conn
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {}.{} ({})",
                quote(schema),
                quote(name),
                definition
            ))
            .await
            .map_err(error(format!("creating {schema}.{name}")))?;
        Ok(())
    }

    pub async fn apply(
        &mut self,
        sink: &str,
        tables: &mut HashMap<String, TargetTable>,
        steps: Vec<(String, TableStep)>,
        positions: &[(String, u32, u64, Option<i64>)],
    ) -> Result<(), TargetError> {
        // Columns first, outside the transaction (DDL commits in MariaDB).
        for (table_key, step) in &steps {
            let TableStep::Columns(columns) = step else {
                continue;
            };
            let table = described(tables, table_key)?;
            for (column, sql) in columns {
                let statement = match table.column_change(column, *sql) {
                    None => continue,
                    Some(ColumnChange::Add) => format!(
                        "ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} {}",
                        quote(&table.schema),
                        quote(&table.name),
                        quote(column),
                        ddl(*sql, false)
                    ),
                    Some(ColumnChange::Widen { .. }) => format!(
                        "ALTER TABLE {}.{} MODIFY COLUMN {} {}",
                        quote(&table.schema),
                        quote(&table.name),
                        quote(column),
                        ddl(*sql, table.key.contains(column))
                    ),
                };
                self.conn
                    .query_drop(statement)
                    .await
                    .map_err(error(format!(
                        "changing column {column} of {}",
                        table.display()
                    )))?;
                tracing::info!(table = %table.display(), %column, r#type = ddl(*sql, false), "CDC target: column added or widened");
                table.columns.insert(column.clone(), Some(*sql));
            }
        }
        let mut transaction = self
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(error("starting a transaction"))?;
        for (table_key, step) in steps {
            let table = &tables[&table_key];
            let name = format!("{}.{}", quote(&table.schema), quote(&table.name));
            match step {
                TableStep::Columns(_) => {}
                TableStep::Truncate => {
                    transaction
                        .query_drop(format!("DELETE FROM {name}"))
                        .await
                        .map_err(error(format!("emptying {}", table.display())))?;
                }
                TableStep::Upserts { columns, rows } => {
                    let list = quoted_list(&columns, quote);
                    let updates: Vec<String> = table
                        .updated(&columns)
                        .map(|c| format!("{0} = VALUES({0})", quote(c)))
                        .collect();
                    let conflict = if updates.is_empty() {
                        format!("{0} = {0}", quote(&table.key[0]))
                    } else {
                        updates.join(", ")
                    };
                    let per_statement = (MAX_PARAMS / columns.len().max(1)).max(1);
                    for chunk in rows.chunks(per_statement) {
                        let statement = format!(
                            "INSERT INTO {name} ({list}) VALUES {} ON DUPLICATE KEY UPDATE {conflict}",
                            placeholders(columns.len(), chunk.len())
                        );
                        transaction
                            .exec_drop(statement, row_params(table, chunk, &columns))
                            .await
                            .map_err(error(format!("upserting into {}", table.display())))?;
                    }
                }
                TableStep::Deletes(keys) => {
                    let per_statement = (MAX_PARAMS / table.key.len().max(1)).max(1);
                    let key_list = quoted_list(&table.key, quote);
                    for chunk in keys.chunks(per_statement) {
                        let statement = format!(
                            "DELETE FROM {name} WHERE ({key_list}) IN ({})",
                            placeholders(table.key.len(), chunk.len())
                        );
                        transaction
                            .exec_drop(statement, row_params(table, chunk, &table.key))
                            .await
                            .map_err(error(format!("deleting from {}", table.display())))?;
                    }
                }
            }
        }
        if !positions.is_empty() {
            let statement = format!(
                "INSERT INTO {}.{} (sink, topic, `partition`, next_offset, source_ts, updated_at) VALUES {}
                 ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset),
                    source_ts = COALESCE(VALUES(source_ts), source_ts), updated_at = VALUES(updated_at)",
                quote(&self.database),
                quote(POSITIONS),
                vec!["(?, ?, ?, ?, FROM_UNIXTIME(? / 1000), NOW(6))"; positions.len()].join(", ")
            );
            let params: Vec<Value> = positions
                .iter()
                .flat_map(|(topic, partition, next, ms)| {
                    [
                        Value::from(sink),
                        Value::from(topic.as_str()),
                        Value::from(*partition),
                        Value::from(*next),
                        ms.map(Value::from).unwrap_or(Value::NULL),
                    ]
                })
                .collect();
            transaction
                .exec_drop(statement, params)
                .await
                .map_err(error("writing logpipe_cdc_positions"))?;
        }
        transaction.commit().await.map_err(error("committing"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_what_mariadb_reads() {
        assert_eq!(
            param(&Json::String("\\x01ff".into()), Some(SqlType::Bytea)),
            Value::Bytes(vec![1, 255])
        );
        assert_eq!(
            param(
                &Json::String("2024-03-01T10:11:12.5Z".into()),
                Some(SqlType::TimestampTz)
            ),
            Value::Bytes(b"2024-03-01 10:11:12.5".to_vec())
        );
        assert_eq!(
            param(&Json::Bool(true), Some(SqlType::Boolean)),
            Value::Int(1)
        );
        assert_eq!(
            param(&serde_json::json!({"a": 1}), Some(SqlType::Jsonb)),
            Value::Bytes(br#"{"a":1}"#.to_vec())
        );
        assert_eq!(ddl(SqlType::Text, true), "VARCHAR(255)");
    }
}
