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
    /// A job file that is wrong, and where (1-based line and column).
    #[error("{origin}:{line}:{column}: {reason}")]
    Job {
        origin: String,
        line: u64,
        column: u64,
        reason: String,
    },
    #[error("reading the jobs directory {dir}: {reason} (jobs.dir)")]
    JobsDir { dir: String, reason: String },
    #[error("no job is named {name:?}; the jobs are {known}")]
    UnknownJob { name: String, known: String },
    /// Jobs that read each other's output in a circle.
    #[error("jobs read each other's output in a circle: {0}")]
    Cycle(String),
    /// A run not started because a job it reads failed first.
    #[error("skipped: {0}")]
    Skipped(String),
}

impl Classify for BatchError {
    fn kind(&self) -> ErrorKind {
        match self {
            BatchError::Query(error) => error.kind(),
            BatchError::Lake(error) => error.kind(),
            BatchError::Store(_) => ErrorKind::Transient,
            BatchError::Sink(error) => error.kind(),
            BatchError::Arrow(_) => ErrorKind::Internal,
            BatchError::BadWeek(_) | BatchError::UnknownJob { .. } => ErrorKind::Input,
            BatchError::Job { .. } | BatchError::JobsDir { .. } | BatchError::Cycle(_) => {
                ErrorKind::Config
            }
            BatchError::Skipped(_) => ErrorKind::Transient,
        }
    }
}

pub type Result<T, E = BatchError> = std::result::Result<T, E>;
