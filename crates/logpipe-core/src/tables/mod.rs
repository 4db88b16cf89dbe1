//! The catalog of lake tables: where each lives under the lake root, how
//! it is partitioned, its Arrow schema, and the builders that fill it.
//!
//! Files hold the record columns only; `year`, `month`, `day`, `hour` live
//! in the Hive directory names, as Spark writes them, and query engines add
//! them back as partition columns. The lake, the query engine, the batch
//! reports and the docs all take tables from [`ALL`]; adding a table is one
//! file here plus the code that fills it.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::record::view::RecordView;
use crate::record::{Record, RecordKind};

pub mod alerts;
pub mod events;
pub mod job_runs;
pub mod logs;
pub mod reports;
pub mod windows;

pub use alerts::{ALERTS, AlertMessage};
pub use events::{EVENTS, EventBatchBuilder};
pub use job_runs::JOB_RUNS;
pub use logs::{LOGS, LogBatchBuilder};
pub use reports::{DAILY_REPORT, SERVICE_ANALYSIS, WEEKLY_ANALYSIS};
pub use windows::WINDOWS;

/// The Hive partition columns of an hourly table, in directory order.
pub const HOUR_COLUMNS: [&str; 4] = ["year", "month", "day", "hour"];

/// How a table's files are laid out in directories.
#[derive(Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// `year=…/month=…/day=…/hour=…/` by event time (integers).
    Hourly,
    /// `name=value/…` directories with text values (a report's period).
    Text(&'static [&'static str]),
    /// Files directly in the table's directory.
    None,
}

impl Partitioning {
    /// The partition columns, in directory order.
    pub fn columns(&self) -> &'static [&'static str] {
        match self {
            Partitioning::Hourly => &HOUR_COLUMNS,
            Partitioning::Text(columns) => columns,
            Partitioning::None => &[],
        }
    }
}

/// One table of the lake.
#[derive(Debug)]
pub struct TableDef {
    /// The SQL name, and `table` in commit records.
    pub name: &'static str,
    /// Its directory under the lake root.
    pub dir: &'static str,
    pub partitioning: Partitioning,
    /// The file schema; `None`: whatever its first file holds.
    pub schema: Option<fn() -> SchemaRef>,
    /// Position in the catalog. A step's files are numbered in this order,
    /// which is part of the commit records already written (`logs` before
    /// `events`, `alerts` before `windows`): never renumber.
    pub(crate) order: u8,
}

/// Catalog position of the tables users' batch jobs write: after every
/// built-in one. They are never in a commit record.
const JOB_TABLE_ORDER: u8 = u8::MAX;

impl TableDef {
    /// The output table of a user's batch job: `dir` partitioned by
    /// `columns` (text values), its schema read from its first file.
    /// Leaked: a job's table lives as long as the process, like the
    /// built-in ones.
    pub fn job_output(
        name: String,
        dir: String,
        columns: &'static [&'static str],
    ) -> &'static TableDef {
        Box::leak(Box::new(TableDef {
            name: Box::leak(name.into_boxed_str()),
            dir: Box::leak(dir.into_boxed_str()),
            partitioning: Partitioning::Text(columns),
            schema: None,
            order: JOB_TABLE_ORDER,
        }))
    }
}

impl TableDef {
    /// The output table of a streaming SQL job: `dir` partitioned by the
    /// hour of window start, like `windows`. Leaked, as
    /// [`TableDef::job_output`].
    pub fn stream_output(name: String, dir: String) -> &'static TableDef {
        Box::leak(Box::new(TableDef {
            name: Box::leak(name.into_boxed_str()),
            dir: Box::leak(dir.into_boxed_str()),
            partitioning: Partitioning::Hourly,
            schema: None,
            order: JOB_TABLE_ORDER,
        }))
    }
}

impl PartialEq for TableDef {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order && self.name == other.name
    }
}

impl Eq for TableDef {}

impl PartialOrd for TableDef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TableDef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.order, self.name).cmp(&(other.order, other.name))
    }
}

/// Every table, in catalog order.
pub static ALL: [&TableDef; 8] = [
    &LOGS,
    &EVENTS,
    &ALERTS,
    &WINDOWS,
    &DAILY_REPORT,
    &WEEKLY_ANALYSIS,
    &SERVICE_ANALYSIS,
    &JOB_RUNS,
];

/// The table records of `kind` land in.
pub fn of_kind(kind: RecordKind) -> &'static TableDef {
    match kind {
        RecordKind::Log => &LOGS,
        RecordKind::Event => &EVENTS,
    }
}

/// The table named `name`.
pub fn by_name(name: &str) -> Option<&'static TableDef> {
    ALL.iter().copied().find(|table| table.name == name)
}

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
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
        self.append_view(&RecordView::from(record))
    }

    /// [`BatchBuilder::append`] of a record borrowed from the bytes it was
    /// read from.
    pub fn append_view(&mut self, record: &RecordView<'_>) -> Result<(), ArrowError> {
        match (self, record) {
            (BatchBuilder::Log(builder), RecordView::Log(record)) => builder.append_view(record),
            (BatchBuilder::Event(builder), RecordView::Event(event)) => builder.append_view(event),
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

    #[test]
    fn the_catalog_names_each_table_and_directory_once_in_order() {
        let mut names: Vec<_> = ALL.iter().map(|t| t.name).collect();
        let mut dirs: Vec<_> = ALL.iter().map(|t| t.dir).collect();
        let orders: Vec<_> = ALL.iter().map(|t| t.order).collect();
        assert_eq!(orders, (0..ALL.len() as u8).collect::<Vec<_>>());
        names.dedup();
        dirs.dedup();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(dirs.len(), ALL.len());
        assert_eq!(by_name("events"), Some(&EVENTS));
        assert!(LOGS < EVENTS && ALERTS < WINDOWS);
        for kind in RecordKind::ALL {
            assert_eq!(of_kind(kind).name, kind.table());
        }
    }
}
