//! The HTTP edge every role shares: one error-to-response mapping
//! ([`ApiError`]), the query API and the alerts API over the lake, and what
//! every process serves (`/health`, `/metrics`, `/api/stats`).
//!
//! | file | routes |
//! |---|---|
//! | `query.rs` | `POST /api/query` |
//! | `alerts.rs` | `GET /api/alerts` |
//! | `ops.rs` | `GET /health`, `/ready`, `/metrics`, `/api/stats` |
//! | [`auth`] | API tokens with scopes, a layer per route group |
//! | [`error`] | status codes from error kinds |
//!
//! The collector's routes are a source of records and live with the
//! sources (`logpipe_ingest::collector`); the application composes the
//! routers its roles need (a collector-only process has no query API over
//! a lake it does not have). The web console will be one more folder here
//! (`console/`), over the same query engine.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::routing::{get, post};
use logpipe_core::api;
use logpipe_query::QueryEngine;

mod alerts;
pub mod auth;
pub mod error;
pub mod idle;
mod ops;
mod query;
pub mod tls;

pub use error::ApiError;
pub use ops::stats_json;

/// `Retry-After` of a query that failed for now (the store did not answer).
pub const RETRY_QUERY_AFTER: Duration = Duration::from_secs(1);

/// `POST /api/query` and `GET /api/alerts` over `engine`, for the `query`
/// scope when auth is on.
pub fn query_routes(engine: Arc<QueryEngine>, auth: Option<&Arc<auth::Auth>>) -> Router {
    let routes = Router::new()
        .route(api::QUERY, post(query::query))
        .route(api::ALERTS, get(alerts::alerts))
        .with_state(engine);
    auth::require(routes, auth, logpipe_config::Scope::Query)
}

/// `/health`, `/ready`, `/metrics` and `/api/stats` (see `ops.rs` for
/// which need a token).
pub fn ops_routes(auth: Option<&Arc<auth::Auth>>, open_metrics: bool) -> Router {
    ops::routes(auth, open_metrics)
}

/// The answer to a body axum could not read (too large, cut off).
pub fn rejection(rejection: BytesRejection) -> ApiError {
    ApiError::Status(rejection.status(), rejection.body_text())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use logpipe_test_utils::call;

    use super::*;

    async fn post(
        router: &Router,
        path: &str,
        body: &'static str,
    ) -> (StatusCode, serde_json::Value) {
        call(router, Request::post(path).body(Body::from(body)).unwrap()).await
    }

    #[tokio::test]
    async fn query_api_answers_json_and_refuses_bad_sql() {
        let engine = QueryEngine::open(&logpipe_lake::LakeStore::memory())
            .await
            .unwrap();
        let router = query_routes(Arc::new(engine), None);
        let (status, answer) = post(
            &router,
            "/api/query",
            r#"{"sql": "SELECT count(*) AS n FROM logs"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["rows"][0]["n"], 0);
        assert_eq!(answer["columns"][0], "n");
        let (status, answer) = post(&router, "/api/query", r#"{"sql": "DROP TABLE logs"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let (status, _) = post(&router, "/api/query", "SELECT 1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn alerts_api_refuses_an_unknown_state_with_the_choices() {
        let engine = QueryEngine::open(&logpipe_lake::LakeStore::memory())
            .await
            .unwrap();
        let router = query_routes(Arc::new(engine), None);
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let (status, answer) = call(&router, get("/api/alerts?state=maybe")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            answer["error"].as_str().unwrap().contains("firing or all"),
            "{answer}"
        );
        let (status, answer) = call(&router, get("/api/alerts?state=firing&service=api")).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["count"], 0);
    }
}
