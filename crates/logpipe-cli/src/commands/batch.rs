//! `logpipe batch`: one report now.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use logpipe_app::wiring;
use logpipe_batch::{BatchRunner, Period, Report};
use logpipe_sinks::StepSink;

use crate::args::{BatchArgs, BatchReport};

pub(crate) async fn run(args: BatchArgs) -> Result<ExitCode> {
    let (resolved, store) = args.config.load_existing()?;
    let today = chrono::Utc::now().date_naive();
    let (job, period) = match args.report {
        BatchReport::Daily { date } => (
            "daily_report",
            Period::Day(date.unwrap_or(today - chrono::Duration::days(1))),
        ),
        BatchReport::Weekly {
            week: Some(week), ..
        } => ("weekly_analysis", Period::parse_week(&week)?),
        BatchReport::Weekly { date, .. } => (
            "weekly_analysis",
            Period::week_of(date.unwrap_or(today - chrono::Duration::days(7))),
        ),
        BatchReport::Service { from, to } => {
            let start = from.unwrap_or(today - chrono::Duration::days(7));
            let end = to.unwrap_or(today - chrono::Duration::days(1));
            if end < start {
                bail!("--to {end} is before --from {start}");
            }
            ("service_analysis", Period::Range(start, end))
        }
    };
    let sinks: Vec<Arc<dyn StepSink>> = match wiring::postgres(&resolved).await? {
        Some(postgres) => vec![Arc::new(postgres)],
        None => Vec::new(),
    };
    let runner = BatchRunner::open(
        wiring::lake(&resolved, &store)?,
        sinks,
        wiring::batch_jobs(&resolved)?,
    )
    .await?;
    let report = Report::new(runner.job(job)?, period);
    let terminal = std::io::stderr().is_terminal();
    let progress = |stage: &str| {
        if terminal {
            eprint!("\r\x1b[2K{stage} …");
        }
    };
    let outcome = runner.run(&report, &progress).await;
    if terminal {
        eprint!("\r\x1b[2K");
    }
    let summary =
        outcome.with_context(|| format!("{} {} failed", report.job(), report.target()))?;
    let also = if summary.sinks.contains(&"postgres") {
        " and PostgreSQL"
    } else {
        ""
    };
    println!(
        "{} {}: {} rows in {} ms → {}/{}{also}",
        summary.job,
        summary.target,
        summary.rows,
        summary.duration.as_millis(),
        store,
        summary.output,
    );
    Ok(ExitCode::SUCCESS)
}
