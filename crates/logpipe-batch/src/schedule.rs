//! Runs the reports on cron schedules inside `logpipe up` (`[reports]`).
//! Times are UTC. The daily report runs for the previous day, the weekly
//! for the previous ISO week, the service analysis for the 7 days before
//! today. A failed run is logged and recorded; the next tick runs again.

use std::sync::Arc;

use chrono::{Duration as Days, Utc};
use croner::Cron;
use tokio::sync::watch;

use crate::{BatchRunner, Report};

fn report_for(name: &str, today: chrono::NaiveDate) -> Report {
    match name {
        "daily" => Report::Daily {
            date: today - Days::days(1),
        },
        "weekly" => Report::weekly_of(today - Days::days(7)),
        _ => Report::Service {
            start: today - Days::days(7),
            end: today - Days::days(1),
        },
    }
}

/// Runs until `stop` turns true. `schedules` are `[reports]`'s, parsed
/// and validated by `ReportsConfig::schedules`.
pub async fn run(
    runner: Arc<BatchRunner>,
    schedules: Vec<(&'static str, Cron)>,
    mut stop: watch::Receiver<bool>,
) {
    if schedules.is_empty() {
        return;
    }
    loop {
        let now = Utc::now();
        let next = schedules
            .iter()
            .filter_map(|(name, cron)| {
                cron.find_next_occurrence(&now, false)
                    .ok()
                    .map(|t| (t, *name))
            })
            .min_by_key(|(t, _)| *t);
        let Some((at, scheduled)) = next else { return };
        let wait = (at - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let report = report_for(scheduled, at.date_naive());
        match runner.run(&report, &|_| {}).await {
            Ok(summary) => tracing::info!(
                job = summary.job,
                target = summary.target,
                rows = summary.rows,
                ms = summary.duration.as_millis() as u64,
                "scheduled report written"
            ),
            Err(error) => {
                tracing::error!(job = report.job(), target = report.target(), %error, "scheduled report failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schedule_runs_its_report_for_the_period_before() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 13).unwrap();
        assert_eq!(report_for("daily", today).target(), "2026-01-12");
        assert_eq!(report_for("weekly", today).target(), "2026-W02");
        assert_eq!(
            report_for("service", today).target(),
            "2026-01-06..2026-01-12"
        );
    }
}
