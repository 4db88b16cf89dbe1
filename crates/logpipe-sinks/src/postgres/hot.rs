//! The hot store's PostgreSQL side: raw-record tables partitioned by event
//! day, rows sent by binary `COPY`, and the bus positions they came from,
//! all in one transaction (docs/hot-store.md).
//!
//! Exactly once, as the CDC sink: a crash before the commit leaves neither
//! the rows nor the positions, so the records are read again; a crash after
//! it leaves both, so they are not. Positions move by compare-and-set (the
//! row must still hold the offset this writer started from), so a second
//! writer of the same store — two processes started with the hot store on —
//! loses its transaction instead of storing the same records twice: the
//! second `UPDATE` waits for the first's row lock, then finds the offset
//! moved and matches nothing.
//!
//! A day's partition (`<table>_YYYYMMDD`) is made before the first row of
//! that day is written, and dropped whole once the day ends before the
//! retention cutoff: dropping a partition is instant and leaves no dead
//! rows to vacuum, unlike `DELETE`.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use arrow::array::{
    Array, AsArray, RecordBatch,
    types::{Float64Type, Int32Type, TimestampMicrosecondType},
};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use bytes::{BufMut, BytesMut};
use chrono::{Duration, NaiveDate};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls};

use super::client::{PgError, redact};

/// The table of the hot store's bus positions, in its schema.
pub const POSITIONS: &str = "logpipe_hot_positions";

/// Where one partition of the bus stands after a write: it held `from`
/// (`None`: no row yet) and now holds `to`, the next offset to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionMove {
    pub topic: String,
    pub partition: u32,
    pub from: Option<u64>,
    pub to: u64,
}

/// The rows of one table and event day.
pub struct DayRows<'a> {
    pub table: &'a str,
    pub day: NaiveDate,
    pub batch: &'a RecordBatch,
}

/// A connection to the hot store's database.
pub struct HotStore {
    url: String,
    client: Client,
    schema: String,
    /// `(table, day)` partitions known to exist.
    partitions: BTreeSet<(String, NaiveDate)>,
    /// Each table's column types, in the batches' order.
    types: HashMap<String, Vec<Type>>,
}

fn query(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Query { context, source }
}

/// `"name"` with inner quotes doubled.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `<table>_YYYYMMDD`.
pub fn partition_name(table: &str, day: NaiveDate) -> String {
    format!("{table}_{}", day.format("%Y%m%d"))
}

/// The day a partition named by [`partition_name`] holds.
fn partition_day(table: &str, name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix(table)?.strip_prefix('_')?;
    if digits.len() != 8 {
        return None;
    }
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

/// The PostgreSQL type of a raw table's Arrow column.
fn sql_type(column: &str, data_type: &DataType) -> Result<(Type, &'static str), PgError> {
    Ok(match data_type {
        DataType::Utf8 => (Type::TEXT, "text"),
        DataType::Int32 => (Type::INT4, "integer"),
        DataType::Float64 => (Type::FLOAT8, "double precision"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => (Type::TIMESTAMPTZ, "timestamptz"),
        other => {
            return Err(PgError::UnsupportedType {
                column: column.to_string(),
                data_type: other.to_string(),
            });
        }
    })
}

impl HotStore {
    /// Connects and makes `schema` and its positions table.
    pub async fn connect(url: &str, schema: &str) -> Result<HotStore, PgError> {
        let shown = redact(url);
        let connect_error = |source| PgError::Connect {
            url: shown.clone(),
            source,
        };
        let mut config = tokio_postgres::Config::from_str(url).map_err(connect_error)?;
        config.application_name("logpipe-hot-store");
        let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "hot store connection ended");
            }
        });
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.{POSITIONS} (
                    store text NOT NULL,
                    topic text NOT NULL,
                    partition integer NOT NULL,
                    next_offset bigint NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (store, topic, partition)
                 )",
                schema = quote(schema),
            ))
            .await
            .map_err(query(format!("creating {schema}.{POSITIONS}")))?;
        Ok(HotStore {
            url: shown,
            client,
            schema: schema.to_string(),
            partitions: BTreeSet::new(),
            types: HashMap::new(),
        })
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.schema), quote(table))
    }

    /// The next offset to read per (topic, partition) of `store`.
    pub async fn positions(&self, store: &str) -> Result<HashMap<(String, u32), u64>, PgError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT topic, partition, next_offset FROM {} WHERE store = $1",
                    self.qualified(POSITIONS)
                ),
                &[&store],
            )
            .await
            .map_err(query(format!("reading {POSITIONS}")))?;
        Ok(rows
            .iter()
            .map(|row| {
                let topic: String = row.get(0);
                let partition: i32 = row.get(1);
                let next: i64 = row.get(2);
                ((topic, partition as u32), next as u64)
            })
            .collect())
    }

    /// Makes `table` (partitioned by day on `timestamp`, indexed on it)
    /// with `schema`'s columns unless it exists.
    pub async fn ensure_table(&mut self, table: &str, schema: &Schema) -> Result<(), PgError> {
        let mut types = Vec::new();
        let mut definitions = Vec::new();
        for field in schema.fields() {
            let (ty, name) = sql_type(field.name(), field.data_type())?;
            types.push(ty);
            definitions.push(format!(
                "{} {name}{}",
                quote(field.name()),
                if field.is_nullable() { "" } else { " NOT NULL" }
            ));
        }
        let qualified = self.qualified(table);
        self.client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {qualified} ({}) PARTITION BY RANGE (\"timestamp\");
                 CREATE INDEX IF NOT EXISTS {} ON {qualified} (\"timestamp\")",
                definitions.join(", "),
                quote(&format!("{table}_timestamp")),
            ))
            .await
            .map_err(query(format!("creating {}.{table}", self.schema)))?;
        self.types.insert(table.to_string(), types);
        Ok(())
    }

    /// Makes the partition of `table` for `day` unless it exists. Outside
    /// the write's transaction: an empty partition is harmless, and the
    /// write's locks stay short.
    async fn ensure_partition(&mut self, table: &str, day: NaiveDate) -> Result<(), PgError> {
        if self.partitions.contains(&(table.to_string(), day)) {
            return Ok(());
        }
        let next = day + Duration::days(1);
        self.client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
                self.qualified(&partition_name(table, day)),
                self.qualified(table),
            ))
            .await
            .map_err(query(format!("creating the partition of {table} for {day}")))?;
        self.partitions.insert((table.to_string(), day));
        Ok(())
    }

    /// Writes `rows` by COPY and moves `store`'s positions, in one
    /// transaction. [`PgError::Fenced`] when another writer moved a
    /// position first (nothing of this write is stored).
    pub async fn write(
        &mut self,
        store: &str,
        rows: &[DayRows<'_>],
        moves: &[PositionMove],
    ) -> Result<u64, PgError> {
        for day_rows in rows {
            self.ensure_partition(day_rows.table, day_rows.day).await?;
        }
        let positions = self.qualified(POSITIONS);
        let mut copies = Vec::with_capacity(rows.len());
        for day_rows in rows {
            let types = self.types.get(day_rows.table).cloned().ok_or_else(|| {
                PgError::UnsupportedType {
                    column: day_rows.table.to_string(),
                    data_type: "a table ensure_table has not made".to_string(),
                }
            })?;
            let columns: Vec<String> = day_rows
                .batch
                .schema()
                .fields()
                .iter()
                .map(|f| quote(f.name()))
                .collect();
            copies.push((
                format!(
                    "COPY {} ({}) FROM STDIN (FORMAT binary)",
                    self.qualified(&partition_name(day_rows.table, day_rows.day)),
                    columns.join(", ")
                ),
                types,
            ));
        }
        let transaction = self
            .client
            .transaction()
            .await
            .map_err(query("starting a hot store transaction"))?;
        let mut written = 0;
        for (day_rows, (statement, types)) in rows.iter().zip(copies) {
            let sink = transaction
                .copy_in(&statement)
                .await
                .map_err(query(format!("starting COPY into {}", day_rows.table)))?;
            let writer = BinaryCopyInWriter::new(sink, &types);
            let mut writer = std::pin::pin!(writer);
            let readers = day_rows
                .batch
                .columns()
                .iter()
                .map(|array| Reader::of(array.as_ref()))
                .collect::<Vec<_>>();
            // One row's cells in a vector reused for every row.
            let mut cells: Vec<Cell<'_>> = Vec::with_capacity(readers.len());
            for row in 0..day_rows.batch.num_rows() {
                cells.clear();
                cells.extend(readers.iter().map(|reader| reader.cell(row)));
                writer
                    .as_mut()
                    .write_raw(cells.iter())
                    .await
                    .map_err(|source| PgError::Query {
                        context: format!("copying rows into {}", day_rows.table),
                        source,
                    })?;
            }
            written += writer
                .finish()
                .await
                .map_err(query(format!("finishing COPY into {}", day_rows.table)))?;
        }
        for moved in moves {
            let (topic, partition, to) = (&moved.topic, moved.partition as i32, moved.to as i64);
            let changed = match moved.from {
                Some(from) => transaction
                    .execute(
                        &format!(
                            "UPDATE {positions} SET next_offset = $4, updated_at = now()
                             WHERE store = $1 AND topic = $2 AND partition = $3 AND next_offset = $5"
                        ),
                        &[&store, topic, &partition, &to, &(from as i64)],
                    )
                    .await,
                None => transaction
                    .execute(
                        &format!(
                            "INSERT INTO {positions} (store, topic, partition, next_offset)
                             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
                        ),
                        &[&store, topic, &partition, &to],
                    )
                    .await,
            }
            .map_err(query(format!("moving {POSITIONS}")))?;
            if changed != 1 {
                return Err(PgError::Fenced {
                    what: format!(
                        "another writer moved the hot store's position of {topic} partition {} first",
                        moved.partition
                    ),
                });
            }
        }
        transaction
            .commit()
            .await
            .map_err(query("committing a hot store transaction"))?;
        Ok(written)
    }

    /// Drops the partitions of `table` whose whole day is before `cutoff`;
    /// returns their names.
    pub async fn drop_before(
        &mut self,
        table: &str,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>, PgError> {
        let rows = self
            .client
            .query(
                "SELECT c.relname::text FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = (quote_ident($1) || '.' || quote_ident($2))::regclass",
                &[&self.schema, &table],
            )
            .await
            .map_err(query(format!("listing the partitions of {table}")))?;
        let mut dropped = Vec::new();
        for row in rows {
            let name: String = row.get(0);
            let Some(day) = partition_day(table, &name) else {
                continue;
            };
            let end = (day + Duration::days(1))
                .and_time(chrono::NaiveTime::MIN)
                .and_utc();
            if end > cutoff {
                continue;
            }
            // Dropping a partition locks its parent: give up after a while
            // rather than hold up writes behind a long query (the next pass
            // tries again).
            let qualified = self.qualified(&name);
            let transaction = self
                .client
                .transaction()
                .await
                .map_err(query(format!("dropping {name}")))?;
            transaction
                .batch_execute(&format!(
                    "SET LOCAL lock_timeout = '5s'; DROP TABLE IF EXISTS {qualified}"
                ))
                .await
                .map_err(query(format!("dropping {name}")))?;
            transaction
                .commit()
                .await
                .map_err(query(format!("dropping {name}")))?;
            self.partitions.remove(&(table.to_string(), day));
            dropped.push(name);
        }
        Ok(dropped)
    }
}

/// One column of a batch, typed once.
enum Reader<'a> {
    Text(&'a arrow::array::StringArray),
    Int(&'a arrow::array::Int32Array),
    Double(&'a arrow::array::Float64Array),
    Micros(&'a arrow::array::TimestampMicrosecondArray),
    Unsupported,
}

impl<'a> Reader<'a> {
    fn of(array: &'a dyn Array) -> Reader<'a> {
        match array.data_type() {
            DataType::Utf8 => Reader::Text(array.as_string::<i32>()),
            DataType::Int32 => Reader::Int(array.as_primitive::<Int32Type>()),
            DataType::Float64 => Reader::Double(array.as_primitive::<Float64Type>()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Reader::Micros(array.as_primitive::<TimestampMicrosecondType>())
            }
            _ => Reader::Unsupported,
        }
    }

    fn cell(&self, row: usize) -> Cell<'a> {
        match self {
            Reader::Text(a) if a.is_valid(row) => Cell::Text(a.value(row)),
            Reader::Int(a) if a.is_valid(row) => Cell::Int(a.value(row)),
            Reader::Double(a) if a.is_valid(row) => Cell::Double(a.value(row)),
            Reader::Micros(a) if a.is_valid(row) => Cell::Micros(a.value(row)),
            _ => Cell::Null,
        }
    }
}

/// One value in COPY's binary format.
#[derive(Debug)]
enum Cell<'a> {
    Null,
    Text(&'a str),
    Int(i32),
    Double(f64),
    /// Microseconds since the Unix epoch.
    Micros(i64),
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Text(text) => text.to_sql(ty, out),
            Cell::Int(value) => value.to_sql(ty, out),
            Cell::Double(value) => value.to_sql(ty, out),
            Cell::Micros(micros) => {
                out.put_i64(micros - POSTGRES_EPOCH_MICROS);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::TEXT | Type::INT4 | Type::FLOAT8 | Type::TIMESTAMPTZ
        )
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_ignore_others() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        assert_eq!(partition_name("logs", day), "logs_20261206");
        assert_eq!(partition_day("logs", "logs_20261206"), Some(day));
        assert_eq!(partition_day("logs", "events_20261206"), None);
        assert_eq!(partition_day("logs", "logs_archive"), None);
        assert_eq!(partition_day("logs", "logs_2026120"), None);
    }
}
