//! The two record kinds, their validation and their canonical JSON form.
//!
//! One parser serves every entry point: the collector validates client input
//! with it, and the lake job validates what it reads from the bus with it
//! (an external Kafka client may have produced that). The canonical form on
//! the bus is the seed's own JSON shape with `timestamp` as epoch seconds, so
//! any Kafka client can produce and consume it (see docs/architecture.md).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::time::{self, TimestampError, truncate_for_message};
use crate::topics;
use view::{EventView, LogView, RecordView};

pub mod binary;
pub mod sample;
pub mod summary;
pub mod view;

/// The seed's services (SPEC §1.1): the generator's default set.
pub const DEFAULT_SERVICES: [&str; 4] = [
    "api-gateway",
    "user-service",
    "order-service",
    "payment-service",
];

/// Which stream a record belongs to. Closed: adding a kind means adding a
/// topic, a table and a schema, so the compiler should find every `match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    Log,
    Event,
}

impl RecordKind {
    pub const ALL: [RecordKind; 2] = [RecordKind::Log, RecordKind::Event];

    /// The bus topic (SPEC §1.4).
    pub fn topic(self) -> &'static str {
        match self {
            RecordKind::Log => topics::LOGS_RAW,
            RecordKind::Event => topics::EVENTS_ACTIVITY,
        }
    }

    /// The kind whose bus topic is `topic`, if any.
    pub fn of_topic(topic: &str) -> Option<RecordKind> {
        RecordKind::ALL
            .into_iter()
            .find(|kind| kind.topic() == topic)
    }

    /// The SQL table name (`logs`, `events`): the name of
    /// `tables::of_kind(self)`.
    pub fn table(self) -> &'static str {
        match self {
            RecordKind::Log => "logs",
            RecordKind::Event => "events",
        }
    }

    /// Which field keys the record on the bus (same key → same partition).
    pub fn key_field(self) -> &'static str {
        match self {
            RecordKind::Log => "service",
            RecordKind::Event => "user_id",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.table())
    }
}

/// Log severity. The seed's four values, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Info, Level::Debug, Level::Warn, Level::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|level| level.as_str() == text)
    }
}

/// User activity type (SPEC §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Click,
    View,
    Purchase,
    Login,
    Logout,
    Search,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::Click,
        EventType::View,
        EventType::Purchase,
        EventType::Login,
        EventType::Logout,
        EventType::Search,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Click => "CLICK",
            EventType::View => "VIEW",
            EventType::Purchase => "PURCHASE",
            EventType::Login => "LOGIN",
            EventType::Logout => "LOGOUT",
            EventType::Search => "SEARCH",
        }
    }

    fn parse(text: &str) -> Option<EventType> {
        EventType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// A validated system log record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub timestamp_micros: i64,
    pub level: Level,
    pub service: String,
    pub host: Option<String>,
    pub message: String,
    pub metadata: LogMetadata,
}

/// The seed's metadata object: known keys become columns, any other keys are
/// kept losslessly as a JSON object in the `metadata_extra` column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogMetadata {
    pub request_id: Option<String>,
    pub response_time_ms: Option<f64>,
    pub status_code: Option<i32>,
    pub endpoint: Option<String>,
    pub method: Option<String>,
    pub extra: Option<Map<String, Value>>,
}

/// A validated user activity event.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityEvent {
    pub event_id: String,
    pub timestamp_micros: i64,
    pub user_id: String,
    pub session_id: Option<String>,
    pub event_type: EventType,
    /// The free-form `event_data` object as compact JSON text. It is kept
    /// as text end to end, never as a `Map`, because building and
    /// re-serialising a map per event cost more than the rest of the record.
    pub event_data: Option<String>,
    /// `event_data.page`, `.element`, `.position.x`, `.position.y`, when
    /// present with the expected types (flattened into columns).
    pub page: Option<String>,
    pub element: Option<String>,
    pub position_x: Option<f64>,
    pub position_y: Option<f64>,
    pub device: Device,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
}

/// Limits applied to every record.
#[derive(Debug, Clone, Copy)]
pub struct ValidationLimits {
    /// Longest accepted string field, in bytes.
    pub max_field_bytes: usize,
    /// How far in the future a timestamp may lie (clock skew between hosts).
    pub max_future_skew_secs: i64,
    /// The reference "now" for the future check, in µs since the epoch.
    pub now_micros: i64,
}

impl ValidationLimits {
    pub const DEFAULT_MAX_FIELD_BYTES: usize = 64 * 1024;
    pub const DEFAULT_MAX_FUTURE_SKEW_SECS: i64 = 24 * 3600;

    /// Defaults with the current wall clock.
    pub fn now() -> ValidationLimits {
        ValidationLimits {
            max_field_bytes: Self::DEFAULT_MAX_FIELD_BYTES,
            max_future_skew_secs: Self::DEFAULT_MAX_FUTURE_SKEW_SECS,
            now_micros: time::now_micros(),
        }
    }

    /// For reading records off the bus: structure only. The length and
    /// future-time checks are the collector's (they depend on its settings
    /// and its clock, and would make a re-read give another answer).
    pub fn structure_only() -> ValidationLimits {
        ValidationLimits {
            max_field_bytes: usize::MAX,
            max_future_skew_secs: i64::MAX / time::MICROS_PER_SECOND,
            now_micros: 0,
        }
    }
}

/// Why one record was refused. `Display` is the reason sent to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid JSON: {0}")]
    NotJson(String),
    #[error("record must be a JSON object, found {0}")]
    NotObject(&'static str),
    #[error("{0}")]
    Shape(String),
    #[error("field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("field `timestamp`: {0}")]
    Timestamp(#[from] TimestampError),
}

impl RecordError {
    fn field(field: &'static str, reason: impl Into<String>) -> RecordError {
        RecordError::Field {
            field,
            reason: reason.into(),
        }
    }

    fn from_serde(error: serde_json::Error) -> RecordError {
        // serde's text already names the field ("missing field `level`",
        // "unknown field `levle`, expected one of …"). Positions are within
        // the record, which is what the client needs.
        match error.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                RecordError::NotJson(error.to_string())
            }
            _ => RecordError::Shape(error.to_string()),
        }
    }
}

/// A timestamp as sent: epoch seconds (number) or an ISO-8601 string.
enum TimestampIn<'a> {
    Seconds(f64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for TimestampIn<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl<'de> Visitor<'de> for TimestampVisitor {
            type Value = TimestampIn<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("epoch seconds (a number) or an ISO-8601 string")
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
                Ok(TimestampIn::Seconds(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(TimestampIn::Seconds(value as f64))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                Ok(TimestampIn::Seconds(value as f64))
            }
            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(TimestampIn::Text(Cow::Borrowed(value)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(TimestampIn::Text(Cow::Owned(value.to_string())))
            }
        }
        deserializer.deserialize_any(TimestampVisitor)
    }
}

impl TimestampIn<'_> {
    fn to_micros(&self, limits: &ValidationLimits) -> Result<i64, TimestampError> {
        let micros = match self {
            TimestampIn::Seconds(seconds) => time::epoch_seconds_to_micros(*seconds)?,
            TimestampIn::Text(text) => time::parse_iso8601_micros(text)?,
        };
        time::check_range(micros, limits.now_micros, limits.max_future_skew_secs)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogIn<'a> {
    #[serde(borrow)]
    timestamp: TimestampIn<'a>,
    #[serde(borrow)]
    level: Cow<'a, str>,
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "optional_borrowed")]
    host: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow, default)]
    metadata: Option<MetadataIn<'a>>,
}

impl LogIn<'_> {
    /// The checks past the JSON shape (timestamp, level, lengths); the
    /// record as a view of this input, its text not copied.
    fn validate(&self, limits: &ValidationLimits) -> Result<LogView<'_>, RecordError> {
        let timestamp_micros = self.timestamp.to_micros(limits)?;
        let level = Level::parse(&self.level).ok_or_else(|| {
            RecordError::field(
                "level",
                format!(
                    "{:?} is not one of INFO, DEBUG, WARN, ERROR",
                    truncate_for_message(&self.level)
                ),
            )
        })?;
        let metadata = self.metadata.as_ref();
        let request_id = metadata.and_then(|m| m.request_id.as_deref());
        let endpoint = metadata.and_then(|m| m.endpoint.as_deref());
        let method = metadata.and_then(|m| m.method.as_deref());
        for (field, value) in [
            ("metadata.request_id", request_id),
            ("metadata.endpoint", endpoint),
            ("metadata.method", method),
        ] {
            check_optional(field, value, limits)?;
        }
        let extra = metadata.and_then(|m| m.extra.as_ref());
        if let Some(extra) = extra {
            check_json_len("metadata", extra, limits)?;
        }
        let service = &*self.service;
        check_required("service", service, limits)?;
        let host = self.host.as_deref();
        check_optional("host", host, limits)?;
        check_len("message", &self.message, limits)?;
        Ok(LogView {
            timestamp_micros,
            level,
            service,
            host,
            message: &self.message,
            request_id,
            response_time_ms: metadata.and_then(|m| m.response_time_ms),
            status_code: metadata.and_then(|m| m.status_code),
            endpoint,
            method,
            extra: extra.map(Cow::Borrowed),
        })
    }
}

/// An object key or a string value, borrowed from the input unless it holds
/// escapes. (serde's `Cow<str>` always copies: that was an allocation per
/// key per record.)
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(value)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(value.to_string())))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// The metadata's text values, borrowed like [`Text`].
fn text_value<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_value::<Option<Text<'de>>>()?.map(|text| text.0))
}

/// An optional text field, borrowed like [`Text`]. `#[serde(borrow)]`
/// borrows only a field that is a bare `Cow<str>`: an `Option<Cow<str>>`
/// would be copied every time.
fn optional_borrowed<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<Text<'de>>::deserialize(deserializer)?.map(|text| text.0))
}

/// Metadata keeps unknown keys, so it has a hand-written visitor instead of
/// `#[serde(flatten)]` (which buffers every value and is several times
/// slower). Its text is borrowed from the body where it can be.
#[derive(Default)]
struct MetadataIn<'a> {
    request_id: Option<Cow<'a, str>>,
    response_time_ms: Option<f64>,
    status_code: Option<i32>,
    endpoint: Option<Cow<'a, str>>,
    method: Option<Cow<'a, str>>,
    extra: Option<Map<String, Value>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for MetadataIn<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetadataVisitor;
        impl<'de> Visitor<'de> for MetadataVisitor {
            type Value = MetadataIn<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metadata object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetadataIn<'de>, A::Error> {
                let mut metadata = MetadataIn::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match key.as_ref() {
                        "request_id" => metadata.request_id = text_value(&mut map)?,
                        "response_time_ms" => {
                            let value: Option<f64> = map.next_value()?;
                            if let Some(ms) = value
                                && !(ms.is_finite() && ms >= 0.0)
                            {
                                return Err(de::Error::custom(format!(
                                    "metadata.response_time_ms must be a non-negative number, got {ms}"
                                )));
                            }
                            metadata.response_time_ms = value;
                        }
                        "status_code" => {
                            let value: Option<i64> = map.next_value()?;
                            if let Some(code) = value
                                && !(100..=599).contains(&code)
                            {
                                return Err(de::Error::custom(format!(
                                    "metadata.status_code must be an HTTP status 100-599, got {code}"
                                )));
                            }
                            metadata.status_code = value.map(|code| code as i32);
                        }
                        "endpoint" => metadata.endpoint = text_value(&mut map)?,
                        "method" => metadata.method = text_value(&mut map)?,
                        _ => {
                            let value: Value = map.next_value()?;
                            metadata
                                .extra
                                .get_or_insert_with(Map::new)
                                .insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(metadata)
            }
        }
        deserializer.deserialize_map(MetadataVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: TimestampIn<'a>,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "optional_borrowed")]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow, default)]
    event_data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    device: Option<DeviceIn<'a>>,
}

impl<'a> EventIn<'a> {
    /// The checks past the JSON shape: timestamp, type, `event_data`,
    /// lengths; the event's text borrowed where it needs no change.
    fn validate(self, limits: &ValidationLimits) -> Result<EventParts<'a>, RecordError> {
        let timestamp_micros = self.timestamp.to_micros(limits)?;
        let event_type = EventType::parse(&self.event_type).ok_or_else(|| {
            RecordError::field(
                "event_type",
                format!(
                    "{:?} is not one of CLICK, VIEW, PURCHASE, LOGIN, LOGOUT, SEARCH",
                    truncate_for_message(&self.event_type)
                ),
            )
        })?;
        let (event_data, view) = match self.event_data {
            None => (None, EventDataView::default()),
            Some(raw) if raw.get() == "null" => (None, EventDataView::default()),
            Some(raw) => {
                if !raw.get().starts_with('{') {
                    return Err(RecordError::field("event_data", "must be a JSON object"));
                }
                check_len("event_data", raw.get(), limits)?;
                let view: EventDataView = serde_json::from_str(raw.get())
                    .map_err(|e| RecordError::field("event_data", e.to_string()))?;
                (Some(compact_json(raw.get())), view)
            }
        };
        let device = self.device.unwrap_or_default();
        for (field, value) in [
            ("device.type", &device.device_type),
            ("device.os", &device.os),
            ("device.browser", &device.browser),
        ] {
            check_optional(field, value.as_deref(), limits)?;
        }
        check_required("event_id", &self.event_id, limits)?;
        check_required("user_id", &self.user_id, limits)?;
        check_optional("session_id", self.session_id.as_deref(), limits)?;
        Ok(EventParts {
            event_id: self.event_id,
            timestamp_micros,
            user_id: self.user_id,
            session_id: self.session_id,
            event_type,
            event_data,
            page: view.page,
            element: view.element,
            position_x: view.position_x,
            position_y: view.position_y,
            device,
        })
    }
}

/// [`Device`] as read, its text borrowed from the body (named `Device`
/// in what a wrong shape's error says, as before).
#[derive(Default, Deserialize)]
#[serde(rename = "Device", deny_unknown_fields)]
struct DeviceIn<'a> {
    #[serde(
        rename = "type",
        borrow,
        default,
        deserialize_with = "optional_borrowed"
    )]
    device_type: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "optional_borrowed")]
    os: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "optional_borrowed")]
    browser: Option<Cow<'a, str>>,
}

/// An event that passed every check, its text borrowed from the body
/// where it needs no change (nearly always): what the collector turns into
/// its bus form without copying, and what [`ActivityEvent`] owns.
struct EventParts<'a> {
    event_id: Cow<'a, str>,
    timestamp_micros: i64,
    user_id: Cow<'a, str>,
    session_id: Option<Cow<'a, str>>,
    event_type: EventType,
    event_data: Option<Cow<'a, str>>,
    page: Option<Cow<'a, str>>,
    element: Option<Cow<'a, str>>,
    position_x: Option<f64>,
    position_y: Option<f64>,
    device: DeviceIn<'a>,
}

impl EventParts<'_> {
    fn view(&self) -> EventView<'_> {
        EventView {
            event_id: &self.event_id,
            timestamp_micros: self.timestamp_micros,
            user_id: &self.user_id,
            session_id: self.session_id.as_deref(),
            event_type: self.event_type,
            event_data: self.event_data.as_deref(),
            page: self.page.as_deref(),
            element: self.element.as_deref(),
            position_x: self.position_x,
            position_y: self.position_y,
            device_type: self.device.device_type.as_deref(),
            device_os: self.device.os.as_deref(),
            device_browser: self.device.browser.as_deref(),
        }
    }

    fn into_owned(self) -> ActivityEvent {
        ActivityEvent {
            event_id: self.event_id.into_owned(),
            timestamp_micros: self.timestamp_micros,
            user_id: self.user_id.into_owned(),
            session_id: self.session_id.map(Cow::into_owned),
            event_type: self.event_type,
            event_data: self.event_data.map(Cow::into_owned),
            page: self.page.map(Cow::into_owned),
            element: self.element.map(Cow::into_owned),
            position_x: self.position_x,
            position_y: self.position_y,
            device: Device {
                device_type: self.device.device_type.map(Cow::into_owned),
                os: self.device.os.map(Cow::into_owned),
                browser: self.device.browser.map(Cow::into_owned),
            },
        }
    }
}

/// The columns flattened out of `event_data`; everything else in it is
/// skipped without being materialised. A `page` that is not a string (or a
/// `position` without numbers) simply leaves that column null: the whole
/// object is still kept in the `event_data` column.
#[derive(Default)]
struct EventDataView<'a> {
    page: Option<Cow<'a, str>>,
    element: Option<Cow<'a, str>>,
    position_x: Option<f64>,
    position_y: Option<f64>,
}

impl<'de> Deserialize<'de> for EventDataView<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ViewVisitor;
        impl<'de> Visitor<'de> for ViewVisitor {
            type Value = EventDataView<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event_data object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EventDataView<'de>, A::Error> {
                let mut view = EventDataView::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match key.as_ref() {
                        "page" => view.page = map.next_value::<LenientString>()?.0,
                        "element" => view.element = map.next_value::<LenientString>()?.0,
                        "position" => {
                            let position = map.next_value::<Lenient<PositionView>>()?.0;
                            if let Some(position) = position {
                                view.position_x = position.x.and_then(|x| x.0);
                                view.position_y = position.y.and_then(|y| y.0);
                            }
                        }
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(view)
            }
        }
        deserializer.deserialize_map(ViewVisitor)
    }
}

#[derive(Deserialize)]
struct PositionView {
    #[serde(default)]
    x: Option<Lenient<f64>>,
    #[serde(default)]
    y: Option<Lenient<f64>>,
}

/// `Some(T)` when the value has T's shape, `None` (not an error) otherwise.
struct Lenient<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        Ok(Lenient(serde_json::from_str(raw.get()).ok()))
    }
}

/// [`Lenient<String>`] without the second parse where the value is a
/// string with no escapes (nearly every `page` and `element`): between its
/// quotes is then exactly the text, borrowed. Anything else takes the
/// lenient parse.
struct LenientString<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for LenientString<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?.get();
        if let Some(text) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"'))
            && !text.contains('\\')
        {
            return Ok(LenientString(Some(Cow::Borrowed(text))));
        }
        Ok(LenientString(
            serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
        ))
    }
}

/// Removes insignificant white space from valid JSON text, so the bus and
/// the `event_data` column hold one compact spelling whatever the client sent.
fn compact_json(raw: &str) -> Cow<'_, str> {
    // Nearly all input is compact already (machine-written): as it is.
    if !raw.bytes().any(|byte| byte.is_ascii_whitespace()) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One record's JSON text read into its input form (`LogIn`, `EventIn`),
/// text borrowed from `raw`; the shape checked first, so a non-object is
/// named as such.
fn read_input<'a, T: Deserialize<'a>>(raw: &'a str) -> Result<T, RecordError> {
    check_object(raw)?;
    serde_json::from_str(raw).map_err(RecordError::from_serde)
}

fn check_object(raw: &str) -> Result<(), RecordError> {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => Ok(()),
        Some(b'[') => Err(RecordError::NotObject("an array")),
        Some(b'"') => Err(RecordError::NotObject("a string")),
        Some(b'n') => Err(RecordError::NotObject("null")),
        Some(b't' | b'f') => Err(RecordError::NotObject("a boolean")),
        Some(_) => Err(RecordError::NotObject("a number")),
        None => Err(RecordError::NotObject("nothing")),
    }
}

fn check_len(
    field: &'static str,
    value: &str,
    limits: &ValidationLimits,
) -> Result<(), RecordError> {
    if value.len() > limits.max_field_bytes {
        return Err(RecordError::field(
            field,
            format!(
                "{} bytes, longer than the limit of {} bytes",
                value.len(),
                limits.max_field_bytes
            ),
        ));
    }
    Ok(())
}

/// A required text field: not blank, within the length limit.
fn check_required(
    field: &'static str,
    text: &str,
    limits: &ValidationLimits,
) -> Result<(), RecordError> {
    if text.trim().is_empty() {
        return Err(RecordError::field(field, "must not be empty"));
    }
    check_len(field, text, limits)
}

/// An optional text field: within the length limit when present.
fn check_optional(
    field: &'static str,
    text: Option<&str>,
    limits: &ValidationLimits,
) -> Result<(), RecordError> {
    text.map_or(Ok(()), |text| check_len(field, text, limits))
}

fn check_json_len(
    field: &'static str,
    map: &Map<String, Value>,
    limits: &ValidationLimits,
) -> Result<(), RecordError> {
    // Serialised size is what lands in the column; cheap next to parsing.
    let size = serde_json::to_vec(map)
        .map(|bytes| bytes.len())
        .unwrap_or(0);
    if size > limits.max_field_bytes {
        return Err(RecordError::field(
            field,
            format!(
                "{size} bytes of JSON, longer than the limit of {} bytes",
                limits.max_field_bytes
            ),
        ));
    }
    Ok(())
}

impl LogRecord {
    /// Parses and validates one log record from its JSON text.
    pub fn parse(raw: &str, limits: &ValidationLimits) -> Result<LogRecord, RecordError> {
        let input: LogIn<'_> = read_input(raw)?;
        LogRecord::validate(input, limits)
    }

    /// The checks past the JSON shape: timestamp, level, lengths.
    fn validate(input: LogIn<'_>, limits: &ValidationLimits) -> Result<LogRecord, RecordError> {
        input.validate(limits).map(LogView::into_record)
    }

    /// The bus key (SPEC §1.4): the service name.
    pub fn key(&self) -> &str {
        &self.service
    }

    /// Canonical JSON for the bus.
    pub fn to_json(&self) -> Vec<u8> {
        LogView::from(self).to_json()
    }
}

/// `value` as JSON, in a buffer sized for `strings` bytes of text plus the
/// keys and numbers around them: `serde_json::to_vec` starts at 128 bytes
/// and grows by copying, twice for a typical record.
pub(crate) fn canonical_json(value: &impl Serialize, strings: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(strings + 256);
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

impl ActivityEvent {
    /// Parses and validates one activity event from its JSON text.
    pub fn parse(raw: &str, limits: &ValidationLimits) -> Result<ActivityEvent, RecordError> {
        let input: EventIn<'_> = read_input(raw)?;
        ActivityEvent::validate(input, limits)
    }

    /// The checks past the JSON shape: timestamp, type, `event_data`,
    /// lengths.
    fn validate(
        input: EventIn<'_>,
        limits: &ValidationLimits,
    ) -> Result<ActivityEvent, RecordError> {
        input.validate(limits).map(EventParts::into_owned)
    }

    /// The bus key (SPEC §1.4): the user id.
    pub fn key(&self) -> &str {
        &self.user_id
    }

    pub fn to_json(&self) -> Vec<u8> {
        EventView::from(self).to_json()
    }
}

/// Epoch seconds as the canonical JSON writes them.
pub(crate) fn seconds_value(micros: i64) -> f64 {
    micros as f64 / time::MICROS_PER_SECOND as f64
}

impl Serialize for LogRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        LogView::from(self).serialize(serializer)
    }
}

impl Serialize for LogView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("timestamp", &seconds_value(self.timestamp_micros))?;
        map.serialize_entry("level", self.level.as_str())?;
        map.serialize_entry("service", self.service)?;
        if let Some(host) = self.host {
            map.serialize_entry("host", host)?;
        }
        map.serialize_entry("message", self.message)?;
        let metadata = MetadataOut(self);
        if !metadata.is_empty() {
            map.serialize_entry("metadata", &metadata)?;
        }
        map.end()
    }
}

struct MetadataOut<'v, 'a>(&'v LogView<'a>);

impl MetadataOut<'_, '_> {
    fn is_empty(&self) -> bool {
        let m = self.0;
        m.request_id.is_none()
            && m.response_time_ms.is_none()
            && m.status_code.is_none()
            && m.endpoint.is_none()
            && m.method.is_none()
            && m.extra.is_none()
    }
}

impl Serialize for MetadataOut<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let m = self.0;
        let mut map = serializer.serialize_map(None)?;
        if let Some(value) = m.request_id {
            map.serialize_entry("request_id", value)?;
        }
        if let Some(value) = &m.response_time_ms {
            map.serialize_entry("response_time_ms", value)?;
        }
        if let Some(value) = &m.status_code {
            map.serialize_entry("status_code", value)?;
        }
        if let Some(value) = m.endpoint {
            map.serialize_entry("endpoint", value)?;
        }
        if let Some(value) = m.method {
            map.serialize_entry("method", value)?;
        }
        if let Some(extra) = &m.extra {
            for (key, value) in extra.iter() {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

impl Serialize for ActivityEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EventView::from(self).serialize(serializer)
    }
}

impl Serialize for EventView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event_id", self.event_id)?;
        map.serialize_entry("timestamp", &seconds_value(self.timestamp_micros))?;
        map.serialize_entry("user_id", self.user_id)?;
        if let Some(session) = self.session_id {
            map.serialize_entry("session_id", session)?;
        }
        map.serialize_entry("event_type", self.event_type.as_str())?;
        if let Some(data) = self.event_data {
            // Validated and compacted at parse time; borrowed, not copied.
            let raw: &RawValue = serde_json::from_str(data).map_err(serde::ser::Error::custom)?;
            map.serialize_entry("event_data", raw)?;
        }
        let device = DeviceOut(self);
        if !device.is_empty() {
            map.serialize_entry("device", &device)?;
        }
        map.end()
    }
}

/// An event view's device fields as the `device` object.
struct DeviceOut<'v, 'a>(&'v EventView<'a>);

impl DeviceOut<'_, '_> {
    fn is_empty(&self) -> bool {
        let e = self.0;
        e.device_type.is_none() && e.device_os.is_none() && e.device_browser.is_none()
    }
}

impl Serialize for DeviceOut<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in [
            ("type", e.device_type),
            ("os", e.device_os),
            ("browser", e.device_browser),
        ] {
            if let Some(value) = value {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// Why a whole request body was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("request body is empty; send a JSON array of records or NDJSON")]
    Empty,
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error(
        "request body must be a JSON array of records or NDJSON (one object per line), found {0}"
    )]
    WrongShape(&'static str),
}

/// One record's text, or why it could not even be cut out of the body.
pub type RawRecord<'a> = Result<&'a str, RecordError>;

/// Cuts a request body into record texts: a JSON array (`[{…}, {…}]`) or
/// NDJSON (one object per line). An array body that is not JSON as a whole is
/// refused; an NDJSON line that is not JSON refuses only that record.
pub fn split_body(body: &[u8]) -> Result<Vec<RawRecord<'_>>, BodyError> {
    let first = body.iter().position(|byte| !byte.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(BodyError::Empty);
    };
    match body[first] {
        b'[' => {
            let records: Vec<&RawValue> = serde_json::from_slice(body)
                .map_err(|error| BodyError::NotJson(error.to_string()))?;
            Ok(records.into_iter().map(|raw| Ok(raw.get())).collect())
        }
        b'{' => Ok(body
            .split(|byte| *byte == b'\n')
            .filter(|line| line.iter().any(|byte| !byte.is_ascii_whitespace()))
            .map(|line| {
                serde_json::from_slice::<&RawValue>(line)
                    .map(RawValue::get)
                    .map_err(|error| RecordError::NotJson(error.to_string()))
            })
            .collect()),
        b'"' => Err(BodyError::WrongShape("a string")),
        _ if std::str::from_utf8(&body[first..body.len().min(first + 4)]).is_err() => {
            Err(BodyError::NotJson("body is not UTF-8 text".to_string()))
        }
        _ => Err(BodyError::WrongShape(
            "something that is neither `[` nor `{`",
        )),
    }
}

/// Parses a request body (see [`split_body`]) into its records of `kind`,
/// each validated or refused with its reason, in body order.
pub fn parse_body(
    kind: RecordKind,
    body: &[u8],
    limits: &ValidationLimits,
) -> Result<Vec<Result<Record, RecordError>>, BodyError> {
    parse_body_with(kind, body, limits, |_, record| {
        record.map(RecordView::into_record)
    })
}

/// [`parse_body`], handing each record to `each` (with its index in the
/// body) as it is read: a view of the body where it can be, so a caller
/// that turns records into something else (the collector: bus records)
/// copies no text into owned records first. Returns what `each` returned,
/// in body order.
///
/// A JSON array is first read in one pass straight into records, which is
/// what nearly every body is (its UTF-8 checked in one scan, then parsed
/// once, not cut into record texts first); if that pass
/// fails anywhere (a record of the wrong shape, a syntax error), what
/// `each` returned for it is dropped, and the body is cut into record texts
/// and each is parsed on its own, so the answer is exactly the one a
/// record-by-record parse gives.
pub fn parse_body_with<T>(
    kind: RecordKind,
    body: &[u8],
    limits: &ValidationLimits,
    mut each: impl FnMut(usize, Result<RecordView<'_>, RecordError>) -> T,
) -> Result<Vec<T>, BodyError> {
    let array = body
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|first| *first == b'[');
    if array {
        let whole = match kind {
            RecordKind::Log => read_whole(body, |index, input: LogIn<'_>| {
                each(index, input.validate(limits).map(RecordView::Log))
            }),
            RecordKind::Event => read_whole(body, |index, input: EventIn<'_>| {
                match input.validate(limits) {
                    Ok(event) => each(index, Ok(RecordView::Event(event.view()))),
                    Err(error) => each(index, Err(error)),
                }
            }),
        };
        if let Some(records) = whole {
            return Ok(records);
        }
    }
    Ok(split_body(body)?
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            let read = raw.and_then(|text| {
                Record::with_json_view(kind, text, limits, |view| each(index, Ok(view)))
            });
            read.unwrap_or_else(|error| each(index, Err(error)))
        })
        .collect())
}

/// The records of an array `body` read in one pass as `I`, each handed to
/// `visit` with its index as soon as it is read (`None`: the pass failed
/// somewhere).
fn read_whole<'a, I: Deserialize<'a>, T>(
    body: &'a [u8],
    visit: impl FnMut(usize, I) -> T,
) -> Option<Vec<T>> {
    /// The visitor, and a first guess at the record count (a record is
    /// rarely shorter than this many bytes of JSON) so the result vector
    /// is not regrown and copied several times.
    struct Elements<I, F>(F, usize, std::marker::PhantomData<I>);
    const SHORTEST_RECORD_BYTES: usize = 160;
    impl<'de, I: Deserialize<'de>, T, F: FnMut(usize, I) -> T> Visitor<'de> for Elements<I, F> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array of records")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(self.1);
            while let Some(InObject(input)) = seq.next_element::<InObject<I>>()? {
                out.push((self.0)(out.len(), input));
            }
            Ok(out)
        }
    }
    // The body's UTF-8 checked once, a word at a time over text that is
    // nearly all ASCII, instead of once per string read: serde_json's
    // reader of a `str` then borrows each string without checking it
    // again (the per-string checks were about 2 % of the server's CPU
    // under load). A body that is not UTF-8 takes the record-by-record
    // path, which names the record.
    let text = std::str::from_utf8(body).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let records = deserializer
        .deserialize_seq(Elements(
            visit,
            body.len() / SHORTEST_RECORD_BYTES,
            std::marker::PhantomData,
        ))
        .ok()?;
    deserializer.end().ok()?;
    Some(records)
}

/// A record read only from a JSON object. A derived `Deserialize` also
/// takes a struct written as an array of its fields, which the record
/// parser refuses (`check_object`); the one-pass read must refuse it too.
struct InObject<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for InObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = InObject<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<InObject<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(InObject)
            }
        }
        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// A validated record of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Log(LogRecord),
    Event(ActivityEvent),
}

impl Record {
    pub fn timestamp_micros(&self) -> i64 {
        match self {
            Record::Log(record) => record.timestamp_micros,
            Record::Event(event) => event.timestamp_micros,
        }
    }
}

impl Record {
    /// Parses a record of `kind` from its JSON text.
    pub fn parse(
        kind: RecordKind,
        raw: &str,
        limits: &ValidationLimits,
    ) -> Result<Record, RecordError> {
        match kind {
            RecordKind::Log => LogRecord::parse(raw, limits).map(Record::Log),
            RecordKind::Event => ActivityEvent::parse(raw, limits).map(Record::Event),
        }
    }

    /// The kind of record this is.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Log(_) => RecordKind::Log,
            Record::Event(_) => RecordKind::Event,
        }
    }

    /// The bus key.
    pub fn key(&self) -> &str {
        match self {
            Record::Log(record) => record.key(),
            Record::Event(event) => event.key(),
        }
    }

    /// Canonical JSON for the bus.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Record::Log(record) => record.to_json(),
            Record::Event(event) => event.to_json(),
        }
    }

    /// A record of `kind` from a bus value: the [`binary`] form the
    /// collector writes on the embedded bus, or JSON text (Kafka, other
    /// producers, bus segments written before the binary form).
    pub fn from_bus(
        kind: RecordKind,
        value: &[u8],
        limits: &ValidationLimits,
    ) -> Result<Record, RecordError> {
        if binary::is_binary(value) {
            return binary::decode(kind, value, limits);
        }
        Record::from_json_value(kind, value, limits)
    }

    /// [`Record::from_bus`] handed to `f` as a view: a binary value's
    /// fields borrowed from `value` (no owned strings), a JSON one's from
    /// the record parsed. What the lake job appends to its columns.
    pub fn with_bus_view<T>(
        kind: RecordKind,
        value: &[u8],
        limits: &ValidationLimits,
        f: impl FnOnce(&view::RecordView<'_>) -> T,
    ) -> Result<T, RecordError> {
        if binary::is_binary(value) {
            return binary::view(kind, value, limits).map(|view| f(&view));
        }
        let text = json_text(value)?;
        Record::with_json_view(kind, text, limits, |view| f(&view))
    }

    /// A record of `kind` parsed from its JSON `text`, handed to `f` as a
    /// view of `text` (the checks of the collector's one-pass read; no
    /// owned strings where the text needs no change).
    fn with_json_view<T>(
        kind: RecordKind,
        text: &str,
        limits: &ValidationLimits,
        f: impl FnOnce(RecordView<'_>) -> T,
    ) -> Result<T, RecordError> {
        match kind {
            RecordKind::Log => read_input::<LogIn<'_>>(text)?
                .validate(limits)
                .map(|view| f(RecordView::Log(view))),
            RecordKind::Event => read_input::<EventIn<'_>>(text)?
                .validate(limits)
                .map(|event| f(RecordView::Event(event.view()))),
        }
    }

    /// A bus value that is JSON text.
    fn from_json_value(
        kind: RecordKind,
        value: &[u8],
        limits: &ValidationLimits,
    ) -> Result<Record, RecordError> {
        Record::parse(kind, json_text(value)?, limits)
    }
}

/// A bus value that should be JSON, as text.
fn json_text(value: &[u8]) -> Result<&str, RecordError> {
    std::str::from_utf8(value).map_err(|e| RecordError::NotJson(format!("value is not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ValidationLimits {
        ValidationLimits {
            now_micros: 1_763_800_000_000_000,
            ..ValidationLimits::now()
        }
    }

    const SEED_LOG: &str = r#"{"timestamp": 1736645166.291045, "level": "INFO", "service": "api-gateway",
 "host": "worker-1", "message": "Request processed successfully",
 "metadata": {"request_id": "uuid-1234", "response_time_ms": 45,
              "status_code": 200, "endpoint": "/api/users", "method": "GET"}}"#;

    const SEED_EVENT: &str = r#"{"event_id": "evt-uuid-5678", "timestamp": 1736645166.456789,
 "user_id": "user_12345", "session_id": "sess_abcde", "event_type": "CLICK",
 "event_data": {"page": "/products/123", "element": "add_to_cart_button",
                "position": {"x": 450, "y": 320}},
 "device": {"type": "mobile", "os": "iOS", "browser": "Safari"}}"#;

    #[test]
    fn seed_log_parses_and_round_trips_through_canonical_json() {
        let record = LogRecord::parse(SEED_LOG, &limits()).unwrap();
        assert_eq!(record.timestamp_micros, 1_736_645_166_291_045);
        assert_eq!(record.level, Level::Info);
        assert_eq!(record.metadata.status_code, Some(200));
        assert_eq!(record.metadata.response_time_ms, Some(45.0));
        let json = record.to_json();
        let again = LogRecord::parse(std::str::from_utf8(&json).unwrap(), &limits()).unwrap();
        assert_eq!(again, record);
    }

    #[test]
    fn seed_event_parses_flattens_and_round_trips() {
        let event = ActivityEvent::parse(SEED_EVENT, &limits()).unwrap();
        assert_eq!(event.event_type, EventType::Click);
        assert_eq!(event.page.as_deref(), Some("/products/123"));
        assert_eq!(
            (event.position_x, event.position_y),
            (Some(450.0), Some(320.0))
        );
        assert_eq!(
            event.event_data.as_deref(),
            Some(
                r#"{"page":"/products/123","element":"add_to_cart_button","position":{"x":450,"y":320}}"#
            )
        );
        assert_eq!(event.device.device_type.as_deref(), Some("mobile"));
        let json = event.to_json();
        let again = ActivityEvent::parse(std::str::from_utf8(&json).unwrap(), &limits()).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn event_data_of_unexpected_shape_is_kept_but_not_flattened() {
        let raw = r#"{"event_id": "e", "timestamp": 1736645166, "user_id": "u", "event_type": "SEARCH",
            "event_data": {"page": 7, "position": "top", "query": "shoes \" here", "nested": {"a": [1, {"b": null}]}}}"#;
        let event = ActivityEvent::parse(raw, &limits()).unwrap();
        assert_eq!(event.page, None);
        assert_eq!((event.position_x, event.position_y), (None, None));
        let data: Value = serde_json::from_str(event.event_data.as_deref().unwrap()).unwrap();
        assert_eq!(data["query"], "shoes \" here");
        assert_eq!(data["nested"]["a"][1]["b"], Value::Null);
        let again = ActivityEvent::parse(std::str::from_utf8(&event.to_json()).unwrap(), &limits())
            .unwrap();
        assert_eq!(again, event);
        let not_object = r#"{"event_id": "e", "timestamp": 1736645166, "user_id": "u", "event_type": "SEARCH", "event_data": [1]}"#;
        let error = ActivityEvent::parse(not_object, &limits())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("field `event_data`: must be a JSON object"),
            "{error}"
        );
    }

    /// The string fast path answers what the lenient parse answers, for
    /// every shape a value can have.
    #[test]
    fn lenient_strings_read_as_the_lenient_parse_reads_them() {
        for raw in [
            r#""/home""#,
            r#""""#,
            r#""caf\u00e9""#,
            r#""a\"b""#,
            r#""tab\tend""#,
            r#""한글 page""#,
            "12",
            "-0.5e3",
            "null",
            "true",
            r#"{"a":"b"}"#,
            r#"["x"]"#,
        ] {
            let fast = serde_json::from_str::<LenientString>(raw)
                .unwrap()
                .0
                .map(Cow::into_owned);
            let lenient = serde_json::from_str::<Lenient<String>>(raw).unwrap().0;
            assert_eq!(fast, lenient, "{raw}");
        }
    }

    /// What each shape of `page` and `position` flattens to: the value
    /// when it has the expected type, otherwise a null column (never an
    /// error).
    #[test]
    fn event_data_columns_take_only_the_expected_types() {
        type Position = (Option<f64>, Option<f64>);
        let cases: [(&str, Option<&str>, Position); 12] = [
            (
                r#"{"page": "/p", "position": {"x": 1, "y": 2.5}}"#,
                Some("/p"),
                (Some(1.0), Some(2.5)),
            ),
            (
                r#"{"page": "a\"b", "position": {"y": -3, "z": [1], "x": 18446744073709551615}}"#,
                Some("a\"b"),
                (Some(18446744073709551615.0), Some(-3.0)),
            ),
            (
                r#"{"page": null, "position": {"x": "1", "y": null}}"#,
                None,
                (None, None),
            ),
            (
                r#"{"page": {"a": "b"}, "position": {"x": {"n": 1}, "y": [2]}}"#,
                None,
                (None, None),
            ),
            (
                r#"{"page": ["x"], "position": [4, 5]}"#,
                None,
                (Some(4.0), Some(5.0)),
            ),
            (
                r#"{"page": true, "position": [4]}"#,
                None,
                (Some(4.0), None),
            ),
            (
                r#"{"page": 1.5, "position": [4, 5, 6]}"#,
                None,
                (None, None),
            ),
            (r#"{"position": []}"#, None, (None, None)),
            (
                r#"{"position": {"x": 1, "x": 2, "y": 3}}"#,
                None,
                (None, None),
            ),
            (r#"{"position": "top", "element": "e"}"#, None, (None, None)),
            (
                r#"{"position": null, "page": "/q", "page2": {"page": 1}}"#,
                Some("/q"),
                (None, None),
            ),
            (r#"{"position": {}, "element": 3}"#, None, (None, None)),
        ];
        for (data, page, position) in cases {
            let raw = format!(
                r#"{{"event_id": "e", "timestamp": 1736645166, "user_id": "u", "event_type": "VIEW", "event_data": {data}}}"#
            );
            let event = ActivityEvent::parse(&raw, &limits()).unwrap();
            assert_eq!(event.page.as_deref(), page, "{data}");
            assert_eq!((event.position_x, event.position_y), position, "{data}");
        }
    }

    #[test]
    fn unknown_metadata_keys_are_kept() {
        let raw = r#"{"timestamp": "2025-01-12T01:26:06Z", "level": "WARN", "service": "s",
            "message": "m", "metadata": {"region": "eu", "retries": 3}}"#;
        let record = LogRecord::parse(raw, &limits()).unwrap();
        let extra = record.metadata.extra.clone().unwrap();
        assert_eq!(extra["region"], "eu");
        assert_eq!(extra["retries"], 3);
        let again =
            LogRecord::parse(std::str::from_utf8(&record.to_json()).unwrap(), &limits()).unwrap();
        assert_eq!(again, record);
    }

    fn reason(raw: &str) -> String {
        LogRecord::parse(raw, &limits()).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let missing = reason(r#"{"timestamp": 1736645166, "service": "s", "message": "m"}"#);
        assert!(missing.contains("missing field `level`"), "{missing}");
        let level =
            reason(r#"{"timestamp": 1736645166, "level": "info", "service": "s", "message": "m"}"#);
        assert!(
            level.contains("field `level`") && level.contains("INFO"),
            "{level}"
        );
        let typo =
            reason(r#"{"timestamp": 1736645166, "levle": "INFO", "service": "s", "message": "m"}"#);
        assert!(typo.contains("unknown field `levle`"), "{typo}");
        let time = reason(
            r#"{"timestamp": "yesterday", "level": "INFO", "service": "s", "message": "m"}"#,
        );
        assert!(
            time.contains("field `timestamp`") && time.contains("ISO-8601"),
            "{time}"
        );
        let old = reason(r#"{"timestamp": 12, "level": "INFO", "service": "s", "message": "m"}"#);
        assert!(old.contains("before 2000"), "{old}");
        let boolean =
            reason(r#"{"timestamp": true, "level": "INFO", "service": "s", "message": "m"}"#);
        assert!(boolean.contains("epoch seconds"), "{boolean}");
        let status = reason(
            r#"{"timestamp": 1736645166, "level": "INFO", "service": "s", "message": "m", "metadata": {"status_code": 42}}"#,
        );
        assert!(status.contains("status_code"), "{status}");
        let empty =
            reason(r#"{"timestamp": 1736645166, "level": "INFO", "service": " ", "message": "m"}"#);
        assert!(
            empty.contains("field `service`: must not be empty"),
            "{empty}"
        );
        assert!(reason("[1,2]").contains("must be a JSON object"));
        assert!(reason("42").contains("must be a JSON object"));
    }

    #[test]
    fn oversized_fields_are_refused_by_name() {
        let long = "x".repeat(ValidationLimits::DEFAULT_MAX_FIELD_BYTES + 1);
        let raw = format!(
            r#"{{"timestamp": 1736645166, "level": "INFO", "service": "s", "message": "{long}"}}"#
        );
        let text = reason(&raw);
        assert!(
            text.contains("field `message`") && text.contains("limit"),
            "{text}"
        );
    }

    /// The one-pass read of an array gives, record by record, what
    /// cutting the body and parsing each record gives: valid bodies, a
    /// record refused by validation, and bodies the one pass cannot read
    /// (wrong shape, a non-object, a syntax error, trailing garbage).
    #[test]
    fn parse_body_answers_as_the_record_by_record_parse() {
        let limits = ValidationLimits::now();
        let log = r#"{"timestamp": 1736645166.5, "level": "INFO", "service": "s", "host": "h", "message": "m \"q\"", "metadata": {"request_id": "r", "status_code": 200, "x": [1]}}"#;
        let event = r#"{"event_id": "e", "timestamp": "2025-01-12T01:30:00Z", "user_id": "u", "event_type": "CLICK", "event_data": { "page": "/p", "position": {"x": 1, "y": 2} }, "device": {"os": "iOS"}}"#;
        let escaped_event = r#"{"event_id": "e\u0031", "timestamp": 1736645166, "user_id": "u\"1", "session_id": "s\n", "event_type": "VIEW", "event_data": {"page": "/a\"b", "element": "x", "position": {"x": 1.5}}, "device": {"type": "t\t", "os": "o", "browser": "b\u00e9"}}"#;
        let bad_device = r#"{"event_id": "e", "timestamp": 1736645166, "user_id": "u", "event_type": "VIEW", "device": 5}"#;
        let bad_level =
            r#"{"timestamp": 1736645166, "level": "LOUD", "service": "s", "message": "m"}"#;
        let missing = r#"{"timestamp": 1736645166, "level": "INFO", "service": "s"}"#;
        let cases: Vec<(RecordKind, String)> = vec![
            (RecordKind::Log, format!("[{log}, {log}]")),
            (RecordKind::Log, format!("  [{log},{bad_level}]  ")),
            (RecordKind::Log, format!("[{log}, {missing}, {log}]")),
            (RecordKind::Log, format!("[{log}, 7, \"s\"]")),
            (RecordKind::Log, format!("[{log}] x")),
            (RecordKind::Log, format!("[{log}, {{\"timestamp\": ]")),
            (RecordKind::Log, "[]".to_string()),
            (RecordKind::Log, format!("{log}\n{bad_level}\n")),
            (RecordKind::Event, format!("[{event}, {event}]")),
            // Text that cannot be borrowed (escapes, white space to
            // compact) and a device of the wrong shape.
            (
                RecordKind::Event,
                format!("[{event}, {escaped_event}, {event}]"),
            ),
            (RecordKind::Event, format!("[{event}, {bad_device}]")),
            (RecordKind::Event, format!("[{event}, {log}]")),
            // A record written as an array of its fields: serde would take
            // it for the struct; the record parser refuses it.
            (
                RecordKind::Log,
                format!(r#"[{log}, [1736645166, "INFO", "s", null, "m"]]"#),
            ),
            (
                RecordKind::Event,
                r#"[["e", 1736645166, "u", null, "CLICK"]]"#.to_string(),
            ),
        ];
        let mut cases: Vec<(RecordKind, Vec<u8>)> = cases
            .into_iter()
            .map(|(kind, body)| (kind, body.into_bytes()))
            .collect();
        // Bytes that are not UTF-8, in a string and between records: the
        // one-pass read checks the whole body first and leaves it to the
        // record-by-record parse, which answers as before (the body is
        // refused, naming where).
        let not_utf8: &[u8] = b"{\"timestamp\": 1736645166, \"level\": \"INFO\", \"service\": \"s\", \"message\": \"caf\xe9\"}";
        for body in [
            [
                b"[",
                log.as_bytes(),
                b", ",
                not_utf8,
                b", ",
                log.as_bytes(),
                b"]",
            ]
            .concat(),
            [b"[", log.as_bytes(), b", \xff ", log.as_bytes(), b"]"].concat(),
        ] {
            cases.push((RecordKind::Log, body));
        }
        for (kind, body) in cases {
            let by_record = split_body(&body).map(|raws| {
                raws.into_iter()
                    .map(|raw| raw.and_then(|text| Record::parse(kind, text, &limits)))
                    .collect::<Vec<_>>()
            });
            assert_eq!(
                parse_body(kind, &body, &limits),
                by_record,
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        let records = parse_body(
            RecordKind::Event,
            format!("[{event}, {bad_device}]").as_bytes(),
            &limits,
        )
        .unwrap();
        let error = records[1].as_ref().unwrap_err().to_string();
        assert!(error.contains("expected struct Device"), "{error}");
        let records = parse_body(
            RecordKind::Event,
            format!("[{escaped_event}]").as_bytes(),
            &limits,
        )
        .unwrap();
        let Ok(Record::Event(escaped)) = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!(
            (escaped.event_id.as_str(), escaped.user_id.as_str()),
            ("e1", "u\"1")
        );
        assert_eq!(escaped.page.as_deref(), Some("/a\"b"));
        assert_eq!(
            escaped.event_data.as_deref(),
            Some(r#"{"page":"/a\"b","element":"x","position":{"x":1.5}}"#)
        );
        assert_eq!(escaped.device.browser.as_deref(), Some("b\u{e9}"));
        assert_eq!(escaped.device.device_type.as_deref(), Some("t\t"));
        assert_eq!(escaped.session_id.as_deref(), Some("s\n"));
        // The one-pass read itself: it reads a valid array whole (borrowing
        // what has no escapes) and leaves a body that is not UTF-8 to the
        // record-by-record parse.
        let body = format!("[{log}, {log}]");
        let hosts = read_whole(body.as_bytes(), |_, input: LogIn<'_>| {
            matches!(input.host, Some(Cow::Borrowed("h")))
        });
        assert_eq!(hosts, Some(vec![true, true]));
        let body = format!("[{event}, {escaped_event}]");
        let devices = read_whole(body.as_bytes(), |_, input: EventIn<'_>| {
            let device = input.device.unwrap_or_default();
            (
                matches!(device.os, Some(Cow::Borrowed(_))),
                matches!(device.browser, Some(Cow::Owned(_))),
            )
        });
        assert_eq!(devices, Some(vec![(true, false), (true, true)]));
        let not_utf8_body = [b"[", log.as_bytes(), b", ", not_utf8, b"]"].concat();
        assert_eq!(read_whole(&not_utf8_body, |_, _: LogIn<'_>| ()), None);
        let records = parse_body(
            RecordKind::Log,
            format!("[{log}, {bad_level}]").as_bytes(),
            &limits,
        )
        .unwrap();
        assert!(records[0].is_ok() && records[1].is_err());
    }

    /// Keys are read borrowed, but a key spelled with escapes is the same
    /// key (known, or kept in `metadata_extra` under its unescaped name).
    #[test]
    fn escaped_keys_are_the_same_keys() {
        let raw = r#"{"timestamp": 1736645166, "level": "INFO", "service": "s", "message": "m",
                      "metadata": {"request\u005fid": "r", "x\ty": 1}}"#;
        let record = LogRecord::parse(raw, &ValidationLimits::now()).unwrap();
        assert_eq!(record.metadata.request_id.as_deref(), Some("r"));
        let extra = record.metadata.extra.unwrap();
        assert_eq!(extra.get("x\ty"), Some(&Value::from(1)));
        let raw = r#"{"event_id": "e", "timestamp": 1736645166, "user_id": "u", "event_type": "VIEW",
                      "event_data": {"pa\u0067e": "/p"}}"#;
        let event = ActivityEvent::parse(raw, &ValidationLimits::now()).unwrap();
        assert_eq!(event.page.as_deref(), Some("/p"));
    }

    #[test]
    fn body_splitting_handles_array_ndjson_and_garbage() {
        let array = br#"[{"a":1}, {"b":2}]"#;
        assert_eq!(split_body(array).unwrap().len(), 2);
        let ndjson = b"{\"a\":1}\n\n{\"b\":\n{\"c\":3}\n";
        let records = split_body(ndjson).unwrap();
        assert_eq!(records.len(), 3);
        assert!(records[0].is_ok() && records[1].is_err() && records[2].is_ok());
        assert_eq!(split_body(b"  ").unwrap_err(), BodyError::Empty);
        assert!(matches!(
            split_body(b"[{\"a\":"),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(
            split_body(b"\xff\xfe"),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(
            split_body(b"hello"),
            Err(BodyError::WrongShape(_))
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            split_body(deep.as_bytes()),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(
            split_body(b"[\"\xff\"]"),
            Err(BodyError::NotJson(_))
        ));
    }
}
