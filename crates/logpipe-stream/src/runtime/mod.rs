//! The job runtime: what every stream job does with the bus, below the
//! jobs and never importing one.
//!
//! A job (the raw→lake job, the window job, later a CDC upsert job)
//! implements [`Job`] and gets from here: restarts after a transient
//! failure ([`run_restarting`]), polling until shutdown and draining
//! ([`poller`]), the event clock of windowed jobs ([`clock`]), resuming at its last commit and reporting progress
//! ([`positions`]), reading exact ranges again ([`ranges`]), and the
//! duplicate check of retried records ([`dedup`]). The rule that keeps it
//! legible: files here import only each other and [`crate::error`].

pub mod checkpoint;
pub mod clock;
pub mod dedup;
pub mod poller;
pub mod positions;
pub mod ranges;

pub use logpipe_core::job::{Job, Shutdown, run_restarting};
