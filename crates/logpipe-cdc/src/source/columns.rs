//! A MariaDB column as Debezium describes it, and its values as Debezium
//! writes them: the same JSON Debezium's MariaDB connector produces, so a
//! consumer of Debezium's topics reads logpipe's unchanged.
//!
//! Both paths meet here: the snapshot's result set and the binlog's rows
//! carry `mysql_common`'s `Column` (type, flags, character set) and a
//! precision or scale, and the same `Value`s.

use base64::Engine;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::{Column, Value};
use serde_json::{Map, Value as Json, json};

/// The binary collation: a character column with it holds bytes.
const BINARY_CHARSET: u16 = 63;

/// What Debezium makes of a MariaDB type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// `DECIMAL(p, scale)`: base64 big-endian unscaled.
    Decimal(u8),
    /// Days since 1970.
    Date,
    /// `DATETIME(p ≤ 3)`: milliseconds since 1970 (no time zone).
    TimestampMs,
    /// `DATETIME(p > 3)`: microseconds since 1970.
    TimestampUs,
    /// `TIMESTAMP`: ISO-8601 in UTC.
    Zoned,
    /// `TIME`: microseconds.
    TimeUs,
    Year,
    String,
    Bytes,
    /// `ENUM`: one of the column's `allowed` values, as text.
    Enum,
    /// `SET`: some of them, comma-separated.
    Set,
}

/// A source column.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceColumn {
    pub name: String,
    pub kind: Kind,
    pub key: bool,
    /// An `ENUM`'s or a `SET`'s values in their order (empty otherwise):
    /// the binlog carries their numbers, events carry the text.
    pub allowed: Vec<String>,
}

/// Why a column cannot be captured.
#[derive(Debug, thiserror::Error)]
#[error("column {column} ({kind:?}): {reason}")]
pub struct ColumnError {
    pub column: String,
    pub kind: Option<Kind>,
    pub reason: String,
}

impl SourceColumn {
    /// From a column definition, its precision or scale (`decimals` of a
    /// result set; the table map's metadata for the binlog) and, for an
    /// `ENUM` or a `SET`, its values.
    pub fn of(
        column: &Column,
        decimals: u8,
        allowed: Vec<String>,
    ) -> Result<SourceColumn, ColumnError> {
        let flags = column.flags();
        let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
        let binary = column.character_set() == BINARY_CHARSET;
        let name = column.name_str().into_owned();
        use ColumnType::*;
        let kind = match column.column_type() {
            // The binlog's table map names them; a result set says STRING
            // with a flag.
            MYSQL_TYPE_ENUM => Kind::Enum,
            MYSQL_TYPE_SET => Kind::Set,
            MYSQL_TYPE_STRING if flags.contains(ColumnFlags::ENUM_FLAG) => Kind::Enum,
            MYSQL_TYPE_STRING if flags.contains(ColumnFlags::SET_FLAG) => Kind::Set,
            MYSQL_TYPE_TINY => Kind::Int16,
            MYSQL_TYPE_SHORT if unsigned => Kind::Int32,
            MYSQL_TYPE_SHORT => Kind::Int16,
            MYSQL_TYPE_INT24 => Kind::Int32,
            MYSQL_TYPE_LONG if unsigned => Kind::Int64,
            MYSQL_TYPE_LONG => Kind::Int32,
            MYSQL_TYPE_LONGLONG => Kind::Int64,
            MYSQL_TYPE_FLOAT => Kind::Float32,
            MYSQL_TYPE_DOUBLE => Kind::Float64,
            MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => Kind::Decimal(decimals),
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Kind::Date,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 if decimals > 3 => Kind::TimestampUs,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => Kind::TimestampMs,
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => Kind::Zoned,
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => Kind::TimeUs,
            MYSQL_TYPE_YEAR => Kind::Year,
            MYSQL_TYPE_BIT => Kind::Bytes,
            MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB
                if binary =>
            {
                Kind::Bytes
            }
            MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_JSON => Kind::String,
            other => {
                return Err(ColumnError {
                    column: name,
                    kind: None,
                    reason: format!(
                        "type {other:?} is not captured yet (geometry types are not); exclude the table or change the column"
                    ),
                });
            }
        };
        let allowed = if matches!(kind, Kind::Enum | Kind::Set) {
            allowed
        } else {
            Vec::new()
        };
        Ok(SourceColumn {
            name,
            kind,
            key: flags.contains(ColumnFlags::PRI_KEY_FLAG),
            allowed,
        })
    }

    /// Whether the schema says the column may be null. The binlog does not
    /// say which columns are NOT NULL (the snapshot's result set does):
    /// every column but the key is optional in both, so a table's schema
    /// does not change between the two.
    pub fn optional(&self) -> bool {
        !self.key
    }

    /// The column's Connect schema field, as Debezium writes it.
    pub fn schema(&self) -> Json {
        let (kind, name, parameters): (&str, Option<&str>, Option<Json>) = match self.kind {
            Kind::Int16 => ("int16", None, None),
            Kind::Int32 => ("int32", None, None),
            Kind::Int64 => ("int64", None, None),
            Kind::Float32 => ("float", None, None),
            Kind::Float64 => ("double", None, None),
            Kind::Decimal(scale) => (
                "bytes",
                Some("org.apache.kafka.connect.data.Decimal"),
                Some(json!({ "scale": scale.to_string() })),
            ),
            Kind::Date => ("int32", Some("io.debezium.time.Date"), None),
            Kind::TimestampMs => ("int64", Some("io.debezium.time.Timestamp"), None),
            Kind::TimestampUs => ("int64", Some("io.debezium.time.MicroTimestamp"), None),
            Kind::Zoned => ("string", Some("io.debezium.time.ZonedTimestamp"), None),
            Kind::TimeUs => ("int64", Some("io.debezium.time.MicroTime"), None),
            Kind::Year => ("int32", Some("io.debezium.time.Year"), None),
            Kind::String => ("string", None, None),
            Kind::Bytes => ("bytes", None, None),
            Kind::Enum => (
                "string",
                Some("io.debezium.data.Enum"),
                Some(json!({ "allowed": self.allowed.join(",") })),
            ),
            Kind::Set => (
                "string",
                Some("io.debezium.data.EnumSet"),
                Some(json!({ "allowed": self.allowed.join(",") })),
            ),
        };
        let mut field = Map::new();
        field.insert("type".into(), kind.into());
        field.insert("optional".into(), self.optional().into());
        if let Some(name) = name {
            field.insert("name".into(), name.into());
            field.insert("version".into(), 1.into());
        }
        if let Some(parameters) = parameters {
            field.insert("parameters".into(), parameters);
        }
        field.insert("field".into(), self.name.clone().into());
        Json::Object(field)
    }

    /// A binlog value as a result set gives it: an `ENUM`'s number and a
    /// `SET`'s bits become their text.
    pub fn from_binlog(&self, value: Value) -> Value {
        match (self.kind, value) {
            (Kind::Enum, Value::Int(0)) => Value::Bytes(Vec::new()),
            (Kind::Enum, Value::Int(n)) => {
                let index = usize::try_from(n - 1).unwrap_or(usize::MAX);
                Value::Bytes(
                    self.allowed
                        .get(index)
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_else(|| n.to_string().into_bytes()),
                )
            }
            (Kind::Set, Value::Bytes(bits)) => {
                let names: Vec<&str> = self
                    .allowed
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
                    .map(|(_, name)| name.as_str())
                    .collect();
                Value::Bytes(names.join(",").into_bytes())
            }
            (_, value) => value,
        }
    }

    /// A value as Debezium writes it.
    pub fn json(&self, value: &Value) -> Result<Json, ColumnError> {
        let fail = |reason: String| ColumnError {
            column: self.name.clone(),
            kind: Some(self.kind),
            reason,
        };
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Ok(match (self.kind, value) {
            (_, Value::NULL) => Json::Null,
            (Kind::Int16 | Kind::Int32 | Kind::Int64 | Kind::Year, Value::Int(i)) => json!(i),
            (Kind::Int16 | Kind::Int32 | Kind::Int64 | Kind::Year, Value::UInt(u)) => json!(u),
            (Kind::Year, Value::Bytes(b)) => {
                json!(
                    text(b)
                        .parse::<i64>()
                        .map_err(|e| fail(format!("year {}: {e}", text(b))))?
                )
            }
            (Kind::Year, Value::Date(y, ..)) => json!(y),
            (Kind::Float32 | Kind::Float64, Value::Float(f)) => json!(f),
            (Kind::Float32 | Kind::Float64, Value::Double(f)) => json!(f),
            (Kind::Float32 | Kind::Float64, Value::Bytes(b)) => {
                json!(
                    text(b)
                        .parse::<f64>()
                        .map_err(|e| fail(format!("{}: {e}", text(b))))?
                )
            }
            (Kind::Decimal(scale), Value::Bytes(b)) => {
                let unscaled = unscaled(&text(b), scale).map_err(fail)?;
                Json::String(base64::engine::general_purpose::STANDARD.encode(big_endian(unscaled)))
            }
            (Kind::Date, Value::Date(y, m, d, ..)) => {
                let date =
                    chrono::NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*m), u32::from(*d))
                        .ok_or_else(|| fail(format!("{y}-{m}-{d} is not a date")))?;
                json!((date - epoch_date()).num_days())
            }
            (Kind::TimestampMs | Kind::TimestampUs, Value::Date(..)) => {
                let at = naive(value)
                    .ok_or_else(|| fail(format!("{value:?} is not a date and time")))?;
                let micros = at.and_utc().timestamp_micros();
                if self.kind == Kind::TimestampMs {
                    json!(micros.div_euclid(1000))
                } else {
                    json!(micros)
                }
            }
            (Kind::Zoned, Value::Date(..)) => {
                let at = naive(value)
                    .ok_or_else(|| fail(format!("{value:?} is not a date and time")))?;
                Json::String(zoned(at))
            }
            (Kind::Zoned, Value::Bytes(b)) => {
                // The binlog's TIMESTAMP: seconds since 1970 in UTC, with
                // microseconds after a dot.
                let t = text(b);
                let (seconds, micros) = match t.split_once('.') {
                    Some((s, f)) => (s.to_string(), format!("{f:0<6}")),
                    None => (t.clone(), "0".to_string()),
                };
                let seconds: i64 = seconds.parse().map_err(|e| fail(format!("{t}: {e}")))?;
                let micros: u32 = micros.parse().map_err(|e| fail(format!("{t}: {e}")))?;
                let at = chrono::DateTime::from_timestamp(seconds, micros * 1000)
                    .ok_or_else(|| fail(format!("{t} is out of range")))?;
                Json::String(zoned(at.naive_utc()))
            }
            (Kind::TimeUs, Value::Time(negative, days, h, m, s, us)) => {
                let micros = ((i64::from(*days) * 24 + i64::from(*h)) * 3600
                    + i64::from(*m) * 60
                    + i64::from(*s))
                    * 1_000_000
                    + i64::from(*us);
                json!(if *negative { -micros } else { micros })
            }
            (Kind::String | Kind::Enum | Kind::Set, Value::Bytes(b)) => Json::String(text(b)),
            (Kind::Bytes, Value::Bytes(b)) => {
                Json::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (kind, value) => return Err(fail(format!("a {kind:?} column holds {value:?}"))),
        })
    }
}

/// The values of `enum('a','b')` or `set('x','y')`, as
/// `information_schema.COLUMNS.COLUMN_TYPE` writes them (a quote inside a
/// value doubled).
pub fn allowed_values(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let inner = column_type[open + 1..].trim_end_matches(')');
    let mut values = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => break,
                c => value.push(c),
            }
        }
        values.push(value);
    }
    values
}

fn epoch_date() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

fn naive(value: &Value) -> Option<chrono::NaiveDateTime> {
    let Value::Date(y, mo, d, h, mi, s, us) = value else {
        return None;
    };
    chrono::NaiveDate::from_ymd_opt(i32::from(*y), u32::from(*mo), u32::from(*d))?
        .and_hms_micro_opt(u32::from(*h), u32::from(*mi), u32::from(*s), *us)
}

/// ISO-8601 in UTC, microseconds when there are any (Debezium's form).
fn zoned(at: chrono::NaiveDateTime) -> String {
    if at.and_utc().timestamp_subsec_micros() == 0 {
        at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

/// `"-12.5"` at scale 2 → -1250.
fn unscaled(text: &str, scale: u8) -> Result<i128, String> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = usize::from(scale);
    if fraction.len() > scale {
        return Err(format!("{text} has more than {scale} decimal places"));
    }
    let padded = format!("{whole}{fraction:0<scale$}");
    let value: i128 = padded
        .parse()
        .map_err(|e| format!("{text} is not a decimal: {e}"))?;
    Ok(if negative { -value } else { value })
}

/// The shortest big-endian two's complement bytes of `value`.
fn big_endian(value: i128) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (byte, next) = (bytes[start], bytes[start + 1]);
        let redundant = (byte == 0x00 && next & 0x80 == 0) || (byte == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_encode_as_debezium_does() {
        let encode = |text: &str, scale| {
            base64::engine::general_purpose::STANDARD
                .encode(big_endian(unscaled(text, scale).unwrap()))
        };
        // What Debezium wrote for DECIMAL(10,2) 12345.67 (docs/cdc.md's trial).
        assert_eq!(encode("12345.67", 2), "EtaH");
        assert_eq!(big_endian(-1), [0xff]);
        assert_eq!(big_endian(128), [0x00, 0x80]);
        assert_eq!(big_endian(0), [0x00]);
        assert_eq!(unscaled("-0.5", 3).unwrap(), -500);
        assert!(unscaled("1.234", 2).is_err());
    }

    #[test]
    fn times_follow_debeziums_units() {
        let column = |kind| SourceColumn {
            name: "c".into(),
            kind,
            key: false,
            allowed: Vec::new(),
        };
        let at = Value::Date(2024, 3, 1, 10, 11, 12, 345_678);
        assert_eq!(
            column(Kind::TimestampMs).json(&at).unwrap(),
            json!(1_709_287_872_345_i64)
        );
        assert_eq!(
            column(Kind::TimestampUs).json(&at).unwrap(),
            json!(1_709_287_872_345_678_i64)
        );
        assert_eq!(
            column(Kind::Zoned).json(&at).unwrap(),
            "2024-03-01T10:11:12.345678Z"
        );
        assert_eq!(
            column(Kind::Zoned)
                .json(&Value::Bytes(b"1709287872.5".to_vec()))
                .unwrap(),
            "2024-03-01T10:11:12.500000Z"
        );
        assert_eq!(
            column(Kind::Date)
                .json(&Value::Date(2024, 2, 29, 0, 0, 0, 0))
                .unwrap(),
            json!(19782)
        );
        assert_eq!(
            column(Kind::TimeUs)
                .json(&Value::Time(false, 0, 12, 34, 56, 789_000))
                .unwrap(),
            json!(45_296_789_000_i64)
        );
        assert!(
            column(Kind::Date)
                .json(&Value::Int(3))
                .unwrap_err()
                .to_string()
                .contains("column c")
        );
    }

    #[test]
    fn enums_and_sets_are_their_text() {
        assert_eq!(
            allowed_values("enum('base','sport','it''s')"),
            ["base", "sport", "it's"]
        );
        assert_eq!(allowed_values("set('roof','tow')"), ["roof", "tow"]);
        let column = |kind| SourceColumn {
            name: "c".into(),
            kind,
            key: false,
            allowed: allowed_values("set('roof','tow','heat')"),
        };
        let set = column(Kind::Set);
        assert_eq!(
            set.from_binlog(Value::Bytes(vec![0b101])),
            Value::Bytes(b"roof,heat".to_vec())
        );
        assert_eq!(
            set.from_binlog(Value::Bytes(vec![0])),
            Value::Bytes(Vec::new())
        );
        let one = column(Kind::Enum);
        assert_eq!(
            one.from_binlog(Value::Int(2)),
            Value::Bytes(b"tow".to_vec())
        );
        assert_eq!(one.from_binlog(Value::Int(0)), Value::Bytes(Vec::new()));
        assert_eq!(one.json(&Value::Bytes(b"tow".to_vec())).unwrap(), "tow");
        assert_eq!(one.schema()["name"], "io.debezium.data.Enum");
        assert_eq!(one.schema()["parameters"]["allowed"], "roof,tow,heat");
    }
}
