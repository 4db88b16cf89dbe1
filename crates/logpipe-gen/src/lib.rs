//! Synthetic data for logpipe (SPEC §1.2).
//!
//! - [`synthetic`] — seed-shaped log records and activity events.
//! - [`scheduled`] — the generator that `logpipe up` runs: a batch of logs
//!   every 5 s and of events every 10 s, retrying with backoff while the
//!   collector is down, never dropping a batch it has built.
//! - [`load`] — the load client behind `logpipe generate`: sends N records as
//!   fast as allowed, waits for every acknowledgement, reports.
//! - [`sample_router`] — `GET /sample/log`, `/sample/event`.
//! - [`metrics`] — `logpipe_generator_*`.

pub mod load;
pub mod metrics;
pub mod scheduled;
pub mod synthetic;

use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// `GET /sample/log` and `GET /sample/event`: one synthetic record each.
pub fn sample_router() -> Router {
    async fn sample(kind: logpipe_core::RecordKind) -> Response {
        let mut source = synthetic::SyntheticSource::new(synthetic::SyntheticOptions::default());
        let mut text = String::new();
        source.write_record(kind, &mut text);
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(value) => Json(value).into_response(),
            Err(error) => (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                error.to_string(),
            )
                .into_response(),
        }
    }
    Router::new()
        .route(
            logpipe_core::api::SAMPLE_LOG,
            get(|| sample(logpipe_core::RecordKind::Log)),
        )
        .route(
            logpipe_core::api::SAMPLE_EVENT,
            get(|| sample(logpipe_core::RecordKind::Event)),
        )
}

/// The collector endpoint for a record kind, under a base URL.
pub fn collect_url(base: &str, kind: logpipe_core::RecordKind) -> String {
    let base = base.trim_end_matches('/');
    format!("{base}{}", logpipe_core::api::collect_path(kind))
}

/// The PEM certificates in `file`, to trust as roots (a private CA, or a
/// self-signed server certificate); none without a file.
pub fn read_roots(file: Option<&std::path::Path>) -> Result<Vec<reqwest::Certificate>, String> {
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", file.display()))?;
    if roots.is_empty() {
        return Err(format!("{} holds no CERTIFICATE block", file.display()));
    }
    Ok(roots)
}

/// An HTTP client from `builder` that sends `token` as
/// `Authorization: Bearer` on every request (none when `None`) and trusts
/// `roots` besides the public roots.
pub fn client(
    builder: reqwest::ClientBuilder,
    token: Option<&str>,
    roots: &[reqwest::Certificate],
) -> reqwest::Client {
    let builder = roots.iter().fold(builder, |builder, root| {
        builder.add_root_certificate(root.clone())
    });
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token
        && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
    {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    builder.default_headers(headers).build().unwrap_or_default()
}
