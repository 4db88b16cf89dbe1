//! OTLP/HTTP's JSON encoding of a logs request: the protobuf messages
//! with lowerCamelCase field names, 64-bit integers as strings or numbers,
//! trace and span ids in hex, bytes in base64 (kept as given).

use std::sync::Arc;

use serde_json::Value;

use super::{AnyValue, OtlpLog};

/// How deep arrays and key-value lists may nest inside one value.
const MAX_DEPTH: usize = 32;

type Result<T> = std::result::Result<T, String>;

/// Every log record of the request, in order.
pub(crate) fn decode_request(body: &[u8]) -> Result<Vec<OtlpLog>> {
    let request: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let mut logs = Vec::new();
    for (r, resource_logs) in array(&request, "resourceLogs", "request")?
        .iter()
        .enumerate()
    {
        let at = format!("resourceLogs[{r}]");
        let resource = match resource_logs.get("resource") {
            Some(resource) => key_values(resource, "attributes", &format!("{at}.resource"))?,
            None => Vec::new(),
        };
        let resource = Arc::new(resource);
        for (s, scope_logs) in array(resource_logs, "scopeLogs", &at)?.iter().enumerate() {
            let at = format!("{at}.scopeLogs[{s}]");
            let scope = scope_logs
                .get("scope")
                .and_then(|scope| scope.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for (n, record) in array(scope_logs, "logRecords", &at)?.iter().enumerate() {
                let at = format!("{at}.logRecords[{n}]");
                let mut log = log_record(record, &at)?;
                log.resource = resource.clone();
                log.scope = scope.clone();
                logs.push(log);
            }
        }
    }
    Ok(logs)
}

/// `value[field]` as an array; absent means empty.
fn array<'a>(value: &'a Value, field: &str, at: &str) -> Result<&'a [Value]> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{at}.{field} must be an array")),
    }
}

/// An unsigned 64-bit integer sent as a string or a number.
fn u64_of(value: Option<&Value>, at: &str) -> Result<u64> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("{at} must be a non-negative integer")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("{at} must be a non-negative integer, not {s:?}")),
        Some(_) => Err(format!("{at} must be an integer")),
    }
}

fn text(value: Option<&Value>, at: &str) -> Result<String> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{at} must be a string")),
    }
}

fn hex_id(value: Option<&Value>, at: &str) -> Result<Vec<u8>> {
    let text = text(value, at)?;
    if text.len() % 2 != 0 {
        return Err(format!("{at} must be hex"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| format!("{at} must be hex")))
        .collect()
}

fn log_record(record: &Value, at: &str) -> Result<OtlpLog> {
    if !record.is_object() {
        return Err(format!("{at} must be an object"));
    }
    let severity_number = u64_of(
        record.get("severityNumber"),
        &format!("{at}.severityNumber"),
    )?;
    Ok(OtlpLog {
        time_unix_nano: u64_of(record.get("timeUnixNano"), &format!("{at}.timeUnixNano"))?,
        observed_time_unix_nano: u64_of(
            record.get("observedTimeUnixNano"),
            &format!("{at}.observedTimeUnixNano"),
        )?,
        severity_number: i32::try_from(severity_number)
            .map_err(|_| format!("{at}.severityNumber is out of range"))?,
        severity_text: text(record.get("severityText"), &format!("{at}.severityText"))?,
        body: match record.get("body") {
            None | Some(Value::Null) => None,
            Some(body) => Some(any_value(body, &format!("{at}.body"), 0)?),
        },
        attributes: key_values(record, "attributes", at)?,
        trace_id: hex_id(record.get("traceId"), &format!("{at}.traceId"))?,
        span_id: hex_id(record.get("spanId"), &format!("{at}.spanId"))?,
        event_name: text(record.get("eventName"), &format!("{at}.eventName"))?,
        ..OtlpLog::default()
    })
}

fn key_values(value: &Value, field: &str, at: &str) -> Result<Vec<(String, AnyValue)>> {
    array(value, field, at)?
        .iter()
        .enumerate()
        .map(|(i, pair)| key_value(pair, &format!("{at}.{field}[{i}]"), 0))
        .collect()
}

fn key_value(pair: &Value, at: &str, depth: usize) -> Result<(String, AnyValue)> {
    let key = text(pair.get("key"), &format!("{at}.key"))?;
    let value = match pair.get("value") {
        None | Some(Value::Null) => AnyValue::Empty,
        Some(value) => any_value(value, &format!("{at}.value"), depth)?,
    };
    Ok((key, value))
}

fn any_value(value: &Value, at: &str, depth: usize) -> Result<AnyValue> {
    if depth > MAX_DEPTH {
        return Err(format!("{at} nests deeper than {MAX_DEPTH} levels"));
    }
    let Some(object) = value.as_object() else {
        return Err(format!("{at} must be an AnyValue object"));
    };
    let Some((kind, inner)) = object.iter().next() else {
        return Ok(AnyValue::Empty);
    };
    Ok(match kind.as_str() {
        "stringValue" => AnyValue::String(text(Some(inner), at)?),
        "boolValue" => AnyValue::Bool(
            inner
                .as_bool()
                .ok_or_else(|| format!("{at}.boolValue must be true or false"))?,
        ),
        "intValue" => AnyValue::Int(match inner {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| format!("{at}.intValue must be an integer"))?,
            Value::String(s) => s
                .parse()
                .map_err(|_| format!("{at}.intValue must be an integer, not {s:?}"))?,
            _ => return Err(format!("{at}.intValue must be an integer")),
        }),
        "doubleValue" => AnyValue::Double(
            inner
                .as_f64()
                .ok_or_else(|| format!("{at}.doubleValue must be a number"))?,
        ),
        "bytesValue" => AnyValue::String(text(Some(inner), at)?),
        "arrayValue" => AnyValue::Array(
            array(inner, "values", &format!("{at}.arrayValue"))?
                .iter()
                .enumerate()
                .map(|(i, v)| any_value(v, &format!("{at}.arrayValue.values[{i}]"), depth + 1))
                .collect::<Result<_>>()?,
        ),
        "kvlistValue" => AnyValue::KvList(
            array(inner, "values", &format!("{at}.kvlistValue"))?
                .iter()
                .enumerate()
                .map(|(i, pair)| {
                    key_value(pair, &format!("{at}.kvlistValue.values[{i}]"), depth + 1)
                })
                .collect::<Result<_>>()?,
        ),
        other => return Err(format!("{at} has an unknown value kind {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_encoding_decodes_like_the_protobuf_one() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"checkout"}}]},
          "scopeLogs":[{"scope":{"name":"app"},"logRecords":[
            {"timeUnixNano":"1765000000123456789","severityNumber":9,"severityText":"INFO",
             "body":{"stringValue":"ok"},"traceId":"0102",
             "attributes":[{"key":"n","value":{"intValue":"42"}},
                           {"key":"l","value":{"arrayValue":{"values":[{"boolValue":true}]}}}]}]}]}]}"#;
        let logs = decode_request(body).unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].time_unix_nano, 1_765_000_000_123_456_789);
        assert_eq!(logs[0].severity_number, 9);
        assert_eq!(logs[0].trace_id, vec![1, 2]);
        assert_eq!(logs[0].scope, "app");
        assert_eq!(logs[0].attributes[0], ("n".to_string(), AnyValue::Int(42)));
        assert_eq!(
            logs[0].attributes[1].1,
            AnyValue::Array(vec![AnyValue::Bool(true)])
        );
    }

    #[test]
    fn a_wrong_field_is_named_with_its_path() {
        let error = decode_request(
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"soon"}]}]}]}"#,
        )
        .unwrap_err();
        assert!(
            error.contains("resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano"),
            "{error}"
        );
        assert!(decode_request(b"{").unwrap_err().contains("not JSON"));
        let error = decode_request(br#"{"resourceLogs": 3}"#).unwrap_err();
        assert!(
            error.contains("request.resourceLogs must be an array"),
            "{error}"
        );
    }
}
