//! What `logpipe up` shows on its terminal: the banner, and a status line
//! once a second (every 10 s into a log).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use logpipe_config::{BusKind, Resolved};
use logpipe_core::job::Shutdown;

/// What `logpipe up` prints at start: where everything is. Its `listening
/// on URL` line is what scripts wait for.
pub fn print_banner(resolved: &Resolved, base_url: &str) {
    let config = &resolved.config;
    let dir = &resolved.lake_root;
    let bus_dir = resolved.bus_dir.display();
    let data_dir = config.data_dir.display();
    let generator = if config.generator.enabled {
        format!(
            "on: {} logs every {:?}, {} events every {:?}",
            config.generator.batch_size,
            config.generator.log_interval,
            config.generator.batch_size,
            config.generator.event_interval
        )
    } else {
        "off".to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "logpipe {version} is running\n\
         \x20 collector  POST {base_url}/api/collect/logs, {base_url}/api/collect/activities\n\
         \x20 query      POST {base_url}/api/query  or  logpipe sql --data-dir {data_dir} \"SELECT count(*) FROM logs\"\n\
         \x20 health     {base_url}/health   metrics {base_url}/metrics   stats {base_url}/api/stats\n\
         \x20 samples    {base_url}/sample/log  {base_url}/sample/event\n\
         \x20 data       {bus}, {dir}/logs/raw and {dir}/events/raw (Parquet lake)\n\
         \x20 windows    {windows}\n\
         \x20 alerts     {base_url}/api/alerts (table `alerts`, topic alerts.realtime{webhook})\n\
         \x20 generator  {generator}\n\
         listening on {base_url}\n\
         Ctrl-C stops: ingest first, then the lake job drains and commits.",
        version = env!("CARGO_PKG_VERSION"),
        bus = match config.bus.kind {
            BusKind::Embedded => format!("{bus_dir} (embedded bus)"),
            BusKind::Kafka => format!(
                "Kafka {} (group {}, {})",
                config.bus.kafka.brokers,
                config.bus.kafka.group,
                if config.bus.kafka.transactions {
                    "transactions: a 503 stores nothing"
                } else {
                    "no transactions: a 503 may be stored"
                }
            ),
        },
        windows = if config.windows.enabled {
            format!(
                "{:?} windows → table `windows`{}",
                config.windows.size,
                if config.postgres.url.is_empty() {
                    ""
                } else {
                    " and PostgreSQL window_stats"
                }
            )
        } else {
            "off".to_string()
        },
        webhook = if config.alerts.webhook_url.is_empty() {
            String::new()
        } else {
            format!(", webhook {}", config.alerts.webhook_url)
        },
    );
    let _ = out.flush();
}

/// Once a second on a terminal (every 10 s in a log otherwise): input rate,
/// lake rows and bus lag.
pub async fn status_line(mut stop: Shutdown) -> anyhow::Result<()> {
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
        let stats = logpipe_http::stats_json();
        let accepted = stats["records_accepted"].as_u64().unwrap_or(0);
        let rate = (accepted - last.1.min(accepted)) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), accepted);
        let line = format!(
            "in {rate:>9.0} rec/s | accepted {accepted} | lake {} rows | bus lag {}",
            stats["lake_rows"], stats["bus_lag"]
        );
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            tracing::info!("{line}");
        }
    }
    if terminal {
        eprintln!();
    }
    Ok(())
}
