//! `GET /api/alerts[?state=firing|all][&service=S][&limit=N]`: alerts from
//! the lake table `alerts`, newest first, through the typed
//! [`AlertFilter`] query (no SQL text built from the request).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use logpipe_query::{AlertFilter, QueryEngine};
use serde::Deserialize;

use crate::RETRY_QUERY_AFTER;
use crate::error::ApiError;

/// Alerts listed unless the request asks for another number, and the most
/// it may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsQuery {
    /// `firing` (incidents without a RESOLVED yet) or `all` (default).
    state: Option<String>,
    service: Option<String>,
    limit: Option<usize>,
}

impl AlertsQuery {
    fn filter(self) -> Result<AlertFilter, ApiError> {
        let firing_only = match self.state.as_deref() {
            None | Some("all") => false,
            Some("firing") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "state must be firing or all, not {other:?}"
                )));
            }
        };
        if self.service.as_deref() == Some("") {
            return Err(ApiError::BadRequest(
                "service is empty; leave it out to list every service".to_string(),
            ));
        }
        Ok(AlertFilter {
            firing_only,
            service: self.service,
            limit: self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        })
    }
}

pub(crate) async fn alerts(
    State(engine): State<Arc<QueryEngine>>,
    query: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "{}; parameters are state=firing|all, service=NAME, limit=N",
            rejection.body_text()
        ))
    })?;
    let result = engine
        .alerts(&query.filter()?)
        .await
        .map_err(|e| ApiError::from_error(&e, RETRY_QUERY_AFTER))?;
    let rows = result
        .rows_json()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"alerts":{rows},"count":{}}}"#, result.rows),
    )
        .into_response())
}
