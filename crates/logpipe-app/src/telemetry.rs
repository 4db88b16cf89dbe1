//! Which metric families each role shows, and the catalog of all of them.
//!
//! Families are declared by the component that counts them (each crate's
//! `metrics.rs`). A process registers the families of the roles it runs at
//! start, so they show at zero before anything happened, and only those:
//! a collector-only process does not expose lake figures it never counts.
//! [`catalog`] lists every family of every role: `docs/METRICS.md` is
//! checked against it by a test, and dashboards and alert rules can be.

use std::collections::BTreeSet;

use logpipe_core::telemetry::{MetricDef, registry};

use crate::Role;

/// Registers the families the `roles` count.
pub fn register(roles: &BTreeSet<Role>) {
    logpipe_core::telemetry::process::process_metrics();
    logpipe_bus::metrics::bus_metrics();
    for role in roles {
        match role {
            Role::Collector => {
                logpipe_ingest::collector::metrics::collector_metrics();
            }
            Role::QueryApi | Role::Ops => {}
            Role::SqlJobs => {
                logpipe_stream::sql_job::metrics::sql_job_metrics();
                logpipe_lake::metrics::lake_metrics();
                logpipe_core::job::job_metrics();
            }
            Role::RawJob => {
                logpipe_stream::raw::metrics::raw_metrics();
                logpipe_lake::metrics::lake_metrics();
                logpipe_core::job::job_metrics();
            }
            Role::WindowJob => {
                logpipe_stream::windows::metrics::window_metrics();
                logpipe_lake::metrics::lake_metrics();
                logpipe_core::job::job_metrics();
                logpipe_sinks::metrics::sink_metrics();
            }
            Role::Reports => {
                logpipe_batch::metrics::batch_metrics();
                logpipe_sinks::metrics::sink_metrics();
            }
            Role::Generator => {
                logpipe_gen::metrics::generator_metrics();
            }
            Role::Cdc => {
                logpipe_cdc::metrics::cdc_metrics();
            }
            Role::HotStore => {
                logpipe_stream::hot::metrics::hot_metrics();
                logpipe_core::job::job_metrics();
            }
        }
    }
}

/// Every metric family any role exposes, by name.
pub fn catalog() -> Vec<&'static MetricDef> {
    register(&BTreeSet::from([
        Role::Collector,
        Role::QueryApi,
        Role::RawJob,
        Role::WindowJob,
        Role::Reports,
        Role::Generator,
        Role::SqlJobs,
        Role::Cdc,
        Role::HotStore,
        Role::Ops,
    ]));
    registry().defs()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/METRICS.md` lists exactly the families the code declares, with
    /// their type and labels. `LOGPIPE_UPDATE_DOCS=1` rewrites its table.
    #[test]
    fn the_metrics_page_lists_exactly_the_catalog() {
        // The package folder cargo runs the test in, not the one it was
        // compiled in (clones share one build cache; see test-utils `repo`).
        let package = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let path = package.join("../../docs/METRICS.md");
        let page = std::fs::read_to_string(&path).unwrap_or_default();
        let table: String = catalog()
            .iter()
            .map(|def| {
                format!(
                    "| `{}` | {} | {} | {} |\n",
                    def.name,
                    def.kind.as_str(),
                    def.labels
                        .iter()
                        .map(|l| format!("`{l}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    def.help
                )
            })
            .collect();
        let (begin, end) = ("<!-- catalog:begin -->\n", "<!-- catalog:end -->");
        if std::env::var_os("LOGPIPE_UPDATE_DOCS").is_some() {
            let start = page.find(begin).map(|i| i + begin.len()).unwrap();
            let stop = page.find(end).unwrap();
            let header = "| name | type | labels | meaning |\n|---|---|---|---|\n";
            let updated = format!("{}{header}{table}{}", &page[..start], &page[stop..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        let listed = page
            .split(begin)
            .nth(1)
            .and_then(|rest| rest.split(end).next())
            .unwrap_or_default();
        assert!(
            listed.ends_with(&table),
            "{} is not the catalog; LOGPIPE_UPDATE_DOCS=1 cargo test -p logpipe-app rewrites its table. Expected:\n{table}",
            path.display()
        );
    }
}
