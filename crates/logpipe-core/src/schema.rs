//! Arrow schemas of the lake tables and builders that fill them.
//!
//! Files hold the record columns only; `year`, `month`, `day`, `hour` live in
//! the Hive directory names, as Spark writes them, and query engines add them
//! back as partition columns.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::record::{ActivityEvent, LogRecord, RecordKind};

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static LOG_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("timestamp", timestamp_type(), false),
        Field::new("level", DataType::Utf8, false),
        Field::new("service", DataType::Utf8, false),
        Field::new("host", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, false),
        Field::new("request_id", DataType::Utf8, true),
        Field::new("response_time_ms", DataType::Float64, true),
        Field::new("status_code", DataType::Int32, true),
        Field::new("endpoint", DataType::Utf8, true),
        Field::new("method", DataType::Utf8, true),
        Field::new("metadata_extra", DataType::Utf8, true),
    ]))
});

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

static WINDOWS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let count = |name: &str| Field::new(name, DataType::Int64, false);
    let ms = |name: &str| Field::new(name, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new("window_start", timestamp_type(), false),
        Field::new("window_end", timestamp_type(), false),
        Field::new("service", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, false),
        count("count"),
        count("service_count"),
        Field::new("error_rate", DataType::Float64, false),
        ms("p50_ms"),
        ms("p95_ms"),
        ms("p99_ms"),
        count("status_1xx"),
        count("status_2xx"),
        count("status_3xx"),
        count("status_4xx"),
        count("status_5xx"),
    ]))
});

static ALERTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let time = |name: &str| Field::new(name, timestamp_type(), false);
    Arc::new(Schema::new(vec![
        text("alert_id"),
        text("incident_id"),
        text("state"),
        text("rule"),
        text("severity"),
        text("service"),
        Field::new("value", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, false),
        time("window_start"),
        time("window_end"),
        time("incident_start"),
        time("detected_at"),
        text("summary"),
    ]))
});

/// File schema of the `windows` table (and of `window_stats` in PostgreSQL):
/// one row per (window, service, level) with the service's figures.
pub fn windows_schema() -> SchemaRef {
    WINDOWS_SCHEMA.clone()
}

/// File schema of the `alerts` table.
pub fn alerts_schema() -> SchemaRef {
    ALERTS_SCHEMA.clone()
}

static JOB_RUNS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let time = |name: &str| Field::new(name, timestamp_type(), false);
    Arc::new(Schema::new(vec![
        text("run_id"),
        text("job"),
        text("target"),
        time("started_at"),
        time("finished_at"),
        Field::new("duration_ms", DataType::Int64, false),
        text("status"),
        Field::new("rows", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
    ]))
});

/// File schema of the `job_runs` table (and its PostgreSQL twin).
pub fn job_runs_schema() -> SchemaRef {
    JOB_RUNS_SCHEMA.clone()
}

/// The file schema of a kind's raw table.
pub fn schema(kind: RecordKind) -> SchemaRef {
    match kind {
        RecordKind::Log => LOG_SCHEMA.clone(),
        RecordKind::Event => EVENT_SCHEMA.clone(),
    }
}

/// Column builders for the `logs` table.
pub struct LogBatchBuilder {
    timestamp: TimestampMicrosecondBuilder,
    level: StringBuilder,
    service: StringBuilder,
    host: StringBuilder,
    message: StringBuilder,
    request_id: StringBuilder,
    response_time_ms: Float64Builder,
    status_code: Int32Builder,
    endpoint: StringBuilder,
    method: StringBuilder,
    metadata_extra: StringBuilder,
    rows: usize,
}

impl Default for LogBatchBuilder {
    fn default() -> Self {
        LogBatchBuilder {
            timestamp: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            level: StringBuilder::new(),
            service: StringBuilder::new(),
            host: StringBuilder::new(),
            message: StringBuilder::new(),
            request_id: StringBuilder::new(),
            response_time_ms: Float64Builder::new(),
            status_code: Int32Builder::new(),
            endpoint: StringBuilder::new(),
            method: StringBuilder::new(),
            metadata_extra: StringBuilder::new(),
            rows: 0,
        }
    }
}

impl LogBatchBuilder {
    pub fn append(&mut self, record: &LogRecord) {
        let m = &record.metadata;
        self.timestamp.append_value(record.timestamp_micros);
        self.level.append_value(record.level.as_str());
        self.service.append_value(&record.service);
        self.host.append_option(record.host.as_deref());
        self.message.append_value(&record.message);
        self.request_id.append_option(m.request_id.as_deref());
        self.response_time_ms.append_option(m.response_time_ms);
        self.status_code.append_option(m.status_code);
        self.endpoint.append_option(m.endpoint.as_deref());
        self.method.append_option(m.method.as_deref());
        self.metadata_extra.append_option(
            m.extra
                .as_ref()
                .and_then(|extra| serde_json::to_string(extra).ok()),
        );
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Emits the rows appended so far and resets the builder.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.level.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.response_time_ms.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.endpoint.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.metadata_extra.finish()),
        ];
        RecordBatch::try_new(schema(RecordKind::Log), columns)
    }
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
        self.event_id.append_value(&event.event_id);
        self.timestamp.append_value(event.timestamp_micros);
        self.user_id.append_value(&event.user_id);
        self.session_id.append_option(event.session_id.as_deref());
        self.event_type.append_value(event.event_type.as_str());
        self.page.append_option(event.page.as_deref());
        self.element.append_option(event.element.as_deref());
        self.position_x.append_option(event.position_x);
        self.position_y.append_option(event.position_y);
        self.event_data.append_option(event.event_data.as_deref());
        self.device_type
            .append_option(event.device.device_type.as_deref());
        self.device_os.append_option(event.device.os.as_deref());
        self.device_browser
            .append_option(event.device.browser.as_deref());
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
        RecordBatch::try_new(schema(RecordKind::Event), columns)
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

/// Builders for either kind, so the lake job can be written once.
pub enum BatchBuilder {
    // Boxed: the builders are large and there are only a few of them.
    Log(Box<LogBatchBuilder>),
    Event(Box<EventBatchBuilder>),
}

impl BatchBuilder {
    pub fn new(kind: RecordKind) -> BatchBuilder {
        match kind {
            RecordKind::Log => BatchBuilder::Log(Box::default()),
            RecordKind::Event => BatchBuilder::Event(Box::default()),
        }
    }

    /// Appends a record; a record of the other kind is a programming error
    /// and is reported, not silently dropped.
    pub fn append(&mut self, record: &Record) -> Result<(), ArrowError> {
        match (self, record) {
            (BatchBuilder::Log(builder), Record::Log(record)) => builder.append(record),
            (BatchBuilder::Event(builder), Record::Event(event)) => builder.append(event),
            _ => {
                return Err(ArrowError::InvalidArgumentError(
                    "record kind does not match the table's builder".to_string(),
                ));
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        match self {
            BatchBuilder::Log(builder) => builder.len(),
            BatchBuilder::Event(builder) => builder.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        match self {
            BatchBuilder::Log(builder) => builder.finish(),
            BatchBuilder::Event(builder) => builder.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ValidationLimits;
    use arrow::array::{Array, AsArray};

    #[test]
    fn log_builder_fills_every_column() {
        let raw = r#"{"timestamp": 1736645166.291045, "level": "ERROR", "service": "api",
            "message": "boom", "metadata": {"status_code": 503, "zone": "a"}}"#;
        let record = LogRecord::parse(raw, &ValidationLimits::now()).unwrap();
        let mut builder = LogBatchBuilder::default();
        builder.append(&record);
        builder.append(&record);
        let batch = builder.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema(RecordKind::Log));
        let host = batch.column_by_name("host").unwrap();
        assert!(host.is_null(0));
        let extra = batch
            .column_by_name("metadata_extra")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(extra.value(0), r#"{"zone":"a"}"#);
        assert!(builder.is_empty());
    }
}
