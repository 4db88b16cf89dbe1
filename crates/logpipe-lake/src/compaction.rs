//! Compaction: the small files of a closed hour merged into few large ones.
//!
//! A job writes one file per table and hour per step, so a steady low rate
//! leaves up to 3,600 small files an hour, and every later query opens each.
//! A pass looks at the hours of a table that ended more than `min_age` and
//! less than `lookback` ago and merges an hour's small files once it has
//! `min_files` of them.
//!
//! **Protocol** (per hour):
//! 1. Only files whose step's commit record is gone are taken: a retained
//!    record may still be rolled forward, which would write a taken file
//!    again. A pruned record was complete.
//! 2. The merged files are built in memory (each up to the target size).
//! 3. A manifest `_logpipe/compactions/<hour>/manifest.json` is created if
//!    absent: each merged file with the files it replaces and its rows. One
//!    compaction per hour at a time; whoever loses the create leaves the
//!    hour. The compactor then checks that every input is still there (an
//!    earlier compaction finished in between would have deleted some).
//! 4. The merged files are put.
//! 5. After `grace` the inputs are deleted (a query that listed them before
//!    step 4 can still read them), and after another `grace` the manifest
//!    (a reader that listed the inputs just before their deletion still
//!    finds the manifest that hides them).
//!
//! A dead compactor's manifest is rolled forward by the next pass: a
//! missing merged file is built again from its inputs, which are only
//! deleted once every merged file exists.
//!
//! **Readers.** logpipe's queries read through [`CompactionView`], which
//! hides from every listing the inputs of a compaction whose merged files
//! are all there, and the merged files of one that is not complete: a query
//! sees every row once at any moment. (It also hides the partitions
//! retention has expired but not yet deleted: `retention::expired_files`.)
//! A reader of the plain Hive tree (Spark, DuckDB) does not read the
//! manifests: it sees an hour's rows twice from step 4 until the inputs
//! are deleted. So compaction is off by
//! default (docs/operations.md "Compaction"), unless a Delta log is kept
//! for such readers ([`crate::delta`], which publishes what this view shows).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use logpipe_config::Compression;
use logpipe_core::tables::{Partitioning, TableDef};
use logpipe_core::time::now_micros;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::Lake;
use crate::error::{LakeError, Result};
use crate::layout::{
    COMMIT_PREFIX, COMPACTION_PREFIX, compacted_file_path, manifest_path, step_of_file_name,
};
use crate::metrics::lake_metrics;

/// What a pass compacts (from `[lake.compaction]`).
#[derive(Debug, Clone)]
pub struct CompactionSettings {
    /// Merged files are made up to this many bytes of input; files of at
    /// least half of it are left alone.
    pub target_file_bytes: u64,
    pub min_files: usize,
    pub min_age: Duration,
    pub lookback: Duration,
    pub grace: Duration,
}

impl CompactionSettings {
    pub fn from_config(config: &logpipe_config::CompactionConfig) -> CompactionSettings {
        CompactionSettings {
            target_file_bytes: config.target_file_bytes,
            min_files: config.min_files,
            min_age: config.min_age,
            lookback: config.lookback,
            grace: config.grace,
        }
    }
}

/// One merged file of a compaction and the files it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedFile {
    pub path: String,
    /// In the order their rows are in the merged file.
    pub inputs: Vec<String>,
    pub rows: u64,
}

/// A pending compaction of one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub table: String,
    pub created_at_micros: i64,
    pub merged: Vec<MergedFile>,
    /// When the inputs were deleted (the manifest goes `grace` later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_deleted_at_micros: Option<i64>,
}

impl Manifest {
    fn inputs(&self) -> impl Iterator<Item = &str> {
        self.merged
            .iter()
            .flat_map(|m| m.inputs.iter().map(String::as_str))
    }

    /// The files a listing that saw `present` must not show: the inputs
    /// once every merged file is there, else the merged files already put.
    fn hidden<'a>(&'a self, present: &BTreeSet<&str>) -> Vec<&'a str> {
        if self
            .merged
            .iter()
            .all(|m| present.contains(m.path.as_str()))
        {
            self.inputs().collect()
        } else {
            self.merged.iter().map(|m| m.path.as_str()).collect()
        }
    }
}

/// What one pass over one table did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub hours: u64,
    /// Closed hours left with `min_files` small files or more (their
    /// steps' commit records are still kept, or a pass failed).
    pub waiting: u64,
    pub files_in: u64,
    pub files_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A small file an hour's compaction may take.
struct Candidate {
    path: StorePath,
    size: u64,
}

impl Lake {
    /// Compacts the closed hours of `table` (hourly tables only) that ended
    /// between `lookback` and `min_age` before `now`.
    pub async fn compact(
        &self,
        table: &TableDef,
        settings: &CompactionSettings,
        now: DateTime<Utc>,
    ) -> Result<Compacted> {
        let mut done = Compacted::default();
        if table.partitioning != Partitioning::Hourly {
            return Ok(done);
        }
        let to = now - chrono::Duration::from_std(settings.min_age).unwrap_or_default();
        let from = now - chrono::Duration::from_std(settings.lookback).unwrap_or_default();
        let hours = self.hours_between(table, from, to).await?;
        let retained = if hours.is_empty() {
            BTreeSet::new()
        } else {
            self.retained_steps().await?
        };
        // The closed hours still holding `min_files` small files after
        // this pass, and when the oldest of them ended: compaction's lag.
        let mut waiting = 0u64;
        let mut oldest_waiting: Option<DateTime<Utc>> = None;
        for (hour, end) in hours {
            let mut small_files = 0;
            let merged = self
                .compact_hour(table, &hour, settings, &retained, &mut small_files)
                .await?;
            if let Some(merged) = merged {
                done.hours += 1;
                done.files_in += merged.files_in;
                done.files_out += merged.files_out;
                done.bytes_in += merged.bytes_in;
                done.bytes_out += merged.bytes_out;
            } else if small_files >= settings.min_files {
                waiting += 1;
                oldest_waiting = Some(oldest_waiting.map_or(end, |oldest| oldest.min(end)));
            }
        }
        let metrics = lake_metrics();
        metrics
            .compaction_backlog
            .set(&[table.name], waiting as f64);
        let lag = oldest_waiting.map_or(0.0, |end| {
            (now - end).num_milliseconds().max(0) as f64 / 1000.0
        });
        metrics.compaction_lag.set(&[table.name], lag);
        done.waiting = waiting;
        Ok(done)
    }

    /// The hour directories of `table` whose hour lies within
    /// `[from, to)`, with when each ended, walking the Hive tree one level
    /// at a time and opening only the prefixes whose span meets the range.
    async fn hours_between(
        &self,
        table: &TableDef,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(StorePath, DateTime<Utc>)>> {
        let mut hours = Vec::new();
        let mut pending: Vec<(StorePath, Vec<u32>)> =
            vec![(StorePath::from(table.dir), Vec::new())];
        while let Some((prefix, levels)) = pending.pop() {
            for child in self.partitions_under(&prefix, &levels).await? {
                if child.end <= from || child.start >= to {
                    continue;
                }
                if !child.is_hour() {
                    pending.push((child.path, child.levels));
                } else if child.end <= to {
                    // An hour, closed before `to`.
                    hours.push((child.path, child.end));
                }
            }
        }
        hours.sort();
        Ok(hours)
    }

    /// (job, seq) of every commit record in the lake: their files may be
    /// rolled forward, so compaction leaves them.
    pub(crate) async fn retained_steps(&self) -> Result<BTreeSet<(String, u64)>> {
        let mut steps = BTreeSet::new();
        let mut listing = self.store().list(Some(&StorePath::from(COMMIT_PREFIX)));
        while let Some(meta) = listing.try_next().await? {
            let mut parts = meta.location.parts().skip(2);
            let (Some(job), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some(seq) = name
                .as_ref()
                .strip_suffix(".json")
                .and_then(|s| s.parse().ok())
            {
                steps.insert((job.as_ref().to_string(), seq));
            }
        }
        Ok(steps)
    }

    async fn compact_hour(
        &self,
        table: &TableDef,
        hour: &StorePath,
        settings: &CompactionSettings,
        retained: &BTreeSet<(String, u64)>,
        small_files: &mut usize,
    ) -> Result<Option<Compacted>> {
        let manifest_at = manifest_path(hour);
        match self.store().head(&manifest_at).await {
            // One compaction of an hour at a time; the pending one is
            // finished by `finish_compactions`.
            Ok(_) => return Ok(None),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let listed = self.store().list_with_delimiter(Some(hour)).await?;
        let small = settings.target_file_bytes / 2;
        let small_parquet: Vec<ObjectMeta> = listed
            .objects
            .into_iter()
            .filter(|meta| meta.size < small && meta.location.extension() == Some("parquet"))
            .collect();
        *small_files = small_parquet.len();
        let mut candidates: Vec<Candidate> = small_parquet
            .into_iter()
            .filter(|meta| {
                // A step whose record is kept may be rolled forward.
                meta.location
                    .filename()
                    .and_then(step_of_file_name)
                    .is_none_or(|(job, seq)| !retained.contains(&(job.to_string(), seq)))
            })
            .map(|meta| Candidate {
                path: meta.location,
                size: meta.size,
            })
            .collect();
        if candidates.len() < settings.min_files {
            return Ok(None);
        }
        candidates.sort_by(|a, b| a.path.cmp(&b.path));

        let started = now_micros();
        let sizes: BTreeMap<String, u64> = candidates
            .iter()
            .map(|c| (c.path.to_string(), c.size))
            .collect();
        let bodies = self.fetch(&candidates).await?;
        let compression = self.compression();
        let target = settings.target_file_bytes;
        let hour_for_names = hour.clone();
        let built = tokio::task::spawn_blocking(move || {
            merge(
                &candidates,
                bodies,
                target,
                compression,
                &hour_for_names,
                started,
            )
        })
        .await
        .map_err(|e| LakeError::Task(e.to_string()))??;
        if built.is_empty() {
            return Ok(None);
        }

        let manifest = Manifest {
            table: table.name.to_string(),
            created_at_micros: started,
            merged: built.iter().map(|(file, _)| file.clone()).collect(),
            inputs_deleted_at_micros: None,
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| LakeError::BadManifest {
            path: manifest_at.to_string(),
            reason: e.to_string(),
        })?;
        match self
            .store()
            .put_opts(
                &manifest_at,
                PutPayload::from(body),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => {}
            // Another process compacts this hour.
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        }
        // An earlier compaction that finished between the listing and the
        // manifest deleted some of these inputs: its merged file has their
        // rows, so this one must not.
        let inputs: Vec<StorePath> = manifest.inputs().map(StorePath::from).collect();
        for input in &inputs {
            match self.store().head(input).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    self.store().delete(&manifest_at).await?;
                    return Ok(None);
                }
                Err(error) => return Err(error.into()),
            }
        }
        let mut done = Compacted {
            hours: 1,
            ..Compacted::default()
        };
        for (file, bytes) in built {
            done.files_in += file.inputs.len() as u64;
            done.bytes_out += bytes.len() as u64;
            done.files_out += 1;
            self.store()
                .put(
                    &StorePath::from(file.path.as_str()),
                    PutPayload::from(bytes),
                )
                .await?;
        }
        done.bytes_in = manifest.inputs().filter_map(|i| sizes.get(i)).sum();
        let metrics = lake_metrics();
        metrics.compaction_runs.inc(&[table.name]);
        metrics
            .compaction_files_in
            .add(&[table.name], done.files_in);
        metrics
            .compaction_files_out
            .add(&[table.name], done.files_out);
        tracing::info!(
            table = table.name,
            partition = %hour,
            files = done.files_in,
            merged = done.files_out,
            bytes = done.bytes_out,
            "compacted an hour"
        );
        Ok(Some(done))
    }

    /// The bodies of `files`, fetched a few at a time.
    async fn fetch(&self, files: &[Candidate]) -> Result<Vec<Bytes>> {
        // Owned paths: a stream over borrowed ones makes the pass's future
        // not `Send` for every lifetime (the task could not be spawned).
        let paths: Vec<StorePath> = files.iter().map(|file| file.path.clone()).collect();
        let store = self.store().clone();
        futures::stream::iter(paths)
            .map(move |path| {
                let store = store.clone();
                async move { store.get(&path).await?.bytes().await }
            })
            .buffered(8)
            .try_collect()
            .await
            .map_err(LakeError::from)
    }

    /// Moves every pending compaction on: a dead compactor's missing merged
    /// files built again, the inputs of a complete one deleted once `grace`
    /// passed, its manifest another `grace` later.
    pub async fn finish_compactions(&self, grace: Duration) -> Result<()> {
        let grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        let manifests: Vec<ObjectMeta> = self
            .store()
            .list(Some(&StorePath::from(COMPACTION_PREFIX)))
            .try_collect()
            .await?;
        for meta in manifests {
            if meta.location.filename() != Some("manifest.json") {
                continue;
            }
            let mut manifest = match read_manifest(self.store(), &meta.location).await {
                Ok(manifest) => manifest,
                Err(LakeError::Store(object_store::Error::NotFound { .. })) => continue,
                Err(error) => return Err(error),
            };
            let now = now_micros();
            let missing = self.missing_merged(&manifest).await?;
            if !missing.is_empty() {
                if now - manifest.created_at_micros >= grace {
                    self.roll_forward(&meta.location, &manifest, &missing)
                        .await?;
                }
                continue;
            }
            match manifest.inputs_deleted_at_micros {
                None if now - manifest.created_at_micros >= grace => {
                    let inputs: Vec<StorePath> = manifest.inputs().map(StorePath::from).collect();
                    let deleted = self.delete_all(inputs).await?;
                    lake_metrics()
                        .compaction_deleted
                        .add(&[manifest.table.as_str()], deleted);
                    manifest.inputs_deleted_at_micros = Some(now_micros());
                    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| {
                        LakeError::BadManifest {
                            path: meta.location.to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                    self.store()
                        .put(&meta.location, PutPayload::from(body))
                        .await?;
                }
                Some(at) if now - at >= grace => match self.store().delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(error) => return Err(error.into()),
                },
                _ => {}
            }
        }
        Ok(())
    }

    async fn missing_merged(&self, manifest: &Manifest) -> Result<Vec<MergedFile>> {
        let mut missing = Vec::new();
        for merged in &manifest.merged {
            match self
                .store()
                .head(&StorePath::from(merged.path.as_str()))
                .await
            {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => missing.push(merged.clone()),
                Err(error) => return Err(error.into()),
            }
        }
        Ok(missing)
    }

    /// Builds `missing` merged files of `manifest` again from their inputs
    /// (all still there: inputs go only once every merged file exists). If
    /// the inputs are gone too, retention expired the hour meanwhile and
    /// the manifest goes.
    async fn roll_forward(
        &self,
        at: &StorePath,
        manifest: &Manifest,
        missing: &[MergedFile],
    ) -> Result<()> {
        for merged in missing {
            let inputs: Vec<Candidate> = merged
                .inputs
                .iter()
                .map(|path| Candidate {
                    path: StorePath::from(path.as_str()),
                    size: 0,
                })
                .collect();
            let bodies = match self.fetch(&inputs).await {
                Ok(bodies) => bodies,
                Err(LakeError::Store(object_store::Error::NotFound { .. })) => {
                    tracing::warn!(manifest = %at, "the inputs of an unfinished compaction are gone (retention?); dropping it");
                    let mut leftovers: Vec<StorePath> = manifest
                        .merged
                        .iter()
                        .map(|m| StorePath::from(m.path.as_str()))
                        .collect();
                    leftovers.extend(manifest.inputs().map(StorePath::from));
                    self.delete_all(leftovers).await?;
                    self.store().delete(at).await?;
                    return Ok(());
                }
                Err(error) => return Err(error),
            };
            let compression = self.compression();
            let expected = merged.rows;
            let path = merged.path.clone();
            let bytes = tokio::task::spawn_blocking(move || {
                let (bytes, rows) = encode_merged(&bodies, compression)?;
                if rows != expected {
                    return Err(LakeError::CompactionMismatch {
                        path,
                        expected,
                        found: rows,
                    });
                }
                Ok(bytes)
            })
            .await
            .map_err(|e| LakeError::Task(e.to_string()))??;
            self.store()
                .put(
                    &StorePath::from(merged.path.as_str()),
                    PutPayload::from(bytes),
                )
                .await?;
            tracing::info!(manifest = %at, file = merged.path, "rolled an unfinished compaction forward");
        }
        Ok(())
    }

    /// Deletes `paths` (those already gone count as deleted before);
    /// returns how many this call deleted.
    async fn delete_all(&self, paths: Vec<StorePath>) -> Result<u64> {
        let outcomes: Vec<_> = self
            .store()
            .delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed())
            .collect()
            .await;
        let mut deleted = 0;
        for outcome in outcomes {
            match outcome {
                Ok(_) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(deleted)
    }
}

async fn read_manifest(store: &Arc<dyn ObjectStore>, at: &StorePath) -> Result<Manifest> {
    let bytes = store.get(at).await?.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| LakeError::BadManifest {
        path: at.to_string(),
        reason: e.to_string(),
    })
}

/// Packs `files` (sorted) into merged files of up to `target` input bytes,
/// a new one also where the schema changes; a pack of one file is left
/// alone. Returns each merged file with its Parquet body.
fn merge(
    files: &[Candidate],
    bodies: Vec<Bytes>,
    target: u64,
    compression: Compression,
    hour: &StorePath,
    started: i64,
) -> Result<Vec<(MergedFile, Bytes)>> {
    let mut packs: Vec<(Vec<usize>, u64)> = Vec::new();
    let mut schemas = Vec::with_capacity(files.len());
    for body in &bodies {
        schemas.push(
            ParquetRecordBatchReaderBuilder::try_new(body.clone())?
                .schema()
                .clone(),
        );
    }
    for (i, file) in files.iter().enumerate() {
        let fits = packs.last().is_some_and(|(members, bytes)| {
            bytes + file.size <= target && schemas[members[0]] == schemas[i]
        });
        match packs.last_mut() {
            Some((members, bytes)) if fits => {
                members.push(i);
                *bytes += file.size;
            }
            _ => packs.push((vec![i], file.size)),
        }
    }
    let mut built = Vec::new();
    for (members, _) in packs.into_iter().filter(|(members, _)| members.len() > 1) {
        let pack: Vec<Bytes> = members.iter().map(|&i| bodies[i].clone()).collect();
        let (bytes, rows) = encode_merged(&pack, compression)?;
        let path = compacted_file_path(hour, started, built.len());
        built.push((
            MergedFile {
                path: path.to_string(),
                inputs: members.iter().map(|&i| files[i].path.to_string()).collect(),
                rows,
            },
            bytes,
        ));
    }
    Ok(built)
}

/// The rows of the Parquet files `bodies` (one schema), in order, as one
/// Parquet file; with its row count, checked against the inputs' footers.
fn encode_merged(bodies: &[Bytes], compression: Compression) -> Result<(Bytes, u64)> {
    let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
    let (mut rows, mut expected) = (0u64, 0u64);
    for body in bodies {
        let builder = ParquetRecordBatchReaderBuilder::try_new(body.clone())?;
        expected += builder.metadata().file_metadata().num_rows() as u64;
        if writer.is_none() {
            writer = Some(ArrowWriter::try_new(
                Vec::new(),
                builder.schema().clone(),
                Some(crate::parquet::writer_properties(
                    compression,
                    builder.schema(),
                )?),
            )?);
        }
        let Some(writer) = writer.as_mut() else {
            continue;
        };
        for batch in builder.build()? {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            writer.write(&batch)?;
        }
    }
    let Some(writer) = writer else {
        return Ok((Bytes::new(), 0));
    };
    let buffer = writer.into_inner()?;
    if rows != expected {
        return Err(LakeError::CompactionMismatch {
            path: String::new(),
            expected,
            found: rows,
        });
    }
    Ok((Bytes::from(buffer), rows))
}

/// Runs a compaction pass over `tables` at start and every `interval`
/// until `shutdown`, each pass first finishing the pending compactions. A
/// failed pass is logged and tried again at the next interval: an
/// unfinished compaction is rolled forward, never half-seen by a query.
pub async fn run(
    lake: Lake,
    tables: Vec<&'static TableDef>,
    settings: CompactionSettings,
    interval: Duration,
    shutdown: logpipe_core::job::Shutdown,
) {
    let (lake, tables, settings) = (&lake, &tables, &settings);
    logpipe_core::job::every(interval, shutdown, move || async move {
        if let Err(error) = lake.finish_compactions(settings.grace).await {
            tracing::warn!(%error, "finishing compactions failed; trying again at the next interval");
        }
        for table in tables {
            if let Err(error) = lake.compact(table, settings, Utc::now()).await {
                tracing::warn!(table = table.name, %error, "compaction pass failed; trying again at the next interval");
            }
        }
    })
    .await;
}

/// The lake's store as logpipe's queries read it: listings leave out what a
/// pending compaction replaces (its inputs once its merged files are all
/// there, its merged files until then), so a query never sees a row twice
/// or misses one while an hour is compacted.
pub struct CompactionView {
    inner: Arc<dyn ObjectStore>,
}

impl CompactionView {
    pub fn wrap(inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(CompactionView { inner })
    }
}

/// What a listing under `prefix` leaves out besides the Delta logs (see
/// [`shown`]): the files pending compactions replace or have not finished,
/// and the partitions retention expired.
async fn hidden(
    store: &Arc<dyn ObjectStore>,
    prefix: Option<&StorePath>,
    listed: &[ObjectMeta],
) -> object_store::Result<BTreeSet<StorePath>> {
    let mut hidden = hidden_files(store, prefix, listed).await?;
    hidden.extend(crate::retention::expired_files(store, listed).await?);
    Ok(hidden)
}

/// Whether a listed object stays in the view: not `hidden`, and not in a
/// Delta log (its checkpoints are Parquet files a table listing must not
/// take for data). Checked per object rather than collected into `hidden`:
/// every listing of a table passes here.
fn shown(meta: &ObjectMeta, hidden: &BTreeSet<StorePath>) -> bool {
    !crate::layout::in_delta_log(&meta.location) && !hidden.contains(&meta.location)
}

/// The files the pending compactions under `prefix` hide from a listing
/// that returned `listed`. Read after the listing: a compaction that
/// starts in between has no merged file in it yet, and one that finishes
/// keeps its manifest a grace period after its inputs went.
async fn hidden_files(
    store: &Arc<dyn ObjectStore>,
    prefix: Option<&StorePath>,
    listed: &[ObjectMeta],
) -> object_store::Result<BTreeSet<StorePath>> {
    if !listed
        .iter()
        .any(|meta| meta.location.extension() == Some("parquet"))
    {
        // Nothing a manifest could hide (a listing of partition levels).
        return Ok(BTreeSet::new());
    }
    let under = match prefix {
        Some(prefix) if !prefix.as_ref().is_empty() => {
            StorePath::from(format!("{COMPACTION_PREFIX}/{prefix}"))
        }
        _ => StorePath::from(COMPACTION_PREFIX),
    };
    let manifests: Vec<ObjectMeta> = store.list(Some(&under)).try_collect().await?;
    let mut hidden = BTreeSet::new();
    if manifests.is_empty() {
        return Ok(hidden);
    }
    let present: BTreeSet<&str> = listed.iter().map(|m| m.location.as_ref()).collect();
    for meta in manifests {
        if meta.location.filename() != Some("manifest.json") {
            continue;
        }
        let manifest = match read_manifest(store, &meta.location).await {
            Ok(manifest) => manifest,
            // Finished meanwhile: its inputs were gone before it.
            Err(LakeError::Store(object_store::Error::NotFound { .. })) => continue,
            Err(LakeError::Store(error)) => return Err(error),
            Err(error) => {
                return Err(object_store::Error::Generic {
                    store: "lake",
                    source: Box::new(error),
                });
            }
        };
        hidden.extend(manifest.hidden(&present).into_iter().map(StorePath::from));
    }
    Ok(hidden)
}

impl fmt::Debug for CompactionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompactionView({:?})", self.inner)
    }
}

impl fmt::Display for CompactionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl ObjectStore for CompactionView {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &StorePath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let store = self.inner.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            let listed: Vec<ObjectMeta> = store.list(prefix.as_ref()).try_collect().await?;
            let hidden = hidden(&store, prefix.as_ref(), &listed).await?;
            Ok::<_, object_store::Error>(futures::stream::iter(
                listed
                    .into_iter()
                    .filter(move |meta| shown(meta, &hidden))
                    .map(Ok::<_, object_store::Error>),
            ))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        let hidden = hidden(&self.inner, prefix, &listed.objects).await?;
        listed.objects.retain(|meta| shown(meta, &hidden));
        listed
            .common_prefixes
            .retain(|prefix| prefix.filename() != Some(crate::layout::LOG_DIR));
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::{CommitRecord, plan_files};
    use crate::layout::TableGroups;
    use crate::storage::LakeStore;
    use logpipe_core::record::{LogRecord, ValidationLimits};
    use logpipe_core::tables::{LOGS, LogBatchBuilder};
    use logpipe_core::time::HourPartition;

    /// 30 steps of one row each into one hour; the chain keeps the last
    /// 16 records.
    async fn lake_with_steps() -> Lake {
        let lake = Lake::open(&LakeStore::memory(), Compression::Zstd);
        for seq in 1..=30u64 {
            let raw = format!(
                r#"{{"timestamp": {}, "level": "INFO", "service": "a", "message": "m{seq}"}}"#,
                1_736_645_166 + seq
            );
            let record = LogRecord::parse(&raw, &ValidationLimits::now()).unwrap();
            let mut builder = LogBatchBuilder::default();
            builder.append(&record);
            let mut groups = TableGroups::new();
            groups.insert(
                (&LOGS, HourPartition::of_micros(record.timestamp_micros)),
                builder.finish().unwrap().into(),
            );
            let commit = CommitRecord::for_test("raw", seq, plan_files("raw", seq, &groups));
            let encoded = lake.encode(groups).await.unwrap();
            lake.commit(&commit, encoded).await.unwrap();
        }
        lake
    }

    fn settings() -> CompactionSettings {
        CompactionSettings {
            target_file_bytes: 64 << 20,
            min_files: 4,
            min_age: Duration::ZERO,
            lookback: Duration::from_secs(3650 * 24 * 3600),
            grace: Duration::ZERO,
        }
    }

    /// (files, rows) of `logs/raw` as `store` lists it.
    async fn seen(store: &Arc<dyn ObjectStore>) -> (usize, u64) {
        let listed: Vec<ObjectMeta> = store
            .list(Some(&StorePath::from("logs/raw")))
            .try_collect()
            .await
            .unwrap();
        let mut rows = 0;
        for meta in &listed {
            let body = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            rows += ParquetRecordBatchReaderBuilder::try_new(body)
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows() as u64;
        }
        (listed.len(), rows)
    }

    async fn manifests(lake: &Lake) -> usize {
        lake.store()
            .list(Some(&StorePath::from(COMPACTION_PREFIX)))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    }

    #[tokio::test]
    async fn an_hour_is_merged_and_a_query_never_sees_a_row_twice() {
        let lake = lake_with_steps().await;
        let view = CompactionView::wrap(lake.store().clone());
        assert_eq!(seen(&view).await, (30, 30));

        let done = lake.compact(&LOGS, &settings(), Utc::now()).await.unwrap();
        // The 14 steps whose records were pruned; the 16 kept may still be
        // rolled forward.
        assert_eq!((done.hours, done.files_in, done.files_out), (1, 14, 1));
        assert!(done.bytes_in > done.bytes_out, "{done:?}");
        // The plain tree shows both until the grace period ends; the view
        // the merged file instead of its inputs.
        assert_eq!(seen(lake.store()).await, (31, 44));
        assert_eq!(seen(&view).await, (17, 30));
        // A second pass leaves an hour with a pending compaction alone.
        let again = lake.compact(&LOGS, &settings(), Utc::now()).await.unwrap();
        assert_eq!(again, Compacted::default());

        lake.finish_compactions(Duration::ZERO).await.unwrap();
        assert_eq!(seen(lake.store()).await, (17, 30));
        assert_eq!(seen(&view).await, (17, 30));
        assert_eq!(
            manifests(&lake).await,
            1,
            "the manifest outlives its inputs"
        );
        lake.finish_compactions(Duration::ZERO).await.unwrap();
        assert_eq!(manifests(&lake).await, 0);
        // The merged file and the 16 kept steps: nothing to take now, but
        // the hour waits (its lag and backlog gauges say so) until the
        // kept records are pruned.
        assert_eq!(
            lake.compact(&LOGS, &settings(), Utc::now()).await.unwrap(),
            Compacted {
                waiting: 1,
                ..Compacted::default()
            }
        );
    }

    #[tokio::test]
    async fn a_compaction_cut_off_before_its_merged_file_is_rolled_forward() {
        let lake = lake_with_steps().await;
        let view = CompactionView::wrap(lake.store().clone());
        lake.compact(&LOGS, &settings(), Utc::now()).await.unwrap();
        let merged: Vec<StorePath> = lake
            .store()
            .list(Some(&StorePath::from("logs/raw")))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .map(|meta| meta.location)
            .filter(|path| path.filename().is_some_and(|n| n.starts_with("compacted-")))
            .collect();
        assert_eq!(merged.len(), 1);
        // As if the compactor died after its manifest: the inputs count.
        lake.store().delete(&merged[0]).await.unwrap();
        assert_eq!(seen(&view).await, (30, 30));
        lake.finish_compactions(Duration::ZERO).await.unwrap();
        assert_eq!(
            seen(lake.store()).await,
            (31, 44),
            "the merged file is back"
        );
        assert_eq!(seen(&view).await, (17, 30));
        lake.finish_compactions(Duration::ZERO).await.unwrap();
        lake.finish_compactions(Duration::ZERO).await.unwrap();
        assert_eq!(seen(lake.store()).await, (17, 30));
        assert_eq!(manifests(&lake).await, 0);
    }

    #[test]
    fn a_manifest_hides_its_inputs_only_once_every_merged_file_is_there() {
        let manifest = Manifest {
            table: "logs".into(),
            created_at_micros: 0,
            merged: vec![
                MergedFile {
                    path: "h/compacted-1-000.parquet".into(),
                    inputs: vec!["h/a".into(), "h/b".into()],
                    rows: 2,
                },
                MergedFile {
                    path: "h/compacted-1-001.parquet".into(),
                    inputs: vec!["h/c".into(), "h/d".into()],
                    rows: 2,
                },
            ],
            inputs_deleted_at_micros: None,
        };
        let one: BTreeSet<&str> = ["h/a", "h/b", "h/c", "h/d", "h/compacted-1-000.parquet"].into();
        assert_eq!(
            manifest.hidden(&one),
            ["h/compacted-1-000.parquet", "h/compacted-1-001.parquet"]
        );
        let both: BTreeSet<&str> = [
            "h/a",
            "h/compacted-1-000.parquet",
            "h/compacted-1-001.parquet",
        ]
        .into();
        assert_eq!(manifest.hidden(&both), ["h/a", "h/b", "h/c", "h/d"]);
    }
}
