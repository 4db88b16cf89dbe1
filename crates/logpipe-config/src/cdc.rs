//! `[cdc]`: change data capture. `[[cdc.sinks]]` apply change events
//! (Debezium's JSON format) from bus topics to a database, exactly once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// `[cdc]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcConfig {
    /// Each one reads its topics and keeps a target database equal to the
    /// source tables. `logpipe cdc` runs them; `logpipe up` too when any
    /// is configured.
    pub sinks: Vec<CdcSinkConfig>,
}

/// One `[[cdc.sinks]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcSinkConfig {
    /// Names the sink: its consumer group (`logpipe-cdc-<name>`), its rows
    /// in the target's `logpipe_cdc_positions`, its metrics' label.
    pub name: String,
    /// The target database, `postgres://USER@HOST:PORT/DATABASE`. Leave
    /// the password out of it: `password_env` or `password_file`.
    pub url: String,
    /// An environment variable holding the target's password.
    pub password_env: Option<String>,
    /// A file holding the target's password (a Kubernetes secret mount);
    /// one trailing newline is ignored.
    pub password_file: Option<PathBuf>,
    /// Topics of change events, e.g. Debezium's `<prefix>.<db>.<table>`.
    pub topics: Vec<String>,
    /// The target schema of tables named without one.
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
}

impl CdcConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        let identifier = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !identifier(name) {
            return invalid(
                "cdc.sinks.name",
                format!(
                    "{name:?} must be letters, digits, '_', '-' or '.' (it names a consumer group)"
                ),
            );
        }
        if !self.url.starts_with("postgres://") && !self.url.starts_with("postgresql://") {
            let what = if self.url.starts_with("mysql://") || self.url.starts_with("mariadb://") {
                "MariaDB/MySQL targets are not built yet; PostgreSQL is".to_string()
            } else {
                format!("{:?} must start with postgres://", self.url)
            };
            return invalid("cdc.sinks.url", format!("of sink \"{name}\": {what}"));
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
        CdcConfig { sinks: vec![sink] }
            .validate()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_wrong_sink_is_refused_naming_the_setting() {
        assert!(
            CdcConfig {
                sinks: vec![sink()]
            }
            .validate()
            .is_ok()
        );
        assert!(refusal(|s| s.name = "a b".into()).contains("cdc.sinks.name"));
        assert!(
            refusal(|s| s.url = "mysql://x/y".into())
                .contains("MariaDB/MySQL targets are not built yet")
        );
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
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(twice.contains("names \"inventory\" twice"), "{twice}");
    }
}
