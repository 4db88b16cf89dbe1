//! What kind of failure an error is, read the same way everywhere.
//!
//! Every crate's error type implements [`Classify`]. Three places act on the
//! answer, and they must agree (before this existed, the collector retried an
//! I/O error that a stream job treated as fatal, and the other way round for
//! a broker error):
//!
//! | kind | HTTP edge | stream job | blocking sink |
//! |---|---|---|---|
//! | [`ErrorKind::Transient`] | 503 + `Retry-After` | starts again from its last lake commit | retries with backoff |
//! | [`ErrorKind::Input`] | 400 / 422 with the reason | (never: input is checked at the edge) | logged; the step is not retried forever |
//! | [`ErrorKind::Config`] | 500 | stops with the message | retries (an operator may fix it) |
//! | [`ErrorKind::DataLoss`] | 500 | stops, unless `lake.on_data_loss = "skip_ahead"` | — |
//! | [`ErrorKind::Internal`] | 500 | stops with the message | retries |
//!
//! Restarting a job is always safe (its position is the lake's commit
//! chain), so "transient" means "a later attempt can get past this", not
//! "harmless".

/// The kind of a failure: what a caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Another attempt later can succeed: a broker or store that did not
    /// answer in time, a full queue, a shut-down bus.
    Transient,
    /// The request or record is wrong; the sender must fix it.
    Input,
    /// The configuration cannot work (a topic missing, two processes
    /// running one job, a store without a capability the setup needs).
    Config,
    /// Records the pipeline needed are gone (retention, a lost bus
    /// directory, a commit whose records can no longer be rebuilt).
    DataLoss,
    /// A bug or corrupt state: nothing the caller can do but report it.
    Internal,
}

impl ErrorKind {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Input => "input",
            ErrorKind::Config => "config",
            ErrorKind::DataLoss => "data_loss",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its [`ErrorKind`].
pub trait Classify {
    fn kind(&self) -> ErrorKind;

    /// Whether another attempt later can get past this.
    fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }
}
