//! `logpipe collector`: the HTTP collector (and query API) against a
//! shared bus; as many as the load needs. `--reports` adds the batch jobs'
//! schedule, for the one process of a deployment that runs them.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use logpipe_app::{Pipeline, Role, require_shared_bus};

use crate::args::CollectorArgs;

pub(crate) async fn run(args: CollectorArgs) -> Result<ExitCode> {
    let mut config = args.config.load()?;
    args.bus.apply(&mut config);
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let resolved = config.resolve();
    resolved.config.validate()?;
    require_shared_bus(&resolved, "collector")?;
    let brokers = resolved.config.bus.kafka.brokers.clone();
    let mut roles = BTreeSet::from([Role::Collector, Role::QueryApi]);
    if args.reports {
        roles.insert(Role::Reports);
    }
    let running = Pipeline::new(resolved, roles).start().await?;
    println!(
        "logpipe collector → Kafka {brokers} (POST /api/collect/logs, /api/collect/activities)\n\
         listening on {}",
        running.base_url.clone().unwrap_or_default()
    );
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}
