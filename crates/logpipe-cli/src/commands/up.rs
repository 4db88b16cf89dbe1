//! `logpipe up`: every role in this process.

use std::process::ExitCode;

use anyhow::Result;
use futures::FutureExt;
use logpipe_app::{Pipeline, Role, console};

use crate::args::UpArgs;

pub(crate) async fn run(args: UpArgs) -> Result<ExitCode> {
    let mut config = args.config.load()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.no_generator {
        config.generator.enabled = false;
    }
    args.bus.apply(&mut config);
    let resolved = config.resolve();
    let roles = Role::all_enabled(&resolved);
    let pipeline = Pipeline::new(resolved.clone(), roles);
    let mut running = pipeline.start().await?;
    let base_url = running.base_url.clone().unwrap_or_default();
    console::print_banner(&resolved, &base_url);
    running.spawn_with_ingest("status line", |stop| console::status_line(stop).boxed());
    running.wait().await?;
    let stats = logpipe_http::stats_json();
    eprintln!(
        "logpipe stopped: {} records accepted, {} rows committed to the lake",
        stats["records_accepted"], stats["lake_rows"]
    );
    Ok(ExitCode::SUCCESS)
}
