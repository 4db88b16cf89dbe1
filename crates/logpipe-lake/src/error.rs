//! The lake's errors.

use logpipe_core::error::{Classify, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake storage error: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("writing Parquet failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("building record batch failed: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("commit record {path} is unreadable: {reason}")]
    BadCommit { path: String, reason: String },
    #[error(
        "rolling forward commit {seq} produced {found} but the commit record lists {expected}; the bus no longer holds the same records"
    )]
    RollForwardMismatch {
        seq: u64,
        expected: String,
        found: String,
    },
    #[error("compaction manifest {path} is unreadable: {reason}")]
    BadManifest { path: String, reason: String },
    #[error("compacting into {path} read {found} rows from files whose footers say {expected}")]
    CompactionMismatch {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error("Delta log {path}: {reason}")]
    BadDeltaLog { path: String, reason: String },
    #[error("background task failed: {0}")]
    Task(String),
    /// Another writer committed step `seq` of `job` first.
    #[error(
        "commit {seq} of job {job:?} was written by another process first (two processes run the same job?)"
    )]
    CommitTaken { job: String, seq: u64 },
}

impl Classify for LakeError {
    fn kind(&self) -> ErrorKind {
        match self {
            // A store that did not answer, or refused for now: the job
            // starts again from its last commit, which is always safe.
            LakeError::Store(_) => ErrorKind::Transient,
            LakeError::Storage(error) => error.kind(),
            LakeError::CommitTaken { .. } => ErrorKind::Config,
            LakeError::RollForwardMismatch { .. } => ErrorKind::DataLoss,
            LakeError::Parquet(_)
            | LakeError::Arrow(_)
            | LakeError::BadCommit { .. }
            | LakeError::BadManifest { .. }
            | LakeError::BadDeltaLog { .. }
            | LakeError::CompactionMismatch { .. }
            | LakeError::Task(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = LakeError> = std::result::Result<T, E>;
