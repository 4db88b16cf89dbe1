//! The stream jobs' error, and its kind.

use logpipe_bus::BusError;
use logpipe_core::error::{Classify, ErrorKind};
use logpipe_lake::LakeError;
use logpipe_sinks::postgres::PgError;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(
        "{0}. Set lake.on_data_loss = \"skip_ahead\" to continue from the oldest kept record (the lost range is counted in logpipe_lake_records_lost_total)"
    )]
    DataLoss(BusError),
    #[error("rolling forward commit {seq}: {reason}")]
    RollForward { seq: u64, reason: String },
    #[error("the {job} job's checkpointed state is unreadable: {reason}")]
    BadState { job: String, reason: String },
    #[error(
        "the {job} job could not rebuild its duplicate check from the bus: {reason} (lake.dedup_window = 0 turns the check off)"
    )]
    WarmUp { job: String, reason: String },
    #[error("a {what} task failed: {reason}")]
    Task { what: &'static str, reason: String },
    #[error(transparent)]
    Postgres(#[from] PgError),
}

impl Classify for StreamError {
    /// Restarting a job from its last lake commit is always safe, so a
    /// failure is transient whenever a later attempt can get past it: the
    /// bus or the store did not answer or refused for now, or did not
    /// return the records of a warm-up or roll-forward in time.
    fn kind(&self) -> ErrorKind {
        match self {
            StreamError::Bus(error) => error.kind(),
            StreamError::Lake(error) => error.kind(),
            StreamError::Postgres(error) => error.kind(),
            StreamError::DataLoss(_) => ErrorKind::DataLoss,
            StreamError::RollForward { .. } | StreamError::WarmUp { .. } => ErrorKind::Transient,
            StreamError::BadState { .. } | StreamError::Task { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = StreamError> = std::result::Result<T, E>;
