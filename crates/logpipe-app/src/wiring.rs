//! Opening each runtime component from its config section: the one place
//! the crates are put together.

use std::sync::Arc;

use anyhow::{Context, Result};
use logpipe_config::Resolved;
use logpipe_lake::{Lake, LakeStore};
use logpipe_sinks::StepSink;
use logpipe_sinks::bus_topic::BusTopicSink;
use logpipe_sinks::postgres::{Postgres, PostgresSink};
use logpipe_sinks::webhook::rows::WebhookClient;
use logpipe_sinks::webhook::{WebhookOptions, WebhookSink};

/// Attempts per alert POST before the webhook drops it (logged and counted).
const WEBHOOK_ATTEMPTS: u32 = 8;

/// Opens the lake root `lake.root` (or `data_dir`) names.
pub fn lake_store(resolved: &Resolved) -> Result<LakeStore> {
    logpipe_lake::resolve_with(&resolved.lake_root, &resolved.config.lake.s3)
        .context("cannot open the lake")
}

/// Asks a remote lake store what it can do, before a process writes to it:
/// an unreachable store or refused credentials stop the start here, and a
/// store that ignores create-if-absent is refused where several processes
/// may write the lake (the Kafka bus), because two of them could then both
/// commit one step of a job.
pub async fn check_lake_store(resolved: &Resolved, store: &mut LakeStore) -> Result<()> {
    if !store.is_remote() {
        return Ok(());
    }
    let capabilities = store
        .probe()
        .await
        .context("the lake cannot be written (lake.root, [lake.s3])")?;
    if capabilities.conditional_put {
        tracing::info!(root = %store, "lake store honours conditional writes");
        return Ok(());
    }
    let why = format!(
        "the lake store at {store} overwrote an object logpipe asked to create only if absent \
         (If-None-Match: *), so it cannot keep two writers of one job apart"
    );
    if resolved.config.bus.kind == logpipe_config::BusKind::Kafka {
        anyhow::bail!(
            "{why}. On the Kafka bus several logpipe processes may write the lake, so logpipe refuses it: \
             use a store that honours conditional writes (AWS S3, versitygw, MinIO), or a lake on a directory"
        );
    }
    tracing::warn!(
        "{why}; the embedded bus has one writer, so the lake stays exactly once, but do not point a second logpipe at it"
    );
    Ok(())
}

/// The lake over `store`, writing with `[lake]`'s compression. A local
/// root is created here, by the roles that write it, so `logpipe sql` finds
/// it even before the first commit.
pub fn lake(resolved: &Resolved, store: &LakeStore) -> Result<Lake> {
    if let Some(dir) = store.local_dir() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the lake directory {}", dir.display()))?;
    }
    Ok(Lake::open(store, resolved.config.lake.compression))
}

/// Connects to `postgres.url` when set (and migrates its schema).
pub async fn postgres(resolved: &Resolved) -> Result<Option<PostgresSink>> {
    let url = &resolved.config.postgres.url;
    if url.is_empty() {
        return Ok(None);
    }
    let client = Postgres::connect(url)
        .await
        .context("postgres.url is set but PostgreSQL cannot be used (unset it to keep results in the lake only)")?;
    tracing::info!(
        url = client.url_redacted(),
        "PostgreSQL connected, schema up to date"
    );
    Ok(Some(PostgresSink::new(client)))
}

/// The alert webhook, when alerts are on and a URL is configured. Its
/// alerts link to `base_url`'s `/api/alerts`.
pub fn webhook(
    resolved: &Resolved,
    base_url: &str,
    roots: &[reqwest::Certificate],
) -> Option<Arc<WebhookSink>> {
    let alerts = &resolved.config.alerts;
    if !alerts.enabled || alerts.webhook_url.is_empty() {
        return None;
    }
    Some(Arc::new(WebhookSink::spawn(WebhookOptions {
        url: alerts.webhook_url.clone(),
        timeout: alerts.webhook_timeout,
        resend_every: alerts.webhook_resend,
        generator_url: format!("{base_url}{}", logpipe_core::api::ALERTS),
        attempts: WEBHOOK_ATTEMPTS,
        roots: roots.to_vec(),
    })))
}

/// A streaming SQL job's sinks: PostgreSQL and its webhook (blocking) when
/// it writes them, the alerts topic and the alert webhook (best effort)
/// when it has alert rules.
pub fn sql_job_sinks(
    job: &logpipe_stream::SqlJobOptions,
    postgres: Option<&Arc<PostgresSink>>,
    webhooks: &WebhookClient,
    alerts_topic: impl FnOnce() -> BusTopicSink,
    alert_webhook: Option<&Arc<WebhookSink>>,
) -> Vec<Arc<dyn StepSink>> {
    let mut sinks: Vec<Arc<dyn StepSink>> = Vec::new();
    if let Some(postgres) = postgres.filter(|_| job.postgres) {
        sinks.push(postgres.clone());
    }
    if let Some(url) = &job.webhook {
        sinks.push(Arc::new(webhooks.to(url)));
    }
    if !job.alerts.is_empty() {
        sinks.push(Arc::new(alerts_topic()));
        if let Some(webhook) = alert_webhook {
            sinks.push(webhook.clone());
        }
    }
    sinks
}

/// The window job's sinks: PostgreSQL (blocking), the alerts topic and the
/// webhook (best effort), in that order.
pub fn window_sinks(
    postgres: Option<&Arc<PostgresSink>>,
    alerts_topic: BusTopicSink,
    webhook: Option<&Arc<WebhookSink>>,
) -> Vec<Arc<dyn StepSink>> {
    let mut sinks: Vec<Arc<dyn StepSink>> = Vec::new();
    if let Some(postgres) = postgres {
        sinks.push(postgres.clone());
    }
    sinks.push(Arc::new(alerts_topic));
    if let Some(webhook) = webhook {
        sinks.push(webhook.clone());
    }
    sinks
}

/// `ROLE-HOST-PORT`: this process's name as a producer (see
/// `logpipe_bus::open`). The host is the machine's name (a pod's name on
/// Kubernetes), in the characters a `transactional.id` keeps readable.
pub fn producer_name(role: &str, port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{role}-{host}-{port}")
}

/// The jobs of a process: the batch jobs (the built-in reports, scheduled
/// by `[reports]`, and the batch files of `[jobs] dir`) and the streaming
/// SQL jobs of that directory, read and parsed once.
pub struct JobFiles {
    pub batch: Vec<logpipe_batch::JobDef>,
    pub streams: Vec<logpipe_stream::SqlJobOptions>,
}

impl JobFiles {
    /// The tables users' jobs write (batch and streaming), for a query
    /// engine over the lake.
    pub fn tables(&self) -> Vec<&'static logpipe_core::tables::TableDef> {
        self.batch
            .iter()
            .filter(|job| !job.is_built_in())
            .map(|job| job.table)
            .chain(self.streams.iter().map(|job| job.table))
            .collect()
    }
}

/// The batch jobs only (what `logpipe batch` and `logpipe jobs` run by
/// hand): a streaming job's statement is not parsed, so a wrong one does
/// not stop them.
pub fn batch_jobs(resolved: &Resolved) -> Result<Vec<logpipe_batch::JobDef>> {
    let config = &resolved.config;
    let schedules = config.reports.schedules()?;
    Ok(logpipe_batch::job::load(
        config.jobs.dir.as_deref(),
        &schedules,
    )?)
}

/// Reads `[jobs] dir` and parses every streaming job's statement: a wrong
/// job fails naming its file, line and column.
pub fn job_files(resolved: &Resolved) -> Result<JobFiles> {
    let config = &resolved.config;
    let schedules = config.reports.schedules()?;
    let (batch, files) = logpipe_batch::job::load_all(config.jobs.dir.as_deref(), &schedules)?;
    let streams = files
        .into_iter()
        .map(|file| {
            let spec = logpipe_query::stream_sql::parse_stream(&file.sql).map_err(|problem| {
                let (line, column) = problem.at.unwrap_or((1, 1));
                anyhow::anyhow!("{}:{line}:{column}: {}", file.origin, problem.message)
            })?;
            let rules: Vec<_> = file.alerts.iter().map(|(rule, ..)| rule.clone()).collect();
            if let Err((index, reason)) = logpipe_stream::check_alerts(&spec, &rules) {
                let (_, line, column) = &file.alerts[index];
                anyhow::bail!("{}:{line}:{column}: {reason}", file.origin);
            }
            let postgres = file.postgres && !config.postgres.url.is_empty();
            if let (true, Err(reason)) = (postgres, logpipe_stream::upsert_key(&spec)) {
                anyhow::bail!(
                    "{}: the job writes to PostgreSQL (postgres.url is set), but {reason}; add it to the SELECT, or put `-- postgres: false` in the header",
                    file.origin
                );
            }
            Ok(logpipe_stream::SqlJobOptions {
                table: logpipe_core::tables::TableDef::stream_output(
                    file.name.clone(),
                    file.output,
                ),
                name: file.name,
                spec: Arc::new(spec),
                allowed_lateness: file.allowed_lateness,
                idle_close: file.idle_close,
                step_interval: std::time::Duration::from_secs(1),
                dedup_window: config.lake.dedup_window,
                on_data_loss: config.lake.on_data_loss,
                alerts: rules,
                postgres,
                webhook: file.webhook,
                retention: file.retention,
            })
        })
        .collect::<Result<_>>()?;
    Ok(JobFiles { batch, streams })
}

/// The CA certificates of `tls.ca_file`, which this process's HTTPS
/// clients (built-in generator, alert webhook) trust besides the public
/// roots.
pub fn trusted_roots(resolved: &Resolved) -> Result<Vec<reqwest::Certificate>> {
    logpipe_gen::read_roots(resolved.config.tls.ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("tls.ca_file cannot be used: {e}"))
}

pub use logpipe_stream::WINDOWS_SQL;

/// The built-in window job's options: its statement (`jobs/windows.sql`
/// in logpipe-stream) with `[windows]`'s window and lateness.
pub fn window_job_options(
    config: &logpipe_config::Config,
) -> Result<logpipe_stream::WindowJobOptions> {
    let spec = logpipe_query::stream_sql::parse_stream(logpipe_stream::WINDOWS_SQL)
        .map_err(|problem| anyhow::anyhow!("the built-in windows.sql: {}", problem.message))?;
    logpipe_stream::WindowJobOptions::from_config(
        spec,
        &config.windows,
        &config.alerts,
        &config.lake,
    )
    .map_err(|reason| anyhow::anyhow!("the built-in windows.sql: {reason}"))
}
