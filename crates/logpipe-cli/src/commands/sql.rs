//! `logpipe sql`: a read-only statement over the lake.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use logpipe_query::{OutputFormat, QueryEngine};

use crate::args::{FormatArg, SqlArgs};

pub(crate) async fn run(args: SqlArgs) -> Result<ExitCode> {
    let (resolved, store) = args.config.load_existing()?;
    let engine = QueryEngine::open(&store).await?;
    match logpipe_app::wiring::job_files(&resolved) {
        Ok(jobs) => engine.add_tables(&jobs.tables()),
        // The lake stays readable while a job file is being fixed.
        Err(error) => eprintln!("warning: the jobs' tables are left out: {error:#}"),
    }
    let result = engine.sql(&args.sql, args.max_rows).await?;
    let format = match args.format {
        FormatArg::Table => OutputFormat::Table,
        FormatArg::Csv => OutputFormat::Csv,
        FormatArg::Json => OutputFormat::Json,
    };
    let text = result.render(format)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    if result.truncated {
        eprintln!(
            "(showing the first {} rows; raise --max-rows for more)",
            result.rows
        );
    }
    Ok(ExitCode::SUCCESS)
}
