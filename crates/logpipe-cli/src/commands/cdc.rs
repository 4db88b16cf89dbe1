//! `logpipe cdc`: the `[[cdc.sources]]` and `[[cdc.sinks]]`, on Kafka or,
//! source and sink together, on the embedded bus.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use logpipe_app::{Pipeline, Role};

use crate::args::CdcArgs;

pub(crate) async fn run(args: CdcArgs) -> Result<ExitCode> {
    let mut config = args.config.load()?;
    args.bus.apply(&mut config);
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if config.cdc.sinks.is_empty() && config.cdc.sources.is_empty() {
        bail!(
            "no [[cdc.sources]] or [[cdc.sinks]] in the configuration: add a source (url, tables) to \
             capture a MariaDB, a sink (url, topics) to apply change events (docs/cdc.md)"
        );
    }
    if !args.sink.is_empty() || !args.source.is_empty() {
        let sinks: Vec<String> = config.cdc.sinks.iter().map(|s| s.name.clone()).collect();
        if let Some(unknown) = args.sink.iter().find(|name| !sinks.contains(name)) {
            bail!(
                "--sink {unknown}: no such sink (configured: {})",
                sinks.join(", ")
            );
        }
        let sources: Vec<String> = config.cdc.sources.iter().map(|s| s.name.clone()).collect();
        if let Some(unknown) = args.source.iter().find(|name| !sources.contains(name)) {
            bail!(
                "--source {unknown}: no such source (configured: {})",
                sources.join(", ")
            );
        }
        config
            .cdc
            .sinks
            .retain(|sink| args.sink.contains(&sink.name));
        config
            .cdc
            .sources
            .retain(|source| args.source.contains(&source.name));
    }
    let resolved = config.resolve();
    resolved.config.validate()?;
    let mut roles = BTreeSet::from([Role::Cdc]);
    if args.listen.is_some() {
        roles.insert(Role::Ops);
    }
    for source in &resolved.config.cdc.sources {
        eprintln!(
            "logpipe cdc: source {} captures {} into {}.*",
            source.name,
            source.tables.join(", "),
            source.prefix()
        );
    }
    for sink in &resolved.config.cdc.sinks {
        eprintln!(
            "logpipe cdc: sink {} applies {} to {}",
            sink.name,
            sink.topics.join(", "),
            logpipe_sinks::postgres::redact(&sink.url)
        );
    }
    let sources: Vec<(String, Vec<String>)> = resolved
        .config
        .cdc
        .sources
        .iter()
        .map(|s| (s.name.clone(), s.tables.clone()))
        .collect();
    let running = Pipeline::new(resolved, roles).start().await?;
    if std::io::stderr().is_terminal() && !sources.is_empty() {
        tokio::spawn(show_snapshots(sources));
    }
    if let Some(url) = &running.base_url {
        println!("logpipe cdc: /health, /ready and /metrics\nlistening on {url}");
    }
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// On a terminal: one line per source while it copies its tables, from
/// the snapshot metrics, then what it copied and how long it took.
async fn show_snapshots(sources: Vec<(String, Vec<String>)>) {
    let registry = logpipe_core::telemetry::registry();
    // Source → when its snapshot was first seen running.
    let mut began: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let running = registry.samples("logpipe_cdc_snapshot_running");
        let rows = registry.samples("logpipe_cdc_snapshot_rows");
        for (source, tables) in &sources {
            let now = running
                .iter()
                .any(|(labels, value)| labels.first() == Some(source) && *value > 0.0);
            let snapshot = Snapshot::of(source, tables, &rows);
            match (now, began.get(source)) {
                (true, None) => {
                    began.insert(source.clone(), Instant::now());
                }
                (true, Some(since)) => {
                    // The cursor goes back to the line's start: a log line
                    // printed next overwrites it rather than trailing it.
                    eprint!("\r\x1b[2K{}\r", snapshot.line(source, since.elapsed()));
                }
                (false, Some(since)) => {
                    eprintln!(
                        "\r\x1b[2Ksnapshot {source}: {} rows copied in {:.1} s",
                        thousands(snapshot.copied),
                        since.elapsed().as_secs_f64()
                    );
                    began.remove(source);
                }
                (false, None) => {}
            }
        }
    }
}

/// A source's snapshot as its metrics show it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// Rows copied, all tables.
    copied: u64,
    /// The table being copied: its place among the source's tables, name,
    /// rows copied and the server's estimate.
    table: Option<(usize, String, u64, u64)>,
    tables: usize,
}

impl Snapshot {
    /// From `logpipe_cdc_snapshot_rows{source,table,what}`: the table being
    /// copied is the last of `tables` that has an estimate.
    fn of(source: &str, tables: &[String], rows: &[(Vec<String>, f64)]) -> Snapshot {
        let value = |table: &str, what: &str| {
            rows.iter()
                .find(|(labels, _)| labels == &[source, table, what])
                .map(|(_, v)| *v as u64)
        };
        let copied = tables.iter().filter_map(|t| value(t, "copied")).sum();
        let table = tables.iter().enumerate().rev().find_map(|(i, t)| {
            let estimated = value(t, "estimated")?;
            Some((i + 1, t.clone(), value(t, "copied").unwrap_or(0), estimated))
        });
        Snapshot {
            copied,
            table,
            tables: tables.len(),
        }
    }

    /// `snapshot car: 45,500 rows, 24,310 rows/s (table 3/3 car.odometer, ~22 %)`.
    fn line(&self, source: &str, elapsed: Duration) -> String {
        let rate = self.copied as f64 / elapsed.as_secs_f64().max(0.001);
        let mut line = format!(
            "snapshot {source}: {} rows, {} rows/s",
            thousands(self.copied),
            thousands(rate as u64)
        );
        if let Some((place, name, copied, estimated)) = &self.table {
            line.push_str(&format!(" (table {place}/{} {name}", self.tables));
            if *estimated > 0 {
                // The server's row count is an estimate: never past 99 %.
                let percent = (*copied * 100 / estimated).min(99);
                line.push_str(&format!(", ~{percent} %"));
            }
            line.push(')');
        }
        line
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_line_shows_rows_rate_and_the_table_being_copied() {
        let sample = |table: &str, what: &str, v: f64| {
            (
                vec!["car".to_string(), table.to_string(), what.to_string()],
                v,
            )
        };
        let rows = vec![
            sample("car.a", "estimated", 500.0),
            sample("car.a", "copied", 500.0),
            sample("car.b", "estimated", 200_000.0),
            sample("car.b", "copied", 45_000.0),
            sample("other", "copied", 7.0),
        ];
        let tables = ["car.a", "car.b", "car.c"].map(String::from);
        let snapshot = Snapshot::of("car", &tables, &rows);
        assert_eq!(snapshot.copied, 45_500);
        assert_eq!(
            snapshot.line("car", Duration::from_secs(2)),
            "snapshot car: 45,500 rows, 22,750 rows/s (table 2/3 car.b, ~22 %)"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
