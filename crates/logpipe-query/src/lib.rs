//! SQL over the lake with DataFusion.
//!
//! Tables `logs`, `events`, `windows` and `alerts` are listing tables over
//! the Hive-partitioned Parquet tree, with `year`, `month`, `day`, `hour` as
//! partition columns, so `WHERE year = 2025 AND month = 1 AND day = 12`
//! reads only that day's directories. The batch outputs `daily_report`
//! (partition `date`), `weekly_analysis` (`week`), `service_analysis`
//! (`start_date`, `end_date`) and `job_runs` are registered once their first
//! file exists, with the schema read from it. The listing is redone for every query, so a query sees every
//! file committed before it started (and `logpipe sql` works while
//! `logpipe up` is writing). Statements are read-only: no DDL, DML or `SET`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;
use futures::StreamExt;
use logpipe_core::record::RecordKind;
use logpipe_core::schema;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is wrong (syntax, unknown column, …): the user's to fix.
    #[error("{0}")]
    Sql(String),
    #[error("query failed: {0}")]
    Execution(String),
    #[error("formatting the result failed: {0}")]
    Format(String),
    #[error("lake directory {path}: {reason}")]
    Lake { path: String, reason: String },
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match error.find_root() {
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                QueryError::Sql(error.find_root().to_string())
            }
            _ => QueryError::Execution(error.to_string()),
        }
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// The Hive partition columns, in directory order.
pub const PARTITION_COLUMNS: [&str; 4] = ["year", "month", "day", "hour"];

/// A query result, possibly cut at a row limit.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// True when more rows existed than the limit allowed.
    pub truncated: bool,
}

/// A table of the lake: where it lives and how it is partitioned.
struct TableSpec {
    name: &'static str,
    /// Directory under the lake root.
    dir: &'static str,
    partitions: &'static [&'static str],
    partition_type: DataType,
    /// Known file schema; `None`: read from the first file.
    schema: Option<SchemaRef>,
}

const HOURLY: &[&str] = &PARTITION_COLUMNS;

fn table_specs() -> Vec<TableSpec> {
    let hourly = |name, dir, schema| TableSpec {
        name,
        dir,
        partitions: HOURLY,
        partition_type: DataType::Int32,
        schema: Some(schema),
    };
    let report = |name, dir, partitions| TableSpec {
        name,
        dir,
        partitions,
        partition_type: DataType::Utf8,
        schema: None,
    };
    vec![
        hourly("logs", "logs/raw", schema::schema(RecordKind::Log)),
        hourly("events", "events/raw", schema::schema(RecordKind::Event)),
        hourly("windows", "windows", schema::windows_schema()),
        hourly("alerts", "alerts", schema::alerts_schema()),
        report("daily_report", "reports/daily", &["date"]),
        report("weekly_analysis", "reports/weekly", &["week"]),
        report(
            "service_analysis",
            "analysis/service",
            &["start_date", "end_date"],
        ),
        TableSpec {
            name: "job_runs",
            dir: "job_runs",
            partitions: &[],
            partition_type: DataType::Utf8,
            schema: Some(schema::job_runs_schema()),
        },
    ]
}

/// A DataFusion session with the lake tables registered.
pub struct QueryEngine {
    ctx: SessionContext,
    root: std::path::PathBuf,
    /// Tables registered once their first file appears.
    pending: std::sync::Mutex<Vec<TableSpec>>,
}

impl QueryEngine {
    /// Registers the lake tables of the local lake at `data_dir`.
    pub async fn open_local(data_dir: &Path) -> Result<QueryEngine> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("logpipe", "lake");
        // DataFusion caches directory listings forever by default; a live
        // lake gains files every second, so listing is never cached. File
        // statistics and footers stay cached: committed files never change.
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let root = std::path::absolute(data_dir).map_err(|e| QueryError::Lake {
            path: data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut pending = Vec::new();
        for spec in table_specs() {
            match &spec.schema {
                Some(file_schema) => {
                    let dir = root.join(spec.dir);
                    std::fs::create_dir_all(&dir).map_err(|e| QueryError::Lake {
                        path: dir.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
                    register_listing_table(&ctx, &spec, url, Some(file_schema.clone())).await?;
                }
                None => pending.push(spec),
            }
        }
        let engine = QueryEngine {
            ctx,
            root,
            pending: std::sync::Mutex::new(pending),
        };
        engine.register_new_tables().await?;
        Ok(engine)
    }

    /// Registers the pending tables whose first file now exists.
    async fn register_new_tables(&self) -> Result<()> {
        let ready: Vec<TableSpec> = {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (ready, waiting) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|spec| has_parquet(&self.root.join(spec.dir)));
            *pending = waiting;
            ready
        };
        for spec in ready {
            let url = ListingTableUrl::parse(format!("{}/", self.root.join(spec.dir).display()))?;
            register_listing_table(&self.ctx, &spec, url, None).await?;
        }
        Ok(())
    }

    /// Runs a read-only statement, keeping at most `max_rows` rows.
    pub async fn sql(&self, sql: &str, max_rows: usize) -> Result<QueryResult> {
        self.register_new_tables().await?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self.ctx.sql_with_options(sql, options).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let mut stream = frame.execute_stream().await?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if rows + batch.num_rows() > max_rows {
                let keep = max_rows - rows;
                if keep > 0 {
                    batches.push(batch.slice(0, keep));
                }
                rows += keep;
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        Ok(QueryResult {
            schema,
            batches,
            rows,
            truncated,
        })
    }
}

/// True when `dir` holds a Parquet file at any depth.
fn has_parquet(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            has_parquet(&path)
        } else {
            path.extension().is_some_and(|e| e == "parquet")
        }
    })
}

async fn register_listing_table(
    ctx: &SessionContext,
    spec: &TableSpec,
    url: ListingTableUrl,
    file_schema: Option<SchemaRef>,
) -> Result<()> {
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            spec.partitions
                .iter()
                .map(|column| (column.to_string(), spec.partition_type.clone()))
                .collect(),
        );
    let config = ListingTableConfig::new(url).with_listing_options(options);
    let config = match file_schema {
        Some(file_schema) => config.with_schema(file_schema),
        None => config.infer_schema(&ctx.state()).await?,
    };
    let table = ListingTable::try_new(config)?;
    ctx.register_table(spec.name, Arc::new(table))?;
    Ok(())
}

/// How `logpipe sql` prints a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

impl QueryResult {
    fn batches_or_empty(&self) -> Vec<RecordBatch> {
        if self.batches.is_empty() {
            vec![RecordBatch::new_empty(self.schema.clone())]
        } else {
            self.batches.clone()
        }
    }

    /// Renders the result.
    pub fn render(&self, format: OutputFormat) -> Result<String> {
        let error = |e: arrow::error::ArrowError| QueryError::Format(e.to_string());
        match format {
            OutputFormat::Table => Ok(arrow::util::pretty::pretty_format_batches(
                &self.batches_or_empty(),
            )
            .map_err(error)?
            .to_string()),
            OutputFormat::Csv => {
                let mut out = Vec::new();
                {
                    let mut writer = arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(&mut out);
                    for batch in self.batches_or_empty() {
                        writer.write(&batch).map_err(error)?;
                    }
                }
                String::from_utf8(out).map_err(|e| QueryError::Format(e.to_string()))
            }
            OutputFormat::Json => self.rows_json(),
        }
    }

    /// The rows as a JSON array of objects (`[]` when empty).
    pub fn rows_json(&self) -> Result<String> {
        let mut out = Vec::new();
        {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut out);
            for batch in &self.batches {
                writer
                    .write(batch)
                    .map_err(|e| QueryError::Format(e.to_string()))?;
            }
            writer
                .finish()
                .map_err(|e| QueryError::Format(e.to_string()))?;
        }
        if out.is_empty() {
            return Ok("[]".to_string());
        }
        String::from_utf8(out).map_err(|e| QueryError::Format(e.to_string()))
    }

    /// Column names in order.
    pub fn columns(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logpipe_core::record::{LogRecord, ValidationLimits};
    use logpipe_core::schema::LogBatchBuilder;
    use logpipe_core::time::HourPartition;

    fn write_log_file(root: &Path, raw: &[&str]) {
        let mut builder = LogBatchBuilder::default();
        let mut hour = None;
        for text in raw {
            let record = LogRecord::parse(text, &ValidationLimits::now()).unwrap();
            hour = Some(HourPartition::of_micros(record.timestamp_micros));
            builder.append(&record);
        }
        let batch = builder.finish().unwrap();
        let dir = root.join("logs/raw").join(hour.unwrap().hive_path());
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = logpipe_lake::encode_parquet(&batch, logpipe_lake::Codec::Snappy).unwrap();
        std::fs::write(dir.join(format!("part-{}.parquet", raw.len())), bytes).unwrap();
    }

    #[tokio::test]
    async fn queries_see_partitions_and_refuse_writes() {
        let dir = tempfile::tempdir().unwrap();
        write_log_file(
            dir.path(),
            &[
                r#"{"timestamp": 1736645166, "level": "ERROR", "service": "a", "message": "x"}"#,
                r#"{"timestamp": 1736645167, "level": "INFO", "service": "a", "message": "y"}"#,
            ],
        );
        write_log_file(
            dir.path(),
            &[
                r#"{"timestamp": "2025-01-13T05:00:00Z", "level": "INFO", "service": "b", "message": "z"}"#,
            ],
        );
        let engine = QueryEngine::open_local(dir.path()).await.unwrap();
        let result = engine
            .sql(
                "SELECT day, hour, count(*) AS n FROM logs GROUP BY day, hour ORDER BY day",
                100,
            )
            .await
            .unwrap();
        let json = result.rows_json().unwrap();
        assert_eq!(
            json,
            r#"[{"day":12,"hour":1,"n":2},{"day":13,"hour":5,"n":1}]"#
        );
        let pruned = engine
            .sql(
                "SELECT count(*) AS n FROM logs WHERE year = 2025 AND day = 13",
                100,
            )
            .await
            .unwrap();
        assert_eq!(pruned.rows_json().unwrap(), r#"[{"n":1}]"#);
        // Pruning: the plan scans only the day=13 directory's file.
        let plan = engine
            .sql(
                "EXPLAIN SELECT message FROM logs WHERE year = 2025 AND day = 13",
                100,
            )
            .await
            .unwrap()
            .render(OutputFormat::Csv)
            .unwrap();
        assert!(plan.contains("day=13"), "{plan}");
        assert!(!plan.contains("day=12"), "day=12 must be pruned: {plan}");
        let csv = pruned.render(OutputFormat::Csv).unwrap();
        assert_eq!(csv, "n\n1\n");
        let limited = engine.sql("SELECT * FROM logs", 1).await.unwrap();
        assert!(limited.truncated && limited.rows == 1);
        let empty = engine.sql("SELECT * FROM events", 10).await.unwrap();
        assert_eq!(empty.rows, 0);
        assert!(
            empty
                .render(OutputFormat::Table)
                .unwrap()
                .contains("event_id")
        );
        for refused in [
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO logs SELECT * FROM logs",
            "SET datafusion.execution.batch_size = 1",
        ] {
            assert!(
                engine.sql(refused, 10).await.is_err(),
                "{refused} must be refused"
            );
        }
        let error = engine.sql("SELECT nope FROM logs", 10).await.unwrap_err();
        assert!(matches!(error, QueryError::Sql(_)), "{error}");
    }

    async fn count(engine: &QueryEngine) -> String {
        engine
            .sql("SELECT count(*) AS n FROM logs", 10)
            .await
            .unwrap()
            .rows_json()
            .unwrap()
    }

    #[tokio::test]
    async fn a_long_lived_engine_sees_files_committed_after_its_first_query() {
        let dir = tempfile::tempdir().unwrap();
        let engine = QueryEngine::open_local(dir.path()).await.unwrap();
        assert_eq!(count(&engine).await, r#"[{"n":0}]"#);
        write_log_file(
            dir.path(),
            &[r#"{"timestamp": 1736645166, "level": "INFO", "service": "a", "message": "x"}"#],
        );
        assert_eq!(count(&engine).await, r#"[{"n":1}]"#);
        write_log_file(
            dir.path(),
            &[
                r#"{"timestamp": "2025-02-01T00:00:00Z", "level": "INFO", "service": "a", "message": "x"}"#,
                r#"{"timestamp": "2025-02-01T00:00:01Z", "level": "INFO", "service": "a", "message": "y"}"#,
            ],
        );
        assert_eq!(
            count(&engine).await,
            r#"[{"n":3}]"#,
            "a new partition directory is seen"
        );
    }
}
