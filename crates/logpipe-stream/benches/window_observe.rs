//! What the window job pays per log record to aggregate it: its statement
//! (`jobs/windows.sql`) run by the SQL jobs' aggregator over 1,000,000
//! samples (8 services, 4 levels, latencies and status codes), and the
//! same with parts of the statement left out, so each part's cost shows.
//!
//! `cargo bench -p logpipe-stream --bench window_observe` prints ns per
//! record for each variant, best of five rounds.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use logpipe_core::record::Level;
use logpipe_core::record::sample::Sample;
use logpipe_core::stream_sql::StreamSpec;
use logpipe_stream::WINDOWS_SQL;
use logpipe_stream::sql_job::aggregator::{Snapshot, SqlAggregator};

fn rollup(spec: &mut StreamSpec) -> &mut Vec<logpipe_core::stream_sql::Aggregate> {
    &mut spec.rollup.as_mut().expect("two levels").aggregates
}

fn main() {
    let spec =
        logpipe_query::stream_sql::parse_stream(WINDOWS_SQL).expect("the built-in statement");
    let services = [
        "api", "auth", "pay", "search", "cart", "user", "order", "ship",
    ];
    let levels = [Level::Info, Level::Debug, Level::Warn, Level::Error];
    let samples: Vec<Sample<'_>> = (0..1_000_000i64)
        .map(|i| Sample {
            timestamp_micros: 1_736_645_160_000_000 + i * 10,
            level: levels[(i % 7 % 4) as usize],
            service: Cow::Borrowed(services[(i % 8) as usize]),
            response_time_ms: Some((i % 500) as f64 + 1.0),
            status_code: Some([200, 200, 404, 500][(i % 4) as usize]),
        })
        .collect();
    let variant = |name: &'static str, change: &dyn Fn(&mut StreamSpec)| {
        let mut spec = spec.clone();
        change(&mut spec);
        (name, Arc::new(spec))
    };
    let variants = [
        variant("windows.sql", &|_| {}),
        variant("  without the status classes", &|s| rollup(s).truncate(5)),
        variant("  service count + p50/p95/p99 only", &|s| {
            rollup(s).truncate(5);
            rollup(s).remove(1);
        }),
        variant("  service count + error_rate only", &|s| {
            rollup(s).truncate(2)
        }),
        variant("  service count only", &|s| rollup(s).truncate(1)),
        variant("  per level only (no service grouping)", &|s| {
            s.rollup = None
        }),
    ];
    println!(
        "window job aggregation, {} samples, best of 5:",
        samples.len()
    );
    for (name, spec) in variants {
        let best = (0..5)
            .map(|_| {
                let mut aggregator =
                    SqlAggregator::restore(spec.clone(), 10_000_000, Snapshot::default());
                let start = Instant::now();
                for sample in &samples {
                    aggregator.observe(sample, sample.timestamp_micros);
                }
                start.elapsed().as_nanos() as f64 / samples.len() as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!("{name:<42} {best:>6.1} ns/record");
    }
}
