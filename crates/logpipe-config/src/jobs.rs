//! `[jobs]`: where users' batch jobs (SQL files) are.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// `[jobs]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// A directory of batch jobs, one `.sql` file each (docs/jobs.md).
    /// Read at start; relative to the working directory. Unset: only the
    /// built-in reports.
    pub dir: Option<PathBuf>,
}

impl JobsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                invalid("jobs.dir", "is empty; leave it out for no jobs directory")
            }
            _ => Ok(()),
        }
    }
}
