//! `logpipe stream`: stream jobs against a shared bus. `raw` processes in
//! one consumer group share the partitions; `windows` runs in one process.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use logpipe_app::{Pipeline, Role, require_shared_bus};

use crate::args::{StreamArgs, StreamJobArg};

pub(crate) async fn run(args: StreamArgs) -> Result<ExitCode> {
    let mut config = args.config.load()?;
    args.bus.apply(&mut config);
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    let resolved = config.resolve();
    resolved.config.validate()?;
    require_shared_bus(&resolved, "stream")?;
    let mut roles: BTreeSet<Role> = args
        .jobs
        .iter()
        .map(|job| match job {
            StreamJobArg::Raw => Role::RawJob,
            StreamJobArg::Windows => Role::WindowJob,
            StreamJobArg::Sql => Role::SqlJobs,
            StreamJobArg::Hot => Role::HotStore,
        })
        .collect();
    if roles.contains(&Role::HotStore) && !resolved.config.postgres.hot.enabled {
        anyhow::bail!(
            "--jobs hot runs the PostgreSQL hot store, which is off: set [postgres.hot] enabled = true \
             and [postgres] url (or LOGPIPE__POSTGRES__HOT__ENABLED=true and LOGPIPE__POSTGRES__URL)"
        );
    }
    if args.listen.is_some() {
        roles.insert(Role::Ops);
    }
    let names: Vec<&str> = [
        (Role::RawJob, "raw"),
        (Role::WindowJob, "windows"),
        (Role::SqlJobs, "sql"),
        (Role::HotStore, "hot"),
    ]
    .into_iter()
    .filter(|(role, _)| roles.contains(role))
    .map(|(_, name)| name)
    .collect();
    eprintln!(
        "logpipe stream: jobs {} against Kafka {} (group {}), lake {}",
        names.join(","),
        resolved.config.bus.kafka.brokers,
        resolved.config.bus.kafka.group,
        resolved.lake_root
    );
    let running = Pipeline::new(resolved, roles).start().await?;
    if let Some(url) = &running.base_url {
        println!("logpipe stream: /health, /ready and /metrics\nlistening on {url}");
    }
    running.wait().await?;
    Ok(ExitCode::SUCCESS)
}
