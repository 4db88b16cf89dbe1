//! The `events` table: one row per user activity event, partitioned by
//! event hour.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use super::{Partitioning, TableDef, timestamp_type};
use crate::record::ActivityEvent;
use crate::record::view::EventView;

/// `events/raw/year=…/month=…/day=…/hour=…/` (SPEC §1.3).
pub static EVENTS: TableDef = TableDef {
    name: "events",
    dir: "events/raw",
    partitioning: Partitioning::Hourly,
    schema: Some(schema),
    order: 1,
};

static EVENT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("session_id", DataType::Utf8, true),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("page", DataType::Utf8, true),
        Field::new("element", DataType::Utf8, true),
        Field::new("position_x", DataType::Float64, true),
        Field::new("position_y", DataType::Float64, true),
        Field::new("event_data", DataType::Utf8, true),
        Field::new("device_type", DataType::Utf8, true),
        Field::new("device_os", DataType::Utf8, true),
        Field::new("device_browser", DataType::Utf8, true),
    ]))
});

/// File schema of the `events` table.
pub fn schema() -> SchemaRef {
    EVENT_SCHEMA.clone()
}

/// Column builders for the `events` table.
pub struct EventBatchBuilder {
    event_id: StringBuilder,
    timestamp: TimestampMicrosecondBuilder,
    user_id: StringBuilder,
    session_id: StringBuilder,
    event_type: StringBuilder,
    page: StringBuilder,
    element: StringBuilder,
    position_x: Float64Builder,
    position_y: Float64Builder,
    event_data: StringBuilder,
    device_type: StringBuilder,
    device_os: StringBuilder,
    device_browser: StringBuilder,
    rows: usize,
}

impl Default for EventBatchBuilder {
    fn default() -> Self {
        EventBatchBuilder {
            event_id: StringBuilder::new(),
            timestamp: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            user_id: StringBuilder::new(),
            session_id: StringBuilder::new(),
            event_type: StringBuilder::new(),
            page: StringBuilder::new(),
            element: StringBuilder::new(),
            position_x: Float64Builder::new(),
            position_y: Float64Builder::new(),
            event_data: StringBuilder::new(),
            device_type: StringBuilder::new(),
            device_os: StringBuilder::new(),
            device_browser: StringBuilder::new(),
            rows: 0,
        }
    }
}

impl EventBatchBuilder {
    pub fn append(&mut self, event: &ActivityEvent) {
        self.append_view(&EventView::from(event));
    }

    /// Appends an event borrowed from the bytes it was read from.
    pub fn append_view(&mut self, event: &EventView<'_>) {
        self.event_id.append_value(event.event_id);
        self.timestamp.append_value(event.timestamp_micros);
        self.user_id.append_value(event.user_id);
        self.session_id.append_option(event.session_id);
        self.event_type.append_value(event.event_type.as_str());
        self.page.append_option(event.page);
        self.element.append_option(event.element);
        self.position_x.append_option(event.position_x);
        self.position_y.append_option(event.position_y);
        self.event_data.append_option(event.event_data);
        self.device_type.append_option(event.device_type);
        self.device_os.append_option(event.device_os);
        self.device_browser.append_option(event.device_browser);
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.page.finish()),
            Arc::new(self.element.finish()),
            Arc::new(self.position_x.finish()),
            Arc::new(self.position_y.finish()),
            Arc::new(self.event_data.finish()),
            Arc::new(self.device_type.finish()),
            Arc::new(self.device_os.finish()),
            Arc::new(self.device_browser.finish()),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}
