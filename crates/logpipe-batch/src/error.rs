//! The batch reports' errors, and their kind.

use logpipe_core::error::{Classify, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{0}")]
    Query(#[from] logpipe_query::QueryError),
    #[error("{0}")]
    Lake(#[from] logpipe_lake::LakeError),
    #[error("lake storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("{0}")]
    Sink(#[from] logpipe_sinks::SinkError),
    #[error("building the result failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0:?} is not an ISO week like 2026-W02")]
    BadWeek(String),
}

impl Classify for BatchError {
    fn kind(&self) -> ErrorKind {
        match self {
            BatchError::Query(error) => error.kind(),
            BatchError::Lake(error) => error.kind(),
            BatchError::Store(_) => ErrorKind::Transient,
            BatchError::Sink(error) => error.kind(),
            BatchError::Arrow(_) => ErrorKind::Internal,
            BatchError::BadWeek(_) => ErrorKind::Input,
        }
    }
}

pub type Result<T, E = BatchError> = std::result::Result<T, E>;
