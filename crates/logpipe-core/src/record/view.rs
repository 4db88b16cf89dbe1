//! A validated record borrowed from the bytes it was read from: what the
//! lake's Arrow builders take. Read from the bus's binary form
//! ([`super::binary::view`]), its text fields are slices of the bus buffer,
//! so appending a record copies each field once, into its column, instead
//! of into a `String` first. An owned record lends itself as a view too
//! (`From<&LogRecord>`), so the builders have one way in.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{
    ActivityEvent, Device, EventType, Level, LogMetadata, LogRecord, Record, canonical_json,
};

/// A [`LogRecord`], borrowed.
#[derive(Debug, Clone, PartialEq)]
pub struct LogView<'a> {
    pub timestamp_micros: i64,
    pub level: Level,
    pub service: &'a str,
    pub host: Option<&'a str>,
    pub message: &'a str,
    pub request_id: Option<&'a str>,
    pub response_time_ms: Option<f64>,
    pub status_code: Option<i32>,
    pub endpoint: Option<&'a str>,
    pub method: Option<&'a str>,
    /// The other metadata keys (parsed: rare, and checked when read).
    pub extra: Option<Cow<'a, Map<String, Value>>>,
}

/// An [`ActivityEvent`], borrowed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView<'a> {
    pub event_id: &'a str,
    pub timestamp_micros: i64,
    pub user_id: &'a str,
    pub session_id: Option<&'a str>,
    pub event_type: EventType,
    pub event_data: Option<&'a str>,
    pub page: Option<&'a str>,
    pub element: Option<&'a str>,
    pub position_x: Option<f64>,
    pub position_y: Option<f64>,
    pub device_type: Option<&'a str>,
    pub device_os: Option<&'a str>,
    pub device_browser: Option<&'a str>,
}

/// A [`Record`], borrowed.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordView<'a> {
    Log(LogView<'a>),
    Event(EventView<'a>),
}

impl RecordView<'_> {
    /// The bus key (SPEC §1.4): a log's service, an event's user id.
    pub fn key(&self) -> &str {
        match self {
            RecordView::Log(log) => log.service,
            RecordView::Event(event) => event.user_id,
        }
    }

    /// Canonical JSON for the bus (see [`Record::to_json`]).
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            RecordView::Log(log) => log.to_json(),
            RecordView::Event(event) => event.to_json(),
        }
    }

    pub fn timestamp_micros(&self) -> i64 {
        match self {
            RecordView::Log(log) => log.timestamp_micros,
            RecordView::Event(event) => event.timestamp_micros,
        }
    }

    /// The owned record.
    pub fn into_record(self) -> Record {
        match self {
            RecordView::Log(log) => Record::Log(log.into_record()),
            RecordView::Event(event) => Record::Event(event.into_record()),
        }
    }
}

fn owned(text: Option<&str>) -> Option<String> {
    text.map(str::to_owned)
}

impl LogView<'_> {
    /// Canonical JSON for the bus.
    pub fn to_json(&self) -> Vec<u8> {
        let optional = |text: Option<&str>| text.map_or(0, str::len);
        let strings = self.service.len() + self.message.len() + optional(self.host);
        canonical_json(self, strings)
    }

    pub fn into_record(self) -> LogRecord {
        LogRecord {
            timestamp_micros: self.timestamp_micros,
            level: self.level,
            service: self.service.to_owned(),
            host: owned(self.host),
            message: self.message.to_owned(),
            metadata: LogMetadata {
                request_id: owned(self.request_id),
                response_time_ms: self.response_time_ms,
                status_code: self.status_code,
                endpoint: owned(self.endpoint),
                method: owned(self.method),
                extra: self.extra.map(Cow::into_owned),
            },
        }
    }
}

impl<'a> From<&'a LogRecord> for LogView<'a> {
    fn from(record: &'a LogRecord) -> LogView<'a> {
        let metadata = &record.metadata;
        LogView {
            timestamp_micros: record.timestamp_micros,
            level: record.level,
            service: &record.service,
            host: record.host.as_deref(),
            message: &record.message,
            request_id: metadata.request_id.as_deref(),
            response_time_ms: metadata.response_time_ms,
            status_code: metadata.status_code,
            endpoint: metadata.endpoint.as_deref(),
            method: metadata.method.as_deref(),
            extra: metadata.extra.as_ref().map(Cow::Borrowed),
        }
    }
}

impl EventView<'_> {
    /// Canonical JSON for the bus.
    pub fn to_json(&self) -> Vec<u8> {
        let optional = |text: Option<&str>| text.map_or(0, str::len);
        let strings = self.event_id.len()
            + self.user_id.len()
            + optional(self.session_id)
            + optional(self.event_data);
        canonical_json(self, strings)
    }

    pub fn into_record(self) -> ActivityEvent {
        ActivityEvent {
            event_id: self.event_id.to_owned(),
            timestamp_micros: self.timestamp_micros,
            user_id: self.user_id.to_owned(),
            session_id: owned(self.session_id),
            event_type: self.event_type,
            event_data: owned(self.event_data),
            page: owned(self.page),
            element: owned(self.element),
            position_x: self.position_x,
            position_y: self.position_y,
            device: Device {
                device_type: owned(self.device_type),
                os: owned(self.device_os),
                browser: owned(self.device_browser),
            },
        }
    }
}

impl<'a> From<&'a ActivityEvent> for EventView<'a> {
    fn from(event: &'a ActivityEvent) -> EventView<'a> {
        EventView {
            event_id: &event.event_id,
            timestamp_micros: event.timestamp_micros,
            user_id: &event.user_id,
            session_id: event.session_id.as_deref(),
            event_type: event.event_type,
            event_data: event.event_data.as_deref(),
            page: event.page.as_deref(),
            element: event.element.as_deref(),
            position_x: event.position_x,
            position_y: event.position_y,
            device_type: event.device.device_type.as_deref(),
            device_os: event.device.os.as_deref(),
            device_browser: event.device.browser.as_deref(),
        }
    }
}

impl<'a> From<&'a Record> for RecordView<'a> {
    fn from(record: &'a Record) -> RecordView<'a> {
        match record {
            Record::Log(log) => RecordView::Log(log.into()),
            Record::Event(event) => RecordView::Event(event.into()),
        }
    }
}
