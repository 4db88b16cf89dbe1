//! `[auth]`: API tokens with scopes.
//!
//! Off (no tokens) by default, which is safe only on loopback: a process
//! with no tokens refuses to listen on any other address unless
//! `allow_unauthenticated` says that is intended (e.g. behind a proxy that
//! authenticates). A token is never stored in the file: give its SHA-256
//! (`logpipe token` prints a new token and its hash), or a file or an
//! environment variable holding it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send records: `/api/collect/*`, `/v1/logs`.
    Ingest,
    /// Read: SQL, alerts, stats, the console's views, `/metrics` when not open.
    Query,
    /// Act: run reports, tail topics.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Admin => "admin",
        }
    }
}

/// `[[auth.tokens]]`: one token; exactly one of `sha256`, `token_file`,
/// `token_env` says what it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (logs name it, never the token).
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A file whose content (trimmed) is the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    /// `/metrics` without a token (Prometheus scrapes it); `false` asks
    /// for the `query` scope.
    pub open_metrics: bool,
    /// Listen on a non-loopback address without tokens.
    pub allow_unauthenticated: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens: Vec::new(),
            open_metrics: true,
            allow_unauthenticated: false,
        }
    }
}

impl AuthConfig {
    /// Whether requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (n, token) in self.tokens.iter().enumerate() {
            let wrong =
                |what: &str| invalid("auth.tokens", format!("[{n}] ({:?}): {what}", token.name));
            if token.name.trim().is_empty() {
                return wrong("name is empty: name who holds the token");
            }
            if token.scopes.is_empty() {
                return wrong("scopes is empty: give ingest, query and/or admin");
            }
            let given = [
                token.sha256.is_some(),
                token.token_file.is_some(),
                token.token_env.is_some(),
            ]
            .iter()
            .filter(|g| **g)
            .count();
            if given != 1 {
                return wrong(
                    "needs exactly one of sha256, token_file or token_env (`logpipe token` prints a token and its sha256)",
                );
            }
            if let Some(hash) = &token.sha256
                && (hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return wrong("sha256 must be 64 hex digits (a SHA-256 of the token)");
            }
        }
        Ok(())
    }
}
