//! The `windows` table: the window job's aggregates, one row per (window,
//! service, level) with the service's figures; also PostgreSQL's
//! `window_stats`.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Partitioning, TableDef, timestamp_type};

/// `windows/year=…/…/hour=…/`, by window start.
pub static WINDOWS: TableDef = TableDef {
    name: "windows",
    dir: "windows",
    partitioning: Partitioning::Hourly,
    schema: Some(schema),
    order: 3,
};

/// PostgreSQL table of window rows, and its key: a replayed step replaces
/// its rows.
pub const WINDOW_STATS_TABLE: &str = "window_stats";
pub const WINDOW_STATS_KEY: [&str; 3] = ["window_start", "service", "level"];

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

/// File schema of the `windows` table (and of `window_stats` in PostgreSQL).
pub fn schema() -> SchemaRef {
    WINDOWS_SCHEMA.clone()
}
