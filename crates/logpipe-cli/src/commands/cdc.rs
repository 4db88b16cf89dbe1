//! `logpipe cdc`: the `[[cdc.sinks]]` against a Kafka cluster.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Result, bail};
use logpipe_app::{Pipeline, Role, require_shared_bus};

use crate::args::CdcArgs;

pub(crate) async fn run(args: CdcArgs) -> Result<ExitCode> {
    let mut config = args.config.load()?;
    args.bus.apply(&mut config);
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if config.cdc.sinks.is_empty() {
        bail!(
            "no [[cdc.sinks]] in the configuration: add one (name, url, topics; docs/cdc.md) to apply change events"
        );
    }
    if !args.sink.is_empty() {
        let known: Vec<String> = config.cdc.sinks.iter().map(|s| s.name.clone()).collect();
        if let Some(unknown) = args.sink.iter().find(|name| !known.contains(name)) {
            bail!(
                "--sink {unknown}: no such sink (configured: {})",
                known.join(", ")
            );
        }
        config
            .cdc
            .sinks
            .retain(|sink| args.sink.contains(&sink.name));
    }
    let resolved = config.resolve();
    resolved.config.validate()?;
    require_shared_bus(&resolved, "cdc")?;
    let mut roles = BTreeSet::from([Role::Cdc]);
    if args.listen.is_some() {
        roles.insert(Role::Ops);
    }
    for sink in &resolved.config.cdc.sinks {
        eprintln!(
            "logpipe cdc: sink {} applies {} to {}",
            sink.name,
            sink.topics.join(", "),
            logpipe_sinks::postgres::redact(&sink.url)
        );
    }
    let running = Pipeline::new(resolved, roles).start().await?;
    if let Some(url) = &running.base_url {
        println!("logpipe cdc: /health, /ready and /metrics\nlistening on {url}");
    }
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}
