//! `[tls]`: HTTPS on every HTTP listener, and what the clients trust.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// `[tls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (the server's first). With `key_file`, every
    /// HTTP listener of the process (collector, query API, console,
    /// `/metrics`) speaks HTTPS only.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// How often the two files are checked for a change; a changed pair is
    /// loaded for new connections. SIGHUP loads them at once.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// PEM CA certificates the process's HTTPS clients (the built-in
    /// generator, the alert webhook) trust besides the public roots: the
    /// CA of a private certificate, or a self-signed certificate itself.
    pub ca_file: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            reload_interval: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

impl TlsConfig {
    /// The certificate and key files, when HTTPS is on.
    pub fn files(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.cert_file.as_ref().zip(self.key_file.as_ref())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => invalid(
                "tls.key_file",
                "is not set but tls.cert_file is: give both, or neither",
            ),
            (None, Some(_)) => invalid(
                "tls.cert_file",
                "is not set but tls.key_file is: give both, or neither",
            ),
            _ if self.reload_interval.is_zero() => {
                invalid("tls.reload_interval", "must be more than 0s")
            }
            _ => Ok(()),
        }
    }
}
