//! `logpipe jobs`: list, show, check and run the jobs (the built-in
//! reports and window job, and the SQL files of `[jobs] dir`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use logpipe_app::wiring;
use logpipe_batch::{BatchRunner, JobDef, PeriodKind, Report};
use logpipe_sinks::StepSink;

use crate::args::{ConfigArgs, JobsCommand, JobsRunArgs};

pub(crate) async fn run(command: JobsCommand) -> Result<ExitCode> {
    match command {
        JobsCommand::List(args) => list(&args.config).await,
        JobsCommand::Show { config, name } => show(&config, &name),
        JobsCommand::Check(args) => check(&args.config).await,
        JobsCommand::Run(args) => run_job(args).await,
    }
}

/// A runner of every job; `with_sinks` connects PostgreSQL when set.
async fn runner(config: &ConfigArgs, with_sinks: bool) -> Result<BatchRunner> {
    let (resolved, store) = config.load_existing()?;
    let sinks: Vec<Arc<dyn StepSink>> = match with_sinks {
        true => match wiring::postgres(&resolved).await? {
            Some(postgres) => vec![Arc::new(postgres)],
            None => Vec::new(),
        },
        false => Vec::new(),
    };
    let jobs = wiring::batch_jobs(&resolved)?;
    Ok(BatchRunner::open(wiring::lake(&resolved, &store)?, sinks, jobs).await?)
}

fn describe_period(kind: PeriodKind) -> String {
    match kind {
        PeriodKind::Day => "day".to_string(),
        PeriodKind::Week => "week".to_string(),
        PeriodKind::Range { days } => format!("range ({days} days)"),
    }
}

async fn list(config: &ConfigArgs) -> Result<ExitCode> {
    let runner = runner(config, false).await?;
    // The newest run of each job, when job_runs exists yet.
    let last: HashMap<String, String> = runner
        .engine()
        .sql(
            "SELECT job, target, status FROM (SELECT job, target, status, row_number() OVER \
             (PARTITION BY job ORDER BY finished_at DESC) AS n FROM job_runs) WHERE n = 1",
            usize::MAX,
        )
        .await
        .ok()
        .and_then(|result| result.render(logpipe_query::OutputFormat::Json).ok())
        .and_then(|json| serde_json::from_str::<Vec<serde_json::Value>>(&json).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|row| {
            let text = |key: &str| row[key].as_str().unwrap_or_default().to_string();
            (
                text("job"),
                format!("{} {}", text("status"), text("target")),
            )
        })
        .collect();
    let mut rows: Vec<[String; 6]> = runner
        .jobs()
        .iter()
        .map(|job| {
            [
                job.name.to_string(),
                describe_period(job.period),
                job.schedule
                    .as_ref()
                    .map_or("by hand".to_string(), |(text, _)| text.clone()),
                job.table.dir.to_string(),
                if job.inputs.is_empty() {
                    "lake".to_string()
                } else {
                    job.inputs.join(", ")
                },
                last.get(job.name)
                    .cloned()
                    .unwrap_or_else(|| "never".to_string()),
            ]
        })
        .collect();
    rows.extend(streams(config)?.into_iter().map(|(row, _)| row));
    let header = [
        "JOB",
        "PERIOD",
        "SCHEDULE (UTC)",
        "OUTPUT",
        "READS",
        "LAST RUN",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    Ok(ExitCode::SUCCESS)
}

/// The streaming jobs of `[jobs] dir`: a `jobs list` row each, and its
/// statement parsed (or what is wrong, at file:line:column).
type StreamRow = ([String; 6], Result<(), String>);

fn streams(config: &ConfigArgs) -> Result<Vec<StreamRow>> {
    let resolved = config.load()?.resolve();
    let (_, files) = logpipe_batch::job::load_all(resolved.config.jobs.dir.as_deref(), &[])?;
    // The built-in window job: jobs/windows.sql with `[windows]`'s window.
    let windows = &resolved.config.windows;
    let builtin = windows.enabled.then(|| {
        let outcome = wiring::window_job_options(&resolved.config)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        let row = [
            "windows".to_string(),
            format!("stream ({} s windows)", windows.size.as_secs_f64()),
            "continuous".to_string(),
            "windows".to_string(),
            "logs".to_string(),
            "-".to_string(),
        ];
        (row, outcome)
    });
    Ok(builtin
        .into_iter()
        .chain(files.into_iter().map(|file| {
            let parsed = logpipe_query::stream_sql::parse_stream(&file.sql);
            let (period, reads) = match &parsed {
                Ok(spec) => {
                    let hop = if spec.slide_micros < spec.size_micros {
                        format!(" every {} s", spec.slide_micros / 1_000_000)
                    } else {
                        String::new()
                    };
                    (
                        format!("stream ({} s windows{hop})", spec.size_micros / 1_000_000),
                        spec.source.table().to_string(),
                    )
                }
                Err(_) => ("stream (wrong)".to_string(), "?".to_string()),
            };
            let outcome = parsed.map(|_| ()).map_err(|problem| {
                let (line, column) = problem.at.unwrap_or((1, 1));
                format!("{}:{line}:{column}: {}", file.origin, problem.message)
            });
            let row = [
                file.name,
                period,
                "continuous".to_string(),
                file.output,
                reads,
                "-".to_string(),
            ];
            (row, outcome)
        }))
        .collect())
}

fn show(config: &ConfigArgs, name: &str) -> Result<ExitCode> {
    let resolved = config.load()?.resolve();
    if name == "windows" && resolved.config.windows.enabled {
        eprintln!(
            "# built-in windows.sql (the window job, run with [windows] size as its window; \
             copy it under another name to run a variant of your own)"
        );
        print!("{}", wiring::WINDOWS_SQL);
        return Ok(ExitCode::SUCCESS);
    }
    let schedules = resolved.config.reports.schedules()?;
    let (jobs, streams) =
        logpipe_batch::job::load_all(resolved.config.jobs.dir.as_deref(), &schedules)?;
    let found = jobs
        .iter()
        .map(|job| (job.name, job.origin.as_str(), job.template.as_str()))
        .chain(
            streams
                .iter()
                .map(|s| (s.name.as_str(), s.origin.as_str(), s.sql.as_str())),
        )
        .find(|(job, ..)| *job == name);
    let Some((_, origin, text)) = found else {
        let known: Vec<&str> = jobs
            .iter()
            .map(|job| job.name)
            .chain(streams.iter().map(|s| s.name.as_str()))
            .collect();
        bail!(
            "no job is named {name:?}; the jobs are {}",
            known.join(", ")
        );
    };
    eprintln!("# {origin}");
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn check(config: &ConfigArgs) -> Result<ExitCode> {
    let runner = runner(config, false).await?;
    let today = chrono::Utc::now().date_naive();
    let mut wrong = 0;
    for check in runner.check(today).await {
        match check.outcome {
            Ok(schema) => {
                let columns: Vec<&str> =
                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                println!(
                    "ok     {} → {} ({})",
                    check.job.name,
                    check.job.table.dir,
                    columns.join(", ")
                );
            }
            Err(error) => {
                wrong += 1;
                println!("wrong  {error}");
            }
        }
    }
    for ([name, period, _, output, ..], outcome) in streams(config)? {
        match outcome {
            Ok(()) => println!("ok     {name} → {output} ({period})"),
            Err(error) => {
                wrong += 1;
                println!("wrong  {error}");
            }
        }
    }
    if wrong > 0 {
        eprintln!("{wrong} job(s) cannot run; each line above names the file, line and column");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_job(args: JobsRunArgs) -> Result<ExitCode> {
    if streams(&args.config)?
        .iter()
        .any(|(row, _)| row[0] == args.name)
    {
        bail!(
            "{} is a streaming job: `logpipe up` (or `logpipe stream --jobs sql`) runs it continuously; \
             `logpipe jobs run` runs batch jobs",
            args.name
        );
    }
    let runner = runner(&args.config, true).await?;
    let job: Arc<JobDef> = runner.job(&args.name)?;
    let today = chrono::Utc::now().date_naive();
    let backfill = args.from.is_some();
    let periods = match (args.date, args.from, args.to) {
        (Some(date), _, _) => vec![job.period.of_date(date)],
        (None, Some(from), Some(to)) => {
            if to < from {
                bail!("--to {to} is before --from {from}");
            }
            job.period.periods(from, to)
        }
        _ => vec![job.period.scheduled(today)],
    };
    if let Some(future) = periods.iter().find(|p| p.days().0 > today) {
        bail!("{} {} is in the future", job.name, future.target());
    }
    let terminal = std::io::stderr().is_terminal();
    let total = periods.len();
    let (mut ran, mut skipped) = (0, 0);
    for (index, period) in periods.into_iter().enumerate() {
        let report = Report::new(job.clone(), period);
        let step = format!("[{}/{total}]", index + 1);
        if backfill && !args.force && runner.done(&report).await? {
            skipped += 1;
            println!(
                "{step} {} {}: done before, skipped (--force runs it again)",
                job.name,
                report.target()
            );
            continue;
        }
        let progress = |stage: &str| {
            if terminal {
                eprint!("\r\x1b[2K{step} {stage} …");
            }
        };
        let outcome = runner.run(&report, &progress).await;
        if terminal {
            eprint!("\r\x1b[2K");
        }
        let summary =
            outcome.with_context(|| format!("{} {} failed", report.job(), report.target()))?;
        ran += 1;
        let also = if summary.sinks.contains(&"postgres") {
            " and PostgreSQL"
        } else {
            ""
        };
        println!(
            "{step} {} {}: {} rows in {} ms → {}{also}",
            summary.job,
            summary.target,
            summary.rows,
            summary.duration.as_millis(),
            summary.output,
        );
    }
    if backfill {
        eprintln!(
            "{} {ran} period(s) run, {skipped} skipped as done",
            job.name
        );
    }
    Ok(ExitCode::SUCCESS)
}
