//! The batch reports' tables (SPEC §1.6). Their columns are whatever the
//! report's SQL selects, so their schema is read from their first file.

use super::{Partitioning, TableDef};

/// `reports/daily/date=YYYY-MM-DD/`.
pub static DAILY_REPORT: TableDef = TableDef {
    name: "daily_report",
    dir: "reports/daily",
    partitioning: Partitioning::Text(&["date"]),
    schema: None,
    order: 4,
};

/// `reports/weekly/week=YYYY-Www/`.
pub static WEEKLY_ANALYSIS: TableDef = TableDef {
    name: "weekly_analysis",
    dir: "reports/weekly",
    partitioning: Partitioning::Text(&["week"]),
    schema: None,
    order: 5,
};

/// `analysis/service/start_date=…/end_date=…/`.
pub static SERVICE_ANALYSIS: TableDef = TableDef {
    name: "service_analysis",
    dir: "analysis/service",
    partitioning: Partitioning::Text(&["start_date", "end_date"]),
    schema: None,
    order: 6,
};
