//! `logpipe`: the one binary. This file only parses arguments and wires the
//! library crates together; behaviour lives in the crates.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use logpipe_bus::embedded::{EmbeddedOptions, FsyncMode};
use logpipe_bus::kafka::{KafkaBus, KafkaOptions};
use logpipe_bus::{Bus, EmbeddedBus, TopicSpec};
use logpipe_config::{BusKind, Config, FsyncPolicy};
use logpipe_core::RecordKind;
use logpipe_lake::{Codec, Lake};
use logpipe_query::{OutputFormat, QueryEngine};
use logpipe_server::{AppState, CollectorSettings};
use logpipe_stream::{RawToLake, RawToLakeOptions, WindowJob, WindowJobOptions};
use object_store::local::LocalFileSystem;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "logpipe",
    version,
    about = "A log and event pipeline in one binary: collector, bus, Parquet lake, SQL.",
    long_about = "A log and event pipeline in one binary.\n\n\
        `logpipe up` runs generator, HTTP collector, embedded bus, raw→lake job and query API \
        in one process with built-in defaults (no config file needed).\n\n\
        Configuration layers: built-in defaults → logpipe.toml (or --config) → LOGPIPE__SECTION__KEY \
        environment variables → flags. Log verbosity: LOGPIPE_LOG (e.g. LOGPIPE_LOG=debug)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline in this process until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Send synthetic records to a collector, wait for every acknowledgement, report.
    Generate(GenerateArgs),
    /// Run a read-only SQL statement over the lake (tables `logs`, `events`,
    /// `windows`, `alerts`, `daily_report`, `weekly_analysis`,
    /// `service_analysis`, `job_runs`).
    Sql(SqlArgs),
    /// Run one batch report now (re-running a period replaces its output).
    Batch(BatchArgs),
    /// Run only the HTTP collector (and query API) against a Kafka cluster;
    /// start as many as the load needs.
    Collector(CollectorArgs),
    /// Run only stream jobs against a Kafka cluster. `raw` processes in one
    /// consumer group share the partitions; run `windows` in one process.
    Stream(StreamArgs),
}

#[derive(Args)]
struct BusArgs {
    /// Bus: `embedded` (inside this process) or `kafka` [default: bus.kind, embedded].
    #[arg(long, value_name = "KIND")]
    bus: Option<BusKind>,
    /// Kafka bootstrap servers HOST:PORT[,HOST:PORT…] (sets bus.kafka.brokers).
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
}

impl BusArgs {
    fn apply(&self, config: &mut Config) {
        if let Some(kind) = self.bus {
            config.bus.kind = kind;
        }
        if let Some(brokers) = &self.brokers {
            config.bus.kafka.brokers = brokers.clone();
        }
    }
}

#[derive(Args)]
struct CollectorArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    bus: BusArgs,
    /// HTTP address [default: listen from the config, 127.0.0.1:8081].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StreamJobArg {
    /// raw → lake, in the consumer group bus.kafka.group.
    Raw,
    /// Windows and alerts over all partitions (one process only).
    Windows,
}

#[derive(Args)]
struct StreamArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    bus: BusArgs,
    /// Jobs to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "raw")]
    jobs: Vec<StreamJobArg>,
}

#[derive(Args)]
struct BatchArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    report: BatchReport,
}

#[derive(Subcommand)]
enum BatchReport {
    /// daily_report for one UTC day → DIR/reports/daily/date=YYYY-MM-DD/
    Daily {
        /// The day [default: yesterday, UTC].
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: Option<chrono::NaiveDate>,
    },
    /// weekly_analysis for one ISO week → DIR/reports/weekly/week=YYYY-Www/
    Weekly {
        /// The week, e.g. 2026-W02 [default: last week].
        #[arg(long, value_name = "YYYY-Www", conflicts_with = "date")]
        week: Option<String>,
        /// Any day of the week instead of --week.
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: Option<chrono::NaiveDate>,
    },
    /// service_analysis over whole UTC days → DIR/analysis/service/start_date=…/end_date=…/
    Service {
        /// First day [default: 7 days ago].
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: Option<chrono::NaiveDate>,
        /// Last day, included [default: yesterday].
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: Option<chrono::NaiveDate>,
    },
}

#[derive(Args)]
struct ConfigArgs {
    /// Configuration file (default: ./logpipe.toml when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the bus, the lake and checkpoints live [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }

    /// For commands that read a lake `logpipe up` made.
    fn load_existing(&self) -> Result<Config> {
        let config = self.load()?;
        if !config.data_dir.exists() {
            bail!(
                "data directory {} does not exist (run `logpipe up` first, or pass --data-dir)",
                config.data_dir.display()
            );
        }
        Ok(config)
    }
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    bus: BusArgs,
    /// HTTP address for collector, query API, /health and /metrics [default: 127.0.0.1:8081].
    /// Port 0 picks a free port (printed at start).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Do not run the built-in generator (only accept records over HTTP).
    #[arg(long)]
    no_generator: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Logs,
    Events,
}

#[derive(Args)]
struct GenerateArgs {
    /// Collector base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    target: String,
    /// Records to send.
    #[arg(long)]
    count: u64,
    /// Record kind.
    #[arg(long, value_enum, default_value = "logs")]
    kind: KindArg,
    /// Records per second (default: as fast as acknowledgements allow).
    #[arg(long)]
    rate: Option<f64>,
    /// Records per request.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Share of logs at ERROR level.
    #[arg(long, default_value_t = 0.05)]
    error_rate: f64,
    /// Give up on a batch after retrying this many seconds.
    #[arg(long, default_value_t = 120)]
    retry_for_secs: u64,
    /// Inject an anomaly: KIND:SERVICE:START:DURATION, KIND one of
    /// error_burst, latency_spike, silence; START counted from the first
    /// record (e.g. error_burst:payment-service:30s:1m). Repeatable.
    #[arg(long, value_name = "KIND:SERVICE:START:DURATION", value_parser = parse_incident)]
    incident: Vec<logpipe_config::IncidentConfig>,
}

fn parse_incident(text: &str) -> Result<logpipe_config::IncidentConfig, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [kind, service, start, duration] = parts[..] else {
        return Err(format!(
            "{text:?} is not KIND:SERVICE:START:DURATION (e.g. error_burst:payment-service:30s:1m)"
        ));
    };
    let kind = match kind {
        "error_burst" => logpipe_config::IncidentKind::ErrorBurst,
        "latency_spike" => logpipe_config::IncidentKind::LatencySpike,
        "silence" => logpipe_config::IncidentKind::Silence,
        other => {
            return Err(format!(
                "unknown incident kind {other:?}: use error_burst, latency_spike or silence"
            ));
        }
    };
    let duration_of = |what: &str, value: &str| {
        humantime::parse_duration(value)
            .map_err(|e| format!("incident {what} {value:?} is not a duration (e.g. 30s): {e}"))
    };
    Ok(logpipe_config::IncidentConfig {
        kind,
        service: service.to_string(),
        start: duration_of("start", start)?,
        duration: duration_of("duration", duration)?,
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
struct SqlArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: FormatArg,
    /// Print at most this many rows.
    #[arg(long, default_value_t = 1_000_000)]
    max_rows: usize,
    /// The statement, e.g. "SELECT level, count(*) FROM logs GROUP BY level".
    sql: String,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOGPIPE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,datafusion=warn,hyper=warn,reqwest=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(args).await,
            Command::Generate(args) => generate(args).await,
            Command::Sql(args) => sql(args).await,
            Command::Batch(args) => batch(args).await,
            Command::Collector(args) => collector(args).await,
            Command::Stream(args) => stream(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn topic_specs(config: &Config) -> Vec<TopicSpec> {
    config
        .topics
        .all()
        .into_iter()
        .map(|(name, topic)| TopicSpec {
            name: name.to_string(),
            partitions: topic.partitions,
            retention: topic.retention,
            retention_bytes: topic.retention_bytes,
        })
        .collect()
}

async fn up(args: UpArgs) -> Result<std::process::ExitCode> {
    let mut config = args.config.load()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.no_generator {
        config.generator.enabled = false;
    }
    args.bus.apply(&mut config);
    prepare(&config, None)?;
    let data_dir = config.data_dir.clone();

    let (shared_bus, embedded) = open_bus(&config).await?;

    let lake = open_lake(&config)?;
    let app = http_app(&config, shared_bus.clone()).await?;

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another logpipe running?)",
                config.listen
            )
        })?;
    let address = listener.local_addr()?;
    let base_url = format!("http://{address}");

    let (stop_ingest, ingest_stopped) = watch::channel(false);
    let (stop_stream, stream_stopped) = watch::channel(false);

    let mut server_stop = ingest_stopped.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.changed().await;
            })
            .await
    });

    let postgres = connect_postgres(&config).await?;
    let webhook = Webhook::spawn(&config, &base_url);
    let jobs = StreamJobs {
        raw: true,
        windows: config.windows.enabled,
    };
    let mut stream = spawn_stream_jobs(
        &config,
        jobs,
        shared_bus.clone(),
        lake.clone(),
        postgres.clone(),
        webhook.as_ref().map(|webhook| webhook.sender.clone()),
        stream_stopped,
    );
    let scheduler = if config.reports.schedule {
        let schedules = logpipe_batch::schedule::parse(&[
            ("daily", &config.reports.daily_cron),
            ("weekly", &config.reports.weekly_cron),
            ("service", &config.reports.service_cron),
        ])
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let runner =
            logpipe_batch::BatchRunner::open_local(&data_dir, lake.clone(), postgres.clone())
                .await?;
        Some(tokio::spawn(logpipe_batch::schedule::run(
            Arc::new(runner),
            schedules,
            ingest_stopped.clone(),
        )))
    } else {
        None
    };
    let generator = config.generator.enabled.then(|| {
        let target = if config.generator.target.is_empty() {
            base_url.clone()
        } else {
            config.generator.target.clone()
        };
        tokio::spawn(logpipe_gen::scheduled::run(
            config.generator.clone(),
            target,
            ingest_stopped.clone(),
        ))
    });

    print_banner(&config, &base_url);
    let status = tokio::spawn(status_line(ingest_stopped.clone()));

    let outcome = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!("{signal}: stopping ingest, draining the bus into the lake");
            None
        }
        result = &mut stream => Some(result),
    };
    let _ = stop_ingest.send(true);
    if let Some(generator) = generator {
        let _ = generator.await;
    }
    let _ = status.await;
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "HTTP server error"),
        Err(error) => tracing::error!(%error, "HTTP server task failed"),
    }
    let stream_result = match outcome {
        Some(result) => result,
        None => {
            let _ = stop_stream.send(true);
            stream.await
        }
    };
    if let Some(webhook) = webhook {
        webhook.finish().await;
    }
    if let Some(bus) = embedded {
        bus.shutdown();
    }
    match stream_result {
        Ok(Ok(())) => {
            let stats = logpipe_server::stats_json();
            eprintln!(
                "logpipe stopped: {} records accepted, {} rows committed to the lake",
                stats["records_accepted"], stats["lake_rows"]
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Ok(Err(error)) => Err(error),
        Err(error) => bail!("a stream job panicked: {error}"),
    }
}

/// Opens the configured bus and creates the topics. The embedded bus is
/// also returned as itself, to be shut down at the end.
async fn open_bus(config: &Config) -> Result<(Arc<dyn Bus>, Option<EmbeddedBus>)> {
    match config.bus.kind {
        BusKind::Embedded => {
            let bus = EmbeddedBus::open(
                config.data_dir.join("bus"),
                EmbeddedOptions {
                    fsync: match config.bus.embedded.fsync {
                        FsyncPolicy::Always => FsyncMode::Always,
                        FsyncPolicy::Interval => {
                            FsyncMode::Interval(config.bus.embedded.fsync_interval)
                        }
                    },
                    segment_bytes: config.bus.embedded.segment_bytes,
                    max_pending_appends: config.bus.embedded.max_pending_appends,
                },
            )?;
            bus.create_topics(&topic_specs(config)).await?;
            Ok((Arc::new(bus.clone()), Some(bus)))
        }
        BusKind::Kafka => {
            let kafka = &config.bus.kafka;
            let bus = KafkaBus::connect(KafkaOptions {
                brokers: kafka.brokers.clone(),
                replication_factor: kafka.replication_factor,
                delivery_timeout: kafka.delivery_timeout,
                session_timeout: kafka.session_timeout,
                properties: kafka.properties.clone(),
            })
            .await
            .context("bus.kind is \"kafka\" but the cluster at bus.kafka.brokers cannot be used")?;
            bus.create_topics(&topic_specs(config))
                .await
                .context("cannot create or check the Kafka topics")?;
            Ok((Arc::new(bus), None))
        }
    }
}

/// Checks the final configuration and creates the data directory. A single
/// `role` (`collector`, `stream`) needs a bus outside this process.
fn prepare(config: &Config, role: Option<&str>) -> Result<()> {
    config.validate()?;
    if let Some(role) = role
        && config.bus.kind != BusKind::Kafka
    {
        bail!(
            "`logpipe {role}` runs one role against a Kafka cluster: set bus.kind = \"kafka\" \
             (or pass --bus kafka --brokers HOST:PORT). The embedded bus lives inside one process; \
             `logpipe up` runs every role there."
        );
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    Ok(())
}

#[derive(Clone, Copy)]
struct StreamJobs {
    raw: bool,
    windows: bool,
}

type AlertSender = tokio::sync::mpsc::Sender<Vec<logpipe_stream::windows_job::AlertMessage>>;

/// The alert webhook sender task, when a URL is configured.
struct Webhook {
    sender: AlertSender,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Webhook {
    fn spawn(config: &Config, base_url: &str) -> Option<Webhook> {
        if !config.alerts.enabled || config.alerts.webhook_url.is_empty() {
            return None;
        }
        let (stop, stopped) = watch::channel(false);
        let (sender, task) = logpipe_stream::webhook::spawn(
            logpipe_stream::webhook::WebhookOptions {
                url: config.alerts.webhook_url.clone(),
                timeout: config.alerts.webhook_timeout,
                resend_every: config.alerts.webhook_resend,
                generator_url: format!("{base_url}/api/alerts"),
                attempts: 8,
            },
            stopped,
        );
        Some(Webhook { sender, task, stop })
    }

    /// Stops retrying and waits for the task (after the jobs are done).
    async fn finish(self) {
        let _ = self.stop.send(true);
        drop(self.sender);
        let _ = self.task.await;
    }
}

/// The HTTP collector and query API over `bus` and the lake in `data_dir`.
async fn http_app(config: &Config, bus: Arc<dyn Bus>) -> Result<axum::Router> {
    let query = Arc::new(QueryEngine::open_local(&config.data_dir).await?);
    Ok(logpipe_server::router(AppState {
        bus,
        collector: CollectorSettings {
            summaries: config.windows.enabled
                && (config.windows.summary_header).unwrap_or(config.bus.kind == BusKind::Embedded),
            ..CollectorSettings::from(&config.collector)
        },
        query,
    })
    .merge(logpipe_gen::sample_router()))
}

/// Runs the chosen stream jobs until `stopped`; ends with the first failure.
fn spawn_stream_jobs(
    config: &Config,
    jobs: StreamJobs,
    bus: Arc<dyn Bus>,
    lake: Lake,
    postgres: Option<logpipe_postgres::Postgres>,
    webhook: Option<AlertSender>,
    stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<()>> {
    let mut raw_options = RawToLakeOptions::from(&config.lake);
    if config.bus.kind == BusKind::Kafka {
        raw_options.group = config.bus.kafka.group.clone();
    }
    let raw_job = jobs.raw.then(|| {
        tokio::spawn(RawToLake::new(bus.clone(), lake.clone(), raw_options).run(stopped.clone()))
    });
    let window_job = jobs.windows.then(|| {
        let job = WindowJob::new(
            bus.clone(),
            lake.clone(),
            WindowJobOptions::from_config(&config.windows, &config.alerts, &config.lake),
            postgres,
            webhook,
        );
        tokio::spawn(job.run(stopped.clone()))
    });
    async fn finished<E: std::fmt::Display>(
        name: &str,
        handle: Option<tokio::task::JoinHandle<Result<(), E>>>,
    ) -> Result<()> {
        match handle {
            None => Ok(()),
            Some(handle) => match handle.await {
                Ok(result) => result.map_err(|e| anyhow::anyhow!("the {name} job stopped: {e}")),
                Err(e) => Err(anyhow::anyhow!("the {name} job panicked: {e}")),
            },
        }
    }
    tokio::spawn(async move {
        tokio::try_join!(
            finished("raw→lake", raw_job),
            finished("window", window_job)
        )
        .map(|_| ())
    })
}

async fn collector(args: CollectorArgs) -> Result<std::process::ExitCode> {
    let mut config = args.config.load()?;
    args.bus.apply(&mut config);
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    prepare(&config, Some("collector"))?;
    let (bus, _) = open_bus(&config).await?;
    let app = http_app(&config, bus).await?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    println!(
        "logpipe collector → Kafka {} (POST /api/collect/logs, /api/collect/activities)\n\
         listening on http://{address}",
        config.bus.kafka.brokers
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let signal = shutdown_signal().await;
            tracing::info!("{signal}: collector stopping");
        })
        .await?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn stream(args: StreamArgs) -> Result<std::process::ExitCode> {
    let mut config = args.config.load()?;
    args.bus.apply(&mut config);
    prepare(&config, Some("stream"))?;
    let jobs = StreamJobs {
        raw: args.jobs.contains(&StreamJobArg::Raw),
        windows: args.jobs.contains(&StreamJobArg::Windows),
    };
    let (bus, _) = open_bus(&config).await?;
    let lake = open_lake(&config)?;
    let postgres = if jobs.windows {
        connect_postgres(&config).await?
    } else {
        None
    };
    let webhook = if jobs.windows {
        Webhook::spawn(&config, &format!("http://{}", config.listen))
    } else {
        None
    };
    let (stop, stopped) = watch::channel(false);
    let mut handle = spawn_stream_jobs(
        &config,
        jobs,
        bus,
        lake,
        postgres,
        webhook.as_ref().map(|webhook| webhook.sender.clone()),
        stopped,
    );
    eprintln!(
        "logpipe stream: jobs {} against Kafka {} (group {}), lake {}",
        [(jobs.raw, "raw"), (jobs.windows, "windows")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(","),
        config.bus.kafka.brokers,
        config.bus.kafka.group,
        config.data_dir.display()
    );
    let result = tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!("{signal}: draining and committing");
            let _ = stop.send(true);
            handle.await
        }
        result = &mut handle => result,
    };
    if let Some(webhook) = webhook {
        webhook.finish().await;
    }
    match result {
        Ok(Ok(())) => Ok(std::process::ExitCode::SUCCESS),
        Ok(Err(error)) => Err(error),
        Err(error) => bail!("a stream job panicked: {error}"),
    }
}

/// Connects to `postgres.url` when set (and migrates its schema).
async fn connect_postgres(config: &Config) -> Result<Option<logpipe_postgres::Postgres>> {
    if config.postgres.url.is_empty() {
        return Ok(None);
    }
    let postgres = logpipe_postgres::Postgres::connect(&config.postgres.url)
        .await
        .context("postgres.url is set but PostgreSQL cannot be used (unset it to keep results in the lake only)")?;
    tracing::info!(
        url = postgres.url_redacted(),
        "PostgreSQL connected, schema up to date"
    );
    Ok(Some(postgres))
}

async fn shutdown_signal() -> &'static str {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops logpipe");
                let _ = tokio::signal::ctrl_c().await;
                return "Ctrl-C";
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = terminate.recv() => "SIGTERM",
    }
}

fn print_banner(config: &Config, base_url: &str) {
    let dir = config.data_dir.display();
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
         \x20 query      POST {base_url}/api/query  or  logpipe sql --data-dir {dir} \"SELECT count(*) FROM logs\"\n\
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
            BusKind::Embedded => format!("{dir}/bus (embedded bus)"),
            BusKind::Kafka => format!(
                "Kafka {} (group {})",
                config.bus.kafka.brokers, config.bus.kafka.group
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
async fn status_line(mut stop: watch::Receiver<bool>) {
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
        let stats = logpipe_server::stats_json();
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
}

async fn generate(args: GenerateArgs) -> Result<std::process::ExitCode> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.error_rate) {
        bail!(
            "--error-rate must be between 0 and 1, got {}",
            args.error_rate
        );
    }
    let kind = match args.kind {
        KindArg::Logs => RecordKind::Log,
        KindArg::Events => RecordKind::Event,
    };
    eprintln!(
        "sending {} {} to {} ({} per request, {} in flight{})",
        args.count,
        kind,
        logpipe_gen::collect_url(&args.target, kind),
        args.batch_size,
        args.concurrency,
        args.rate
            .map(|r| format!(", {r} records/s"))
            .unwrap_or_default()
    );
    let report = logpipe_gen::load::run_load(logpipe_gen::load::LoadOptions {
        target: args.target,
        count: args.count,
        kind,
        rate: args.rate,
        batch_size: args.batch_size,
        concurrency: args.concurrency,
        retry: logpipe_gen::load::RetryPolicy {
            give_up_after: Some(Duration::from_secs(args.retry_for_secs)),
            ..Default::default()
        },
        synthetic: logpipe_gen::synthetic::SyntheticOptions {
            error_rate: args.error_rate,
            incidents: args.incident,
            ..Default::default()
        },
    })
    .await;
    println!("{}", report.summary());
    Ok(if report.complete() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn open_lake(config: &Config) -> Result<Lake> {
    let store = LocalFileSystem::new_with_prefix(&config.data_dir)
        .with_context(|| format!("cannot open the lake at {}", config.data_dir.display()))?;
    Ok(Lake::new(
        Arc::new(store),
        match config.lake.compression {
            logpipe_config::Compression::Zstd => Codec::Zstd,
            logpipe_config::Compression::Snappy => Codec::Snappy,
        },
    ))
}

async fn batch(args: BatchArgs) -> Result<std::process::ExitCode> {
    use logpipe_batch::Report;
    let config = args.config.load_existing()?;
    let today = chrono::Utc::now().date_naive();
    let report = match args.report {
        BatchReport::Daily { date } => Report::Daily {
            date: date.unwrap_or(today - chrono::Duration::days(1)),
        },
        BatchReport::Weekly {
            week: Some(week), ..
        } => Report::parse_week(&week)?,
        BatchReport::Weekly { date, .. } => {
            Report::weekly_of(date.unwrap_or(today - chrono::Duration::days(7)))
        }
        BatchReport::Service { from, to } => {
            let start = from.unwrap_or(today - chrono::Duration::days(7));
            let end = to.unwrap_or(today - chrono::Duration::days(1));
            if end < start {
                bail!("--to {end} is before --from {start}");
            }
            Report::Service { start, end }
        }
    };
    let postgres = connect_postgres(&config).await?;
    let runner =
        logpipe_batch::BatchRunner::open_local(&config.data_dir, open_lake(&config)?, postgres)
            .await?;
    let terminal = std::io::stderr().is_terminal();
    let progress = |stage: &str| {
        if terminal {
            eprint!("\r\x1b[2K{stage} …");
        }
    };
    let outcome = runner.run(&report, &progress).await;
    if terminal {
        eprint!("\r\x1b[2K");
    }
    let summary =
        outcome.with_context(|| format!("{} {} failed", report.job(), report.target()))?;
    println!(
        "{} {}: {} rows in {} ms → {}/{}{}",
        summary.job,
        summary.target,
        summary.rows,
        summary.duration.as_millis(),
        config.data_dir.display(),
        summary.output,
        if summary.postgres {
            " and PostgreSQL"
        } else {
            ""
        }
    );
    Ok(std::process::ExitCode::SUCCESS)
}

async fn sql(args: SqlArgs) -> Result<std::process::ExitCode> {
    let config = args.config.load_existing()?;
    let engine = QueryEngine::open_local(&config.data_dir).await?;
    let result = engine.sql(&args.sql, args.max_rows).await?;
    let format = match args.format {
        FormatArg::Table => OutputFormat::Table,
        FormatArg::Csv => OutputFormat::Csv,
        FormatArg::Json => OutputFormat::Json,
    };
    let text = result.render(format)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    if result.truncated {
        eprintln!(
            "(showing the first {} rows; raise --max-rows for more)",
            result.rows
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
