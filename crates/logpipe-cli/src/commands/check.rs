//! `logpipe check`: reads a data directory through and reports damage,
//! changing nothing. Every batch of the embedded bus with its checksum,
//! every commit record of the lake, every Parquet file of the lake decoded
//! whole. Exits 1 when anything is damaged, naming the file and what to do.

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
    let lake = tokio::task::spawn_blocking(move || check_lake(&root)).await??;
    eprintln!(
        "lake {}: {} commit records, {} Parquet files, {} rows",
        resolved.lake_root, lake.commits, lake.files, lake.rows
    );
    damage.extend(lake.damage);
    Ok(finish(&damage))
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

fn check_lake(root: &Path) -> Result<LakeCheck> {
    let mut report = LakeCheck::default();
    let mut commits = Vec::new();
    files_under(&root.join("_logpipe/commits"), "json", &mut commits)?;
    for path in &commits {
        report.commits += 1;
        let parsed = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| e.to_string())
            });
        if let Err(reason) = parsed {
            report.damage.push(format!(
                "{}: the commit record is unreadable ({reason}) — restore it from a backup",
                path.display()
            ));
        }
    }
    let mut files = Vec::new();
    files_under(root, "parquet", &mut files)?;
    files.sort();
    for (n, path) in files.iter().enumerate() {
        if n > 0 && n % 1000 == 0 {
            eprintln!("  … {n} of {} Parquet files read", files.len());
        }
        report.files += 1;
        match read_parquet(path) {
            Ok(rows) => report.rows += rows,
            Err(reason) => report.damage.push(format!(
                "{}: the Parquet file is damaged ({reason}) — restore it from a backup; queries over its partition fail until then",
                path.display()
            )),
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
