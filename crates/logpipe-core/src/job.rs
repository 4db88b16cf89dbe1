//! Jobs that run until shutdown and start again after a transient failure.
//!
//! **Why.** A stream job's position lives in the lake's commit chain (a CDC
//! source's in its checkpoint), so starting a job again is always safe: it
//! rolls an interrupted commit forward, seeks to the newest commit and
//! re-reads what it had buffered, exactly as after `kill -9`. A broker that
//! restarts, stalls or answers a metadata request too late used to end the
//! whole process ("the raw→lake job stopped: Kafka: reading metadata
//! failed: … OperationTimedOut"), and everything the collector had
//! acknowledged but the lake had not yet read stayed unread until someone
//! restarted logpipe. Flink and Spark restart a failed streaming job the
//! same way (a restart strategy with a delay).
//!
//! **What restarts.** Only failures a later attempt can get past
//! ([`ErrorKind::Transient`](crate::error::ErrorKind::Transient)): the
//! broker or store did not answer or refused for now, or did not return the
//! records to rebuild the duplicate check or an interrupted commit in time.
//! Everything else (data lost to retention under `on_data_loss = "fail"`, a
//! corrupt bus or lake, bad state, a fenced-off second window job) still
//! stops the job with its message. Each restart is logged with its cause
//! and counted in `logpipe_stream_job_restarts_total{job_name}`.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Classify;
use crate::health::{checks, readiness};
use crate::retry::Backoff;
use crate::telemetry::{CounterVec, Family, MetricDef, MetricSet, MetricType};

/// The shutdown signal every long-running task watches: it turns `true`
/// once, and the task then drains, commits and returns.
pub type Shutdown = watch::Receiver<bool>;

/// The first wait before a restart; it doubles after each failed attempt.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// An attempt that ran this long was healthy: the next failure waits
/// [`FIRST_DELAY`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// A job that can be started again from its last checkpoint.
pub trait Job: Sync {
    type Error: Classify + std::fmt::Display + Send;

    /// The job's name (logs, and the restart metric's label).
    fn name(&self) -> &str;

    /// One run of the job from its last checkpoint, until `shutdown` (it
    /// drains and returns `Ok`) or a failure.
    fn attempt(
        &self,
        shutdown: &mut Shutdown,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Runs `pass` at once and then every `interval` until `shutdown`; a pass
/// that overruns delays the next instead of being run twice to catch up.
/// For housekeeping (retention, compaction), whose failed pass logs and
/// waits for the next: nothing is lost by waiting.
pub async fn every<F, Fut>(interval: Duration, mut shutdown: Shutdown, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
        pass().await;
    }
}

/// Runs `job`'s attempts until one drains after `shutdown`, fails for
/// good, or `shutdown` comes while it waits to start again.
pub async fn run_restarting<J: Job>(job: &J, mut shutdown: Shutdown) -> Result<(), J::Error> {
    let mut backoff = Backoff::new(FIRST_DELAY, MAX_DELAY);
    let check = checks::job(job.name());
    loop {
        let began = Instant::now();
        readiness().pass(&check);
        let error = match job.attempt(&mut shutdown).await {
            Err(error) if error.is_transient() && !*shutdown.borrow() => error,
            Ok(()) => {
                readiness().remove(&check);
                return Ok(());
            }
            Err(error) => {
                readiness().fail(&check, format!("the {} job stopped: {error}", job.name()));
                return Err(error);
            }
        };
        if began.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let name = job.name();
        job_metrics().restarts.inc(&[name]);
        let delay = backoff.next_delay();
        readiness().fail(
            &check,
            format!(
                "the {name} job failed for now and starts again in {} ms: {error}",
                delay.as_millis()
            ),
        );
        tracing::error!(
            job = name,
            %error,
            retry_in_ms = delay.as_millis() as u64,
            "the {name} job failed for now; starting it again from its last checkpoint"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            Ok(_) = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
    }
}

pub static STREAM_JOB_RESTARTS: MetricDef = MetricDef {
    name: "logpipe_stream_job_restarts_total",
    help: "Times a stream job was started again from its last lake commit after the bus failed it (broker unreachable or too slow).",
    kind: MetricType::Counter,
    labels: &["job_name"],
};

/// The figures of [`run_restarting`].
pub struct JobMetrics {
    pub restarts: CounterVec,
}

impl MetricSet for JobMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        vec![&self.restarts]
    }
}

crate::metric_set!(pub fn job_metrics() -> JobMetrics = JobMetrics {
    restarts: CounterVec::new(&STREAM_JOB_RESTARTS),
});
