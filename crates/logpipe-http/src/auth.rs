//! API tokens with scopes (`[auth]`): `Authorization: Bearer <token>` on
//! every request of a protected route; 401 without a valid token, 403 with
//! a token that lacks the route's scope. The process keeps only each
//! token's SHA-256 and compares hashes in constant time.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use logpipe_config::{AuthConfig, Scope};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The tokens a process accepts.
pub struct Auth {
    tokens: Vec<Token>,
}

struct Token {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = Sha256::digest(bytes);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&digest);
    hash
}

/// Hex SHA-256 of `token`, as `[[auth.tokens]] sha256` wants it.
pub fn hash_hex(token: &str) -> String {
    sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random token (32 bytes from the kernel, hex).
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal without an early exit, so the time taken says nothing about
/// where two hashes differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// The tokens of `config`, reading `token_file`s and `token_env`s now;
    /// `None` when `[auth]` has no tokens (auth is off).
    pub fn from_config(config: &AuthConfig) -> Result<Option<Auth>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let mut tokens = Vec::new();
        for token in &config.tokens {
            let hash = if let Some(hex) = &token.sha256 {
                let mut hash = [0u8; 32];
                for (i, byte) in hash.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                        .map_err(|_| format!("auth token {:?}: sha256 is not hex", token.name))?;
                }
                hash
            } else if let Some(path) = &token.token_file {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "auth token {:?}: cannot read token_file {}: {e}",
                        token.name,
                        path.display()
                    )
                })?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(format!(
                        "auth token {:?}: token_file {} is empty",
                        token.name,
                        path.display()
                    ));
                }
                sha256(text.as_bytes())
            } else if let Some(var) = &token.token_env {
                let text = std::env::var(var).map_err(|_| {
                    format!(
                        "auth token {:?}: the environment variable {var} (token_env) is not set",
                        token.name
                    )
                })?;
                sha256(text.trim().as_bytes())
            } else {
                return Err(format!("auth token {:?} has no value", token.name));
            };
            tokens.push(Token {
                name: token.name.clone(),
                hash,
                scopes: token.scopes.clone(),
            });
        }
        Ok(Some(Auth { tokens }))
    }

    /// Adds a token only this process knows (its built-in generator's)
    /// and returns it.
    pub fn add_internal(&mut self, name: &str, scopes: &[Scope]) -> std::io::Result<String> {
        let token = new_token()?;
        self.tokens.push(Token {
            name: name.to_string(),
            hash: sha256(token.as_bytes()),
            scopes: scopes.to_vec(),
        });
        Ok(token)
    }

    /// The holder's name when `authorization` carries a token with
    /// `scope`; otherwise the answer to give.
    fn check(
        &self,
        authorization: Option<&HeaderValue>,
        scope: Scope,
    ) -> Result<&str, (StatusCode, String)> {
        let presented = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(presented) = presented else {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!(
                    "this endpoint needs a token with scope {}: send Authorization: Bearer <token>",
                    scope.as_str()
                ),
            ));
        };
        let hash = sha256(presented.as_bytes());
        let mut found: Option<&Token> = None;
        for token in &self.tokens {
            if same(&token.hash, &hash) && found.is_none() {
                found = Some(token);
            }
        }
        match found {
            None => Err((
                StatusCode::UNAUTHORIZED,
                "the token is not one of [auth.tokens]".to_string(),
            )),
            Some(token) if !token.scopes.contains(&scope) => Err((
                StatusCode::FORBIDDEN,
                format!(
                    "token {:?} lacks scope {} for this endpoint (it has: {})",
                    token.name,
                    scope.as_str(),
                    token
                        .scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            Some(token) => Ok(&token.name),
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"logpipe\""),
        );
    }
    response
}

/// `router` with every route asking for a token with `scope`; unchanged
/// when auth is off.
pub fn require(router: Router, auth: Option<&Arc<Auth>>, scope: Scope) -> Router {
    let Some(auth) = auth.cloned() else {
        return router;
    };
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let auth = auth.clone();
        async move {
            match auth.check(request.headers().get(header::AUTHORIZATION), scope) {
                Ok(_) => next.run(request).await,
                Err((status, message)) => refuse(status, message),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logpipe_config::TokenConfig;

    fn auth() -> Auth {
        let config = AuthConfig {
            tokens: vec![
                TokenConfig {
                    name: "shipper".into(),
                    scopes: vec![Scope::Ingest],
                    sha256: Some(hash_hex("s3cret-ingest")),
                    token_file: None,
                    token_env: None,
                },
                TokenConfig {
                    name: "analyst".into(),
                    scopes: vec![Scope::Query, Scope::Admin],
                    sha256: Some(hash_hex("s3cret-query")),
                    token_file: None,
                    token_env: None,
                },
            ],
            ..AuthConfig::default()
        };
        Auth::from_config(&config).unwrap().unwrap()
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[test]
    fn tokens_are_checked_by_hash_and_scope() {
        let auth = auth();
        assert_eq!(
            auth.check(Some(&bearer("s3cret-ingest")), Scope::Ingest)
                .ok(),
            Some("shipper")
        );
        let forbidden = auth
            .check(Some(&bearer("s3cret-ingest")), Scope::Query)
            .unwrap_err();
        assert_eq!(forbidden.0, StatusCode::FORBIDDEN);
        let unknown = auth
            .check(Some(&bearer("guess")), Scope::Ingest)
            .unwrap_err();
        assert_eq!(unknown.0, StatusCode::UNAUTHORIZED);
        let missing = auth.check(None, Scope::Query).unwrap_err();
        assert_eq!(missing.0, StatusCode::UNAUTHORIZED);
        let answer = refuse(missing.0, missing.1);
        assert!(answer.headers().contains_key(header::WWW_AUTHENTICATE));
        assert!(
            auth.check(Some(&bearer("s3cret-query")), Scope::Admin)
                .is_ok()
        );
    }

    #[test]
    fn tokens_from_files_and_the_environment_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let config = |file: Option<std::path::PathBuf>, env: Option<&str>| AuthConfig {
            tokens: vec![TokenConfig {
                name: "t".into(),
                scopes: vec![Scope::Query],
                sha256: None,
                token_file: file,
                token_env: env.map(str::to_string),
            }],
            ..AuthConfig::default()
        };
        let auth = Auth::from_config(&config(Some(file), None))
            .unwrap()
            .unwrap();
        assert!(auth.check(Some(&bearer("from-file")), Scope::Query).is_ok());
        let missing = Auth::from_config(&config(Some(dir.path().join("nope")), None))
            .err()
            .unwrap();
        assert!(missing.contains("cannot read token_file"), "{missing}");
        let unset = Auth::from_config(&config(None, Some("LOGPIPE_TEST_UNSET_TOKEN_VAR")))
            .err()
            .unwrap();
        assert!(unset.contains("LOGPIPE_TEST_UNSET_TOKEN_VAR"), "{unset}");
        assert_eq!(new_token().unwrap().len(), 64);
    }
}
