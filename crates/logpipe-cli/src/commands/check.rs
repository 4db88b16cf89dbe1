//! `logpipe check`: reads a data directory (and the lake, wherever its root
//! is: a directory, S3 or HDFS) through and reports damage.
//! Every batch of the embedded bus with its checksum, every commit record of
//! the lake and the files it lists, every Parquet file decoded whole, and
//! orphans (files of a job's step that its commit record does not list).
//! Exits 1 when anything is damaged, naming the file and what to do.
//!
//! `--repair` moves damaged and orphan Parquet files out of the tables into
//! the lake's `_logpipe/quarantine/` (kept, not deleted): queries stop failing on them,
//! and a file a retained commit record lists is rebuilt from the bus by its
//! job at the next start. It does not touch the bus or commit records:
//! cutting a damaged segment would drop the intact records after the damage,
//! so that stays the operator's decision (the report says what to restore).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use logpipe_config::BusKind;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::args::CheckArgs;

pub(crate) async fn run(args: CheckArgs) -> Result<ExitCode> {
    let (resolved, store) = args.config.load_existing()?;
    let mut damage: Vec<String> = Vec::new();

    if resolved.config.bus.kind == BusKind::Embedded {
        let dir = resolved.bus_dir.clone();
        let bus =
            tokio::task::spawn_blocking(move || logpipe_bus::embedded::check::check_bus_dir(&dir))
                .await?
                .with_context(|| {
                    format!(
                        "cannot read the bus directory {}",
                        resolved.bus_dir.display()
                    )
                })?;
        eprintln!(
            "bus {}: {} segments, {} batches, {} records",
            resolved.bus_dir.display(),
            bus.segments,
            bus.batches,
            bus.records
        );
        for torn in &bus.torn_tails {
            eprintln!("  note: {torn}");
        }
        damage.extend(bus.damage);
    } else {
        eprintln!("bus: Kafka (the brokers keep and check their own logs)");
    }

    // Messages name each file under the root as given: a directory's
    // path, or the URL of an S3 or HDFS root.
    let shown_root = match store.local_dir() {
        Some(dir) => dir.display().to_string(),
        None => resolved.lake_root.trim_end_matches('/').to_string(),
    };
    let lake = check_lake(store.store().as_ref(), &shown_root).await?;
    eprintln!(
        "lake {}: {} commit records, {} Parquet files, {} rows",
        resolved.lake_root, lake.commits, lake.files, lake.rows
    );
    for note in &lake.notes {
        eprintln!("  note: {note}");
    }
    if args.repair && !lake.movable.is_empty() {
        let moved = repair(store.store().as_ref(), &shown_root, &lake.movable).await?;
        for line in &moved {
            println!("repaired: {line}");
        }
        // What is left: damage --repair does not touch.
        damage.extend(lake.damage.into_iter().filter(|line| {
            !lake
                .movable
                .iter()
                .any(|(path, _)| line.starts_with(&format!("{shown_root}/{path}")))
        }));
    } else {
        damage.extend(lake.damage);
        if !lake.movable.is_empty() {
            eprintln!(
                "  {} file(s) can be moved aside by `logpipe check --repair`",
                lake.movable.len()
            );
        }
    }
    Ok(finish(&damage))
}

/// Moves each file into `_logpipe/quarantine/<time>/` under its lake path
/// (a rename on a directory, a copy and a delete on S3 and HDFS).
async fn repair(
    store: &dyn ObjectStore,
    shown_root: &str,
    files: &[(StorePath, String)],
) -> Result<Vec<String>> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut done = Vec::new();
    for (path, then) in files {
        let target = StorePath::from(format!("_logpipe/quarantine/{stamp}/{path}"));
        store
            .rename(path, &target)
            .await
            .with_context(|| format!("cannot move {shown_root}/{path} to {shown_root}/{target}"))?;
        done.push(format!(
            "{shown_root}/{path} moved to {shown_root}/{target}; {then}"
        ));
    }
    Ok(done)
}

fn finish(damage: &[String]) -> ExitCode {
    if damage.is_empty() {
        println!("no damage found");
        ExitCode::SUCCESS
    } else {
        println!("{} damaged:", damage.len());
        for line in damage {
            println!("  {line}");
        }
        ExitCode::FAILURE
    }
}

#[derive(Default)]
struct LakeCheck {
    commits: u64,
    files: u64,
    rows: u64,
    damage: Vec<String>,
    /// Worth knowing, not damage (an interrupted step the job completes).
    notes: Vec<String>,
    /// Files `--repair` moves aside, each with what happens then.
    movable: Vec<(StorePath, String)>,
}

/// Every object under `prefix` (the whole lake when `None`) whose name
/// ends in `.extension`, in name order.
async fn objects_under(
    store: &dyn ObjectStore,
    prefix: Option<&StorePath>,
    extension: &str,
) -> Result<Vec<StorePath>> {
    let mut found: Vec<StorePath> = store
        .list(prefix)
        .try_filter(|meta| std::future::ready(meta.location.extension() == Some(extension)))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    found.sort();
    Ok(found)
}

/// `part-<job>-<seq>-<n>.parquet`: a job step's file (the lake's layout).
fn step_of(path: &StorePath) -> Option<(String, u64)> {
    let (job, seq) = logpipe_lake::layout::step_of_file_name(path.filename()?)?;
    Some((job.to_string(), seq))
}

async fn check_lake(store: &dyn ObjectStore, shown_root: &str) -> Result<LakeCheck> {
    let shown = |path: &StorePath| format!("{shown_root}/{path}");
    let mut report = LakeCheck::default();
    // Commit records by job and step.
    let mut chains: BTreeMap<String, BTreeMap<u64, logpipe_lake::CommitRecord>> = BTreeMap::new();
    let commits = objects_under(store, Some(&StorePath::from("_logpipe/commits")), "json").await?;
    for path in &commits {
        report.commits += 1;
        let parsed = match store.get(path).await {
            Ok(object) => object.bytes().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        }
        .and_then(|bytes| {
            serde_json::from_slice::<logpipe_lake::CommitRecord>(&bytes).map_err(|e| e.to_string())
        });
        match parsed {
            Ok(record) => {
                chains.entry(record.job.clone()).or_default().insert(record.seq, record);
            }
            Err(reason) => report.damage.push(format!(
                "{}: the commit record is unreadable ({reason}) — restore it from a backup (--repair leaves it)",
                shown(path)
            )),
        }
    }
    // The tables' Parquet files (not what `_logpipe/` keeps aside, nor
    // the Delta logs' checkpoints).
    let files: Vec<StorePath> = objects_under(store, None, "parquet")
        .await?
        .into_iter()
        .filter(|path| logpipe_lake::delta::is_table_file("", path))
        .collect();
    let present: BTreeSet<&StorePath> = files.iter().collect();
    // Every file a retained record lists, with whether its job writes it
    // again when missing: the raw job rolls every retained step forward,
    // the windowed jobs their newest step only.
    let mut listed: BTreeMap<StorePath, bool> = BTreeMap::new();
    for records in chains.values() {
        let newest = records.keys().next_back().copied();
        for record in records.values() {
            for file in &record.files {
                let path = StorePath::from(file.path.as_str());
                if !present.contains(&path) {
                    report.notes.push(format!(
                        "{}: listed by step {} of job {} but not there yet — an interrupted step; the job writes it again from the bus at its next start",
                        shown(&path),
                        record.seq,
                        record.job
                    ));
                }
                let rebuilt = record.job == "raw" || Some(record.seq) == newest;
                listed.insert(path, rebuilt);
            }
        }
    }
    for (n, path) in files.iter().enumerate() {
        if n > 0 && n % 1000 == 0 {
            eprintln!("  … {n} of {} Parquet files read", files.len());
        }
        report.files += 1;
        let step = step_of(path);
        // A step's file no retained record lists, from a step the chain
        // still holds (older steps' records are pruned once complete).
        let orphan = step.as_ref().is_some_and(|(job, seq)| {
            !listed.contains_key(path)
                && chains
                    .get(job)
                    .is_none_or(|records| records.keys().next().is_some_and(|oldest| seq >= oldest))
        });
        match read_parquet(store, path).await {
            Ok(rows) => {
                report.rows += rows;
                if orphan {
                    report.damage.push(format!(
                        "{}: an orphan — no commit record lists it, so its rows may be counted twice or never belonged to the lake; --repair moves it aside",
                        shown(path)
                    ));
                    report
                        .movable
                        .push((path.clone(), "queries no longer count its rows".to_string()));
                }
            }
            Err(reason) => {
                let then = if listed.get(path) == Some(&true) {
                    "its job writes it again from the bus at its next start (while the bus still holds its records)"
                } else {
                    "its rows are gone from queries until it is restored from a backup"
                };
                report.damage.push(format!(
                    "{}: the Parquet file is damaged ({reason}) — queries over its partition fail until it is moved aside (--repair) or restored from a backup",
                    shown(path)
                ));
                report.movable.push((path.clone(), then.to_string()));
            }
        }
    }
    Ok(report)
}

/// Decodes every row group of `path`; its rows.
async fn read_parquet(store: &dyn ObjectStore, path: &StorePath) -> Result<u64, String> {
    let bytes = store
        .get(path)
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = 0u64;
    for batch in reader {
        rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
    }
    Ok(rows)
}
