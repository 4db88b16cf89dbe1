//! `POST /api/query`: `{"sql": "SELECT …", "max_rows": N}` → `{"columns":
//! […], "rows": [{…}], "row_count": N, "truncated": false}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use logpipe_query::QueryEngine;
use serde::Deserialize;

use crate::error::ApiError;
use crate::{RETRY_QUERY_AFTER, rejection};

/// Rows `POST /api/query` returns unless the request asks for fewer.
const DEFAULT_QUERY_MAX_ROWS: usize = 10_000;
/// Upper bound a request may ask for.
const QUERY_MAX_ROWS_LIMIT: usize = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    #[serde(default)]
    max_rows: Option<usize>,
}

pub(crate) async fn query(
    State(engine): State<Arc<QueryEngine>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(rejection)?;
    let request: QueryRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!(
            "body must be {{\"sql\": \"…\", \"max_rows\": N}}: {error}"
        ))
    })?;
    let max_rows = request
        .max_rows
        .unwrap_or(DEFAULT_QUERY_MAX_ROWS)
        .min(QUERY_MAX_ROWS_LIMIT);
    let result = engine
        .sql(&request.sql, max_rows)
        .await
        .map_err(|e| ApiError::from_error(&e, RETRY_QUERY_AFTER))?;
    let rows = result
        .rows_json()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let columns = serde_json::to_string(&result.columns()).unwrap_or_else(|_| "[]".into());
    let body = format!(
        r#"{{"columns":{columns},"rows":{rows},"row_count":{},"truncated":{}}}"#,
        result.rows, result.truncated
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
