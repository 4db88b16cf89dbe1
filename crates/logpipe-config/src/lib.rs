//! logpipe configuration as data.
//!
//! Layers, later wins: built-in defaults (the `Default` impls, which are what
//! `logpipe up` runs with no file at all) → `logpipe.toml` (or the file
//! given with `--config`) → environment variables `LOGPIPE__SECTION__KEY`
//! (e.g. `LOGPIPE__BUS__EMBEDDED__FSYNC=interval`) → command-line flags.
//! Every struct denies unknown keys, so a typo fails at start with a message
//! naming the key and where it came from.
//!
//! One file per section, each with its own `validate()` (cron expressions
//! included); [`Config::validate`] calls them all. [`Config::resolve`] then
//! makes the choices that follow from several settings at once (the
//! directories under `data_dir`, the summary header, the raw job's group),
//! so no other crate decides them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod alerts;
mod auth;
mod bus;
mod cdc;
mod collector;
mod error;
mod generator;
mod jobs;
mod lake;
mod postgres;
mod query;
mod reports;
mod resolve;
mod secret;
mod tls;
mod topics;
mod windows;

pub use alerts::{AlertsConfig, ErrorRateAlertConfig, LatencyAlertConfig, SilenceAlertConfig};
pub use auth::{AuthConfig, Scope, TokenConfig};
pub use bus::{BusConfig, BusKind, EmbeddedBusConfig, FsyncPolicy, KafkaBusConfig, RecordEncoding};
pub use cdc::{
    CdcConfig, CdcScoreConfig, CdcSinkConfig, CdcSourceConfig, CdcTableConfig, PurgedPolicy,
    ScoreOnFailure, SnapshotMode,
};
pub use collector::CollectorConfig;
pub use error::ConfigError;
use error::invalid;
pub use generator::{GeneratorConfig, IncidentConfig, IncidentKind};
pub use jobs::JobsConfig;
pub use lake::{
    CompactionConfig, Compression, DataLossPolicy, DeltaConfig, LakeConfig, RetentionConfig,
    S3Config,
};
pub use postgres::{HotStoreConfig, PostgresConfig};
pub use query::{QueryConfig, QueryPriority};
pub use reports::ReportsConfig;
pub use resolve::{EMBEDDED_RAW_GROUP, Resolved, WINDOWS_GROUP};
pub use secret::{SecretRef, read_secret};
pub use tls::TlsConfig;
pub use topics::{TopicConfig, TopicsConfig};
pub use windows::WindowsConfig;

/// The default file looked for in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "logpipe.toml";
/// Environment variable prefix; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "LOGPIPE__";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the bus and the lake live unless `bus.embedded.dir` or
    /// `lake.root` put them elsewhere.
    pub data_dir: PathBuf,
    /// Address of the HTTP server: collector, query API, `/health`, `/metrics`.
    pub listen: String,
    pub collector: CollectorConfig,
    pub bus: BusConfig,
    pub topics: TopicsConfig,
    pub lake: LakeConfig,
    pub windows: WindowsConfig,
    pub alerts: AlertsConfig,
    pub postgres: PostgresConfig,
    pub reports: ReportsConfig,
    pub jobs: JobsConfig,
    pub generator: GeneratorConfig,
    pub auth: AuthConfig,
    pub query: QueryConfig,
    pub tls: TlsConfig,
    pub cdc: CdcConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            listen: "127.0.0.1:8081".to_string(),
            collector: CollectorConfig::default(),
            bus: BusConfig::default(),
            topics: TopicsConfig::default(),
            lake: LakeConfig::default(),
            windows: WindowsConfig::default(),
            alerts: AlertsConfig::default(),
            postgres: PostgresConfig::default(),
            reports: ReportsConfig::default(),
            jobs: JobsConfig::default(),
            generator: GeneratorConfig::default(),
            auth: AuthConfig::default(),
            query: QueryConfig::default(),
            tls: TlsConfig::default(),
            cdc: CdcConfig::default(),
        }
    }
}

impl Config {
    /// Loads defaults → file → environment (`LOGPIPE__…`). `file` given
    /// explicitly must exist; otherwise `logpipe.toml` is read when present.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        // Defaults as a layer (not only `serde(default)`), so that a file
        // setting one key of `[topics.logs]` keeps the others' defaults.
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::MissingFile {
                        path: path.to_path_buf(),
                    });
                }
                figment = figment.merge(Toml::file(path));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_FILE).exists() {
                    figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE));
                }
            }
        }
        // `LOGPIPE__BUS__EMBEDDED__FSYNC=interval` → `bus.embedded.fsync`.
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        let config: Config = figment
            .extract()
            .map_err(|error| ConfigError::Parse(describe_figment_error(error)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that types cannot: each section its own, then
    /// what spans sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return invalid(
                "listen",
                format!("{:?} is not HOST:PORT (e.g. 127.0.0.1:8081)", self.listen),
            );
        }
        self.collector.validate()?;
        self.bus.validate()?;
        self.topics.validate()?;
        self.lake.validate()?;
        self.windows.validate()?;
        self.alerts.validate()?;
        self.postgres.validate()?;
        self.reports.validate()?;
        self.generator.validate()?;
        self.auth.validate()?;
        self.query.validate()?;
        self.jobs.validate()?;
        self.tls.validate()?;
        self.cdc.validate()?;
        Ok(())
    }
}

/// figment's message names the key path and the source; keep it, and make
/// "unknown field" point at the section.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(source) => format!(" (from {source})"),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            if path.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("`{path}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
// figment's Jail closures return figment::Error by its API.
#[allow(clippy::result_large_err)]
mod tests {
    use std::time::Duration;

    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_need_no_file_and_match_the_seed() {
        Jail::expect_with(|_jail| {
            let config = Config::load(None).unwrap();
            assert_eq!(config.topics.logs.partitions, 3);
            assert_eq!(config.topics.alerts.partitions, 1);
            assert_eq!(config.generator.batch_size, 100);
            assert_eq!(config.generator.log_interval, Duration::from_secs(5));
            assert_eq!(config.listen, "127.0.0.1:8081");
            Ok(())
        });
    }

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let example = include_str!("../../../logpipe.example.toml");
        Jail::expect_with(|jail| {
            jail.create_file("example.toml", example)?;
            let from_file = Config::load(Some(Path::new("example.toml"))).unwrap();
            let defaults = Config::default();
            assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
            Ok(())
        });
    }

    #[test]
    fn auth_tokens_and_query_limits_are_checked_naming_what_is_wrong() {
        let mut config = Config::default();
        config.auth.tokens.push(TokenConfig {
            name: "shipper".into(),
            scopes: vec![Scope::Ingest],
            sha256: Some("abc".into()),
            token_file: None,
            token_env: None,
        });
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("auth.tokens") && error.contains("64 hex digits"),
            "{error}"
        );
        config.auth.tokens[0].sha256 = None;
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("exactly one of sha256, token_file or token_env"),
            "{error}"
        );
        config.auth.tokens[0].token_env = Some("SHIPPER_TOKEN".into());
        config.auth.tokens[0].scopes.clear();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("scopes is empty"), "{error}");
        config.auth.tokens[0].scopes.push(Scope::Query);
        assert!(config.validate().is_ok());
        assert!(config.auth.enabled());
        config.query.timeout = std::time::Duration::ZERO;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("query.timeout"), "{error}");
        config.query.timeout = std::time::Duration::from_secs(1);
        for share in [-0.1, 1.5, f64::NAN] {
            config.query.max_share_under_load = share;
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.contains("query.max_share_under_load"),
                "{share}: {error}"
            );
        }
        config.query.max_share_under_load = 0.0;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn file_then_env_override_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "logpipe.toml",
                "data_dir = \"/tmp/x\"\n[bus.embedded]\nfsync = \"interval\"\n[lake]\nflush_interval = \"250ms\"\n",
            )?;
            jail.set_env("LOGPIPE__BUS__EMBEDDED__FSYNC", "always");
            jail.set_env("LOGPIPE__TOPICS__LOGS__PARTITIONS", "6");
            jail.set_env("OTHER", "ignored");
            let config = Config::load(None).unwrap();
            assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(config.bus.embedded.fsync, FsyncPolicy::Always);
            assert_eq!(config.lake.flush_interval, Duration::from_millis(250));
            assert_eq!(config.topics.logs.partitions, 6);
            Ok(())
        });
    }

    fn load_error(setup: impl FnOnce(&mut Jail)) -> String {
        let mut message = String::new();
        Jail::expect_with(|jail| {
            setup(jail);
            message = Config::load(Some(Path::new("given.toml")))
                .unwrap_err()
                .to_string();
            Ok(())
        });
        message
    }

    #[test]
    fn unknown_or_invalid_keys_fail_naming_the_key() {
        let error = load_error(|jail| {
            jail.create_file("given.toml", "[lake]\nflush_intervall = \"1s\"\n")
                .unwrap();
        });
        assert!(
            error.contains("flush_intervall") && error.contains("given.toml"),
            "{error}"
        );

        let error = load_error(|jail| {
            jail.create_file("given.toml", "").unwrap();
            jail.set_env("LOGPIPE__BUS__FSYNK", "never");
        });
        assert!(error.contains("fsynk"), "{error}");

        let error = load_error(|jail| {
            jail.create_file("given.toml", "[bus.embedded]\nfsync = \"sometimes\"\n")
                .unwrap();
        });
        assert!(
            error.contains("sometimes") && error.contains("fsync"),
            "{error}"
        );

        let error = load_error(|jail| {
            jail.create_file("given.toml", "").unwrap();
            jail.set_env("LOGPIPE__TOPICS__LOGS__PARTITIONS", "0");
        });
        assert!(error.contains("topics.logs.partitions"), "{error}");

        let error = load_error(|jail| {
            jail.create_file("given.toml", "").unwrap();
            jail.set_env("LOGPIPE__COLLECTOR__MAX_FIELD_BYTES", "2000000000");
        });
        assert!(
            error.contains("collector.max_field_bytes") && error.contains("1 GiB"),
            "{error}"
        );

        let error = load_error(|jail| {
            jail.create_file("given.toml", "[bus.embedded]\nrecord_encoding = \"xml\"\n")
                .unwrap();
        });
        assert!(
            error.contains("xml") && error.contains("record_encoding"),
            "{error}"
        );

        let error = load_error(|jail| {
            jail.create_file("given.toml", "").unwrap();
            jail.set_env("LOGPIPE__LAKE__DEDUP_WINDOW", "5000000000");
        });
        assert!(error.contains("lake.dedup_window"), "{error}");

        // A Delta version could name files already deleted.
        let error = load_error(|jail| {
            jail.create_file(
                "given.toml",
                "[lake.delta]\nenabled = true\ninterval = \"4m\"\n",
            )
            .unwrap();
        });
        assert!(
            error.contains("lake.delta.interval") && error.contains("lake.retention.grace"),
            "{error}"
        );
        let error = load_error(|jail| {
            jail.create_file(
                "given.toml",
                "[lake.delta]\nenabled = true\ninterval = \"1m\"\n\
                 [lake.compaction]\nenabled = true\ngrace = \"90s\"\n",
            )
            .unwrap();
        });
        assert!(
            error.contains("lake.delta.interval") && error.contains("lake.compaction.grace"),
            "{error}"
        );

        let error = load_error(|jail| {
            jail.create_file("given.toml", "listen = \"nowhere\"")
                .unwrap();
        });
        assert!(error.contains("`listen`"), "{error}");

        let error = load_error(|jail| {
            jail.create_file("given.toml", "[reports]\ndaily_cron = \"every day\"\n")
                .unwrap();
        });
        assert!(error.contains("reports.daily_cron"), "{error}");

        let error = load_error(|jail| {
            jail.create_file(
                "given.toml",
                "[bus]\nkind = \"kafka\"\n[bus.kafka]\ntransaction_timeout = \"1s\"\n",
            )
            .unwrap();
        });
        assert!(
            error.contains("bus.kafka.transaction_timeout") && error.contains("delivery_timeout"),
            "{error}"
        );

        let error = load_error(|jail| {
            jail.create_file("given.toml", "").unwrap();
            jail.set_env("LOGPIPE__BUS__KIND", "kafka");
            jail.set_env("LOGPIPE__BUS__KAFKA__TRANSACTIONAL_ID_PREFIX", "team a");
        });
        assert!(
            error.contains("bus.kafka.transactional_id_prefix") && error.contains("team a"),
            "{error}"
        );

        let error = load_error(|_| {});
        assert!(error.contains("does not exist"), "{error}");
    }
}
