//! The protobuf wire format of OTLP's logs request
//! (`opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest`),
//! decoded by hand: the handful of messages a logs export carries, read
//! field by field, unknown fields skipped as protobuf requires. No code
//! generator and no protobuf crate for ten messages; every length is
//! checked against the body, and values nest at most [`MAX_DEPTH`] deep,
//! so a hostile body gets a 400, not a crash.
//!
//! Field numbers are those of opentelemetry-proto v1 (`logs.proto`,
//! `common.proto`, `resource.proto`).

use std::sync::Arc;

use super::{AnyValue, OtlpLog};

/// How deep arrays and key-value lists may nest inside one value.
const MAX_DEPTH: usize = 32;

#[derive(Debug, PartialEq)]
pub(crate) struct WireError(pub(crate) String);

type Result<T> = std::result::Result<T, WireError>;

fn bad(what: impl Into<String>) -> WireError {
    WireError(what.into())
}

enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    /// Read past: no field logpipe maps is 32-bit (`LogRecord.flags` is).
    Fixed32,
}

/// Fields of one message, in order.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Fields<'a> {
        Fields {
            buf,
            pos: 0,
            message,
        }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(bad(format!(
                    "{}: the body ends inside a number",
                    self.message
                )));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad(format!(
            "{}: a number longer than 10 bytes",
            self.message
        )))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                bad(format!(
                    "{}: a field of {n} bytes runs past the end of the body",
                    self.message
                ))
            })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn next(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or([0; 8]),
            )),
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| bad("a length too large"))?;
                Value::Len(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            other => {
                return Err(bad(format!(
                    "{}: field {field} has wire type {other}, which OTLP does not use",
                    self.message
                )));
            }
        };
        Ok(Some((field, value)))
    }
}

fn text(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
}

/// A wrong wire type for a known field.
fn wrong(message: &str, field: &str) -> WireError {
    bad(format!("{message}.{field} has the wrong wire type"))
}

/// Every log record of an `ExportLogsServiceRequest`, in order, each with
/// its resource's attributes and its scope's name.
pub(crate) fn decode_request(body: &[u8]) -> Result<Vec<OtlpLog>> {
    let mut logs = Vec::new();
    let mut fields = Fields::new(body, "ExportLogsServiceRequest");
    while let Some((field, value)) = fields.next()? {
        match (field, value) {
            (1, Value::Len(bytes)) => resource_logs(bytes, &mut logs)?,
            (1, _) => return Err(wrong("ExportLogsServiceRequest", "resource_logs")),
            _ => {}
        }
    }
    Ok(logs)
}

fn resource_logs(bytes: &[u8], logs: &mut Vec<OtlpLog>) -> Result<()> {
    let mut resource = Vec::new();
    let mut scopes: Vec<&[u8]> = Vec::new();
    let mut fields = Fields::new(bytes, "ResourceLogs");
    while let Some((field, value)) = fields.next()? {
        match (field, value) {
            (1, Value::Len(bytes)) => {
                let mut fields = Fields::new(bytes, "Resource");
                while let Some((field, value)) = fields.next()? {
                    match (field, value) {
                        (1, Value::Len(bytes)) => resource.push(key_value(bytes, 0)?),
                        (1, _) => return Err(wrong("Resource", "attributes")),
                        _ => {}
                    }
                }
            }
            // Scopes may come before the resource: read them after it.
            (2, Value::Len(bytes)) => scopes.push(bytes),
            (1 | 2, _) => return Err(wrong("ResourceLogs", "resource or scope_logs")),
            _ => {}
        }
    }
    let resource = Arc::new(resource);
    for bytes in scopes {
        scope_logs(bytes, &resource, logs)?;
    }
    Ok(())
}

fn scope_logs(
    bytes: &[u8],
    resource: &Arc<Vec<(String, AnyValue)>>,
    logs: &mut Vec<OtlpLog>,
) -> Result<()> {
    let mut scope = String::new();
    let mut records: Vec<&[u8]> = Vec::new();
    let mut fields = Fields::new(bytes, "ScopeLogs");
    while let Some((field, value)) = fields.next()? {
        match (field, value) {
            (1, Value::Len(bytes)) => {
                let mut fields = Fields::new(bytes, "InstrumentationScope");
                while let Some((field, value)) = fields.next()? {
                    if let (1, Value::Len(name)) = (field, value) {
                        scope = text(name, "InstrumentationScope.name")?;
                    }
                }
            }
            (2, Value::Len(bytes)) => records.push(bytes),
            (1 | 2, _) => return Err(wrong("ScopeLogs", "scope or log_records")),
            _ => {}
        }
    }
    for bytes in records {
        let mut log = log_record(bytes)?;
        log.resource = resource.clone();
        log.scope = scope.clone();
        logs.push(log);
    }
    Ok(())
}

fn log_record(bytes: &[u8]) -> Result<OtlpLog> {
    let mut log = OtlpLog::default();
    let mut fields = Fields::new(bytes, "LogRecord");
    while let Some((field, value)) = fields.next()? {
        match (field, value) {
            (1, Value::Fixed64(nanos)) => log.time_unix_nano = nanos,
            (11, Value::Fixed64(nanos)) => log.observed_time_unix_nano = nanos,
            (2, Value::Varint(number)) => log.severity_number = number as i32,
            (3, Value::Len(bytes)) => log.severity_text = text(bytes, "LogRecord.severity_text")?,
            (5, Value::Len(bytes)) => log.body = Some(any_value(bytes, 0)?),
            (6, Value::Len(bytes)) => log.attributes.push(key_value(bytes, 0)?),
            (9, Value::Len(bytes)) => log.trace_id = bytes.to_vec(),
            (10, Value::Len(bytes)) => log.span_id = bytes.to_vec(),
            (12, Value::Len(bytes)) => log.event_name = text(bytes, "LogRecord.event_name")?,
            (1 | 11 | 2 | 3 | 5 | 6 | 9 | 10 | 12, _) => {
                return Err(bad(format!(
                    "LogRecord field {field} has the wrong wire type"
                )));
            }
            _ => {}
        }
    }
    Ok(log)
}

fn key_value(bytes: &[u8], depth: usize) -> Result<(String, AnyValue)> {
    let mut key = String::new();
    let mut value = AnyValue::Empty;
    let mut fields = Fields::new(bytes, "KeyValue");
    while let Some((field, v)) = fields.next()? {
        match (field, v) {
            (1, Value::Len(bytes)) => key = text(bytes, "KeyValue.key")?,
            (2, Value::Len(bytes)) => value = any_value(bytes, depth)?,
            (1 | 2, _) => return Err(wrong("KeyValue", "key or value")),
            _ => {}
        }
    }
    Ok((key, value))
}

fn any_value(bytes: &[u8], depth: usize) -> Result<AnyValue> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("a value nests deeper than {MAX_DEPTH} levels")));
    }
    let mut value = AnyValue::Empty;
    let mut fields = Fields::new(bytes, "AnyValue");
    while let Some((field, v)) = fields.next()? {
        value = match (field, v) {
            (1, Value::Len(bytes)) => AnyValue::String(text(bytes, "AnyValue.string_value")?),
            (2, Value::Varint(b)) => AnyValue::Bool(b != 0),
            (3, Value::Varint(n)) => AnyValue::Int(n as i64),
            (4, Value::Fixed64(bits)) => AnyValue::Double(f64::from_bits(bits)),
            (5, Value::Len(bytes)) => {
                let mut items = Vec::new();
                let mut fields = Fields::new(bytes, "ArrayValue");
                while let Some((field, v)) = fields.next()? {
                    if let (1, Value::Len(bytes)) = (field, v) {
                        items.push(any_value(bytes, depth + 1)?);
                    }
                }
                AnyValue::Array(items)
            }
            (6, Value::Len(bytes)) => {
                let mut pairs = Vec::new();
                let mut fields = Fields::new(bytes, "KeyValueList");
                while let Some((field, v)) = fields.next()? {
                    if let (1, Value::Len(bytes)) = (field, v) {
                        pairs.push(key_value(bytes, depth + 1)?);
                    }
                }
                AnyValue::KvList(pairs)
            }
            (7, Value::Len(bytes)) => AnyValue::Bytes(bytes.to_vec()),
            (1..=7, _) => return Err(wrong("AnyValue", "value")),
            _ => continue,
        };
    }
    Ok(value)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_len(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `ExportLogsServiceResponse`: empty when every record was taken, else
/// `partial_success { rejected_log_records, error_message }`.
pub(crate) fn encode_response(rejected: usize, message: &str) -> Vec<u8> {
    if rejected == 0 {
        return Vec::new();
    }
    let mut partial = Vec::new();
    put_varint(&mut partial, 1 << 3);
    put_varint(&mut partial, rejected as u64);
    put_len(&mut partial, 2, message.as_bytes());
    let mut out = Vec::new();
    put_len(&mut out, 1, &partial);
    out
}

/// `google.rpc.Status { code, message }`, the body of a failed OTLP/HTTP
/// protobuf request.
pub(crate) fn encode_status(code: u64, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, 1 << 3);
    put_varint(&mut out, code);
    put_len(&mut out, 2, message.as_bytes());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny protobuf writer for building test bodies.
    pub(crate) struct Msg(pub(crate) Vec<u8>);

    impl Msg {
        pub(crate) fn new() -> Msg {
            Msg(Vec::new())
        }
        pub(crate) fn len(mut self, field: u64, bytes: &[u8]) -> Msg {
            put_len(&mut self.0, field, bytes);
            self
        }
        pub(crate) fn msg(self, field: u64, msg: Msg) -> Msg {
            self.len(field, &msg.0)
        }
        pub(crate) fn varint(mut self, field: u64, value: u64) -> Msg {
            put_varint(&mut self.0, field << 3);
            put_varint(&mut self.0, value);
            self
        }
        pub(crate) fn fixed64(mut self, field: u64, value: u64) -> Msg {
            put_varint(&mut self.0, (field << 3) | 1);
            self.0.extend_from_slice(&value.to_le_bytes());
            self
        }
    }

    pub(crate) fn kv(key: &str, value: Msg) -> Msg {
        Msg::new().len(1, key.as_bytes()).msg(2, value)
    }

    pub(crate) fn string(text: &str) -> Msg {
        Msg::new().len(1, text.as_bytes())
    }

    #[test]
    fn a_request_decodes_with_resource_scope_and_every_value_kind() {
        let record = Msg::new()
            .fixed64(1, 1_765_000_000_123_456_789)
            .varint(2, 17)
            .len(3, b"ERROR")
            .msg(5, string("payment failed"))
            .msg(6, kv("request_id", string("r-1")))
            .msg(6, kv("status_code", Msg::new().varint(3, 503)))
            .msg(6, kv("ok", Msg::new().varint(2, 1)))
            .msg(6, kv("ratio", Msg::new().fixed64(4, 0.5f64.to_bits())))
            .msg(6, kv("neg", Msg::new().varint(3, (-2i64) as u64)))
            .msg(
                6,
                kv(
                    "tags",
                    Msg::new().msg(5, Msg::new().msg(1, string("a")).msg(1, string("b"))),
                ),
            )
            .len(9, &[0xab; 16])
            .varint(99, 7); // an unknown field is skipped
        let scope = Msg::new()
            .msg(1, Msg::new().len(1, b"checkout.logger"))
            .msg(2, record);
        let resource = Msg::new().msg(1, kv("service.name", string("checkout")));
        let body = Msg::new().msg(1, Msg::new().msg(2, scope).msg(1, resource));
        let logs = decode_request(&body.0).unwrap();
        assert_eq!(logs.len(), 1);
        let log = &logs[0];
        assert_eq!(log.time_unix_nano, 1_765_000_000_123_456_789);
        assert_eq!(log.severity_number, 17);
        assert_eq!(log.severity_text, "ERROR");
        assert_eq!(log.body, Some(AnyValue::String("payment failed".into())));
        assert_eq!(log.scope, "checkout.logger");
        assert_eq!(log.trace_id, vec![0xab; 16]);
        assert_eq!(
            log.resource.as_slice(),
            &[(
                "service.name".to_string(),
                AnyValue::String("checkout".into())
            )]
        );
        let attributes: Vec<(&str, &AnyValue)> = log
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        assert_eq!(attributes[1], ("status_code", &AnyValue::Int(503)));
        assert_eq!(attributes[2], ("ok", &AnyValue::Bool(true)));
        assert_eq!(attributes[3], ("ratio", &AnyValue::Double(0.5)));
        assert_eq!(attributes[4], ("neg", &AnyValue::Int(-2)));
        assert_eq!(
            attributes[5],
            (
                "tags",
                &AnyValue::Array(vec![
                    AnyValue::String("a".into()),
                    AnyValue::String("b".into())
                ])
            )
        );
    }

    #[test]
    fn a_broken_body_is_refused_naming_what_is_wrong() {
        // A length past the end.
        let error = decode_request(&[0x0a, 0x05, 0x01]).unwrap_err();
        assert!(error.0.contains("runs past the end"), "{error:?}");
        // A group (wire type 3).
        let error = decode_request(&[0x0b]).unwrap_err();
        assert!(error.0.contains("wire type 3"), "{error:?}");
        // An unterminated number.
        let error = decode_request(&[0x08, 0xff]).unwrap_err();
        assert!(error.0.contains("ends inside a number"), "{error:?}");
        // Values nested deeper than the limit.
        let mut value = string("leaf");
        for _ in 0..40 {
            value = Msg::new().msg(5, Msg::new().msg(1, value));
        }
        let record = Msg::new().msg(5, value);
        let body = Msg::new().msg(1, Msg::new().msg(2, Msg::new().msg(2, record)));
        let error = decode_request(&body.0).unwrap_err();
        assert!(error.0.contains("nests deeper"), "{error:?}");
    }

    #[test]
    fn responses_encode_as_the_spec_says() {
        assert!(encode_response(0, "").is_empty());
        let response = encode_response(2, "bad");
        let mut fields = Fields::new(&response, "ExportLogsServiceResponse");
        let Some((1, Value::Len(partial))) = fields.next().unwrap() else {
            panic!("no partial_success");
        };
        let mut fields = Fields::new(partial, "ExportLogsPartialSuccess");
        assert!(matches!(
            fields.next().unwrap(),
            Some((1, Value::Varint(2)))
        ));
        assert!(matches!(
            fields.next().unwrap(),
            Some((2, Value::Len(b"bad")))
        ));
        let status = encode_status(3, "no");
        assert_eq!(status, vec![0x08, 0x03, 0x12, 0x02, b'n', b'o']);
    }
}
