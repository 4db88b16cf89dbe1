//! Runs the jobs on their cron schedules inside `logpipe up`. Times are
//! UTC; each run covers the last whole period before its day
//! ([`crate::PeriodKind::scheduled`]). Jobs due at the same minute run one
//! after another in dependency order; a job whose input job failed (or was
//! skipped) in that round is skipped, with the reason in `job_runs`. A
//! failed run is logged and recorded; the next tick runs again.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;

use crate::{BatchRunner, Report};

/// Runs until `stop` turns true.
pub async fn run(runner: Arc<BatchRunner>, mut stop: watch::Receiver<bool>) {
    let scheduled: Vec<_> = runner
        .jobs()
        .iter()
        .filter_map(|job| {
            job.schedule
                .as_ref()
                .map(|(_, cron)| (job.clone(), cron.clone()))
        })
        .collect();
    if scheduled.is_empty() {
        return;
    }
    loop {
        let now = Utc::now();
        let next: Vec<_> = scheduled
            .iter()
            .filter_map(|(job, cron)| {
                cron.find_next_occurrence(&now, false)
                    .ok()
                    .map(|at| (at, job.clone()))
            })
            .collect();
        let Some(at) = next.iter().map(|(at, _)| *at).min() else {
            return;
        };
        let wait = (at - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        // In the runner's (dependency) order.
        let due: Vec<_> = next
            .into_iter()
            .filter(|(when, _)| *when == at)
            .map(|(_, job)| job)
            .collect();
        let mut failed: Vec<&'static str> = Vec::new();
        for job in runner
            .jobs()
            .iter()
            .filter(|j| due.iter().any(|d| d.name == j.name))
        {
            let report = Report::new(job.clone(), job.period.scheduled(at.date_naive()));
            if let Some(input) = job.inputs.iter().find(|i| failed.contains(i)) {
                let reason =
                    format!("{input}, whose output it reads, did not succeed in this round");
                tracing::warn!(
                    job = job.name,
                    target = report.target(),
                    reason,
                    "scheduled job skipped"
                );
                runner.skip(&report, &reason).await;
                failed.push(job.name);
                continue;
            }
            match runner.run(&report, &|_| {}).await {
                Ok(summary) => tracing::info!(
                    job = summary.job,
                    target = summary.target,
                    rows = summary.rows,
                    ms = summary.duration.as_millis() as u64,
                    "scheduled job written"
                ),
                Err(error) => {
                    failed.push(job.name);
                    tracing::error!(job = job.name, target = report.target(), %error, "scheduled job failed")
                }
            }
        }
    }
}
