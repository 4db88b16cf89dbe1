//! `logpipe generate`: the load client.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use logpipe_core::RecordKind;

use crate::args::{GenerateArgs, KindArg};

pub(crate) async fn run(args: GenerateArgs) -> Result<ExitCode> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.error_rate) {
        bail!(
            "--error-rate must be between 0 and 1, got {}",
            args.error_rate
        );
    }
    let kind = match args.kind {
        KindArg::Logs => RecordKind::Log,
        KindArg::Events => RecordKind::Event,
    };
    eprintln!(
        "sending {} {} to {} ({} per request, {} in flight{})",
        args.count,
        kind,
        logpipe_gen::collect_url(&args.target, kind),
        args.batch_size,
        args.concurrency,
        args.rate
            .map(|r| format!(", {r} records/s"))
            .unwrap_or_default()
    );
    let roots = logpipe_gen::read_roots(args.ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("--ca-file: {e}"))?;
    let report = logpipe_gen::load::run_load(logpipe_gen::load::LoadOptions {
        target: args.target,
        count: args.count,
        kind,
        rate: args.rate,
        batch_size: args.batch_size,
        concurrency: args.concurrency,
        retry: logpipe_gen::load::RetryPolicy {
            give_up_after: Some(Duration::from_secs(args.retry_for_secs)),
            ..Default::default()
        },
        synthetic: logpipe_gen::synthetic::SyntheticOptions {
            error_rate: args.error_rate,
            incidents: args.incident,
            backdate: args.spread_days.map(|days| {
                let today = chrono::Utc::now().date_naive();
                let start = today - chrono::Days::new(u64::from(days));
                let span_micros = f64::from(days) * 86_400e6;
                logpipe_gen::synthetic::Backdate {
                    start_micros: start
                        .and_hms_opt(0, 0, 0)
                        .unwrap_or_default()
                        .and_utc()
                        .timestamp_micros(),
                    step_micros: span_micros / args.count.max(1) as f64,
                }
            }),
            ..Default::default()
        },
        token: args.token,
        roots,
    })
    .await;
    println!("{}", report.summary());
    Ok(if report.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
