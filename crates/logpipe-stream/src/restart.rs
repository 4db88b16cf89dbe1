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
    let mut restarts = Restarts::new(job.job());
    loop {
        let outcome = job.attempt(&mut shutdown).await;
        if let Some(done) = restarts.after(outcome, &mut shutdown).await {
            return done;
        }
    }
}

/// The restarts of one job.
struct Restarts {
    job: String,
    delay: Duration,
    began: Instant,
}

impl Restarts {
    fn new(job: &str) -> Restarts {
        Restarts {
            job: job.to_string(),
            delay: FIRST_DELAY,
            began: Instant::now(),
        }
    }

    /// What follows an attempt that ended with `outcome`: `Some` to end
    /// the job with it (it drained after shutdown, or failed for good, or
    /// shutdown came during the wait), `None` to start it again after
    /// waiting.
    async fn after(
        &mut self,
        outcome: Result<(), StreamError>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Result<(), StreamError>> {
        let error = match outcome {
            Err(error) if error.is_transient() && !*shutdown.borrow() => error,
            done => return Some(done),
        };
        if self.began.elapsed() >= HEALTHY_RUN {
            self.delay = FIRST_DELAY;
        }
        let job = self.job.as_str();
        *analytics()
            .stream_restarts
            .entry(job.to_string())
            .or_default() += 1;
        tracing::error!(
            job,
            %error,
            retry_in_ms = self.delay.as_millis() as u64,
            "the {job} job failed on the bus; starting it again from the last lake commit"
        );
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => {}
            Ok(_) = shutdown.wait_for(|stop| *stop) => return Some(Ok(())),
        }
        self.delay = (self.delay * 2).min(MAX_DELAY);
        self.began = Instant::now();
        None
    }
}
