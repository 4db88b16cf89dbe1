//! The command line: every flag of every command, as clap types.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use logpipe_config::{BusKind, Config, Resolved};
use logpipe_lake::LakeStore;

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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Batch jobs written in SQL: the built-in reports and the files of
    /// `[jobs] dir` (docs/jobs.md). List, show, check, run and backfill.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Run only the HTTP collector (and query API) against a Kafka cluster;
    /// start as many as the load needs.
    Collector(CollectorArgs),
    /// Run only stream jobs against a Kafka cluster. `raw` processes in one
    /// consumer group share the partitions; run `windows` in one process.
    Stream(StreamArgs),
    /// Print the newest records of a topic from a running logpipe, filtered
    /// by service and level, and follow new ones (the console's Topics tab).
    Tail(TailArgs),
    /// Make a new API token and print it with the [[auth.tokens]] entry
    /// (its SHA-256) that lets it in.
    Token(TokenArgs),
    /// Merge the lake's small files now, as [lake.compaction] does on a
    /// schedule: every closed hour of the hourly tables, then (after the
    /// grace period) the replaced files deleted.
    Compact(CompactArgs),
    /// Read a data directory through and report damage (bus checksums,
    /// commit records and the files they list, every Parquet file, orphans);
    /// exits 1 when something is damaged. --repair moves damaged and orphan
    /// Parquet files aside.
    Check(CheckArgs),
    /// Ask a running logpipe whether it is ready (GET /ready) and exit 0
    /// when it is, 1 with the failing checks when not: the container
    /// image's HEALTHCHECK.
    Ready(ReadyArgs),
    /// Change data capture (docs/cdc.md): [[cdc.sources]] capture MariaDB
    /// tables (snapshot, then binlog) into topics as Debezium's change
    /// events; [[cdc.sinks]] apply change events (theirs, or a Debezium
    /// connector's on Kafka) to PostgreSQL or MariaDB exactly once. On a
    /// terminal it shows each snapshot's progress.
    Cdc(CdcArgs),
}

#[derive(Subcommand)]
pub(crate) enum JobsCommand {
    /// Every job: period, schedule, output, the jobs it reads, last run.
    List(JobsArgs),
    /// Print a job's file (the built-in ones too: copy one to start yours).
    Show {
        #[command(flatten)]
        config: ConfigArgs,
        /// The job's name.
        name: String,
    },
    /// Parse and plan every job against the lake's tables without running
    /// it; exits 1 naming the file, line and column of each wrong one.
    Check(JobsArgs),
    /// Run one job now, for one period or a backfill of many. A re-run
    /// replaces that period's output.
    Run(JobsRunArgs),
}

#[derive(Args)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
}

#[derive(Args)]
pub(crate) struct JobsRunArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// The job's name (`logpipe jobs list`).
    pub(crate) name: String,
    /// The period containing this day [default: the last whole period,
    /// as a scheduled run would].
    #[arg(long, value_name = "YYYY-MM-DD", conflicts_with_all = ["from", "to"])]
    pub(crate) date: Option<chrono::NaiveDate>,
    /// A backfill: every period from this day … (a range job runs once,
    /// over the whole span).
    #[arg(long, value_name = "YYYY-MM-DD", requires = "to")]
    pub(crate) from: Option<chrono::NaiveDate>,
    /// … to this day, included.
    #[arg(long, value_name = "YYYY-MM-DD", requires = "from")]
    pub(crate) to: Option<chrono::NaiveDate>,
    /// In a backfill, run periods whose output exists too (they are
    /// skipped by default, so a stopped backfill resumes where it was).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Move damaged and orphan Parquet files out of the tables into
    /// DIR/_logpipe/quarantine/ (their jobs rebuild the ones a commit record
    /// lists from the bus at the next start). The bus and commit records are
    /// never changed. Run it with logpipe stopped.
    #[arg(long)]
    pub(crate) repair: bool,
}

#[derive(Args)]
pub(crate) struct CompactArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Hours that ended less than this long ago are left alone
    /// [default: lake.compaction.min_age].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) min_age: Option<std::time::Duration>,
    /// Hours that ended longer ago than this are left alone
    /// [default: lake.compaction.lookback].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) lookback: Option<std::time::Duration>,
    /// How long the replaced files stay for queries already running; the
    /// command waits it out twice (files, then manifests)
    /// [default: lake.compaction.grace]. 0s with nothing reading the lake.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) grace: Option<std::time::Duration>,
}

#[derive(Args)]
pub(crate) struct ReadyArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// The URL to ask [default: /ready of the configured `listen` address,
    /// on loopback when that is every address].
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
    /// Print nothing when ready.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// Who will hold it (the entry's name).
    #[arg(long, default_value = "my-service")]
    pub(crate) name: String,
    /// What it may do, comma-separated: ingest, query, admin.
    #[arg(long, value_delimiter = ',', default_value = "ingest")]
    pub(crate) scopes: Vec<String>,
}

#[derive(Args)]
pub(crate) struct TailArgs {
    /// The running process's base URL (`logpipe up` or `logpipe collector`).
    #[arg(long, default_value = "http://127.0.0.1:8081", value_name = "URL")]
    pub(crate) url: String,
    /// Topic to read.
    #[arg(long, default_value = "logs.raw", value_name = "TOPIC")]
    pub(crate) topic: String,
    /// Only records of this service.
    #[arg(long, value_name = "NAME")]
    pub(crate) service: Option<String>,
    /// Only records of this level (DEBUG, INFO, WARN, ERROR).
    #[arg(long, value_name = "LEVEL")]
    pub(crate) level: Option<String>,
    /// Records to print first.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub(crate) lines: usize,
    /// Print the newest records and exit instead of following.
    #[arg(long)]
    pub(crate) no_follow: bool,
    /// Print each record as one line of JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// API token for a logpipe with [[auth.tokens]] (sent as Authorization: Bearer).
    #[arg(
        long,
        env = "LOGPIPE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<String>,
    /// PEM CA certificates to trust for an https:// URL besides the public
    /// roots (a private CA, or the server's self-signed certificate).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct BusArgs {
    /// Bus: `embedded` (inside this process) or `kafka` [default: bus.kind, embedded].
    #[arg(long, value_name = "KIND")]
    pub(crate) bus: Option<BusKind>,
    /// Kafka bootstrap servers HOST:PORT[,HOST:PORT…] (sets bus.kafka.brokers).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) brokers: Option<String>,
}

impl BusArgs {
    pub(crate) fn apply(&self, config: &mut Config) {
        if let Some(kind) = self.bus {
            config.bus.kind = kind;
        }
        if let Some(brokers) = &self.brokers {
            config.bus.kafka.brokers = brokers.clone();
        }
    }
}

#[derive(Args)]
pub(crate) struct CollectorArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    #[command(flatten)]
    pub(crate) bus: BusArgs,
    /// HTTP address [default: listen from the config, 127.0.0.1:8081].
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
    /// Also run the batch jobs on their schedules (the [reports] crons and
    /// each job's `-- schedule:`), as `logpipe up` does. Give it to one
    /// process of a deployment: the master of a multi-host layout.
    #[arg(long)]
    pub(crate) reports: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StreamJobArg {
    /// raw → lake, in the consumer group bus.kafka.group.
    Raw,
    /// Windows and alerts over all partitions (one process only).
    Windows,
    /// The streaming SQL jobs of `[jobs] dir` (one process only).
    Sql,
    /// raw → the PostgreSQL hot store of `[postgres.hot]` (one process only).
    Hot,
}

#[derive(Args)]
pub(crate) struct StreamArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    #[command(flatten)]
    pub(crate) bus: BusArgs,
    /// Jobs to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "raw")]
    pub(crate) jobs: Vec<StreamJobArg>,
    /// Serve /health, /ready and /metrics on this address (Prometheus
    /// scrapes it; give each stream process on a host its own port).
    /// Without it the process serves no HTTP.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
}

#[derive(Args)]
pub(crate) struct CdcArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    #[command(flatten)]
    pub(crate) bus: BusArgs,
    /// Run only this sink (repeat for several). With --sink or --source,
    /// only the ones named run [default: every source and sink].
    #[arg(long, value_name = "NAME")]
    pub(crate) sink: Vec<String>,
    /// Run only this source (repeat for several).
    #[arg(long, value_name = "NAME")]
    pub(crate) source: Vec<String>,
    /// Serve /health, /ready and /metrics on this address. Without it the
    /// process serves no HTTP.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
}

#[derive(Args)]
pub(crate) struct BatchArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    #[command(subcommand)]
    pub(crate) report: BatchReport,
}

#[derive(Subcommand)]
pub(crate) enum BatchReport {
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
pub(crate) struct ConfigArgs {
    /// Configuration file (default: ./logpipe.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Where the bus, the lake and checkpoints live [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    pub(crate) fn load(&self) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }

    /// For commands that read a lake `logpipe up` made: the resolved
    /// configuration and the lake's store, which must exist when local.
    pub(crate) fn load_existing(&self) -> Result<(Resolved, LakeStore)> {
        let resolved = self.load()?.resolve();
        let store = logpipe_app::wiring::lake_store(&resolved)?;
        if let Some(dir) = store.local_dir()
            && !dir.exists()
        {
            bail!(
                "data directory {} does not exist (run `logpipe up` first, or pass --data-dir)",
                dir.display()
            );
        }
        Ok((resolved, store))
    }
}

#[derive(Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    #[command(flatten)]
    pub(crate) bus: BusArgs,
    /// HTTP address for collector, query API, /health and /metrics [default: 127.0.0.1:8081].
    /// Port 0 picks a free port (printed at start).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
    /// Do not run the built-in generator (only accept records over HTTP).
    #[arg(long)]
    pub(crate) no_generator: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum KindArg {
    Logs,
    Events,
}

#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// Collector base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub(crate) target: String,
    /// Records to send.
    #[arg(long)]
    pub(crate) count: u64,
    /// Record kind.
    #[arg(long, value_enum, default_value = "logs")]
    pub(crate) kind: KindArg,
    /// Records per second (default: as fast as acknowledgements allow).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Records per request.
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) concurrency: usize,
    /// Share of logs at ERROR level.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) error_rate: f64,
    /// Give up on a batch after retrying this many seconds; the first batch
    /// given up (or refused) ends the run, and the rest are reported as not
    /// sent.
    #[arg(long, default_value_t = 120)]
    pub(crate) retry_for_secs: u64,
    /// Inject an anomaly: KIND:SERVICE:START:DURATION, KIND one of
    /// error_burst, latency_spike, silence; START counted from the first
    /// record (e.g. error_burst:payment-service:30s:1m). Repeatable.
    #[arg(long, value_name = "KIND:SERVICE:START:DURATION", value_parser = parse_incident)]
    pub(crate) incident: Vec<logpipe_config::IncidentConfig>,
    /// Stamp the records evenly over the N whole UTC days before today
    /// instead of now (history to run and backfill batch jobs over).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub(crate) spread_days: Option<u32>,
    /// PEM CA certificates to trust for an https:// target besides the
    /// public roots (a private CA, or the server's self-signed certificate).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// API token for a logpipe with [[auth.tokens]] (sent as Authorization: Bearer).
    #[arg(
        long,
        env = "LOGPIPE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<String>,
}

pub(crate) fn parse_incident(text: &str) -> Result<logpipe_config::IncidentConfig, String> {
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
pub(crate) enum FormatArg {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
pub(crate) struct SqlArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: FormatArg,
    /// Print at most this many rows.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) max_rows: usize,
    /// The statement, e.g. "SELECT level, count(*) FROM logs GROUP BY level".
    pub(crate) sql: String,
}
