//! `logpipe cdc`: the `[[cdc.sources]]` and `[[cdc.sinks]]`, on Kafka or,
//! source and sink together, on the embedded bus.

use std::collections::BTreeSet;
use std::process::ExitCode;

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
    let running = Pipeline::new(resolved, roles).start().await?;
    if let Some(url) = &running.base_url {
        println!("logpipe cdc: /health, /ready and /metrics\nlistening on {url}");
    }
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}
