//! Debezium's JSON change events, read into [`Change`]s whose values are
//! ready for the target.
//!
//! A record's key holds the row's primary key and its value the change:
//! `op` (`c` insert, `u` update, `d` delete, `r` snapshot read, `t`
//! truncate), the row `before` and `after`, `source` (binlog file,
//! position, GTID, `ts_ms`). Kafka Connect's `JsonConverter` wraps both in
//! `{"schema": …, "payload": …}` when `schemas.enable` is on (its default):
//! the schema gives each column's type, including Debezium's logical types
//! (`io.debezium.time.Date` is days since 1970, `…Timestamp` milliseconds,
//! `org.apache.kafka.connect.data.Decimal` a base64 big-endian integer).
//! Those are turned into the text PostgreSQL reads for the column's type,
//! so the sink never guesses. Without schemas the values are taken as they
//! are and column types follow the JSON (`bigint`, `double precision`,
//! `boolean`, `text`, `jsonb`).
//!
//! A value that is empty (Kafka's tombstone after a delete) is
//! [`Decoded::Tombstone`]: nothing to apply.

use std::sync::Arc;

use std::fmt::Write as _;

use base64::Engine;
use serde_json::{Map, Value};

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c`, `u` and `r` (a snapshot read): the row is `after`.
    Upsert,
    /// `d`: the row with the key is gone.
    Delete,
    /// `t`: every row of the table is gone.
    Truncate,
}

impl Op {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }
}

/// A column's target type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlType {
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    Boolean,
    Text,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Numeric,
    Jsonb,
}

impl SqlType {
    /// The type in PostgreSQL's DDL.
    pub fn sql(self) -> &'static str {
        match self {
            SqlType::SmallInt => "smallint",
            SqlType::Integer => "integer",
            SqlType::BigInt => "bigint",
            SqlType::Real => "real",
            SqlType::Double => "double precision",
            SqlType::Boolean => "boolean",
            SqlType::Text => "text",
            SqlType::Bytea => "bytea",
            SqlType::Date => "date",
            SqlType::Timestamp => "timestamp",
            SqlType::TimestampTz => "timestamptz",
            SqlType::Time => "time",
            SqlType::Numeric => "numeric",
            SqlType::Jsonb => "jsonb",
        }
    }

    /// Whether a column of this type can take every value of `other`
    /// without losing any: a target column is changed to a wider type only.
    /// Change events of one table arrive in several partitions, so events
    /// from before an `ALTER … MODIFY` may follow newer ones; a narrower
    /// type among them must not narrow the column back.
    pub fn holds(self, other: SqlType) -> bool {
        use SqlType::*;
        self == other
            || matches!(
                (self, other),
                (Integer, SmallInt)
                    | (BigInt, SmallInt | Integer)
                    | (Numeric, SmallInt | Integer | BigInt)
                    | (Double, Real | SmallInt | Integer)
                    | (TimestampTz, Timestamp)
                    | (Text, _)
                    | (Jsonb, _)
            )
    }

    /// The type a PostgreSQL `udt_name` (information_schema) is, when it is
    /// one this sink makes.
    pub fn from_udt(udt: &str) -> Option<SqlType> {
        Some(match udt {
            "int2" => SqlType::SmallInt,
            "int4" => SqlType::Integer,
            "int8" => SqlType::BigInt,
            "float4" => SqlType::Real,
            "float8" => SqlType::Double,
            "bool" => SqlType::Boolean,
            "text" => SqlType::Text,
            "bytea" => SqlType::Bytea,
            "date" => SqlType::Date,
            "timestamp" => SqlType::Timestamp,
            "timestamptz" => SqlType::TimestampTz,
            "time" => SqlType::Time,
            "numeric" => SqlType::Numeric,
            "jsonb" => SqlType::Jsonb,
            _ => return None,
        })
    }
}

/// A source column: its name and how its values are read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    pub name: String,
    pub sql: SqlType,
    logical: Logical,
}

/// How a value is turned into what PostgreSQL reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Logical {
    AsIs,
    /// Days since 1970-01-01.
    Date,
    /// Since 1970-01-01T00:00:00, in units per second.
    Timestamp(i64),
    /// Since midnight, in units per second.
    Time(i64),
    /// Base64 big-endian two's complement, this many decimal places.
    Decimal(u32),
    /// Base64 bytes.
    Bytes,
    /// A string holding JSON.
    JsonText,
}

/// One change event, read.
#[derive(Debug, Clone)]
pub struct Change {
    pub op: Op,
    /// The primary key's source columns and values (the record's key).
    pub key: Map<String, Value>,
    /// The row after the change (for [`Op::Upsert`]), values converted.
    pub after: Option<Map<String, Value>>,
    /// The columns of the row (`None` without schemas: then they follow
    /// the values).
    pub columns: Option<Arc<Vec<Column>>>,
    /// When the source made the change (`source.ts_ms`), for the lag.
    pub source_ms: Option<i64>,
}

/// A record's value read.
#[derive(Debug)]
pub enum Decoded {
    Change(Change),
    Tombstone,
}

/// Why a record is not a change event this sink can apply.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("its {part} is not JSON: {source}")]
    Json {
        part: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("it is not a Debezium change event: {0}")]
    Shape(String),
    #[error("column {column}: {reason}")]
    Value { column: String, reason: String },
    #[error(
        "its key is empty: the source table has no primary key, and a sink cannot upsert without one (give the table a primary key, or Debezium `message.key.columns`)"
    )]
    NoKey,
}

/// Reads one record (key and value bytes) of a change topic.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Decoded, EventError> {
    if value.is_empty() {
        return Ok(Decoded::Tombstone);
    }
    let value: Value = serde_json::from_slice(value).map_err(|source| EventError::Json {
        part: "value",
        source,
    })?;
    if value.is_null() {
        return Ok(Decoded::Tombstone);
    }
    let (value_schema, payload) = split_envelope(value);
    let Value::Object(mut payload) = payload else {
        return Err(EventError::Shape("the value is not an object".into()));
    };
    let op = match payload.get("op").and_then(Value::as_str) {
        Some("c" | "u" | "r") => Op::Upsert,
        Some("d") => Op::Delete,
        Some("t") => Op::Truncate,
        Some(other) => return Err(EventError::Shape(format!("unknown op {other:?}"))),
        None => return Err(EventError::Shape("no `op` field".into())),
    };
    let source_ms = payload
        .get("source")
        .and_then(|s| s.get("ts_ms"))
        .and_then(Value::as_i64);
    let row_schema = value_schema.as_ref().and_then(|schema| {
        let field = if op == Op::Delete { "before" } else { "after" };
        field_schema(schema, field)
    });
    let columns = match row_schema {
        Some(schema) => Some(Arc::new(columns_of(schema)?)),
        None => None,
    };
    let key = if op == Op::Truncate {
        Map::new()
    } else {
        read_key(key, &payload, op, columns.as_deref().map(Vec::as_slice))?
    };
    let after = match op {
        Op::Upsert => match payload.remove("after") {
            Some(Value::Object(row)) => {
                Some(convert_row(row, columns.as_deref().map(Vec::as_slice))?)
            }
            _ => {
                return Err(EventError::Shape(format!(
                    "op {op:?} without an `after` row"
                )));
            }
        },
        _ => None,
    };
    Ok(Decoded::Change(Change {
        op,
        key,
        after,
        columns,
        source_ms,
    }))
}

/// `(schema, payload)` of a `JsonConverter` envelope, or `(None, value)`.
fn split_envelope(value: Value) -> (Option<Value>, Value) {
    match value {
        Value::Object(mut map)
            if map.len() == 2 && map.contains_key("schema") && map.contains_key("payload") =>
        {
            let payload = map.remove("payload").unwrap_or(Value::Null);
            (map.remove("schema"), payload)
        }
        other => (None, other),
    }
}

/// The schema of the struct field `name` of a struct schema.
fn field_schema<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    schema
        .get("fields")?
        .as_array()?
        .iter()
        .find(|f| f.get("field").and_then(Value::as_str) == Some(name))
}

/// The columns a row's struct schema describes.
fn columns_of(schema: &Value) -> Result<Vec<Column>, EventError> {
    let fields = schema
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| EventError::Shape("a row schema without fields".into()))?;
    fields
        .iter()
        .map(|field| {
            let name = field
                .get("field")
                .and_then(Value::as_str)
                .ok_or_else(|| EventError::Shape("a schema field without a name".into()))?;
            let (sql, logical) = type_of(field);
            Ok(Column {
                name: name.to_string(),
                sql,
                logical,
            })
        })
        .collect()
}

/// A Connect schema's target type and reading.
fn type_of(field: &Value) -> (SqlType, Logical) {
    let kind = field.get("type").and_then(Value::as_str).unwrap_or("");
    let name = field.get("name").and_then(Value::as_str).unwrap_or("");
    match name {
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
            return (SqlType::Date, Logical::Date);
        }
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            return (SqlType::Timestamp, Logical::Timestamp(1_000));
        }
        "io.debezium.time.MicroTimestamp" => {
            return (SqlType::Timestamp, Logical::Timestamp(1_000_000));
        }
        "io.debezium.time.NanoTimestamp" => {
            return (SqlType::Timestamp, Logical::Timestamp(1_000_000_000));
        }
        "io.debezium.time.ZonedTimestamp" => return (SqlType::TimestampTz, Logical::AsIs),
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => {
            return (SqlType::Time, Logical::Time(1_000));
        }
        "io.debezium.time.MicroTime" => return (SqlType::Time, Logical::Time(1_000_000)),
        "io.debezium.time.NanoTime" => return (SqlType::Time, Logical::Time(1_000_000_000)),
        "io.debezium.time.Year" => return (SqlType::Integer, Logical::AsIs),
        "io.debezium.data.Json" => return (SqlType::Jsonb, Logical::JsonText),
        "org.apache.kafka.connect.data.Decimal" => {
            let scale = field
                .get("parameters")
                .and_then(|p| p.get("scale"))
                .and_then(|s| {
                    s.as_str()
                        .and_then(|s| s.parse().ok())
                        .or(s.as_u64().map(|s| s as u32))
                })
                .unwrap_or(0);
            return (SqlType::Numeric, Logical::Decimal(scale));
        }
        _ => {}
    }
    match kind {
        "int8" | "int16" => (SqlType::SmallInt, Logical::AsIs),
        "int32" => (SqlType::Integer, Logical::AsIs),
        "int64" => (SqlType::BigInt, Logical::AsIs),
        "float" | "float32" => (SqlType::Real, Logical::AsIs),
        "double" | "float64" => (SqlType::Double, Logical::AsIs),
        "boolean" => (SqlType::Boolean, Logical::AsIs),
        "string" => (SqlType::Text, Logical::AsIs),
        "bytes" => (SqlType::Bytea, Logical::Bytes),
        // Structs, arrays and maps (geometries, sets): kept as JSON.
        _ => (SqlType::Jsonb, Logical::AsIs),
    }
}

/// The type of a value when no schema says it.
pub fn type_of_value(value: &Value) -> SqlType {
    match value {
        Value::Bool(_) => SqlType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => SqlType::BigInt,
        Value::Number(_) => SqlType::Double,
        Value::String(_) | Value::Null => SqlType::Text,
        Value::Array(_) | Value::Object(_) => SqlType::Jsonb,
    }
}

/// The key's columns and values: the record key (bare or in an envelope),
/// else the key fields of the row image.
fn read_key(
    key: &[u8],
    payload: &Map<String, Value>,
    op: Op,
    columns: Option<&[Column]>,
) -> Result<Map<String, Value>, EventError> {
    if key.is_empty() {
        return Err(EventError::NoKey);
    }
    let key: Value = serde_json::from_slice(key).map_err(|source| EventError::Json {
        part: "key",
        source,
    })?;
    let (_, key) = split_envelope(key);
    let Value::Object(key) = key else {
        return Err(EventError::NoKey);
    };
    if key.is_empty() {
        return Err(EventError::NoKey);
    }
    // The key's values read like the row's (a DATE key is days in both).
    let row = if op == Op::Delete { "before" } else { "after" };
    if payload.get(row).is_some_and(Value::is_null) && op == Op::Delete {
        return Err(EventError::Shape("a delete without a `before` row".into()));
    }
    convert_row(key, columns)
}

/// A row's values turned into what PostgreSQL reads for their columns.
fn convert_row(
    mut row: Map<String, Value>,
    columns: Option<&[Column]>,
) -> Result<Map<String, Value>, EventError> {
    let Some(columns) = columns else {
        return Ok(row);
    };
    for column in columns {
        if let Some(value) = row.get_mut(&column.name) {
            if value.is_null() || column.logical == Logical::AsIs {
                continue;
            }
            let converted =
                convert(&column.logical, value).map_err(|reason| EventError::Value {
                    column: column.name.clone(),
                    reason,
                })?;
            *value = converted;
        }
    }
    Ok(row)
}

fn convert(logical: &Logical, value: &Value) -> Result<Value, String> {
    let int = || {
        value
            .as_i64()
            .ok_or_else(|| format!("{value} is not an integer"))
    };
    let string = || {
        value
            .as_str()
            .ok_or_else(|| format!("{value} is not a string"))
    };
    Ok(match logical {
        Logical::AsIs => value.clone(),
        Logical::Date => {
            let days = int()?;
            let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(days)))
                .ok_or_else(|| format!("{days} days is out of range"))?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        Logical::Timestamp(per_second) => {
            let units = int()?;
            let seconds = units.div_euclid(*per_second);
            let nanos = (units.rem_euclid(*per_second) * (1_000_000_000 / per_second)) as u32;
            let at = chrono::DateTime::from_timestamp(seconds, nanos)
                .ok_or_else(|| format!("{units} is out of range"))?;
            Value::String(at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        }
        Logical::Time(per_second) => {
            let units = int()?;
            let seconds = units.div_euclid(*per_second);
            let nanos = (units.rem_euclid(*per_second) * (1_000_000_000 / per_second)) as u32;
            let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(seconds as u32, nanos)
                .filter(|_| (0..86_400).contains(&seconds))
                .ok_or_else(|| {
                    format!(
                        "{units} is not a time of day (a PostgreSQL `time` holds 00:00 to 24:00)"
                    )
                })?;
            Value::String(time.format("%H:%M:%S%.f").to_string())
        }
        Logical::Decimal(scale) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(string()?)
                .map_err(|e| format!("not base64: {e}"))?;
            Value::String(decimal_text(&bytes, *scale)?)
        }
        Logical::Bytes => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(string()?)
                .map_err(|e| format!("not base64: {e}"))?;
            let mut text = String::with_capacity(2 + 2 * bytes.len());
            text.push_str("\\x");
            for byte in bytes {
                // Writing to a String cannot fail.
                let _ = write!(text, "{byte:02x}");
            }
            Value::String(text)
        }
        Logical::JsonText => {
            serde_json::from_str(string()?).map_err(|e| format!("not JSON: {e}"))?
        }
    })
}

/// A big-endian two's complement integer with `scale` decimal places, as
/// decimal text (up to 38 digits: `DECIMAL(65, …)` beyond that is refused).
fn decimal_text(bytes: &[u8], scale: u32) -> Result<String, String> {
    if bytes.len() > 16 {
        return Err(format!(
            "a decimal of {} bytes is wider than this sink reads (16); set Debezium's decimal.handling.mode=string",
            bytes.len()
        ));
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut unscaled: i128 = if negative { -1 } else { 0 };
    for &byte in bytes {
        unscaled = (unscaled << 8) | i128::from(byte);
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let (whole, fraction) = if digits.len() > scale {
        let split = digits.len() - scale;
        (digits[..split].to_string(), digits[split..].to_string())
    } else {
        ("0".to_string(), format!("{digits:0>scale$}"))
    };
    let sign = if unscaled < 0 { "-" } else { "" };
    Ok(if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as Debezium's MariaDB connector wrote it through
    /// `JsonConverter` with schemas (trimmed to a few columns).
    const VALUE: &str = r#"{"schema":{"type":"struct","fields":[
        {"type":"struct","field":"before","optional":true,"fields":[]},
        {"type":"struct","field":"after","optional":true,"fields":[
          {"type":"int32","optional":false,"field":"id"},
          {"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"price"},
          {"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"registered_on"},
          {"type":"int64","optional":true,"name":"io.debezium.time.Timestamp","version":1,"field":"updated_at"},
          {"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"seen"},
          {"type":"int16","optional":true,"field":"active"},
          {"type":"int64","optional":true,"name":"io.debezium.time.MicroTime","version":1,"field":"t"},
          {"type":"bytes","optional":true,"field":"b"}]}]},
      "payload":{"before":null,"after":{"id":1,"price":"EtaH","registered_on":19782,
        "updated_at":1709287872345,"seen":"2024-03-01T10:11:12.345678Z","active":1,
        "t":45296789000,"b":"AQL/"},
        "source":{"ts_ms":1796553792000,"file":"mysql-bin.000001","pos":2082},"op":"r"}}"#;
    const KEY: &str = r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}]},"payload":{"id":1}}"#;

    fn change(key: &str, value: &str) -> Change {
        match decode(key.as_bytes(), value.as_bytes()).unwrap() {
            Decoded::Change(change) => change,
            Decoded::Tombstone => panic!("a tombstone"),
        }
    }

    #[test]
    fn a_snapshot_read_becomes_an_upsert_with_values_postgres_reads() {
        let change = change(KEY, VALUE);
        assert_eq!(change.op, Op::Upsert);
        assert_eq!(Value::Object(change.key), serde_json::json!({"id": 1}));
        let after = change.after.unwrap();
        assert_eq!(after["price"], "12345.67");
        assert_eq!(after["registered_on"], "2024-02-29");
        assert_eq!(after["updated_at"], "2024-03-01T10:11:12.345");
        assert_eq!(after["seen"], "2024-03-01T10:11:12.345678Z");
        assert_eq!(after["active"], 1);
        assert_eq!(after["t"], "12:34:56.789");
        assert_eq!(after["b"], "\\x0102ff");
        assert_eq!(change.source_ms, Some(1796553792000));
        let columns = change.columns.unwrap();
        let types: Vec<&str> = columns.iter().map(|c| c.sql.sql()).collect();
        assert_eq!(
            types,
            [
                "integer",
                "numeric",
                "date",
                "timestamp",
                "timestamptz",
                "smallint",
                "time",
                "bytea"
            ]
        );
    }

    #[test]
    fn a_column_is_only_ever_widened() {
        assert!(SqlType::BigInt.holds(SqlType::Integer));
        assert!(!SqlType::Integer.holds(SqlType::BigInt));
        assert!(SqlType::Numeric.holds(SqlType::BigInt));
        assert!(SqlType::Text.holds(SqlType::Date));
        assert!(!SqlType::Date.holds(SqlType::Text));
    }

    #[test]
    fn decimals_keep_their_sign_and_places() {
        assert_eq!(decimal_text(&[0x12, 0xd6, 0x87], 2).unwrap(), "12345.67");
        assert_eq!(decimal_text(&[0xff], 2).unwrap(), "-0.01");
        assert_eq!(decimal_text(&[0xed, 0x29, 0x79], 2).unwrap(), "-12345.67");
        assert_eq!(decimal_text(&[0x05], 0).unwrap(), "5");
        assert_eq!(decimal_text(&[], 0).unwrap(), "0");
        assert!(
            decimal_text(&[1; 17], 0)
                .unwrap_err()
                .contains("decimal.handling.mode")
        );
    }

    #[test]
    fn deletes_tombstones_and_schemaless_events_read() {
        let delete = r#"{"before":{"id":7,"name":"x"},"after":null,"op":"d","source":{"ts_ms":5}}"#;
        let change = change(r#"{"id":7}"#, delete);
        assert_eq!(change.op, Op::Delete);
        assert!(change.after.is_none() && change.columns.is_none());
        assert_eq!(Value::Object(change.key), serde_json::json!({"id": 7}));
        assert!(matches!(
            decode(b"{\"id\":7}", b"").unwrap(),
            Decoded::Tombstone
        ));
        assert!(matches!(
            decode(b"{\"id\":7}", b"null").unwrap(),
            Decoded::Tombstone
        ));
    }

    #[test]
    fn what_is_not_a_change_event_is_named() {
        let err = |key: &str, value: &str| {
            decode(key.as_bytes(), value.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err("{}", "{not json").contains("value is not JSON"));
        assert!(err("{\"id\":1}", r#"{"after":{}}"#).contains("no `op`"));
        assert!(err("{\"id\":1}", r#"{"op":"x"}"#).contains("unknown op"));
        assert!(err("", r#"{"op":"c","after":{"a":1}}"#).contains("no primary key"));
        assert!(err("{\"id\":1}", r#"{"op":"c","after":null}"#).contains("without an `after`"));
        let bad_date = VALUE.replace("19782", "\"x\"");
        assert!(err(KEY, &bad_date).contains("column registered_on"));
    }
}
