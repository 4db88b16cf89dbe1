//! The bus's errors, and their kind.

use logpipe_core::error::{Classify, ErrorKind};

/// Errors of any bus implementation.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot take more right now; retry later (HTTP 503).
    #[error("the bus is busy ({0}); retry later")]
    Busy(String),
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("partition {partition} of topic {topic:?} does not exist")]
    UnknownPartition { topic: String, partition: u32 },
    /// The wanted offset is no longer kept (retention), the seed's
    /// `failOnDataLoss` situation.
    #[error(
        "offset {requested} of {topic}/{partition} is gone: the oldest kept offset is {log_start} (deleted by retention)"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        requested: u64,
        log_start: u64,
    },
    /// The wanted offset lies beyond the end of the log: the log lost data the
    /// reader had already seen (e.g. a bus directory restored from backup).
    #[error(
        "offset {requested} of {topic}/{partition} is past the end of the log ({log_end}); the bus lost records that were already consumed"
    )]
    OffsetBeyondEnd {
        topic: String,
        partition: u32,
        requested: u64,
        log_end: u64,
    },
    #[error("the data directory {0} is in use by another logpipe process")]
    Locked(String),
    #[error("bus storage is corrupt: {0}")]
    Corrupt(String),
    #[error("bus I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the bus is shut down")]
    Closed,
    /// The bus settings cannot work with this cluster (e.g. a replication
    /// factor above the broker count).
    #[error("{0}")]
    Misconfigured(String),
    /// The broker cluster cannot be reached or refused a request.
    #[error("Kafka: {0}")]
    Kafka(String),
}

impl BusError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> BusError {
        BusError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

impl Classify for BusError {
    fn kind(&self) -> ErrorKind {
        match self {
            // The bus cannot take or give records right now; a later
            // attempt can: a full queue, a broker that did not answer,
            // a disk error on the embedded bus (the group was rolled
            // back), a bus shutting down.
            BusError::Busy(_) | BusError::Kafka(_) | BusError::Io { .. } | BusError::Closed => {
                ErrorKind::Transient
            }
            BusError::UnknownTopic(_)
            | BusError::UnknownPartition { .. }
            | BusError::Locked(_)
            | BusError::Misconfigured(_) => ErrorKind::Config,
            BusError::OffsetOutOfRange { .. } | BusError::OffsetBeyondEnd { .. } => {
                ErrorKind::DataLoss
            }
            BusError::Corrupt(_) => ErrorKind::Internal,
        }
    }
}
