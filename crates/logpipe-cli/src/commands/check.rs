//! `logpipe check`: reads a data directory through and reports damage.
//! Every batch of the embedded bus with its checksum, every commit record of
//! the lake and the files it lists, every Parquet file decoded whole, and
//! orphans (files of a job's step that its commit record does not list).
//! Exits 1 when anything is damaged, naming the file and what to do.
//!
//! `--repair` moves damaged and orphan Parquet files out of the tables into
//! `_logpipe/quarantine/` (kept, not deleted): queries stop failing on them,
//! and a file a retained commit record lists is rebuilt from the bus by its
//! job at the next start. It does not touch the bus or commit records:
//! cutting a damaged segment would drop the intact records after the damage,
//! so that stays the operator's decision (the report says what to restore).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use logpipe_config::BusKind;
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

    let Some(root) = store.local_dir().map(Path::to_path_buf) else {
        eprintln!(
            "lake {}: not a local directory; only local lakes are checked",
            resolved.lake_root
        );
        return Ok(finish(&damage));
    };
    let scan_root = root.clone();
    let lake = tokio::task::spawn_blocking(move || check_lake(&scan_root)).await??;
    eprintln!(
        "lake {}: {} commit records, {} Parquet files, {} rows",
        resolved.lake_root, lake.commits, lake.files, lake.rows
    );
    for note in &lake.notes {
        eprintln!("  note: {note}");
    }
    if args.repair && !lake.movable.is_empty() {
        let moved = repair(&root, &lake.movable)?;
        for line in &moved {
            println!("repaired: {line}");
        }
        // What is left: damage --repair does not touch.
        damage.extend(lake.damage.into_iter().filter(|line| {
            !lake
                .movable
                .iter()
                .any(|(path, _)| line.starts_with(&path.display().to_string()))
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

/// Moves each file into `_logpipe/quarantine/` under its lake path.
fn repair(root: &Path, files: &[(PathBuf, String)]) -> Result<Vec<String>> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let quarantine = root.join("_logpipe/quarantine").join(stamp);
    let mut done = Vec::new();
    for (path, then) in files {
        let relative = path.strip_prefix(root).unwrap_or(path);
        let target = quarantine.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::rename(path, &target)
            .with_context(|| format!("cannot move {} to {}", path.display(), target.display()))?;
        done.push(format!(
            "{} moved to {}; {then}",
            path.display(),
            target.display()
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
    movable: Vec<(PathBuf, String)>,
}

fn files_under(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, extension, out)?;
        } else if path.extension().is_some_and(|x| x == extension) {
            out.push(path);
        }
    }
    Ok(())
}

/// `part-<job>-<seq>-<n>.parquet`: a job step's file (the lake's layout).
fn step_of(path: &Path) -> Option<(String, u64)> {
    let (job, seq) = logpipe_lake::layout::step_of_file_name(path.file_name()?.to_str()?)?;
    Some((job.to_string(), seq))
}

fn check_lake(root: &Path) -> Result<LakeCheck> {
    let mut report = LakeCheck::default();
    // Commit records by job and step.
    let mut chains: BTreeMap<String, BTreeMap<u64, logpipe_lake::CommitRecord>> = BTreeMap::new();
    let mut commits = Vec::new();
    files_under(&root.join("_logpipe/commits"), "json", &mut commits)?;
    for path in &commits {
        report.commits += 1;
        let parsed = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<logpipe_lake::CommitRecord>(&bytes)
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(record) => {
                chains.entry(record.job.clone()).or_default().insert(record.seq, record);
            }
            Err(reason) => report.damage.push(format!(
                "{}: the commit record is unreadable ({reason}) — restore it from a backup (--repair leaves it)",
                path.display()
            )),
        }
    }
    // Every file a retained record lists, with whether its job writes it
    // again when missing: the raw job rolls every retained step forward,
    // the windowed jobs their newest step only.
    let mut listed: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for records in chains.values() {
        let newest = records.keys().next_back().copied();
        for record in records.values() {
            for file in &record.files {
                let path = root.join(&file.path);
                if !path.exists() {
                    report.notes.push(format!(
                        "{}: listed by step {} of job {} but not there yet — an interrupted step; the job writes it again from the bus at its next start",
                        path.display(),
                        record.seq,
                        record.job
                    ));
                }
                let rebuilt = record.job == "raw" || Some(record.seq) == newest;
                listed.insert(path, rebuilt);
            }
        }
    }
    let mut files = Vec::new();
    files_under(root, "parquet", &mut files)?;
    files.retain(|path| {
        !path
            .strip_prefix(root)
            .is_ok_and(|p| p.starts_with("_logpipe"))
    });
    files.sort();
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
        match read_parquet(path) {
            Ok(rows) => {
                report.rows += rows;
                if orphan {
                    report.damage.push(format!(
                        "{}: an orphan — no commit record lists it, so its rows may be counted twice or never belonged to the lake; --repair moves it aside",
                        path.display()
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
                    path.display()
                ));
                report.movable.push((path.clone(), then.to_string()));
            }
        }
    }
    Ok(report)
}

/// Decodes every row group of `path`; its rows.
fn read_parquet(path: &Path) -> Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = 0u64;
    for batch in reader {
        rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
    }
    Ok(rows)
}
