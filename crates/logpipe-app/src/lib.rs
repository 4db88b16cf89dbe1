//! The application: which roles a process runs, how the crates are put
//! together for them, and the supervisor that runs and stops them.
//!
//! `logpipe up` is a [`Pipeline`] with every role; `logpipe collector` has
//! the collector (and the query API); `logpipe stream` has stream jobs. The
//! binary only parses arguments and picks the roles.
//!
//! - [`Role`]: one part of the pipeline a process can run.
//! - `wiring.rs`: opening each component from its config section.
//! - [`supervisor`]: named tasks in stages, the ordered shutdown.
//! - [`console`]: the banner and the status line of `logpipe up`.
//!
//! A process opens only what its roles need: a collector-only process has
//! no lake, creates no lake directory, and serves no query API unless
//! asked.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use logpipe_bus::BusHandle;
use logpipe_config::{BusKind, Resolved};
use logpipe_core::health::{self, readiness};
use logpipe_core::job::Shutdown;
use logpipe_core::topics;
use logpipe_ingest::{Collector, CollectorSettings};
use logpipe_query::QueryEngine;
use logpipe_sinks::bus_topic::BusTopicSink;
use logpipe_stream::{ClaimedJobs, RawToLake, RawToLakeOptions, WindowJob, claims_topic};
use tokio::signal::unix::{Signal, SignalKind, signal};

pub mod console;
pub mod supervisor;
pub mod telemetry;
pub mod web;
pub mod wiring;

use supervisor::{Ends, StageId, Supervisor};

/// One part of the pipeline a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The HTTP collector (a source of bus records).
    Collector,
    /// `POST /api/query` and `GET /api/alerts` over the lake.
    QueryApi,
    /// The raw→lake job (a member of the bus group on Kafka).
    RawJob,
    /// Windows and alerts (one process over all partitions).
    WindowJob,
    /// The report scheduler.
    Reports,
    /// The built-in generator, posting to this process's collector (or
    /// `generator.target`).
    Generator,
    /// The streaming jobs written in SQL of `[jobs] dir` (docs/jobs.md).
    SqlJobs,
    /// The `[[cdc.sources]]` (binlog → bus) and `[[cdc.sinks]]` (bus →
    /// database) (docs/cdc.md).
    Cdc,
    /// `[postgres.hot]`: the newest raw records also in PostgreSQL
    /// (docs/hot-store.md; one process).
    HotStore,
    /// `/health`, `/ready` and `/metrics` on `listen` (every role with an
    /// HTTP server serves them; `logpipe stream --listen` asks for them
    /// alone).
    Ops,
}

impl Role {
    /// Every role the configuration turns on: what `logpipe up` runs.
    pub fn all_enabled(resolved: &Resolved) -> BTreeSet<Role> {
        let config = &resolved.config;
        let mut roles = BTreeSet::from([Role::Collector, Role::QueryApi, Role::RawJob]);
        if config.windows.enabled {
            roles.insert(Role::WindowJob);
        }
        if config.reports.schedule {
            roles.insert(Role::Reports);
        }
        if config.generator.enabled {
            roles.insert(Role::Generator);
        }
        if config.jobs.dir.is_some() {
            roles.insert(Role::SqlJobs);
        }
        if !config.cdc.sinks.is_empty() || !config.cdc.sources.is_empty() {
            roles.insert(Role::Cdc);
        }
        if config.postgres.hot.enabled {
            roles.insert(Role::HotStore);
        }
        roles
    }

    /// The role's name (logs, the console).
    pub fn name(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::QueryApi => "query_api",
            Role::RawJob => "raw_job",
            Role::WindowJob => "window_job",
            Role::Reports => "reports",
            Role::Generator => "generator",
            Role::SqlJobs => "sql_jobs",
            Role::Cdc => "cdc",
            Role::HotStore => "hot_store",
            Role::Ops => "ops",
        }
    }

    fn is_job(self) -> bool {
        matches!(self, Role::RawJob | Role::WindowJob | Role::SqlJobs)
    }

    /// Whether the role writes or reads logpipe's own topics, so a process
    /// running it creates them. CDC reads and writes change topics only
    /// (on a Kafka cluster that may not be logpipe's own).
    fn uses_own_topics(self) -> bool {
        match self {
            Role::Collector
            | Role::QueryApi
            | Role::RawJob
            | Role::WindowJob
            | Role::Reports
            | Role::Generator
            | Role::SqlJobs
            | Role::HotStore => true,
            Role::Cdc | Role::Ops => false,
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true.
async fn serve<L>(
    listener: L,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await
        .context("HTTP server error")
}

/// Fails when the process would serve HTTP on a non-loopback address with
/// no tokens, unless `auth.allow_unauthenticated` says that is intended.
fn refuse_open_exposure(config: &logpipe_config::Config) -> Result<()> {
    let loopback = config
        .listen
        .parse::<std::net::SocketAddr>()
        .map(|addr| addr.ip().is_loopback())
        .unwrap_or(false);
    if !loopback && !config.auth.enabled() && !config.auth.allow_unauthenticated {
        bail!(
            "refusing to listen on {} without authentication: anyone who reaches it could write \
             records, read the lake and run reports. Add [[auth.tokens]] (`logpipe token` makes one), \
             or set auth.allow_unauthenticated = true (e.g. behind a proxy that authenticates), \
             or listen on 127.0.0.1",
            config.listen
        );
    }
    Ok(())
}

/// Fails unless the bus is shared by processes: a single role of `command`
/// needs a bus outside this process.
pub fn require_shared_bus(resolved: &Resolved, command: &str) -> Result<()> {
    if resolved.config.bus.kind != BusKind::Kafka {
        bail!(
            "`logpipe {command}` runs one role against a Kafka cluster: set bus.kind = \"kafka\" \
             (or pass --bus kafka --brokers HOST:PORT). The embedded bus lives inside one process; \
             `logpipe up` runs every role there."
        );
    }
    Ok(())
}

/// A process's roles over a resolved configuration.
pub struct Pipeline {
    resolved: Resolved,
    roles: BTreeSet<Role>,
}

/// The stages of a running pipeline, in shutdown order.
struct Stages {
    ingest: StageId,
    jobs: StageId,
    sinks: StageId,
}

/// A started pipeline: its tasks run until [`Running::wait`] sees a signal
/// or a failure.
pub struct Running {
    supervisor: Supervisor,
    stages: Stages,
    bus: BusHandle,
    signals: Signals,
    /// `http://HOST:PORT` when the process serves HTTP.
    pub base_url: Option<String>,
}

impl Pipeline {
    pub fn new(resolved: Resolved, roles: BTreeSet<Role>) -> Pipeline {
        Pipeline { resolved, roles }
    }

    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Opens what the roles need and starts their tasks. Ctrl-C and
    /// SIGTERM are caught from here on: one that arrives while the
    /// pipeline is still starting stops it cleanly once it has started.
    pub async fn start(self) -> Result<Running> {
        let signals = Signals::install()?;
        telemetry::register(&self.roles);
        let resolved = &self.resolved;
        let config = &resolved.config;
        config.validate()?;
        logpipe_core::telemetry::process::watch_data_dir(config.data_dir.clone());
        let serves_http =
            self.has(Role::Collector) || self.has(Role::QueryApi) || self.has(Role::Ops);
        if serves_http {
            refuse_open_exposure(config)?;
        }
        let mut auth = logpipe_http::auth::Auth::from_config(&config.auth)
            .map_err(|reason| anyhow::anyhow!("[auth]: {reason}"))?;
        // The built-in generator posting to this process gets a token only
        // this process knows.
        let generator_token = match auth.as_mut() {
            Some(auth) if self.has(Role::Generator) && config.generator.target.is_empty() => Some(
                auth.add_internal("built-in generator", &[logpipe_config::Scope::Ingest])
                    .context("cannot make the built-in generator's token")?,
            ),
            _ => std::env::var("LOGPIPE_TOKEN").ok(),
        };
        let auth = auth.map(Arc::new);
        let listener = if serves_http {
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} (is another logpipe running?)",
                        config.listen
                    )
                })?;
            Some(listener)
        } else {
            None
        };
        // The collector's name as a producer: stable across restarts on the
        // same host and port, unique among running processes (each listens
        // on its own address), so a restarted collector fences its old
        // self at once.
        let producer = match &listener {
            Some(listener) if self.has(Role::Collector) => Some(wiring::producer_name(
                "collector",
                listener.local_addr()?.port(),
            )),
            _ => None,
        };
        // The lake first: a store this process cannot use stops the start
        // before any broker is asked.
        let needs_lake = self.roles.iter().any(|r| r.is_job() || *r == Role::Reports);
        let mut store = if needs_lake || self.has(Role::QueryApi) {
            Some(wiring::lake_store(resolved)?)
        } else {
            None
        };
        if let Some(store) = store.as_mut().filter(|_| needs_lake) {
            wiring::check_lake_store(resolved, store).await?;
        }
        let lake = match (&store, needs_lake) {
            (Some(store), true) => Some(wiring::lake(resolved, store)?),
            _ => None,
        };

        if self.has(Role::Cdc) && config.bus.kind != BusKind::Kafka {
            // On the embedded bus only this process's sources write change
            // topics: a sink of anything else would wait forever.
            let written: Vec<String> = config.cdc.sources.iter().flat_map(|s| s.topics()).collect();
            for sink in &config.cdc.sinks {
                if let Some(topic) = sink.topics.iter().find(|t| !written.contains(t)) {
                    bail!(
                        "cdc sink {}: topic {topic} is written by none of this process's [[cdc.sources]], \
                         and the embedded bus holds only what this process writes. Capture it with a \
                         [[cdc.sources]] (docs/cdc.md), or read a Debezium connector's topics with \
                         bus.kind = \"kafka\"",
                        sink.name
                    );
                }
            }
        }
        let own_topics = if self.roles.iter().any(|r| r.uses_own_topics()) {
            logpipe_bus::topic_specs(&config.topics)
        } else {
            Vec::new()
        };
        let bus = logpipe_bus::open(
            &config.bus,
            &resolved.bus_dir,
            &own_topics,
            producer.as_deref(),
        )
        .await?;

        let mut supervisor = Supervisor::new();
        let stages = Stages {
            ingest: supervisor.stage("ingest", Ends::Nothing),
            jobs: supervisor.stage("jobs", Ends::Run),
            sinks: supervisor.stage("sinks", Ends::Nothing),
        };

        // HTTPS when [tls] names a certificate: loaded now, so a wrong pair
        // stops the start.
        let tls = match (&listener, config.tls.files()) {
            (Some(_), Some((cert, key))) => Some(
                logpipe_http::tls::ReloadingCert::open(cert, key)
                    .context("tls.cert_file and tls.key_file cannot be used")?,
            ),
            _ => None,
        };
        let scheme = if config.tls.files().is_some() {
            "https"
        } else {
            "http"
        };
        // What this process's HTTPS clients trust besides the public roots.
        let roots = wiring::trusted_roots(resolved)?;
        let base_url = match &listener {
            Some(listener) => Some(format!("{scheme}://{}", listener.local_addr()?)),
            None => None,
        };
        // The alerts' links and the generator's target when nothing serves.
        let public_url = base_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", config.listen));

        // The jobs' files, read once: the runner, the streaming jobs and the
        // query engine's tables come from them.
        let mut job_files = match &store {
            Some(_) => wiring::job_files(resolved)?,
            None => wiring::JobFiles {
                batch: Vec::new(),
                streams: Vec::new(),
            },
        };
        let job_tables = job_files.tables();
        // Batch jobs' tables with a `-- retention:`, kept by the process
        // that runs the batch jobs.
        let batch_retention: Vec<(&'static logpipe_core::TableDef, std::time::Duration)> =
            if self.has(Role::Reports) {
                job_files
                    .batch
                    .iter()
                    .filter_map(|job| job.retention.map(|kept| (job.table, kept)))
                    .collect()
            } else {
                Vec::new()
            };

        let sql_jobs_postgres =
            self.has(Role::SqlJobs) && job_files.streams.iter().any(|job| job.postgres);
        let postgres = if self.has(Role::WindowJob) || self.has(Role::Reports) || sql_jobs_postgres
        {
            wiring::postgres(resolved).await?.map(Arc::new)
        } else {
            None
        };

        // Posts jobs' rows to their `-- webhook:`s.
        let webhooks = logpipe_sinks::webhook::rows::WebhookClient::new(
            &roots,
            std::time::Duration::from_secs(10),
        );

        // The report runner: the scheduler's and the console's.
        let runner = match &lake {
            Some(lake) if self.has(Role::Reports) || self.has(Role::QueryApi) => {
                let sinks: Vec<Arc<dyn logpipe_sinks::StepSink>> = postgres
                    .iter()
                    .map(|p| p.clone() as Arc<dyn logpipe_sinks::StepSink>)
                    .collect();
                let mut runner = logpipe_batch::BatchRunner::open(
                    lake.clone(),
                    sinks,
                    std::mem::take(&mut job_files.batch),
                )
                .await?;
                runner.set_webhook_client(webhooks.clone());
                // A wrong job stops the start, not its first run at 03:00.
                let today = chrono::Utc::now().date_naive();
                let wrong: Vec<String> = runner
                    .check(today)
                    .await
                    .into_iter()
                    .filter_map(|check| check.outcome.err().map(|e| e.to_string()))
                    .collect();
                if !wrong.is_empty() {
                    anyhow::bail!(
                        "{} batch job(s) cannot run (`logpipe jobs check` shows the same):\n{}",
                        wrong.len(),
                        wrong.join("\n")
                    );
                }
                Some(Arc::new(runner))
            }
            _ => None,
        };

        // The streaming SQL jobs, parsed now: a wrong one stops the start.
        let sql_jobs = match &lake {
            Some(_) if self.has(Role::SqlJobs) => std::mem::take(&mut job_files.streams),
            _ => Vec::new(),
        };

        if let Some(listener) = listener {
            let mut router = logpipe_http::ops_routes(auth.as_ref(), config.auth.open_metrics);
            let mut console = web::Console::new(self.roles.iter().map(|r| r.name()).collect());
            console.bus = Some(bus.bus.clone());
            console.lake = lake.clone();
            console.runner = runner.clone().filter(|_| self.has(Role::QueryApi));
            console.stream_jobs = [(Role::RawJob, "raw"), (Role::WindowJob, "windows")]
                .into_iter()
                .filter(|(role, _)| self.has(*role))
                .map(|(_, job)| job)
                .chain(sql_jobs.iter().map(|job| job.table.name))
                .collect();
            if self.has(Role::Collector) {
                let settings = CollectorSettings::from_config(resolved);
                let collector = Collector::new(bus.bus.clone(), settings);
                let ingest =
                    logpipe_ingest::otlp::routes(collector.clone()).merge(collector.routes());
                router = router
                    .merge(logpipe_http::auth::require(
                        ingest,
                        auth.as_ref(),
                        logpipe_config::Scope::Ingest,
                    ))
                    .merge(logpipe_gen::sample_router());
            }
            if let Some(store) = store.as_ref().filter(|_| self.has(Role::QueryApi)) {
                let limits = logpipe_query::QueryLimits {
                    timeout: Some(config.query.timeout),
                    max_memory_bytes: Some(config.query.max_memory_bytes),
                    threads: Some(logpipe_query::QueryThreads {
                        threads: config.query.threads,
                        priority: config.query.priority,
                        max_share_under_load: config.query.max_share_under_load,
                    }),
                };
                let engine = QueryEngine::open_limited(store, limits).await?;
                engine.add_tables(&job_tables);
                let engine = Arc::new(engine);
                console.engine = Some(engine.clone());
                router = router.merge(logpipe_http::query_routes(engine, auth.as_ref()));
            }
            router = router.merge(Arc::new(console).routes(auth.as_ref()));
            let stop = supervisor.shutdown(stages.ingest);
            let idle = config.collector.idle_timeout;
            match tls.clone() {
                Some(cert) => {
                    let tls = logpipe_http::tls::TlsListener::new(listener, cert.server_config())
                        .context("cannot serve HTTPS")?;
                    let listener = logpipe_http::idle::IdleTimeout::new(tls, idle);
                    supervisor.spawn(stages.ingest, "HTTPS server", serve(listener, router, stop));
                    let watching = supervisor.shutdown(stages.ingest);
                    let interval = config.tls.reload_interval;
                    supervisor.spawn(stages.ingest, "TLS certificate reloader", async move {
                        cert.watch(interval, watching).await;
                        Ok(())
                    });
                }
                None => {
                    let listener = logpipe_http::idle::IdleTimeout::new(listener, idle);
                    supervisor.spawn(stages.ingest, "HTTP server", serve(listener, router, stop));
                }
            }
        }

        if let Some(lake) = &lake {
            // The built-in tables' where the raw job runs, a streaming
            // job's (`-- retention:`) where that job runs.
            let mut tables: Vec<(&'static logpipe_core::TableDef, std::time::Duration)> =
                Vec::new();
            if self.has(Role::RawJob) {
                tables.extend(
                    config
                        .lake
                        .retention
                        .tables()
                        .into_iter()
                        .map(|(_, table, kept)| (table, kept)),
                );
            }
            tables.extend(
                sql_jobs
                    .iter()
                    .filter_map(|job| job.retention.map(|kept| (job.table, kept))),
            );
            tables.extend(batch_retention);
            if !tables.is_empty() {
                let lake = lake.clone();
                let interval = config.lake.retention.interval;
                let grace = config.lake.retention.grace;
                let stop = supervisor.shutdown(stages.jobs);
                supervisor.spawn(stages.jobs, "lake retention", async move {
                    logpipe_lake::retention::run(lake, tables, interval, grace, stop).await;
                    Ok(())
                });
            }
            // Every table of the lake, built in and the streaming jobs',
            // once each (by folder).
            let mut lake_tables: Vec<&'static logpipe_core::TableDef> = Vec::new();
            for table in logpipe_core::tables::ALL
                .iter()
                .copied()
                .chain(sql_jobs.iter().map(|job| job.table))
            {
                if !lake_tables.iter().any(|t| t.dir == table.dir) {
                    lake_tables.push(table);
                }
            }
            if self.has(Role::RawJob) {
                // What the lake holds, per table, for the Storage dashboard.
                let tables = lake_tables.clone();
                let lake = lake.clone();
                let interval = config.lake.usage_interval;
                let stop = supervisor.shutdown(stages.jobs);
                supervisor.spawn(stages.jobs, "lake usage", async move {
                    logpipe_lake::usage::run(lake, tables, interval, stop).await;
                    Ok(())
                });
            }
            if self.has(Role::RawJob) && config.lake.compaction.enabled {
                let compaction = &config.lake.compaction;
                let tables: Vec<&'static logpipe_core::TableDef> = lake_tables
                    .iter()
                    .copied()
                    .filter(|t| t.partitioning == logpipe_core::tables::Partitioning::Hourly)
                    .collect();
                let settings =
                    logpipe_lake::compaction::CompactionSettings::from_config(compaction);
                let lake = lake.clone();
                let interval = compaction.interval;
                let stop = supervisor.shutdown(stages.jobs);
                supervisor.spawn(stages.jobs, "lake compaction", async move {
                    logpipe_lake::compaction::run(lake, tables, settings, interval, stop).await;
                    Ok(())
                });
            }
            if self.has(Role::RawJob) && config.lake.delta.enabled {
                // A Delta log over every table, publishing what logpipe's
                // reads see (compactions and expiries atomically).
                let tables = lake_tables.clone();
                let settings = logpipe_lake::delta::DeltaSettings::from_config(&config.lake.delta);
                let lake = lake.clone();
                let stop = supervisor.shutdown(stages.jobs);
                supervisor.spawn(stages.jobs, "lake delta log", async move {
                    logpipe_lake::delta::run(lake, tables, settings, stop).await;
                    Ok(())
                });
            }
            if self.has(Role::RawJob) {
                let job = RawToLake::new(
                    bus.bus.clone(),
                    lake.clone(),
                    RawToLakeOptions::from_config(resolved),
                );
                let stop = supervisor.shutdown(stages.jobs);
                supervisor.spawn(stages.jobs, "raw→lake job", async move {
                    Ok(job.run(stop).await?)
                });
            }
            let alert_webhook = (self.has(Role::WindowJob)
                || sql_jobs.iter().any(|job| !job.alerts.is_empty()))
            .then(|| wiring::webhook(resolved, &public_url, &roots))
            .flatten();
            let sql_jobs: Vec<logpipe_stream::SqlJobSinks> = sql_jobs
                .into_iter()
                .map(|options| logpipe_stream::SqlJobSinks {
                    sinks: wiring::sql_job_sinks(
                        &options,
                        postgres.as_ref(),
                        &webhooks,
                        || BusTopicSink::new(bus.bus.clone(), topics::ALERTS_REALTIME),
                        alert_webhook.as_ref(),
                    ),
                    options,
                })
                .collect();
            if !sql_jobs.is_empty() {
                let like = own_topics
                    .iter()
                    .find(|spec| spec.name == topics::LOGS_RAW)
                    .cloned()
                    .expect("the logs topic is configured");
                let jobs = ClaimedJobs::new(
                    bus.bus.clone(),
                    lake.clone(),
                    sql_jobs,
                    format!("{}-sql-jobs", resolved.raw_group),
                    claims_topic(&like),
                );
                let stop = supervisor.shutdown(stages.jobs);
                supervisor.spawn(stages.jobs, "streaming SQL jobs", async move {
                    Ok(jobs.run(stop).await?)
                });
            }
            if self.has(Role::WindowJob) {
                let sinks = wiring::window_sinks(
                    postgres.as_ref(),
                    BusTopicSink::new(bus.bus.clone(), topics::ALERTS_REALTIME),
                    alert_webhook.as_ref(),
                );
                let job = WindowJob::new(
                    bus.bus.clone(),
                    lake.clone(),
                    wiring::window_job_options(config)?,
                    sinks,
                );
                let stop = supervisor.shutdown(stages.jobs);
                supervisor.spawn(stages.jobs, "window job", async move {
                    Ok(job.run(stop).await?)
                });
            }
            if let Some(webhook) = alert_webhook {
                let mut stop = supervisor.shutdown(stages.sinks);
                supervisor.spawn(stages.sinks, "alert webhook", async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                    webhook.finish().await;
                    Ok(())
                });
            }
            if let Some(runner) = runner.clone().filter(|_| self.has(Role::Reports)) {
                let stop = supervisor.shutdown(stages.ingest);
                supervisor.spawn(stages.ingest, "job scheduler", async move {
                    logpipe_batch::schedule::run(runner, stop).await;
                    Ok(())
                });
            }
        }

        if self.has(Role::Cdc) {
            for source in &config.cdc.sources {
                let source = logpipe_cdc::CdcSource::new(source.clone(), bus.bus.clone());
                let stop = supervisor.shutdown(stages.ingest);
                supervisor.spawn(stages.ingest, "CDC source", async move {
                    Ok(source.run(stop).await?)
                });
            }
            for sink in &config.cdc.sinks {
                let sink = logpipe_cdc::CdcSink::new(sink.clone(), bus.bus.clone());
                let stop = supervisor.shutdown(stages.jobs);
                supervisor.spawn(
                    stages.jobs,
                    "CDC sink",
                    async move { Ok(sink.run(stop).await?) },
                );
            }
        }

        if self.has(Role::HotStore) {
            let job = logpipe_stream::HotStoreJob::new(
                bus.bus.clone(),
                config.postgres.url.clone(),
                config.postgres.hot.clone(),
                config.lake.dedup_window,
            );
            let stop = supervisor.shutdown(stages.jobs);
            supervisor.spawn(
                stages.jobs,
                "hot store",
                async move { Ok(job.run(stop).await?) },
            );
        }

        if self.has(Role::Generator) {
            let generator = config.generator.clone();
            let target = if generator.target.is_empty() {
                public_url.clone()
            } else {
                generator.target.clone()
            };
            let stop = supervisor.shutdown(stages.ingest);
            supervisor.spawn(stages.ingest, "generator", async move {
                logpipe_gen::scheduled::run(generator, target, generator_token, roots, stop).await;
                Ok(())
            });
        }

        readiness().pass(health::checks::STARTED);
        Ok(Running {
            supervisor,
            stages,
            bus,
            signals,
            base_url,
        })
    }
}

impl Running {
    /// Adds a task that stops with ingest (the status line).
    pub fn spawn_with_ingest(
        &mut self,
        name: &'static str,
        task: impl FnOnce(Shutdown) -> futures::future::BoxFuture<'static, Result<()>>,
    ) {
        let stop = self.supervisor.shutdown(self.stages.ingest);
        self.supervisor.spawn(self.stages.ingest, name, task(stop));
    }

    /// Runs until Ctrl-C, SIGTERM or a failure; then stops ingest, lets the
    /// jobs drain the bus and commit, stops the sinks, and shuts the bus
    /// down. Returns the first failure, named after its task.
    pub async fn wait(self) -> Result<()> {
        let mut signals = self.signals;
        let stopping = async {
            let signal = signals.recv().await;
            // Load balancers and probes stop sending work while it drains.
            readiness().fail(
                health::checks::STARTED,
                format!("stopping after {signal}: draining and committing"),
            );
            signal
        };
        let result = self.supervisor.run(stopping).await;
        self.bus.shutdown();
        result
    }
}

/// Ctrl-C and SIGTERM, caught from the moment they are installed (a signal
/// that arrives before anyone waits is kept, not lost to the default
/// action that would kill the process mid-start).
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// The next signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
