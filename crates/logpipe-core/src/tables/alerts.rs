//! The `alerts` table, and an alert as JSON: what `alerts.realtime`
//! carries, `/api/alerts` serves and the webhook sink is given.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::{Partitioning, TableDef, timestamp_type};

/// `alerts/year=…/…/hour=…/`, by window start.
pub static ALERTS: TableDef = TableDef {
    name: "alerts",
    dir: "alerts",
    partitioning: Partitioning::Hourly,
    schema: Some(schema),
    order: 2,
};

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

/// File schema of the `alerts` table.
pub fn schema() -> SchemaRef {
    ALERTS_SCHEMA.clone()
}

/// An alert as published on `alerts.realtime`, served by `/api/alerts` and
/// sent to the webhook: a row of the `alerts` table with its times in
/// RFC 3339.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    pub alert_id: String,
    pub incident_id: String,
    /// `FIRING` or `RESOLVED`.
    pub state: String,
    pub rule: String,
    pub severity: String,
    pub service: String,
    pub value: f64,
    pub threshold: f64,
    pub window_start: String,
    pub window_end: String,
    pub incident_start: String,
    pub detected_at: String,
    pub summary: String,
}

impl AlertMessage {
    /// Whether this message ends its incident.
    pub fn is_resolved(&self) -> bool {
        self.state == "RESOLVED"
    }
}
