//! `[cdc]`: change data capture. `[[cdc.sources]]` read a MariaDB/MySQL
//! binlog into bus topics as Debezium's change events; `[[cdc.sinks]]`
//! apply change events (logpipe's or Debezium's) to a database, exactly
//! once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// `[cdc]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcConfig {
    /// Each one captures tables of one MariaDB/MySQL server: a snapshot,
    /// then the binlog, into `<topic_prefix>.<db>.<table>`.
    pub sources: Vec<CdcSourceConfig>,
    /// Each one reads its topics and keeps a target database equal to the
    /// source tables. `logpipe cdc` runs them; `logpipe up` too when any
    /// is configured.
    pub sinks: Vec<CdcSinkConfig>,
}

/// How a source without a position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Copy the tables, then follow the binlog from the copy's position.
    Initial,
    /// Follow the binlog from its end: rows already there are not sent.
    Never,
}

/// What a source does when its position was purged from the binlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgedPolicy {
    /// Stop, saying what was lost and what to set.
    Fail,
    /// Copy the tables again and follow the binlog from the new copy.
    Snapshot,
}

/// One `[[cdc.sources]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcSourceConfig {
    /// Names the source in logs and metrics.
    pub name: String,
    /// The server, `mysql://USER@HOST:PORT` (`mariadb://` too). The user
    /// needs SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT and
    /// BINLOG MONITOR (docs/cdc.md).
    pub url: String,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// A file holding the password; one trailing newline is ignored.
    pub password_file: Option<PathBuf>,
    /// The replica id this source registers with: unique among the
    /// server's replicas and other CDC readers.
    pub server_id: u32,
    /// `db.table` of each captured table.
    pub tables: Vec<String>,
    /// Topics are `<topic_prefix>.<db>.<table>` (Debezium's names).
    /// Default: the source's name.
    pub topic_prefix: String,
    /// Partitions of the topics the source makes (keys keep their order
    /// within one).
    pub partitions: u32,
    /// How long the topics keep change events.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// `initial`: copy the tables first, then follow the binlog from the
    /// snapshot's position; `never`: follow the binlog from its end.
    pub snapshot: SnapshotMode,
    /// When the position to resume from was purged from the binlog:
    /// `fail` (say so and stop) or `snapshot` (copy the tables again).
    pub purged: PurgedPolicy,
    /// Most changes appended to the bus at once.
    pub batch: usize,
    /// How long changes wait for more before they are appended.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
}

impl Default for CdcSourceConfig {
    fn default() -> Self {
        CdcSourceConfig {
            name: String::new(),
            url: String::new(),
            password_env: None,
            password_file: None,
            server_id: 5400,
            tables: Vec::new(),
            topic_prefix: String::new(),
            partitions: 3,
            retention: Duration::from_secs(7 * 24 * 3600),
            snapshot: SnapshotMode::Initial,
            purged: PurgedPolicy::Fail,
            batch: 2_000,
            linger: Duration::from_millis(100),
        }
    }
}

impl CdcSourceConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        if !identifier(name) {
            return invalid(
                "cdc.sources.name",
                format!("{name:?} must be letters, digits, '_', '-' or '.'"),
            );
        }
        if !self.url.starts_with("mysql://") && !self.url.starts_with("mariadb://") {
            return invalid(
                "cdc.sources.url",
                format!(
                    "of source \"{name}\": {:?} must start with mysql:// or mariadb://",
                    self.url
                ),
            );
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return invalid(
                "cdc.sources.password_file",
                format!("of source \"{name}\": give password_env or password_file, not both"),
            );
        }
        if self.server_id == 0 {
            return invalid(
                "cdc.sources.server_id",
                format!("of source \"{name}\" must not be 0 (a replica needs an id of its own)"),
            );
        }
        if self.tables.is_empty() {
            return invalid(
                "cdc.sources.tables",
                format!("of source \"{name}\" is empty: name the `db.table`s to capture"),
            );
        }
        if let Some(bad) = self
            .tables
            .iter()
            .find(|t| t.split('.').count() != 2 || t.split('.').any(str::is_empty))
        {
            return invalid(
                "cdc.sources.tables",
                format!("of source \"{name}\": {bad:?} must be `db.table`"),
            );
        }
        if self.partitions == 0 || self.batch == 0 {
            return invalid(
                "cdc.sources.partitions",
                format!("of source \"{name}\": partitions and batch must be at least 1"),
            );
        }
        Ok(())
    }

    /// `topic_prefix`, else the name.
    pub fn prefix(&self) -> &str {
        if self.topic_prefix.is_empty() {
            &self.name
        } else {
            &self.topic_prefix
        }
    }

    /// The topic of `db.table`.
    pub fn topic(&self, table: &str) -> String {
        format!("{}.{table}", self.prefix())
    }

    /// Every topic the source writes.
    pub fn topics(&self) -> Vec<String> {
        self.tables.iter().map(|t| self.topic(t)).collect()
    }
}

fn identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// One `[[cdc.sinks]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcSinkConfig {
    /// Names the sink: its consumer group (`logpipe-cdc-<name>`), its rows
    /// in the target's `logpipe_cdc_positions`, its metrics' label.
    pub name: String,
    /// The target database, `postgres://USER@HOST:PORT/DATABASE` or
    /// `mysql://USER@HOST:PORT/DATABASE` (MariaDB/MySQL). Leave the
    /// password out of it: `password_env` or `password_file`.
    pub url: String,
    /// An environment variable holding the target's password.
    pub password_env: Option<String>,
    /// A file holding the target's password (a Kubernetes secret mount);
    /// one trailing newline is ignored.
    pub password_file: Option<PathBuf>,
    /// Topics of change events, e.g. Debezium's `<prefix>.<db>.<table>`.
    pub topics: Vec<String>,
    /// The target schema of tables named without one (PostgreSQL; on
    /// MariaDB the URL's database unless this names another).
    pub schema: String,
    /// Most change events applied in one target transaction.
    pub batch: usize,
    /// How long a sink waits for more events before applying a partial
    /// batch.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Where each topic goes when not to a table named after its last
    /// dot-separated part.
    pub tables: Vec<CdcTableConfig>,
}

impl Default for CdcSinkConfig {
    fn default() -> Self {
        CdcSinkConfig {
            name: String::new(),
            url: String::new(),
            password_env: None,
            password_file: None,
            topics: Vec::new(),
            schema: "public".to_string(),
            batch: 5_000,
            linger: Duration::from_millis(200),
            tables: Vec::new(),
        }
    }
}

/// One `[[cdc.sinks.tables]]`: a topic's target table and column names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcTableConfig {
    /// One of the sink's topics.
    pub topic: String,
    /// `table` or `schema.table` in the target.
    pub table: String,
    /// Source column → target column, for the columns named differently.
    pub columns: BTreeMap<String, String>,
    /// Source columns not copied (a secret, a blob the target has no use for).
    pub exclude: Vec<String>,
    /// The scoring hook: each upserted row POSTed to a model service,
    /// its answer stored in a column (`score = { url = "http://…" }`).
    pub score: Option<CdcScoreConfig>,
}

/// `score = { … }` of a `[[cdc.sinks.tables]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcScoreConfig {
    /// Where each row goes, as a JSON object (`POST`).
    pub url: String,
    /// The target column of the answer: a JSON number, or an object with
    /// a number under this name.
    pub column: String,
    /// Per request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after the first, with backoff.
    pub retries: u32,
    /// Requests at once: the hook's bounded queue.
    pub concurrency: usize,
    /// When the scorer keeps failing: `wait` (the batch waits and is tried
    /// again; no row without its score) or `null` (the row is written
    /// without one; no change is held up).
    pub on_failure: ScoreOnFailure,
}

/// What the scoring hook does with a row its scorer keeps failing on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreOnFailure {
    /// The batch waits and is tried again: no row without its score, the
    /// sink stalls while the scorer is down.
    Wait,
    /// The row is written without a score (`NULL`): no change is held up.
    Null,
}

impl Default for CdcScoreConfig {
    fn default() -> Self {
        CdcScoreConfig {
            url: String::new(),
            column: "score".to_string(),
            timeout: Duration::from_secs(2),
            retries: 2,
            concurrency: 8,
            on_failure: ScoreOnFailure::Wait,
        }
    }
}

impl CdcConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for source in &self.sources {
            source.validate()?;
            if !names.insert(source.name.as_str()) {
                return invalid(
                    "cdc.sources",
                    format!(
                        "names \"{}\" twice: each source needs its own name",
                        source.name
                    ),
                );
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for sink in &self.sinks {
            sink.validate()?;
            if !names.insert(sink.name.as_str()) {
                return invalid(
                    "cdc.sinks",
                    format!(
                        "names \"{}\" twice: each sink needs its own name",
                        sink.name
                    ),
                );
            }
        }
        Ok(())
    }
}

impl CdcSinkConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        if !identifier(name) {
            return invalid(
                "cdc.sinks.name",
                format!(
                    "{name:?} must be letters, digits, '_', '-' or '.' (it names a consumer group)"
                ),
            );
        }
        let schemes = ["postgres://", "postgresql://", "mysql://", "mariadb://"];
        if !schemes.iter().any(|s| self.url.starts_with(s)) {
            return invalid(
                "cdc.sinks.url",
                format!(
                    "of sink \"{name}\": {:?} must start with postgres:// or mysql:// (MariaDB)",
                    self.url
                ),
            );
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return invalid(
                "cdc.sinks.password_file",
                format!("of sink \"{name}\": give password_env or password_file, not both"),
            );
        }
        if self.topics.is_empty() {
            return invalid(
                "cdc.sinks.topics",
                format!("of sink \"{name}\" is empty: name the topics of change events to apply"),
            );
        }
        if self.batch == 0 {
            return invalid(
                "cdc.sinks.batch",
                format!("of sink \"{name}\" must be at least 1"),
            );
        }
        if self.schema.is_empty() {
            return invalid("cdc.sinks.schema", format!("of sink \"{name}\" is empty"));
        }
        for table in &self.tables {
            if !self.topics.contains(&table.topic) {
                return invalid(
                    "cdc.sinks.tables.topic",
                    format!(
                        "of sink \"{name}\": {:?} is not one of its topics ({})",
                        table.topic,
                        self.topics.join(", ")
                    ),
                );
            }
            if let Some(score) = &table.score {
                if !score.url.starts_with("http://") && !score.url.starts_with("https://") {
                    return invalid(
                        "cdc.sinks.tables.score.url",
                        format!(
                            "of topic {:?}: {:?} must be an http:// or https:// URL",
                            table.topic, score.url
                        ),
                    );
                }
                if score.column.is_empty() || score.concurrency == 0 {
                    return invalid(
                        "cdc.sinks.tables.score",
                        format!(
                            "of topic {:?}: column must be named and concurrency at least 1",
                            table.topic
                        ),
                    );
                }
            }
            if table.table.is_empty() || table.table.split('.').count() > 2 {
                return invalid(
                    "cdc.sinks.tables.table",
                    format!(
                        "of topic {:?}: {:?} must be `table` or `schema.table`",
                        table.topic, table.table
                    ),
                );
            }
        }
        Ok(())
    }

    /// The mapping of `topic`, if any.
    pub fn table_of(&self, topic: &str) -> Option<&CdcTableConfig> {
        self.tables.iter().find(|t| t.topic == topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_source_is_refused_naming_the_setting() {
        let source = || CdcSourceConfig {
            name: "car".into(),
            url: "mysql://cdc@127.0.0.1:3306".into(),
            tables: vec!["car.uservehicle".into()],
            ..CdcSourceConfig::default()
        };
        let refusal = |edit: &dyn Fn(&mut CdcSourceConfig)| {
            let mut s = source();
            edit(&mut s);
            CdcConfig {
                sources: vec![s],
                ..CdcConfig::default()
            }
            .validate()
            .unwrap_err()
            .to_string()
        };
        assert!(
            CdcConfig {
                sources: vec![source()],
                ..CdcConfig::default()
            }
            .validate()
            .is_ok()
        );
        assert_eq!(source().topics(), ["car.car.uservehicle"]);
        assert!(refusal(&|s| s.url = "postgres://x".into()).contains("mysql://"));
        assert!(refusal(&|s| s.tables = vec!["uservehicle".into()]).contains("must be `db.table`"));
        assert!(refusal(&|s| s.server_id = 0).contains("server_id"));
    }

    fn sink() -> CdcSinkConfig {
        CdcSinkConfig {
            name: "inventory".into(),
            url: "postgres://logpipe@127.0.0.1/inventory".into(),
            topics: vec!["car.car.uservehicle".into()],
            ..CdcSinkConfig::default()
        }
    }

    fn refusal(edit: impl FnOnce(&mut CdcSinkConfig)) -> String {
        let mut sink = sink();
        edit(&mut sink);
        CdcConfig {
            sinks: vec![sink],
            ..CdcConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn a_wrong_sink_is_refused_naming_the_setting() {
        assert!(
            CdcConfig {
                sinks: vec![sink()],
                ..CdcConfig::default()
            }
            .validate()
            .is_ok()
        );
        assert!(refusal(|s| s.name = "a b".into()).contains("cdc.sinks.name"));
        assert!(refusal(|s| s.url = "http://x".into()).contains("must start with postgres://"));
        assert!(refusal(|s| s.topics.clear()).contains("cdc.sinks.topics"));
        assert!(refusal(|s| s.batch = 0).contains("cdc.sinks.batch"));
        let both = refusal(|s| {
            s.password_env = Some("P".into());
            s.password_file = Some("/p".into());
        });
        assert!(both.contains("not both"), "{both}");
        let unknown = refusal(|s| {
            s.tables.push(CdcTableConfig {
                topic: "other".into(),
                table: "t".into(),
                ..CdcTableConfig::default()
            })
        });
        assert!(
            unknown.contains("\"other\" is not one of its topics"),
            "{unknown}"
        );
        let twice = CdcConfig {
            sinks: vec![sink(), sink()],
            ..CdcConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(twice.contains("names \"inventory\" twice"), "{twice}");
    }

    #[test]
    fn a_wrong_scoring_hook_is_refused_naming_the_setting() {
        let scored = |score: CdcScoreConfig| {
            let mut s = sink();
            s.tables.push(CdcTableConfig {
                topic: s.topics[0].clone(),
                table: "scored".into(),
                score: Some(score),
                ..CdcTableConfig::default()
            });
            CdcConfig {
                sinks: vec![s],
                ..CdcConfig::default()
            }
            .validate()
        };
        let good = CdcScoreConfig {
            url: "http://model:8000/predict".into(),
            ..CdcScoreConfig::default()
        };
        assert!(scored(good.clone()).is_ok());
        let url = scored(CdcScoreConfig {
            url: "model:8000".into(),
            ..good.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(url.contains("cdc.sinks.tables.score.url"), "{url}");
        let none = scored(CdcScoreConfig {
            concurrency: 0,
            ..good
        })
        .unwrap_err()
        .to_string();
        assert!(none.contains("concurrency at least 1"), "{none}");
        // A misspelt policy names the choices.
        use figment::providers::Format;
        let policy = figment::Figment::from(figment::providers::Toml::string(
            "topic = \"t\"\ntable = \"t\"\nscore = { url = \"http://m\", on_failure = \"skip\" }",
        ))
        .extract::<CdcTableConfig>()
        .unwrap_err()
        .to_string();
        assert!(
            policy.contains("wait") && policy.contains("null"),
            "{policy}"
        );
    }
}
