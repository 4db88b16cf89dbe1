//! The `job_runs` table: one row per batch job run, failed or not (also in
//! PostgreSQL, keyed by `run_id`).

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Partitioning, TableDef, timestamp_type};

/// `job_runs/run-<started>-<job>.parquet`, unpartitioned.
pub static JOB_RUNS: TableDef = TableDef {
    name: "job_runs",
    dir: "job_runs",
    partitioning: Partitioning::None,
    schema: Some(schema),
    order: 7,
};

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
pub fn schema() -> SchemaRef {
    JOB_RUNS_SCHEMA.clone()
}
