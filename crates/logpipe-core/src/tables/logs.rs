//! The `logs` table: one row per log record, partitioned by event hour.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use super::{Partitioning, TableDef, timestamp_type};
use crate::record::LogRecord;
use crate::record::view::LogView;

/// `logs/raw/year=…/month=…/day=…/hour=…/` (SPEC §1.3).
pub static LOGS: TableDef = TableDef {
    name: "logs",
    dir: "logs/raw",
    partitioning: Partitioning::Hourly,
    schema: Some(schema),
    order: 0,
};

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

/// File schema of the `logs` table.
pub fn schema() -> SchemaRef {
    LOG_SCHEMA.clone()
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
        self.append_view(&LogView::from(record));
    }

    /// Appends a record borrowed from the bytes it was read from.
    pub fn append_view(&mut self, record: &LogView<'_>) {
        self.timestamp.append_value(record.timestamp_micros);
        self.level.append_value(record.level.as_str());
        self.service.append_value(record.service);
        self.host.append_option(record.host);
        self.message.append_value(record.message);
        self.request_id.append_option(record.request_id);
        self.response_time_ms.append_option(record.response_time_ms);
        self.status_code.append_option(record.status_code);
        self.endpoint.append_option(record.endpoint);
        self.method.append_option(record.method);
        self.metadata_extra.append_option(
            record
                .extra
                .as_ref()
                .and_then(|extra| serde_json::to_string(extra.as_ref()).ok()),
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
        RecordBatch::try_new(schema(), columns)
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
        assert_eq!(batch.schema(), schema());
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
