//! `[postgres]`: the PostgreSQL sink of windows, reports and job runs.

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// `[postgres]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// e.g. postgres://logpipe@127.0.0.1:5432/logpipe (a password is better
    /// given as LOGPIPE__POSTGRES__URL than in a file). Empty: windows and
    /// reports stay in the lake only.
    pub url: String,
}

impl PostgresConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.url;
        if !url.is_empty() && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return invalid(
                "postgres.url",
                "must start with postgres:// or postgresql://",
            );
        }
        Ok(())
    }
}
