//! A Delta Lake transaction log over each table's files, for readers
//! outside logpipe.
//!
//! The lake is a plain Hive tree, and a directory cannot change atomically
//! on an object store: a compaction's merged file and the deletion of its
//! inputs are separate requests, so a reader of the tree sees an hour twice
//! for a while (and an expired hour half deleted). logpipe's own reads
//! follow its manifests and retention marks through
//! [`CompactionView`](crate::compaction::CompactionView) and never do. This
//! module publishes what that view shows as a Delta table, so Spark
//! (delta-spark), delta-rs, DuckDB's delta extension and Trino get the same
//! guarantee.
//!
//! **Publishing.** Every `interval` a pass lists each table through the
//! view, then the kept commit records once, leaves out the files of a job
//! step not yet whole in the listings (a dead writer's step is published
//! once rolled forward, whole), and commits the difference to what the log
//! holds as one version
//! `<table dir>/_delta_log/<version>.json`: `add` for the new files,
//! `remove` for the ones the view no longer shows. A compaction therefore
//! appears as one version that removes its inputs and adds its merged files
//! (`dataChange: false`, operation `OPTIMIZE`), an expired hour as one that
//! removes its files. The view hides replaced files a grace period before
//! they are deleted, and the pass runs at least twice in that period
//! (checked by the config), so the newest version never names a deleted
//! file.
//!
//! **Versions** are created if absent (`PutMode::Create`): two publishers
//! never both write version *n*; the loser reads the winner's version and
//! computes its difference again; it removes only files the log held
//! before its listing, never ones a newer version added that its listing
//! was too early to see. A checkpoint (the whole file list as one
//! Parquet file, with `_last_checkpoint` pointing at it) is written every
//! `checkpoint_interval` versions, and versions older than both the newest
//! checkpoint and `log_retention` are deleted. The log is reader version 1,
//! writer version 2: no table features.
//!
//! Partition columns are in the table's schema as Delta requires
//! (`year`, `month`, `day`, `hour` as integers; a report's text columns as
//! strings), and each file's values come from its path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use futures::TryStreamExt;
use logpipe_core::tables::{Partitioning, TableDef};
use logpipe_core::time::now_micros;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use serde_json::{Value, json};

use crate::Lake;
use crate::compaction::CompactionView;
use crate::error::{LakeError, Result};
use crate::layout::step_of_file_name;
pub use crate::layout::{LOG_DIR, is_table_file};
use crate::metrics::lake_metrics;

/// What a pass does (from `[lake.delta]`).
#[derive(Debug, Clone, Copy)]
pub struct DeltaSettings {
    pub interval: Duration,
    pub checkpoint_interval: u64,
    pub log_retention: Duration,
}

impl DeltaSettings {
    pub fn from_config(config: &logpipe_config::DeltaConfig) -> DeltaSettings {
        DeltaSettings {
            interval: config.interval,
            checkpoint_interval: config.checkpoint_interval,
            log_retention: config.log_retention,
        }
    }
}

/// A file the log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoggedFile {
    size: u64,
    modified_millis: i64,
}

/// One table's log as this process last read it.
#[derive(Debug, Default)]
struct TableLog {
    /// The newest version read; `None`: the log does not exist yet.
    version: Option<u64>,
    /// Path relative to the table directory → file.
    files: BTreeMap<String, LoggedFile>,
    /// The `metaData` action in force.
    metadata: Option<Value>,
}

impl TableLog {
    fn apply(&mut self, action: &Value, path: &str) -> Result<()> {
        if let Some(add) = action.get("add") {
            let file = add["path"]
                .as_str()
                .ok_or_else(|| bad_log(path, "an add without a path"))?;
            self.files.insert(
                file.to_string(),
                LoggedFile {
                    size: add["size"].as_u64().unwrap_or(0),
                    modified_millis: add["modificationTime"].as_i64().unwrap_or(0),
                },
            );
        } else if let Some(remove) = action.get("remove") {
            if let Some(file) = remove["path"].as_str() {
                self.files.remove(file);
            }
        } else if let Some(metadata) = action.get("metaData") {
            self.metadata = Some(metadata.clone());
        } else if let Some(protocol) = action.get("protocol") {
            let reader = protocol["minReaderVersion"].as_u64().unwrap_or(1);
            let writer = protocol["minWriterVersion"].as_u64().unwrap_or(2);
            if reader > 1 || writer > 2 {
                return Err(bad_log(
                    path,
                    &format!(
                        "the table needs reader version {reader} and writer version {writer}; \
                         logpipe writes only version 1/2 logs (another writer changed this table)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn bad_log(path: &str, reason: &str) -> LakeError {
    LakeError::BadDeltaLog {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

fn log_dir(table: &TableDef) -> StorePath {
    StorePath::from(format!("{}/{LOG_DIR}", table.dir))
}

fn version_path(table: &TableDef, version: u64) -> StorePath {
    StorePath::from(format!("{}/{LOG_DIR}/{version:020}.json", table.dir))
}

fn checkpoint_path(table: &TableDef, version: u64) -> StorePath {
    StorePath::from(format!(
        "{}/{LOG_DIR}/{version:020}.checkpoint.parquet",
        table.dir
    ))
}

/// A log file's version and whether it is a checkpoint (`None`: not a
/// version or checkpoint file, e.g. `_last_checkpoint`).
fn version_of(path: &StorePath) -> Option<(u64, bool)> {
    let name = path.filename()?;
    if let Some(number) = name.strip_suffix(".checkpoint.parquet") {
        return Some((number.parse().ok()?, true));
    }
    Some((name.strip_suffix(".json")?.parse().ok()?, false))
}

/// What one version published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub version: u64,
    pub added: usize,
    pub removed: usize,
}

/// Keeps the Delta logs of a set of tables up to date with the lake.
pub struct DeltaPublisher {
    lake: Lake,
    view: Arc<dyn ObjectStore>,
    settings: DeltaSettings,
    logs: HashMap<&'static str, TableLog>,
    /// Kept job steps known to have all their files (a complete step stays
    /// complete); forgotten once their commit record is pruned.
    complete_steps: BTreeSet<(String, u64)>,
    /// Tables whose schema has a type Delta cannot name: said once.
    refused: BTreeSet<&'static str>,
}

/// What a pass saw of one table before writing anything.
struct Listing {
    table: &'static TableDef,
    /// The files the log held just before the listing: only these may be
    /// removed. A file another publisher added after it is one this
    /// listing may simply have been too early to see.
    base: BTreeSet<String>,
    /// The table's files as logpipe's reads see them, by path relative
    /// to the table directory.
    visible: BTreeMap<String, ObjectMeta>,
}

impl DeltaPublisher {
    pub fn new(lake: Lake, settings: DeltaSettings) -> DeltaPublisher {
        let view = CompactionView::wrap(lake.store().clone());
        DeltaPublisher {
            lake,
            view,
            settings,
            logs: HashMap::new(),
            complete_steps: BTreeSet::new(),
            refused: BTreeSet::new(),
        }
    }

    /// Publishes what logpipe's reads see of `table` now, as one new
    /// version if anything changed. `None`: nothing to publish.
    pub async fn publish(&mut self, table: &'static TableDef) -> Result<Option<Published>> {
        self.publish_all(&[table]).await?.pop().unwrap_or(Ok(None))
    }

    /// One pass over `tables`: every table listed first, then the kept
    /// commit records once for all of them (a listed file's step record
    /// was made before the file), then a version for each table whose
    /// files changed. The outer error: the commit records could not be
    /// read; the inner ones, per table.
    pub async fn publish_all(
        &mut self,
        tables: &[&'static TableDef],
    ) -> Result<Vec<Result<Option<Published>>>> {
        let mut listings = Vec::new();
        for table in tables {
            listings.push(if self.refused.contains(table.name) {
                Ok(None)
            } else {
                self.list(table).await.map(Some)
            });
        }
        let listed: Vec<&Listing> = listings.iter().flatten().flatten().collect();
        let incomplete = self.incomplete_steps(&listed).await?;
        let mut results = Vec::new();
        for listing in listings {
            results.push(match listing {
                Ok(Some(listing)) => self.write(&listing, &incomplete).await,
                Ok(None) => Ok(None),
                Err(error) => Err(error),
            });
        }
        Ok(results)
    }

    /// The table's log brought up to date, and its files as the view
    /// shows them.
    async fn list(&mut self, table: &'static TableDef) -> Result<Listing> {
        match self.logs.get_mut(table.dir) {
            Some(log) => refresh(self.lake.store(), table, log).await?,
            None => {
                let log = load(self.lake.store(), table).await?;
                self.logs.insert(table.dir, log);
            }
        }
        let log = &self.logs[table.dir];
        let base = log.files.keys().cloned().collect();
        let visible = self
            .view
            .list(Some(&StorePath::from(table.dir)))
            .try_filter(|meta| std::future::ready(is_table_file(table.dir, &meta.location)))
            .map_ok(|meta| (relative(table, &meta.location), meta))
            .try_collect()
            .await?;
        Ok(Listing {
            table,
            base,
            visible,
        })
    }

    /// The kept job steps with a file missing from `listings` (a writer
    /// still putting them, or one that died half-way): their files wait
    /// until the step is whole. Files of tables not listed are not asked
    /// for.
    async fn incomplete_steps(&mut self, listings: &[&Listing]) -> Result<BTreeSet<(String, u64)>> {
        let retained = self.lake.retained_steps().await?;
        self.complete_steps.retain(|step| retained.contains(step));
        let mut incomplete = BTreeSet::new();
        for step in retained {
            if self.complete_steps.contains(&step) {
                continue;
            }
            let record = match self
                .lake
                .read_commit(&crate::layout::commit_path(&step.0, step.1))
                .await
            {
                Ok(record) => record,
                // Pruned meanwhile: it was complete.
                Err(LakeError::Store(object_store::Error::NotFound { .. })) => continue,
                Err(error) => return Err(error),
            };
            let whole = record.files.iter().all(|file| {
                listings.iter().all(|listing| {
                    file.path
                        .strip_prefix(listing.table.dir)
                        .and_then(|rest| rest.strip_prefix('/'))
                        .is_none_or(|rest| listing.visible.contains_key(rest))
                })
            });
            if whole {
                self.complete_steps.insert(step);
            } else {
                incomplete.insert(step);
            }
        }
        Ok(incomplete)
    }

    /// Writes the version that brings `listing`'s table log to what the
    /// listing saw (without the files of `incomplete` steps).
    async fn write(
        &mut self,
        listing: &Listing,
        incomplete: &BTreeSet<(String, u64)>,
    ) -> Result<Option<Published>> {
        let table = listing.table;
        let visible: BTreeMap<&String, &ObjectMeta> = listing
            .visible
            .iter()
            .filter(|(_, meta)| {
                incomplete.is_empty()
                    || meta
                        .location
                        .filename()
                        .and_then(step_of_file_name)
                        .is_none_or(|(job, seq)| !incomplete.contains(&(job.to_string(), seq)))
            })
            .collect();
        let mut log = self.logs.remove(table.dir).unwrap_or_default();
        let result = self
            .write_with(table, &listing.base, &visible, &mut log)
            .await;
        self.logs.insert(table.dir, log);
        result
    }

    async fn write_with(
        &mut self,
        table: &'static TableDef,
        base: &BTreeSet<String>,
        visible: &BTreeMap<&String, &ObjectMeta>,
        log: &mut TableLog,
    ) -> Result<Option<Published>> {
        for _attempt in 0..16 {
            refresh(self.lake.store(), table, log).await?;
            // New files, and files written again under the same name (a
            // batch job's period replaced by one put): a newer `add` for a
            // path replaces the older one.
            let adds: Vec<(&String, &ObjectMeta)> = visible
                .iter()
                .map(|(path, meta)| (*path, *meta))
                .filter(|(path, meta)| {
                    log.files.get(path.as_str()).is_none_or(|logged| {
                        logged.size != meta.size
                            || logged.modified_millis != meta.last_modified.timestamp_millis()
                    })
                })
                .collect();
            let removes: Vec<(String, LoggedFile)> = log
                .files
                .iter()
                .filter(|(path, _)| base.contains(*path) && !visible.contains_key(*path))
                .map(|(path, file)| (path.clone(), file.clone()))
                .collect();
            if adds.is_empty() && removes.is_empty() {
                return Ok(None);
            }
            let version = log.version.map_or(0, |v| v + 1);
            let mut actions: Vec<Value> = Vec::new();
            let compacted: BTreeSet<String> = adds
                .iter()
                .filter(|(path, _)| is_compacted(path))
                .map(|(path, _)| parent(path).to_string())
                .collect();
            let operation = if !compacted.is_empty() {
                "OPTIMIZE"
            } else if !removes.is_empty() {
                "DELETE"
            } else {
                "WRITE"
            };
            actions.push(json!({"commitInfo": {
                "timestamp": now_micros() / 1000,
                "operation": operation,
                "operationParameters": {},
                "isBlindAppend": removes.is_empty(),
                "engineInfo": concat!("logpipe/", env!("CARGO_PKG_VERSION")),
            }}));
            if log.metadata.is_none() {
                let Some((_, first)) = adds.first() else {
                    return Ok(None);
                };
                let metadata = match metadata_of(self.lake.store(), table, first).await {
                    Ok(metadata) => metadata,
                    Err(LakeError::BadDeltaLog { reason, .. }) => {
                        tracing::warn!(
                            table = table.name,
                            %reason,
                            "table left out of the Delta log"
                        );
                        self.refused.insert(table.name);
                        return Ok(None);
                    }
                    Err(error) => return Err(error),
                };
                actions.push(json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}));
                actions.push(json!({ "metaData": metadata }));
            }
            let now_millis = now_micros() / 1000;
            for (path, file) in &removes {
                let data_change = !compacted.contains(parent(path));
                actions.push(json!({"remove": {
                    "path": path,
                    "deletionTimestamp": now_millis,
                    "dataChange": data_change,
                    "extendedFileMetadata": true,
                    "partitionValues": partition_values(table, path),
                    "size": file.size,
                }}));
            }
            for (path, meta) in &adds {
                let data_change = !is_compacted(path);
                actions.push(add_action(
                    table,
                    path,
                    &LoggedFile {
                        size: meta.size,
                        modified_millis: meta.last_modified.timestamp_millis(),
                    },
                    data_change,
                ));
            }
            let created = self
                .lake
                .store()
                .put_opts(
                    &version_path(table, version),
                    PutPayload::from(ndjson(&actions)),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            match created {
                Ok(_) => {}
                // Another publisher wrote this version: read it, and
                // compute the difference again.
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
            for action in &actions {
                log.apply(action, version_path(table, version).as_ref())?;
            }
            log.version = Some(version);
            lake_metrics().delta_versions.add(&[table.name], 1);
            tracing::debug!(
                table = table.name,
                version,
                added = adds.len(),
                removed = removes.len(),
                "published a Delta version"
            );
            let published = Published {
                version,
                added: adds.len(),
                removed: removes.len(),
            };
            if version > 0 && version.is_multiple_of(self.settings.checkpoint_interval) {
                write_checkpoint(self.lake.store(), table, log, version).await?;
                self.clean_up(table, version).await?;
            }
            return Ok(Some(published));
        }
        Err(bad_log(
            log_dir(table).as_ref(),
            "16 versions in a row were taken by another writer while publishing",
        ))
    }

    /// Deletes versions and checkpoints older than the checkpoint at
    /// `checkpoint` and than `log_retention`.
    async fn clean_up(&self, table: &TableDef, checkpoint: u64) -> Result<()> {
        let retention = i64::try_from(self.settings.log_retention.as_micros()).unwrap_or(i64::MAX);
        let cutoff = now_micros().saturating_sub(retention);
        let old: Vec<StorePath> = self
            .lake
            .store()
            .list(Some(&log_dir(table)))
            .try_filter_map(|meta| {
                let old = version_of(&meta.location)
                    .is_some_and(|(version, _)| version < checkpoint)
                    && meta.last_modified.timestamp_micros() < cutoff;
                std::future::ready(Ok(old.then_some(meta.location)))
            })
            .try_collect()
            .await?;
        for path in old {
            match self.lake.store().delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

fn relative(table: &TableDef, path: &StorePath) -> String {
    let path = path.as_ref();
    path.strip_prefix(table.dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(path)
        .to_string()
}

fn is_compacted(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("compacted-"))
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The `add` action of the file at `path` (relative to the table).
fn add_action(table: &TableDef, path: &str, file: &LoggedFile, data_change: bool) -> Value {
    json!({"add": {
        "path": path,
        "partitionValues": partition_values(table, path),
        "size": file.size,
        "modificationTime": file.modified_millis,
        "dataChange": data_change,
    }})
}

/// Actions as newline-delimited JSON (a version file, a checkpoint's input).
fn ndjson(actions: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for action in actions {
        serde_json::to_writer(&mut out, action).expect("JSON values serialize");
        out.push(b'\n');
    }
    out
}

/// A file's partition values, from the `name=value` directories of its
/// path.
fn partition_values(table: &TableDef, path: &str) -> Value {
    let mut values = serde_json::Map::new();
    for segment in path.split('/') {
        if let Some((name, value)) = segment.split_once('=')
            && table.partitioning.columns().contains(&name)
        {
            values.insert(name.to_string(), Value::String(value.to_string()));
        }
    }
    Value::Object(values)
}

/// Reads the table's log: the newest checkpoint, then every version after
/// it.
async fn load(store: &Arc<dyn ObjectStore>, table: &TableDef) -> Result<TableLog> {
    let listed: Vec<ObjectMeta> = store.list(Some(&log_dir(table))).try_collect().await?;
    let checkpoint = listed
        .iter()
        .filter_map(|meta| version_of(&meta.location))
        .filter(|(_, checkpoint)| *checkpoint)
        .map(|(version, _)| version)
        .max();
    let mut log = TableLog::default();
    if let Some(version) = checkpoint {
        read_checkpoint(store, table, version, &mut log).await?;
        log.version = Some(version);
    }
    refresh(store, table, &mut log).await?;
    Ok(log)
}

/// Applies the versions after `log.version` that the store holds.
async fn refresh(store: &Arc<dyn ObjectStore>, table: &TableDef, log: &mut TableLog) -> Result<()> {
    let listed: Vec<ObjectMeta> = match log.version {
        Some(version) => {
            store
                .list_with_offset(Some(&log_dir(table)), &version_path(table, version))
                .try_collect()
                .await?
        }
        None => store.list(Some(&log_dir(table))).try_collect().await?,
    };
    let mut versions: Vec<(u64, StorePath)> = listed
        .into_iter()
        .filter_map(|meta| match version_of(&meta.location) {
            Some((version, false)) => Some((version, meta.location)),
            _ => None,
        })
        .filter(|(version, _)| log.version.is_none_or(|v| *version > v))
        .collect();
    versions.sort();
    for (version, path) in versions {
        let expected = log.version.map_or(0, |v| v + 1);
        if version != expected {
            return Err(bad_log(
                path.as_ref(),
                &format!("version {expected} is missing before it"),
            ));
        }
        let body = store.get(&path).await?.bytes().await?;
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: Value =
                serde_json::from_slice(line).map_err(|e| bad_log(path.as_ref(), &e.to_string()))?;
            log.apply(&action, path.as_ref())?;
        }
        log.version = Some(version);
    }
    Ok(())
}

/// The `metaData` action of `table`: its schema (the catalog's, or the
/// footer of `file`) with the partition columns.
async fn metadata_of(
    store: &Arc<dyn ObjectStore>,
    table: &TableDef,
    file: &ObjectMeta,
) -> Result<Value> {
    let schema: SchemaRef = match table.schema {
        Some(schema) => schema(),
        None => {
            let footer = crate::parquet::footer(store.as_ref(), &file.location, file.size)
                .await
                .ok_or_else(|| {
                    LakeError::Task(format!(
                        "{}: no readable Parquet footer for the table's schema",
                        file.location
                    ))
                })?;
            ArrowReaderMetadata::try_new(Arc::new(footer), ArrowReaderOptions::default())?
                .schema()
                .clone()
        }
    };
    let partition_type = match table.partitioning {
        Partitioning::Hourly => "integer",
        Partitioning::Text(_) | Partitioning::None => "string",
    };
    let mut fields = Vec::new();
    for field in schema.fields() {
        let data_type = delta_type(field.data_type()).ok_or_else(|| {
            bad_log(
                table.dir,
                &format!(
                    "column {:?} is {}, which a Delta schema cannot name",
                    field.name(),
                    field.data_type()
                ),
            )
        })?;
        fields.push(json!({"name": field.name(), "type": data_type, "nullable": field.is_nullable(), "metadata": {}}));
    }
    for column in table.partitioning.columns() {
        fields.push(
            json!({"name": column, "type": partition_type, "nullable": true, "metadata": {}}),
        );
    }
    let schema_string = json!({"type": "struct", "fields": fields}).to_string();
    Ok(json!({
        "id": table_id(table),
        "name": table.name,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema_string,
        "partitionColumns": table.partitioning.columns(),
        "configuration": {},
        "createdTime": now_micros() / 1000,
    }))
}

/// A UUID-shaped id for the table (Delta wants one; nothing relies on
/// more than its being unique per table and creation).
fn table_id(table: &TableDef) -> String {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        *word = state.hash_one((table.dir, now_micros(), std::process::id(), i));
    }
    let hex = format!("{:016x}{:016x}", words[0], words[1]);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The Delta type of an Arrow type; `None` where Delta has none (unsigned
/// 64-bit integers, timestamps without a zone, which need table features).
fn delta_type(data_type: &DataType) -> Option<Value> {
    let primitive = |name: &str| Some(Value::String(name.to_string()));
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => primitive("string"),
        DataType::Boolean => primitive("boolean"),
        DataType::Int8 => primitive("byte"),
        DataType::Int16 | DataType::UInt8 => primitive("short"),
        DataType::Int32 | DataType::UInt16 => primitive("integer"),
        DataType::Int64 | DataType::UInt32 => primitive("long"),
        DataType::Float32 => primitive("float"),
        DataType::Float64 => primitive("double"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => primitive("binary"),
        DataType::Date32 => primitive("date"),
        DataType::Timestamp(_, Some(_)) => primitive("timestamp"),
        DataType::Decimal128(precision, scale) if *precision <= 38 => {
            primitive(&format!("decimal({precision},{scale})"))
        }
        DataType::List(item) | DataType::LargeList(item) => Some(json!({
            "type": "array",
            "elementType": delta_type(item.data_type())?,
            "containsNull": item.is_nullable(),
        })),
        DataType::Struct(fields) => {
            let mut out = Vec::new();
            for field in fields {
                out.push(json!({"name": field.name(), "type": delta_type(field.data_type())?, "nullable": field.is_nullable(), "metadata": {}}));
            }
            Some(json!({"type": "struct", "fields": out}))
        }
        DataType::Dictionary(_, value) => delta_type(value),
        _ => None,
    }
}

fn string_map(name: &str) -> Field {
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    Field::new(name, DataType::Map(Arc::new(entries), false), true)
}

/// The columns of a checkpoint file, as Delta's protocol names them.
fn checkpoint_schema() -> SchemaRef {
    let utf8 = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let int64 = |name: &str| Field::new(name, DataType::Int64, true);
    let boolean = |name: &str| Field::new(name, DataType::Boolean, true);
    let structure = |name: &str, fields: Vec<Field>| {
        Field::new(name, DataType::Struct(Fields::from(fields)), true)
    };
    Arc::new(Schema::new(vec![
        structure(
            "txn",
            vec![utf8("appId", true), int64("version"), int64("lastUpdated")],
        ),
        structure(
            "add",
            vec![
                utf8("path", true),
                string_map("partitionValues"),
                int64("size"),
                int64("modificationTime"),
                boolean("dataChange"),
                utf8("stats", true),
                string_map("tags"),
            ],
        ),
        structure(
            "remove",
            vec![
                utf8("path", true),
                int64("deletionTimestamp"),
                boolean("dataChange"),
                boolean("extendedFileMetadata"),
                string_map("partitionValues"),
                int64("size"),
            ],
        ),
        structure(
            "metaData",
            vec![
                utf8("id", true),
                utf8("name", true),
                utf8("description", true),
                structure(
                    "format",
                    vec![utf8("provider", true), string_map("options")],
                ),
                utf8("schemaString", true),
                Field::new(
                    "partitionColumns",
                    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                    true,
                ),
                string_map("configuration"),
                int64("createdTime"),
            ],
        ),
        structure(
            "protocol",
            vec![
                Field::new("minReaderVersion", DataType::Int32, true),
                Field::new("minWriterVersion", DataType::Int32, true),
            ],
        ),
    ]))
}

/// Writes the checkpoint of `version` (the log's state after it) and
/// points `_last_checkpoint` at it.
async fn write_checkpoint(
    store: &Arc<dyn ObjectStore>,
    table: &TableDef,
    log: &TableLog,
    version: u64,
) -> Result<()> {
    let mut actions = vec![json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})];
    if let Some(metadata) = &log.metadata {
        actions.push(json!({ "metaData": metadata }));
    }
    for (path, file) in &log.files {
        actions.push(add_action(table, path, file, false));
    }
    let lines = ndjson(&actions);
    let actions = actions.len();
    let schema = checkpoint_schema();
    let reader = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(8192)
        .build(Cursor::new(lines))?;
    let mut buffer = Vec::new();
    {
        let mut writer = ArrowWriter::try_new(&mut buffer, schema, None)?;
        for batch in reader {
            writer.write(&batch?)?;
        }
        writer.close()?;
    }
    store
        .put(&checkpoint_path(table, version), PutPayload::from(buffer))
        .await?;
    let pointer = json!({"version": version, "size": actions}).to_string();
    store
        .put(
            &StorePath::from(format!("{}/{LOG_DIR}/_last_checkpoint", table.dir)),
            PutPayload::from(pointer.into_bytes()),
        )
        .await?;
    Ok(())
}

/// Reads the files and metadata of the checkpoint of `version`.
async fn read_checkpoint(
    store: &Arc<dyn ObjectStore>,
    table: &TableDef,
    version: u64,
    log: &mut TableLog,
) -> Result<()> {
    let path = checkpoint_path(table, version);
    let body: Bytes = store.get(&path).await?.bytes().await?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body)?.build()?;
    for batch in reader {
        let batch: RecordBatch = batch?;
        if let Some(add) = batch.column_by_name("add") {
            let add = add.as_struct();
            let paths = add
                .column_by_name("path")
                .ok_or_else(|| bad_log(path.as_ref(), "no add.path column"))?
                .as_string::<i32>();
            let sizes = add
                .column_by_name("size")
                .map(|c| c.as_primitive::<arrow::datatypes::Int64Type>().clone());
            let times = add
                .column_by_name("modificationTime")
                .map(|c| c.as_primitive::<arrow::datatypes::Int64Type>().clone());
            for row in 0..add.len() {
                if add.is_null(row) || paths.is_null(row) {
                    continue;
                }
                log.files.insert(
                    paths.value(row).to_string(),
                    LoggedFile {
                        size: sizes.as_ref().map_or(0, |s| s.value(row) as u64),
                        modified_millis: times.as_ref().map_or(0, |t| t.value(row)),
                    },
                );
            }
        }
        if let Some(metadata) = batch.column_by_name("metaData") {
            let metadata = metadata.as_struct();
            for row in 0..metadata.len() {
                if metadata.is_null(row) {
                    continue;
                }
                // Kept as JSON for the next checkpoint: read back through
                // arrow's JSON writer.
                let one = RecordBatch::try_new(
                    Arc::new(Schema::new(vec![Field::new(
                        "metaData",
                        metadata.data_type().clone(),
                        true,
                    )])),
                    vec![Arc::new(metadata.slice(row, 1))],
                )?;
                let mut out = arrow::json::LineDelimitedWriter::new(Vec::new());
                out.write(&one)?;
                out.finish()?;
                let line = out.into_inner();
                let value: Value = serde_json::from_slice(&line)
                    .map_err(|e| bad_log(path.as_ref(), &e.to_string()))?;
                log.metadata = Some(value["metaData"].clone());
            }
        }
    }
    Ok(())
}

/// Publishes `tables` at start and every `interval` until `shutdown`. A
/// failed pass is logged and tried again at the next interval.
pub async fn run(
    lake: Lake,
    tables: Vec<&'static TableDef>,
    settings: DeltaSettings,
    shutdown: logpipe_core::job::Shutdown,
) {
    let publisher = tokio::sync::Mutex::new(DeltaPublisher::new(lake, settings));
    let (publisher, tables) = (&publisher, &tables);
    logpipe_core::job::every(settings.interval, shutdown, move || async move {
        let mut publisher = publisher.lock().await;
        match publisher.publish_all(tables).await {
            Ok(results) => {
                for (table, result) in tables.iter().zip(results) {
                    if let Err(error) = result {
                        tracing::warn!(table = table.name, %error, "publishing the Delta log failed; trying again at the next interval");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading the commit records for the Delta log failed; trying again at the next interval");
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LakeStore;
    use logpipe_core::tables::LOGS;

    const HOUR: &str = "logs/raw/year=2026/month=1/day=11/hour=9";

    fn settings(checkpoint_interval: u64) -> DeltaSettings {
        DeltaSettings {
            interval: Duration::from_secs(1),
            checkpoint_interval,
            log_retention: Duration::ZERO,
        }
    }

    async fn put(lake: &Lake, path: &str) {
        lake.store()
            .put(&StorePath::from(path), PutPayload::from(vec![0u8; 10]))
            .await
            .unwrap();
    }

    async fn delete(lake: &Lake, path: &str) {
        lake.store().delete(&StorePath::from(path)).await.unwrap();
    }

    fn paths(log: &TableLog) -> Vec<&str> {
        log.files.keys().map(String::as_str).collect()
    }

    #[tokio::test]
    async fn versions_follow_the_files_and_a_new_reader_agrees_after_checkpoints() {
        let lake = Lake::open(&LakeStore::memory(), logpipe_config::Compression::Zstd);
        let mut publisher = DeltaPublisher::new(lake.clone(), settings(3));
        // Nothing yet: no log.
        assert_eq!(publisher.publish(&LOGS).await.unwrap(), None);
        for n in 0..7 {
            put(&lake, &format!("{HOUR}/user-{n}.parquet")).await;
            let published = publisher.publish(&LOGS).await.unwrap().unwrap();
            assert_eq!(
                (published.version, published.added, published.removed),
                (n, 1, 0)
            );
        }
        // Unchanged: no empty version.
        assert_eq!(publisher.publish(&LOGS).await.unwrap(), None);
        delete(&lake, &format!("{HOUR}/user-0.parquet")).await;
        delete(&lake, &format!("{HOUR}/user-1.parquet")).await;
        let published = publisher.publish(&LOGS).await.unwrap().unwrap();
        assert_eq!((published.version, published.removed), (7, 2));
        // Checkpoints at 3 and 6; versions before 6 deleted (retention 0).
        let mut names: Vec<String> = lake
            .store()
            .list(Some(&log_dir(&LOGS)))
            .map_ok(|m| m.location.filename().unwrap().to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        assert_eq!(
            names,
            [
                "00000000000000000006.checkpoint.parquet",
                "00000000000000000006.json",
                "00000000000000000007.json",
                "_last_checkpoint"
            ]
        );
        // A process starting now reads the checkpoint and what follows.
        let log = load(lake.store(), &LOGS).await.unwrap();
        assert_eq!(log.version, Some(7));
        let expected: Vec<String> = (2..7)
            .map(|n| format!("year=2026/month=1/day=11/hour=9/user-{n}.parquet"))
            .collect();
        assert_eq!(
            paths(&log),
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
        let metadata = log.metadata.expect("metadata from the checkpoint");
        assert_eq!(
            metadata["partitionColumns"],
            json!(["year", "month", "day", "hour"])
        );
        assert!(
            metadata["schemaString"]
                .as_str()
                .unwrap()
                .contains("\"request_id\"")
        );
    }

    #[tokio::test]
    async fn a_file_written_again_under_its_name_is_added_again() {
        let lake = Lake::open(&LakeStore::memory(), logpipe_config::Compression::Zstd);
        let mut publisher = DeltaPublisher::new(lake.clone(), settings(100));
        let path = format!("{HOUR}/report.parquet");
        put(&lake, &path).await;
        publisher.publish(&LOGS).await.unwrap().unwrap();
        lake.store()
            .put(
                &StorePath::from(path.as_str()),
                PutPayload::from(vec![0u8; 25]),
            )
            .await
            .unwrap();
        let published = publisher.publish(&LOGS).await.unwrap().unwrap();
        assert_eq!((published.added, published.removed), (1, 0));
        let log = load(lake.store(), &LOGS).await.unwrap();
        assert_eq!(
            log.files
                .get("year=2026/month=1/day=11/hour=9/report.parquet")
                .map(|f| f.size),
            Some(25)
        );
    }

    #[tokio::test]
    async fn a_listing_older_than_another_publishers_version_removes_nothing_it_added() {
        let lake = Lake::open(&LakeStore::memory(), logpipe_config::Compression::Zstd);
        let mut first = DeltaPublisher::new(lake.clone(), settings(100));
        let mut second = DeltaPublisher::new(lake.clone(), settings(100));
        put(&lake, &format!("{HOUR}/a.parquet")).await;
        first.publish(&LOGS).await.unwrap().unwrap();
        // The first lists now; the second sees a newer file and publishes
        // it before the first writes.
        let listing = first.list(&LOGS).await.unwrap();
        put(&lake, &format!("{HOUR}/b.parquet")).await;
        second.publish(&LOGS).await.unwrap().unwrap();
        assert_eq!(first.write(&listing, &BTreeSet::new()).await.unwrap(), None);
        let log = load(lake.store(), &LOGS).await.unwrap();
        assert_eq!(log.files.len(), 2, "{:?}", log.files);
    }

    #[tokio::test]
    async fn two_publishers_never_write_one_version_twice() {
        let lake = Lake::open(&LakeStore::memory(), logpipe_config::Compression::Zstd);
        let mut first = DeltaPublisher::new(lake.clone(), settings(100));
        let mut second = DeltaPublisher::new(lake.clone(), settings(100));
        put(&lake, &format!("{HOUR}/a.parquet")).await;
        assert_eq!(first.publish(&LOGS).await.unwrap().unwrap().version, 0);
        put(&lake, &format!("{HOUR}/b.parquet")).await;
        // The second has not read the log: it reads version 0 first and
        // adds only what it lacks.
        let published = second.publish(&LOGS).await.unwrap().unwrap();
        assert_eq!((published.version, published.added), (1, 1));
        put(&lake, &format!("{HOUR}/c.parquet")).await;
        // The first's view is stale (version 0): refreshed before writing.
        let published = first.publish(&LOGS).await.unwrap().unwrap();
        assert_eq!((published.version, published.added), (2, 1));
        let log = load(lake.store(), &LOGS).await.unwrap();
        assert_eq!(log.files.len(), 3);
    }

    #[test]
    fn only_data_files_outside_underscore_directories_are_table_files() {
        let file = |p: &str| StorePath::from(p);
        assert!(is_table_file(
            "logs/raw",
            &file("logs/raw/year=2026/month=1/day=1/hour=0/part-raw-0000000001-000.parquet")
        ));
        assert!(!is_table_file(
            "logs/raw",
            &file("logs/raw/_delta_log/00000000000000000010.checkpoint.parquet")
        ));
        assert!(!is_table_file(
            "logs/raw",
            &file("logs/raw/_delta_log/00000000000000000001.json")
        ));
    }

    #[test]
    fn the_catalogs_types_have_delta_names_and_unsigned_64_bits_do_not() {
        assert_eq!(delta_type(&DataType::Utf8), Some(json!("string")));
        assert_eq!(
            delta_type(&DataType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into())
            )),
            Some(json!("timestamp"))
        );
        assert_eq!(delta_type(&DataType::UInt64), None);
        assert_eq!(
            delta_type(&DataType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                None
            )),
            None
        );
    }
}
