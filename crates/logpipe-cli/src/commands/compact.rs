//! `logpipe compact`: one compaction pass now, finished (docs/operations.md
//! "Compaction"). Safe while `logpipe up` runs: an hour another process is
//! compacting is left to it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use logpipe_core::tables::{self, Partitioning, TableDef};
use logpipe_lake::compaction::CompactionSettings;

use crate::args::CompactArgs;

pub(crate) async fn run(args: CompactArgs) -> Result<ExitCode> {
    let (resolved, store) = args.config.load_existing()?;
    let lake = logpipe_app::wiring::lake(&resolved, &store)?;
    let mut settings = CompactionSettings::from_config(&resolved.config.lake.compaction);
    settings.min_age = args.min_age.unwrap_or(settings.min_age);
    settings.lookback = args.lookback.unwrap_or(settings.lookback);
    settings.grace = args.grace.unwrap_or(settings.grace);
    anyhow::ensure!(
        settings.lookback > settings.min_age,
        "--lookback must be longer than --min-age, or no hour is ever compacted"
    );

    let mut hourly: Vec<&'static TableDef> = tables::ALL.to_vec();
    match logpipe_app::wiring::job_files(&resolved) {
        Ok(jobs) => hourly.extend(jobs.tables()),
        Err(error) => eprintln!("warning: the jobs' tables are left out: {error:#}"),
    }
    hourly.retain(|table| table.partitioning == Partitioning::Hourly);

    // Compactions a stopped process left are finished first.
    lake.finish_compactions(settings.grace)
        .await
        .context("cannot finish the pending compactions")?;
    let mut merged = 0;
    for table in hourly {
        let done = lake
            .compact(table, &settings, chrono::Utc::now())
            .await
            .with_context(|| format!("compacting {} failed", table.name))?;
        if done.hours > 0 {
            eprintln!(
                "{}: {} hours, {} files ({}) merged into {} ({})",
                table.name,
                done.hours,
                done.files_in,
                mib(done.bytes_in),
                done.files_out,
                mib(done.bytes_out)
            );
            merged += done.hours;
        }
    }
    if merged == 0 {
        eprintln!(
            "nothing to merge: no hour between {} and {} ago has {} small files whose steps are done",
            humantime::format_duration(settings.lookback),
            humantime::format_duration(settings.min_age),
            settings.min_files
        );
    }
    // Queries that listed the replaced files may still read them for a
    // grace period; a reader that listed them just before they went still
    // finds the manifest for another.
    for what in ["the replaced files", "the manifests"] {
        if !settings.grace.is_zero() {
            eprintln!(
                "waiting {} before deleting {what} (queries running now may still read them)",
                humantime::format_duration(settings.grace)
            );
            tokio::time::sleep(settings.grace + Duration::from_millis(10)).await;
        }
        lake.finish_compactions(settings.grace)
            .await
            .with_context(|| format!("cannot delete {what}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
