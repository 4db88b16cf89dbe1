//! One error-to-response mapping for every API.
//!
//! Status codes are chosen from the error's kind
//! (`logpipe_core::error::ErrorKind`), never per handler: a transient
//! failure is 503 with `Retry-After` (nothing was acknowledged, retry the
//! whole request), bad input is 400 with the reason, anything else 500.
//! Every error body is `{"error": "…"}`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logpipe_core::error::{Classify, ErrorKind};
use serde_json::json;

/// An API's answer when it does not succeed.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is wrong; the message says how.
    BadRequest(String),
    /// 413: the body is larger than `limit_bytes` (`setting` names the key).
    TooLarge {
        limit_bytes: usize,
        setting: &'static str,
    },
    /// 503 + `Retry-After`: nothing was done; retry the same request later.
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// 500.
    Internal(String),
    /// Another status chosen by the HTTP layer (axum's extractor rejections).
    Status(StatusCode, String),
}

impl ApiError {
    /// The answer to `error`, by its kind. `retry_after` is sent with 503.
    pub fn from_error<E: Classify + std::fmt::Display>(
        error: &E,
        retry_after: Duration,
    ) -> ApiError {
        let message = error.to_string();
        match error.kind() {
            ErrorKind::Transient => ApiError::Unavailable {
                message,
                retry_after,
            },
            ErrorKind::Input => ApiError::BadRequest(message),
            ErrorKind::Config | ErrorKind::DataLoss | ErrorKind::Internal => {
                ApiError::Internal(message)
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Status(status, _) => *status,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(message)
            | ApiError::Internal(message)
            | ApiError::Status(_, message) => message.clone(),
            ApiError::TooLarge {
                limit_bytes,
                setting,
            } => format!(
                "request body is larger than the limit of {limit_bytes} bytes ({setting}); send smaller batches"
            ),
            ApiError::Unavailable { message, .. } => message.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = self.message(), "request failed");
        }
        let mut response = (status, Json(json!({ "error": self.message() }))).into_response();
        if let ApiError::Unavailable { retry_after, .. } = &self {
            let seconds = retry_after.as_secs().max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
