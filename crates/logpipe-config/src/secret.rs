//! Secrets that never need to be in the configuration file: read from an
//! environment variable or a file (a Kubernetes secret mounted as a file,
//! a Docker secret) when the process starts using them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where one secret is: `{ env = "VAR" }` or `{ file = "/run/secrets/x" }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl SecretRef {
    /// The secret; `Err` says which variable or file is missing.
    pub fn read(&self) -> Result<String, String> {
        read_secret(self.env.as_deref(), self.file.as_deref())?
            .ok_or_else(|| "names neither env nor file".to_string())
    }

    /// Exactly one of `env` and `file`.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => Err("give env or file, not both"),
            (None, None) => Err("needs env = \"VARIABLE\" or file = \"/path\""),
            _ => Ok(()),
        }
    }
}

/// A secret from the environment variable `env` or the file `file` (one
/// trailing newline ignored, as `echo` writes it); `None` when neither is
/// given, `Err` naming the variable that is not set or the file that
/// cannot be read.
pub fn read_secret(env: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(var) = env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| format!("the environment variable {var} is not set"));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        return Ok(Some(text.strip_suffix('\r').unwrap_or(text).to_string()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_its_file_without_the_trailing_newline_or_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let from_file = SecretRef {
            file: Some(path),
            env: None,
        };
        assert_eq!(from_file.read().unwrap(), "s3cret");
        let missing = SecretRef {
            env: Some("LOGPIPE_TEST_NO_SUCH_VARIABLE".into()),
            file: None,
        };
        assert!(
            missing
                .read()
                .unwrap_err()
                .contains("LOGPIPE_TEST_NO_SUCH_VARIABLE is not set")
        );
        assert!(SecretRef::default().check().is_err());
        let both = SecretRef {
            env: Some("A".into()),
            file: Some("/a".into()),
        };
        assert!(both.check().is_err());
    }
}
