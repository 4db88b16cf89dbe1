//! Restarting a stream job after the bus failed it for a while.
//!
//! **Why.** A stream job's position lives in the lake's commit chain, so
//! starting a job again is always safe: it rolls an interrupted commit
//! forward, seeks to the newest commit and re-reads what it had buffered,
//! exactly as after `kill -9`. A broker that restarts, stalls or answers a
//! metadata request too late used to end the whole process ("the raw→lake
//! job stopped: Kafka: reading metadata failed: … OperationTimedOut") and
//! with it everything the collector had acknowledged but the lake had not
//! yet read stayed unread until someone restarted logpipe. Flink and Spark
//! restart a failed streaming job the same way (a restart strategy with a
//! delay).
//!
//! **What restarts.** Only failures of the bus that a later attempt can get
//! past ([`StreamError::is_transient`]): the broker did not answer or
//! refused for now, or did not return the records to rebuild the duplicate
//! check or an interrupted commit in time. Everything else (data lost to
//! retention under `on_data_loss = "fail"`, a corrupt bus or lake, bad
//! state, a fenced-off second window job) still stops the job with its
//! message. Each restart is logged with its cause and counted in
//! `logpipe_stream_job_restarts_total{job}`.

use std::time::Duration;

use logpipe_core::metrics::analytics;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::raw_to_lake::StreamError;

/// The first wait before a restart; it doubles after each failed attempt.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// An attempt that ran this long was healthy: the next failure waits
/// [`FIRST_DELAY`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// A stream job that can be started again from its last lake commit.
pub(crate) trait Restartable {
    /// The job's name (labels the restart metric).
    fn job(&self) -> &str;

    /// One run of the job from its last lake commit, until `shutdown` (it
    /// drains and returns `Ok`) or a failure.
    fn attempt(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;
}

/// Runs `job`'s attempts until one drains after `shutdown`, fails for
/// good, or `shutdown` comes while it waits to start again.
pub(crate) async fn run_restarting(
    job: &impl Restartable,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StreamError> {
    let mut delay = FIRST_DELAY;
    loop {
        let began = Instant::now();
        let error = match job.attempt(&mut shutdown).await {
            Err(error) if error.is_transient() && !*shutdown.borrow() => error,
            done => return done,
        };
        if began.elapsed() >= HEALTHY_RUN {
            delay = FIRST_DELAY;
        }
        let name = job.job();
        *analytics()
            .stream_restarts
            .entry(name.to_string())
            .or_default() += 1;
        tracing::error!(
            job = name,
            %error,
            retry_in_ms = delay.as_millis() as u64,
            "the {name} job failed on the bus; starting it again from the last lake commit"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            Ok(_) = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}
