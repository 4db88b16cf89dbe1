//! SQL over the lake with DataFusion.
//!
//! The tables are the catalog's (`logpipe_core::tables`): `logs`, `events`,
//! `windows` and `alerts` are listing tables over the Hive-partitioned
//! Parquet tree, with `year`, `month`, `day`, `hour` as partition columns,
//! so `WHERE year = 2025 AND month = 1 AND day = 12` reads only that day's
//! directories. The batch outputs `daily_report` (partition `date`),
//! `weekly_analysis` (`week`), `service_analysis` (`start_date`,
//! `end_date`) and `job_runs` are registered once their first file exists,
//! with the schema read from it. The listing is redone for every query, so
//! a query sees every file committed before it started (and `logpipe sql`
//! works while `logpipe up` is writing). Statements are read-only: no DDL,
//! DML or `SET`.
//!
//! The engine reads through the lake's [`LakeStore`] (the storage
//! resolver's), registered in DataFusion's runtime, so it works on any
//! store the lake does and opens nothing on disk until a query runs.
//!
//! - `catalog.rs`: registering the catalog's tables.
//! - [`alerts`] — the typed query behind `/api/alerts`.
//! - [`render`] — results as a table, CSV or JSON.
//! - `runtime.rs`: the query API's own low-priority runtime; `pace.rs`: its
//!   scans held to a share of the cores while ingest is busy.

use std::sync::{Arc, Mutex, PoisonError};

use datafusion::dataframe::DataFrame;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;
use futures::StreamExt;
use logpipe_core::tables::{self, TableDef};
use logpipe_lake::LakeStore;

pub mod alerts;
mod catalog;
mod error;
mod pace;
pub mod render;
mod runtime;
pub mod stream_sql;

pub use alerts::AlertFilter;
pub use catalog::LAKE_URL;
pub use error::{QueryError, Result};
pub use render::{OutputFormat, QueryResult};
pub use runtime::{QueryPriority, QueryThreads};

use arrow::datatypes::SchemaRef;

/// A statement DataFusion could not parse or plan: its message and, when
/// known, where (1-based line and column in the statement's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlProblem {
    pub message: String,
    pub at: Option<(u64, u64)>,
}

impl SqlProblem {
    fn new(message: String) -> SqlProblem {
        SqlProblem { message, at: None }
    }

    fn of(error: datafusion::error::DataFusionError) -> SqlProblem {
        let span = error
            .diagnostic()
            .and_then(|d| d.span)
            .map(|span| (span.start.line, span.start.column));
        let root = error.find_root().to_string();
        let at = span.or_else(|| parser_location(&root));
        SqlProblem { message: root, at }
    }
}

/// `… at Line: 3, Column: 8` as the SQL parser writes it.
pub(crate) fn parser_location(message: &str) -> Option<(u64, u64)> {
    let number = |after: &str| -> Option<u64> {
        let start = message.rfind(after)? + after.len();
        let digits: String = message[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Some((number("Line: ")?, number("Column: ")?))
}

/// A DataFusion session with the lake tables registered.
pub struct QueryEngine {
    ctx: SessionContext,
    store: LakeStore,
    /// Tables registered once their first file appears.
    pending: Mutex<Vec<&'static TableDef>>,
    limits: QueryLimits,
}

/// What one query may take (`[query]`); none for the batch reports and
/// `logpipe sql`, whose user is the operator.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryLimits {
    pub timeout: Option<std::time::Duration>,
    /// Queries on a runtime of their own at a lower priority
    /// (`runtime.rs`); `None`: on the caller's.
    pub threads: Option<QueryThreads>,
    /// Operators' memory (sorts, joins, aggregations; no spilling to disk)
    /// and the size of the result.
    pub max_memory_bytes: Option<usize>,
}

impl QueryEngine {
    /// Registers the catalog's tables over `store`, without limits.
    pub async fn open(store: &LakeStore) -> Result<QueryEngine> {
        QueryEngine::open_limited(store, QueryLimits::default()).await
    }

    /// [`QueryEngine::open`] whose queries `limits` bound.
    pub async fn open_limited(store: &LakeStore, limits: QueryLimits) -> Result<QueryEngine> {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("logpipe", "lake");
        // Spans let a planning error (unknown column, wrong type) say where
        // in the statement it is: `logpipe jobs check` names file, line and
        // column.
        config.options_mut().sql_parser.collect_spans = true;
        // DataFusion caches directory listings forever by default; a live
        // lake gains files every second, so listing is never cached. File
        // statistics and footers stay cached: committed files never change.
        let mut runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0));
        if let Some(bytes) = limits.max_memory_bytes {
            // Over the limit a query fails; it does not spill to a disk the
            // bus and the lake need.
            runtime = runtime
                .with_memory_limit(bytes, 1.0)
                .with_disk_manager_builder(
                    DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
                );
        }
        let runtime = runtime.build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let url = ObjectStoreUrl::parse(LAKE_URL)?;
        // Listings leave out what a pending compaction replaces: a query
        // never counts an hour twice while it is compacted.
        ctx.register_object_store(
            url.as_ref(),
            logpipe_lake::compaction::CompactionView::wrap(store.store().clone()),
        );
        let mut pending = Vec::new();
        for table in tables::ALL {
            match table.schema {
                Some(schema) => catalog::register(&ctx, table, Some(schema())).await?,
                None => pending.push(table),
            }
        }
        let engine = QueryEngine {
            ctx,
            store: store.clone(),
            pending: Mutex::new(pending),
            limits,
        };
        engine.register_new_tables().await?;
        Ok(engine)
    }

    /// Registers the pending tables whose first file now exists.
    async fn register_new_tables(&self) -> Result<()> {
        let waiting = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for table in waiting {
            if catalog::has_parquet(&self.store, table).await? {
                catalog::register(&self.ctx, table, None).await?;
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|t| t.name != table.name);
            }
        }
        Ok(())
    }

    /// Adds tables outside the built-in catalog (users' batch jobs'
    /// outputs), registered once their first file exists.
    pub fn add_tables(&self, tables: &[&'static TableDef]) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for table in tables {
            if !pending.iter().any(|t| t.name == table.name) {
                pending.push(table);
            }
        }
    }

    /// Plans `sql` without running it: the schema of its result, or what is
    /// wrong and where (line and column, 1-based, when DataFusion knows).
    pub async fn plan(&self, sql: &str) -> std::result::Result<SchemaRef, SqlProblem> {
        self.register_new_tables()
            .await
            .map_err(|e| SqlProblem::new(e.to_string()))?;
        let plan = self
            .ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(SqlProblem::of)?;
        Ok(Arc::new(plan.schema().as_arrow().clone()))
    }

    /// The tables `sql` reads (CTE names excluded), lower-cased as
    /// DataFusion resolves them.
    pub fn tables_read(&self, sql: &str) -> std::result::Result<Vec<String>, SqlProblem> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(SqlProblem::of)?;
        let tables = state
            .resolve_table_references(&statement)
            .map_err(SqlProblem::of)?;
        Ok(tables.iter().map(|t| t.table().to_string()).collect())
    }

    /// Registers an empty table `name` with `schema` when no table of that
    /// name has files yet, so a job reading another job's output can be
    /// planned before that job first ran.
    pub async fn register_planned(&self, name: &str, schema: SchemaRef) -> Result<()> {
        self.register_new_tables().await?;
        if self.ctx.table_exist(name)? {
            return Ok(());
        }
        let empty = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])?;
        self.ctx.register_table(name, Arc::new(empty))?;
        Ok(())
    }

    /// Runs a read-only statement, keeping at most `max_rows` rows.
    pub async fn sql(&self, sql: &str, max_rows: usize) -> Result<QueryResult> {
        self.register_new_tables().await?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let ctx = self.ctx.clone();
        let limit = self.limits.max_memory_bytes;
        let pacer = self.limits.threads.and_then(runtime::pacer);
        let sql = sql.to_string();
        let run = async move {
            let frame = ctx.sql_with_options(&sql, options).await?;
            collect(frame, max_rows, limit, pacer).await
        };
        let run = async move {
            match self.limits.threads {
                None => run.await,
                Some(threads) => {
                    // Dropped (a timeout, the client gone): the task stops.
                    let mut task = runtime::AbortOnDrop(runtime::handle(threads).spawn(run));
                    match (&mut task.0).await {
                        Ok(result) => result,
                        Err(error) => {
                            Err(QueryError::Execution(format!("the query's task: {error}")))
                        }
                    }
                }
            }
        };
        match self.limits.timeout {
            None => run.await,
            // Dropping the query's stream stops its tasks.
            Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| {
                QueryError::Limit(format!(
                    "the query ran longer than query.timeout ({}s) and was stopped; narrow it \
                     (a WHERE on year/month/day/hour) or raise the setting (while ingest is \
                     busy, API queries also wait for their share of the CPU: \
                     query.max_share_under_load)",
                    limit.as_secs_f64()
                ))
            })?,
        }
    }
}

/// Runs `frame`, keeping at most `max_rows` rows and `max_bytes` of them,
/// its scans paced by `pacer` when one is given (`pace.rs`).
async fn collect(
    frame: DataFrame,
    max_rows: usize,
    max_bytes: Option<usize>,
    pacer: Option<&'static pace::Pacer>,
) -> Result<QueryResult> {
    let schema: arrow::datatypes::SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let mut stream = match pacer {
        None => frame.execute_stream().await?,
        Some(pacer) => {
            let task = Arc::new(frame.task_ctx());
            let plan = pace::paced(frame.create_physical_plan().await?, pacer)?;
            datafusion::physical_plan::execute_stream(plan, task)?
        }
    };
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut bytes = 0usize;
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
        bytes += batch.get_array_memory_size();
        if let Some(limit) = max_bytes
            && bytes > limit
        {
            return Err(QueryError::Limit(format!(
                "the result is larger than query.max_memory_bytes ({limit} bytes); \
                 ask for fewer rows or columns (max_rows, LIMIT) or raise the setting"
            )));
        }
        batches.push(batch);
    }
    Ok(QueryResult {
        schema,
        batches,
        rows,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use logpipe_config::Compression;
    use logpipe_core::record::{LogRecord, ValidationLimits};
    use logpipe_core::tables::LogBatchBuilder;
    use logpipe_core::time::HourPartition;

    /// Written with `std::fs` behind the lake's back, as another writer
    /// (Spark, a copy) would.
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
        let bytes = logpipe_lake::encode_parquet(batch.clone(), Compression::Snappy).unwrap();
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
        let engine =
            QueryEngine::open(&logpipe_lake::resolve(dir.path().to_str().unwrap()).unwrap())
                .await
                .unwrap();
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
        let engine =
            QueryEngine::open(&logpipe_lake::resolve(dir.path().to_str().unwrap()).unwrap())
                .await
                .unwrap();
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

    #[tokio::test]
    async fn opening_the_engine_creates_nothing_and_alerts_filter_without_sql_text() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("lake");
        let engine = QueryEngine::open(&logpipe_lake::resolve(root.to_str().unwrap()).unwrap())
            .await
            .unwrap();
        assert_eq!(count(&engine).await, r#"[{"n":0}]"#);
        assert!(
            !root.exists(),
            "a query over an empty lake creates no directory"
        );
        let filter = AlertFilter {
            firing_only: true,
            service: Some("x' OR '1'='1".to_string()),
            limit: 10,
        };
        let result = engine.alerts(&filter).await.unwrap();
        assert_eq!(result.rows, 0);
        assert_eq!(result.columns()[0], "alert_id");
    }
}
