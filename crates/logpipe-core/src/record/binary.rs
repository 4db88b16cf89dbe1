//! A validated record in binary form, for the embedded bus.
//!
//! The collector has parsed and validated every record it accepts; writing
//! it to the bus as JSON made every job that reads it parse the JSON again
//! (the lake job's parse was about a seventh of the server's CPU under
//! load). On the embedded bus, whose only readers are logpipe's own jobs,
//! the collector writes this form instead: the validated fields, each
//! length-prefixed, which a reader takes apart without scanning text.
//! Topics on Kafka stay JSON (Spark, Kafka Connect and other clients read
//! them), and readers take either form: a value is binary when its first
//! byte is one of the tags below, which JSON text never starts with.
//!
//! Layout (little-endian; `str` is a `u32` byte length and UTF-8 bytes;
//! `opt<T>` is a byte 0 or 1 and, when 1, the `T`):
//!
//! - log: [`LOG_TAG`], timestamp µs `i64`, level `u8` (index in
//!   [`Level::ALL`]), service `str`, host `opt<str>`, message `str`,
//!   request_id `opt<str>`, response_time_ms `opt<f64>`, status_code
//!   `opt<i32>`, endpoint `opt<str>`, method `opt<str>`, the other
//!   metadata keys `opt<str>` (a JSON object).
//! - event: [`EVENT_TAG`], event_id `str`, timestamp µs `i64`, user_id
//!   `str`, session_id `opt<str>`, event_type `u8` (index in
//!   [`EventType::ALL`]), event_data `opt<str>` (a JSON object), page
//!   `opt<str>`, element `opt<str>`, position x and y `opt<f64>`, device
//!   type, os and browser `opt<str>`.
//!
//! Only the collector writes this form, after validating the record. A
//! reader checks what a damaged or misread value would break: the
//! structure (lengths within the value, no trailing bytes), UTF-8, the
//! enums, the timestamp's range, lengths, non-empty required text, the
//! numbers' ranges (as the JSON path's), and the other metadata keys being
//! a non-empty JSON object without the known ones; anything else is refused
//! with a reason, never misread. It trusts that `event_data` is the compact
//! JSON object the collector wrote and that `page`, `element` and
//! `position` were taken from it: checking that means parsing it again,
//! which is what the form saves.
//!
//! Changing the layout, or the order of [`Level::ALL`] or
//! [`EventType::ALL`] (the enums are written as indexes), needs a new tag:
//! bus segments outlive versions.

use serde_json::{Map, Value};

use std::borrow::Cow;

use super::view::{EventView, LogView, RecordView};
use super::{
    EventType, Level, Record, RecordError, RecordKind, ValidationLimits, check_json_len, check_len,
};
use crate::time;

/// The metadata keys that have columns of their own.
const KNOWN_METADATA: [&str; 5] = [
    "request_id",
    "response_time_ms",
    "status_code",
    "endpoint",
    "method",
];

/// First byte of a log record in binary form.
pub const LOG_TAG: u8 = 0x01;
/// First byte of an activity event in binary form.
pub const EVENT_TAG: u8 = 0x02;

/// Whether `value` is a record in binary form (else it is JSON text).
pub fn is_binary(value: &[u8]) -> bool {
    matches!(value.first(), Some(&LOG_TAG | &EVENT_TAG))
}

/// `record` in binary form.
pub fn encode(record: &Record) -> Vec<u8> {
    encode_view(&record.into())
}

/// A record in binary form, from a view of it (what the collector has in
/// hand after validating a record, its text still in the request body).
pub fn encode_view(record: &RecordView<'_>) -> Vec<u8> {
    match record {
        RecordView::Log(log) => encode_log(log),
        RecordView::Event(event) => encode_event(event),
    }
}

fn encode_log(log: &LogView<'_>) -> Vec<u8> {
    let extra = log
        .extra
        .as_ref()
        .map(|map| serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string()));
    let strings = [
        Some(log.service),
        log.host,
        Some(log.message),
        log.request_id,
        log.endpoint,
        log.method,
        extra.as_deref(),
    ];
    let mut out =
        Writer::with_capacity(64 + strings.iter().flatten().map(|s| s.len()).sum::<usize>());
    out.u8(LOG_TAG);
    out.i64(log.timestamp_micros);
    out.u8(index_of(&Level::ALL, log.level));
    out.str(log.service);
    out.opt_str(log.host);
    out.str(log.message);
    out.opt_str(log.request_id);
    out.opt_f64(log.response_time_ms);
    out.opt_i32(log.status_code);
    out.opt_str(log.endpoint);
    out.opt_str(log.method);
    out.opt_str(extra.as_deref());
    out.0
}

fn encode_event(event: &EventView<'_>) -> Vec<u8> {
    let strings = [
        Some(event.event_id),
        Some(event.user_id),
        event.session_id,
        event.event_data,
        event.page,
        event.element,
        event.device_type,
        event.device_os,
        event.device_browser,
    ];
    let mut out =
        Writer::with_capacity(80 + strings.iter().flatten().map(|s| s.len()).sum::<usize>());
    out.u8(EVENT_TAG);
    out.str(event.event_id);
    out.i64(event.timestamp_micros);
    out.str(event.user_id);
    out.opt_str(event.session_id);
    out.u8(index_of(&EventType::ALL, event.event_type));
    out.opt_str(event.event_data);
    out.opt_str(event.page);
    out.opt_str(event.element);
    out.opt_f64(event.position_x);
    out.opt_f64(event.position_y);
    out.opt_str(event.device_type);
    out.opt_str(event.device_os);
    out.opt_str(event.device_browser);
    out.0
}

fn index_of<T: PartialEq>(all: &[T], value: T) -> u8 {
    all.iter().position(|v| *v == value).unwrap_or(0) as u8
}

/// A record of `kind` from its binary form, checked as described in the
/// module docs.
pub fn decode(
    kind: RecordKind,
    value: &[u8],
    limits: &ValidationLimits,
) -> Result<Record, RecordError> {
    view(kind, value, limits).map(RecordView::into_record)
}

/// [`decode`], borrowing the text fields from `value` (what the lake's
/// builders take: each field is copied once, into its column).
pub fn view<'a>(
    kind: RecordKind,
    value: &'a [u8],
    limits: &ValidationLimits,
) -> Result<RecordView<'a>, RecordError> {
    let mut input = Reader { rest: value, at: 0 };
    let tag = input.u8("tag")?;
    let record = match (kind, tag) {
        (RecordKind::Log, LOG_TAG) => RecordView::Log(view_log(&mut input, limits)?),
        (RecordKind::Event, EVENT_TAG) => RecordView::Event(view_event(&mut input, limits)?),
        (RecordKind::Log, EVENT_TAG) => {
            return Err(RecordError::Shape(
                "an activity event in binary form where a log record belongs".into(),
            ));
        }
        (RecordKind::Event, LOG_TAG) => {
            return Err(RecordError::Shape(
                "a log record in binary form where an activity event belongs".into(),
            ));
        }
        (_, other) => {
            return Err(RecordError::Shape(format!(
                "unknown binary record tag 0x{other:02x}"
            )));
        }
    };
    if !input.rest.is_empty() {
        return Err(RecordError::Shape(format!(
            "{} bytes after the end of a binary record of {} bytes",
            input.rest.len(),
            input.at
        )));
    }
    Ok(record)
}

fn view_log<'a>(
    input: &mut Reader<'a>,
    limits: &ValidationLimits,
) -> Result<LogView<'a>, RecordError> {
    let timestamp_micros = timestamp(input, limits)?;
    let level = *Level::ALL
        .get(usize::from(input.u8("level")?))
        .ok_or_else(|| RecordError::field("level", "not a known level in binary form"))?;
    let service = required(input, "service", limits)?;
    let host = optional(input, "host", limits)?;
    let message = text(input, "message", limits)?;
    let request_id = optional(input, "metadata.request_id", limits)?;
    let response_time_ms = input.opt_f64("metadata.response_time_ms")?;
    if let Some(ms) = response_time_ms
        && ms < 0.0
    {
        return Err(RecordError::field(
            "metadata.response_time_ms",
            format!("must be a non-negative number, got {ms}"),
        ));
    }
    let status_code = input.opt_i32("metadata.status_code")?;
    if let Some(code) = status_code
        && !(100..=599).contains(&code)
    {
        return Err(RecordError::field(
            "metadata.status_code",
            format!("must be an HTTP status 100-599, got {code}"),
        ));
    }
    let endpoint = optional(input, "metadata.endpoint", limits)?;
    let method = optional(input, "metadata.method", limits)?;
    let extra = match input.opt_str("metadata")? {
        None => None,
        Some(json) => {
            let extra = serde_json::from_str::<Map<String, Value>>(json)
                .map_err(|e| RecordError::field("metadata", e.to_string()))?;
            // The JSON path files these keys under their columns and leaves
            // no empty object behind.
            if extra.is_empty() {
                return Err(RecordError::field(
                    "metadata",
                    "an empty object of other keys",
                ));
            }
            if let Some(key) = extra
                .keys()
                .find(|key| KNOWN_METADATA.contains(&key.as_str()))
            {
                return Err(RecordError::field(
                    "metadata",
                    format!("`{key}` among the other keys"),
                ));
            }
            Some(extra)
        }
    };
    if let Some(extra) = &extra {
        check_json_len("metadata", extra, limits)?;
    }
    Ok(LogView {
        timestamp_micros,
        level,
        service,
        host,
        message,
        request_id,
        response_time_ms,
        status_code,
        endpoint,
        method,
        extra: extra.map(Cow::Owned),
    })
}

fn view_event<'a>(
    input: &mut Reader<'a>,
    limits: &ValidationLimits,
) -> Result<EventView<'a>, RecordError> {
    let event_id = required(input, "event_id", limits)?;
    let timestamp_micros = timestamp(input, limits)?;
    let user_id = required(input, "user_id", limits)?;
    let session_id = optional(input, "session_id", limits)?;
    let event_type = *EventType::ALL
        .get(usize::from(input.u8("event_type")?))
        .ok_or_else(|| RecordError::field("event_type", "not a known type in binary form"))?;
    let event_data = optional(input, "event_data", limits)?;
    if event_data.is_some_and(|data| !data.starts_with('{')) {
        return Err(RecordError::field("event_data", "must be a JSON object"));
    }
    Ok(EventView {
        event_id,
        timestamp_micros,
        user_id,
        session_id,
        event_type,
        event_data,
        page: optional(input, "event_data.page", limits)?,
        element: optional(input, "event_data.element", limits)?,
        position_x: input.opt_f64("event_data.position.x")?,
        position_y: input.opt_f64("event_data.position.y")?,
        device_type: optional(input, "device.type", limits)?,
        device_os: optional(input, "device.os", limits)?,
        device_browser: optional(input, "device.browser", limits)?,
    })
}

fn timestamp(input: &mut Reader<'_>, limits: &ValidationLimits) -> Result<i64, RecordError> {
    let micros = input.i64("timestamp")?;
    Ok(time::check_range(
        micros,
        limits.now_micros,
        limits.max_future_skew_secs,
    )?)
}

fn text<'a>(
    input: &mut Reader<'a>,
    field: &'static str,
    limits: &ValidationLimits,
) -> Result<&'a str, RecordError> {
    let value = input.str(field)?;
    check_len(field, value, limits)?;
    Ok(value)
}

fn required<'a>(
    input: &mut Reader<'a>,
    field: &'static str,
    limits: &ValidationLimits,
) -> Result<&'a str, RecordError> {
    let value = text(input, field, limits)?;
    if value.trim().is_empty() {
        return Err(RecordError::field(field, "must not be empty"));
    }
    Ok(value)
}

fn optional<'a>(
    input: &mut Reader<'a>,
    field: &'static str,
    limits: &ValidationLimits,
) -> Result<Option<&'a str>, RecordError> {
    match input.opt_str(field)? {
        None => Ok(None),
        Some(value) => {
            check_len(field, value, limits)?;
            Ok(Some(value))
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn with_capacity(bytes: usize) -> Writer {
        Writer(Vec::with_capacity(bytes))
    }

    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn str(&mut self, value: &str) {
        // Every field is at most `collector.max_field_bytes`, which the
        // configuration keeps below 4 GiB.
        self.0
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.0.extend_from_slice(value.as_bytes());
    }

    /// A presence byte, and the value when there is one.
    fn opt<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Writer, T)) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                write(self, value);
            }
        }
    }

    fn opt_str(&mut self, value: Option<&str>) {
        self.opt(value, Writer::str);
    }

    fn opt_f64(&mut self, value: Option<f64>) {
        self.opt(value, |out, value| {
            out.0.extend_from_slice(&value.to_le_bytes())
        });
    }

    fn opt_i32(&mut self, value: Option<i32>) {
        self.opt(value, |out, value| {
            out.0.extend_from_slice(&value.to_le_bytes())
        });
    }
}

/// Takes a binary record apart; every step names the field it reads.
struct Reader<'a> {
    rest: &'a [u8],
    /// Bytes taken so far (for messages).
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < len {
            return Err(RecordError::field(
                field,
                format!(
                    "binary record cut short: {len} bytes needed at byte {}, {} left",
                    self.at,
                    self.rest.len()
                ),
            ));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        self.at += len;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let bytes = self.take(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, RecordError> {
        let len = u32::from_le_bytes(self.array(field)?) as usize;
        let bytes = self.take(field, len)?;
        std::str::from_utf8(bytes)
            .map_err(|e| RecordError::field(field, format!("not UTF-8 in binary form: {e}")))
    }

    fn present(&mut self, field: &'static str) -> Result<bool, RecordError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(RecordError::field(
                field,
                format!("presence byte 0x{other:02x} in binary form (0 or 1)"),
            )),
        }
    }

    fn opt_str(&mut self, field: &'static str) -> Result<Option<&'a str>, RecordError> {
        if self.present(field)? {
            self.str(field).map(Some)
        } else {
            Ok(None)
        }
    }

    fn opt_f64(&mut self, field: &'static str) -> Result<Option<f64>, RecordError> {
        if !self.present(field)? {
            return Ok(None);
        }
        let value = f64::from_le_bytes(self.array(field)?);
        if !value.is_finite() {
            return Err(RecordError::field(field, "not a finite number"));
        }
        Ok(Some(value))
    }

    fn opt_i32(&mut self, field: &'static str) -> Result<Option<i32>, RecordError> {
        if self.present(field)? {
            Ok(Some(i32::from_le_bytes(self.array(field)?)))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LogRecord;

    fn limits() -> ValidationLimits {
        ValidationLimits::now()
    }

    const LOG: &str = r#"{"timestamp":1736640000.25,"level":"WARN","service":"api","host":"h1","message":"slow \"query\" é","metadata":{"request_id":"r-1","response_time_ms":12.5,"status_code":503,"endpoint":"/x","method":"GET","region":"eu","tries":[1,2]}}"#;
    const BARE_LOG: &str =
        r#"{"timestamp":"2025-01-12T00:00:00Z","level":"INFO","service":"s","message":""}"#;
    const EVENT: &str = r#"{"event_id":"e-1","timestamp":1736640000.5,"user_id":"u-9","session_id":"s-2","event_type":"CLICK","event_data":{"page":"/home","element":"btn","position":{"x":10.5,"y":-3}},"device":{"type":"mobile","os":"iOS","browser":"Safari"}}"#;
    const BARE_EVENT: &str =
        r#"{"event_id":"e-2","timestamp":1736640001,"user_id":"u","event_type":"LOGOUT"}"#;

    /// Every optional field present, and every one absent, of each kind.
    const SHAPES: [(RecordKind, &str); 4] = [
        (RecordKind::Log, LOG),
        (RecordKind::Log, BARE_LOG),
        (RecordKind::Event, EVENT),
        (RecordKind::Event, BARE_EVENT),
    ];

    fn parsed(kind: RecordKind, json: &str) -> Record {
        Record::parse(kind, json, &limits()).unwrap()
    }

    /// The binary form gives back the record the JSON form does, with every
    /// optional field present and absent.
    #[test]
    fn a_record_reads_back_as_its_json_does() {
        for (kind, json) in SHAPES {
            let record = parsed(kind, json);
            let binary = encode(&record);
            assert!(is_binary(&binary));
            assert_eq!(decode(kind, &binary, &limits()).unwrap(), record, "{json}");
            let again = parsed(kind, std::str::from_utf8(&record.to_json()).unwrap());
            assert_eq!(decode(kind, &binary, &limits()).unwrap(), again, "{json}");
        }
        assert!(!is_binary(LOG.as_bytes()));
        assert!(!is_binary(b" {}"));
        assert!(!is_binary(b""));
    }

    /// A record's view, borrowed from its binary form, fills the lake's
    /// columns exactly as the owned record does (which field goes to which
    /// column is pinned by the `tables` builders' own tests).
    #[test]
    fn a_view_fills_the_same_columns_as_the_record() {
        use crate::tables::BatchBuilder;
        for (kind, json) in SHAPES {
            let record = parsed(kind, json);
            let binary = encode(&record);
            let mut owned = BatchBuilder::new(kind);
            owned.append(&record).unwrap();
            let mut borrowed = BatchBuilder::new(kind);
            borrowed
                .append_view(&view(kind, &binary, &limits()).unwrap())
                .unwrap();
            assert_eq!(
                owned.finish().unwrap(),
                borrowed.finish().unwrap(),
                "{json}"
            );
        }
    }

    /// Every cut of a record, and every byte of it changed, is refused
    /// with a reason or read as some record: never a panic, never trailing
    /// bytes taken.
    #[test]
    fn damaged_records_are_refused_with_a_reason() {
        for (kind, json) in [(RecordKind::Log, LOG), (RecordKind::Event, EVENT)] {
            let binary = encode(&parsed(kind, json));
            for cut in 0..binary.len() {
                let error = decode(kind, &binary[..cut], &limits()).unwrap_err();
                assert!(!error.to_string().is_empty());
            }
            for at in 0..binary.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut damaged = binary.clone();
                    damaged[at] ^= flip;
                    let _ = decode(kind, &damaged, &limits());
                }
            }
            let mut longer = binary.clone();
            longer.push(0);
            let error = decode(kind, &longer, &limits()).unwrap_err().to_string();
            assert!(error.contains("1 bytes after the end"), "{error}");
        }
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let log = encode(&parsed(RecordKind::Log, LOG));
        let error = decode(RecordKind::Event, &log, &limits())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a log record in binary form where an activity event"),
            "{error}"
        );

        // The level byte follows the tag and the timestamp.
        let mut bad_level = log.clone();
        bad_level[9] = 9;
        let error = decode(RecordKind::Log, &bad_level, &limits())
            .unwrap_err()
            .to_string();
        assert!(error.contains("`level`"), "{error}");

        // The service's length prefix follows the level byte.
        let mut empty_service = encode(&parsed(RecordKind::Log, BARE_LOG));
        empty_service[14] = b' ';
        let error = decode(RecordKind::Log, &empty_service, &limits())
            .unwrap_err()
            .to_string();
        assert!(error.contains("`service`: must not be empty"), "{error}");

        let mut not_utf8 = log.clone();
        not_utf8[14] = 0xff;
        let error = decode(RecordKind::Log, &not_utf8, &limits())
            .unwrap_err()
            .to_string();
        assert!(error.contains("`service`: not UTF-8"), "{error}");

        let mut too_old = log.clone();
        too_old[1..9].copy_from_slice(&0i64.to_le_bytes());
        let error = decode(RecordKind::Log, &too_old, &limits())
            .unwrap_err()
            .to_string();
        assert!(error.contains("`timestamp`"), "{error}");

        let short = ValidationLimits {
            max_field_bytes: 2,
            ..limits()
        };
        let error = decode(RecordKind::Log, &log, &short)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`service`") || error.contains("`message`"),
            "{error}"
        );
        let mut record = match parsed(RecordKind::Log, LOG) {
            Record::Log(log) => log,
            Record::Event(_) => unreachable!(),
        };
        // What the collector never writes, refused as the JSON path refuses it.
        let refused = |record: &LogRecord| {
            decode(
                RecordKind::Log,
                &encode(&Record::Log(record.clone())),
                &limits(),
            )
            .unwrap_err()
            .to_string()
        };
        record.metadata.status_code = Some(42);
        let error = refused(&record);
        assert!(
            error.contains("`metadata.status_code`: must be an HTTP status"),
            "{error}"
        );
        record.metadata.status_code = None;
        record.metadata.response_time_ms = Some(-1.0);
        let error = refused(&record);
        assert!(
            error.contains("`metadata.response_time_ms`: must be a non-negative"),
            "{error}"
        );
        record.metadata.response_time_ms = None;
        let mut extra = Map::new();
        extra.insert("method".into(), Value::from("GET"));
        record.metadata.extra = Some(extra);
        let error = refused(&record);
        assert!(error.contains("`method` among the other keys"), "{error}");
        record.metadata.extra = Some(Map::new());
        let error = refused(&record);
        assert!(error.contains("an empty object"), "{error}");

        let error = decode(RecordKind::Log, &[0x07], &limits())
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown binary record tag 0x07"), "{error}");
    }
}
