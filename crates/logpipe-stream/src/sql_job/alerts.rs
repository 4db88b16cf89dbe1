//! Alert rules over a streaming job's rows (`-- alert:` header lines,
//! [`AlertRule`]), judged per group (the job's keys) on each closed window,
//! with the built-in detector's hysteresis ([`crate::alerts::detector`]):
//! one FIRING after `windows` consecutive windows past the threshold, one
//! RESOLVED after `windows` consecutive windows that are not. A window in
//! which a group has no row counts as not past the threshold, so an alert
//! on a group that stops sending resolves.
//!
//! The streaks are part of the job's checkpoint (its commit record), so a
//! restart neither forgets a firing incident nor fires it twice; the alerts
//! go to the `alerts` table with the step and to the alert sinks after it.

use std::collections::BTreeMap;
use std::sync::Arc;

use logpipe_core::stream_sql::{AlertRule, OutputColumn, StreamSpec};
use serde::{Deserialize, Serialize};

use super::aggregator::{Group, value_of};
use crate::alerts::detector::{Streak, Verdict, step};
use crate::alerts::{Alert, AlertState};

/// Windows judged at most after a gap with no closed window (an idle
/// stream): enough to resolve any rule (`for` is at most 1000 windows).
const MAX_GAP_WINDOWS: i64 = 1000;

/// The checkpointed part.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertsState {
    /// Per rule name, per group: its streak. Groups with nothing going on
    /// are dropped.
    streaks: BTreeMap<String, BTreeMap<String, Streak>>,
    /// Start of the newest window judged.
    judged_through: Option<i64>,
}

/// A job's alert rules with their state.
pub struct RowAlerts {
    job: String,
    spec: Arc<StreamSpec>,
    /// Each rule with the index of the aggregate it watches.
    rules: Vec<(AlertRule, usize)>,
    state: AlertsState,
}

/// The aggregate output column `rule` watches, or why it cannot.
pub fn watched_aggregate(spec: &StreamSpec, rule: &AlertRule) -> Result<usize, String> {
    let aggregates: Vec<(String, usize)> = spec
        .output
        .iter()
        .filter_map(|column| match column {
            OutputColumn::Aggregate(index) => Some((spec.column_name(column), *index)),
            _ => None,
        })
        .collect();
    aggregates
        .iter()
        .find(|(name, _)| *name == rule.column)
        .map(|(_, index)| *index)
        .ok_or_else(|| {
            let names: Vec<&str> = aggregates.iter().map(|(name, _)| name.as_str()).collect();
            format!(
                "alert {} watches {:?}, which is not an aggregate column of the job's SELECT ({})",
                rule.name,
                rule.column,
                names.join(", ")
            )
        })
}

impl RowAlerts {
    pub fn new(
        job: &str,
        spec: Arc<StreamSpec>,
        rules: &[AlertRule],
        state: AlertsState,
    ) -> Result<RowAlerts, String> {
        let rules = rules
            .iter()
            .map(|rule| Ok((rule.clone(), watched_aggregate(&spec, rule)?)))
            .collect::<Result<_, String>>()?;
        Ok(RowAlerts {
            job: job.to_string(),
            spec,
            rules,
            state,
        })
    }

    pub fn state(&self) -> &AlertsState {
        &self.state
    }

    /// Incidents firing now.
    pub fn firing(&self) -> usize {
        self.state
            .streaks
            .values()
            .flat_map(|groups| groups.values())
            .filter(|streak| streak.firing.is_some())
            .count()
    }

    /// Judges the windows of `closed` (one step's output) in order.
    pub fn observe(&mut self, closed: &[Group]) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if self.rules.is_empty() || closed.is_empty() {
            return alerts;
        }
        let mut windows: BTreeMap<i64, Vec<&Group>> = BTreeMap::new();
        for group in closed {
            windows.entry(group.start).or_default().push(group);
        }
        let slide = self.spec.slide_micros.max(1);
        let newest = *windows.keys().next_back().expect("not empty");
        let first = match self.state.judged_through {
            // The windows in between had no rows at all: judged too, as
            // windows without the groups' rows.
            Some(through) => (through + slide).max(newest - MAX_GAP_WINDOWS * slide),
            None => *windows.keys().next().expect("not empty"),
        };
        let mut start = first;
        while start <= newest {
            let rows = windows.get(&start).map(Vec::as_slice).unwrap_or(&[]);
            self.judge(start, rows, &mut alerts);
            start += slide;
        }
        self.state.judged_through = Some(newest);
        alerts
    }

    fn judge(&mut self, start: i64, rows: &[&Group], alerts: &mut Vec<Alert>) {
        let RowAlerts {
            job,
            spec,
            rules,
            state,
        } = self;
        for (rule, aggregate) in rules.iter() {
            let values: BTreeMap<String, f64> = rows
                .iter()
                .map(|group| {
                    let value = value_of(&spec.aggregates, &group.accs, *aggregate).as_f64();
                    (label(spec, group), value.unwrap_or(f64::NAN))
                })
                .collect();
            let streaks = state.streaks.entry(rule.name.clone()).or_default();
            let mut labels: Vec<String> = values.keys().cloned().collect();
            labels.extend(streaks.keys().filter(|l| !values.contains_key(*l)).cloned());
            for label in labels {
                let value = values.get(&label).copied();
                let verdict = match value {
                    Some(v) if !v.is_nan() && rule.passes(v) => Verdict::Anomalous,
                    Some(v) if !v.is_nan() => Verdict::Normal(v),
                    _ => Verdict::Normal(0.0),
                };
                let streak = streaks.entry(label.clone()).or_default();
                if let Some((state, incident_start)) = step(streak, verdict, rule.windows, start) {
                    alerts.push(alert(
                        job,
                        spec,
                        rule,
                        state,
                        &label,
                        value,
                        start,
                        incident_start,
                    ));
                }
                if *streak == Streak::default() {
                    streaks.remove(&label);
                }
            }
        }
    }
}

/// `event_type=PURCHASE, page=/cart`; `all` for a job without keys.
fn label(spec: &StreamSpec, group: &Group) -> String {
    if spec.keys.is_empty() {
        return "all".to_string();
    }
    spec.keys
        .iter()
        .zip(&group.keys)
        .map(|(key, value)| format!("{key}={}", value.as_deref().unwrap_or("NULL")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_arguments)]
fn alert(
    job: &str,
    spec: &StreamSpec,
    rule: &AlertRule,
    state: AlertState,
    label: &str,
    value: Option<f64>,
    window_start: i64,
    incident_start: i64,
) -> Alert {
    let incident_id = format!("{job}/{}:{label}:{incident_start}", rule.name);
    let value = value.filter(|v| !v.is_nan());
    let shown = value.map_or("no row".to_string(), |v| v.to_string());
    let summary = match state {
        AlertState::Firing => format!(
            "{} on {label}: {} for {} window(s) of job {} (now {shown})",
            rule.name,
            rule.condition(),
            rule.windows,
            job
        ),
        AlertState::Resolved => format!(
            "{} on {label} resolved: not {} for {} window(s) of job {} (now {shown})",
            rule.name,
            rule.condition(),
            rule.windows,
            job
        ),
    };
    Alert {
        alert_id: format!("{incident_id}:{}", state.as_str()),
        incident_id,
        state,
        rule: rule.name.clone(),
        severity: rule.severity.clone(),
        service: label.to_string(),
        value: value.unwrap_or(0.0),
        threshold: rule.threshold,
        window_start_micros: window_start,
        window_end_micros: window_start + spec.size_micros,
        incident_start_micros: incident_start,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use logpipe_core::stream_sql::{Aggregate, AggregateKind, StreamSource};

    use super::super::aggregator::Acc;
    use super::*;

    const MINUTE: i64 = 60_000_000;

    fn spec() -> Arc<StreamSpec> {
        Arc::new(StreamSpec {
            source: StreamSource::Events,
            size_micros: MINUTE,
            slide_micros: MINUTE,
            keys: vec!["event_type".to_string()],
            aggregates: vec![Aggregate {
                name: "events".to_string(),
                kind: AggregateKind::Count,
                column: None,
                argument: None,
                filter: None,
                integer: true,
            }],
            filter: None,
            output: vec![
                OutputColumn::WindowStart("window_start".to_string()),
                OutputColumn::Key(0),
                OutputColumn::Aggregate(0),
            ],
            rollup: None,
        })
    }

    fn row(minute: i64, key: &str, events: u64) -> Group {
        Group {
            start: minute * MINUTE,
            keys: vec![Some(key.to_string())],
            accs: vec![Acc::Count(events)],
            rollup: Vec::new(),
        }
    }

    fn rule(text: &str) -> AlertRule {
        AlertRule::parse(text).unwrap()
    }

    /// (state, group, minute) of each alert.
    fn seen(alerts: &[Alert]) -> Vec<(&str, &str, i64)> {
        alerts
            .iter()
            .map(|a| {
                (
                    a.state.as_str(),
                    a.service.as_str(),
                    a.window_start_micros / MINUTE,
                )
            })
            .collect()
    }

    #[test]
    fn a_burst_fires_once_per_group_and_resolves_once() {
        let rules = [rule(
            "Busy when events > 10 for 2 windows severity critical",
        )];
        let mut alerts =
            RowAlerts::new("activity", spec(), &rules, AlertsState::default()).unwrap();
        let mut raised = Vec::new();
        for minute in 0..12 {
            let busy = if (3..7).contains(&minute) { 50 } else { 1 };
            raised.extend(alerts.observe(&[row(minute, "CLICK", busy), row(minute, "VIEW", 2)]));
        }
        assert_eq!(
            seen(&raised),
            [
                ("FIRING", "event_type=CLICK", 4),
                ("RESOLVED", "event_type=CLICK", 8)
            ]
        );
        assert_eq!(raised[0].incident_id, raised[1].incident_id);
        assert_eq!(raised[0].incident_start_micros, 3 * MINUTE);
        assert_eq!(raised[0].severity, "critical");
        assert_eq!(raised[0].rule, "Busy");
        assert_eq!(raised[0].value, 50.0);
        assert_eq!(alerts.firing(), 0);
        assert!(
            alerts
                .state()
                .streaks
                .values()
                .all(|groups| groups.is_empty())
        );
    }

    #[test]
    fn state_restored_from_a_checkpoint_neither_forgets_nor_fires_again() {
        let rules = [rule("Busy when events >= 10")];
        let mut alerts =
            RowAlerts::new("activity", spec(), &rules, AlertsState::default()).unwrap();
        assert_eq!(
            seen(&alerts.observe(&[row(0, "CLICK", 10)])),
            [("FIRING", "event_type=CLICK", 0)]
        );
        let checkpoint = alerts.state().clone();
        let mut restored = RowAlerts::new("activity", spec(), &rules, checkpoint).unwrap();
        assert_eq!(restored.firing(), 1);
        assert!(restored.observe(&[row(1, "CLICK", 12)]).is_empty());
        // A window already judged is not judged again.
        assert!(restored.observe(&[row(1, "CLICK", 1)]).is_empty());
        assert_eq!(
            seen(&restored.observe(&[row(2, "CLICK", 1)])),
            [("RESOLVED", "event_type=CLICK", 2)]
        );
    }

    #[test]
    fn windows_without_rows_count_as_normal_so_a_silent_group_resolves() {
        let rules = [rule("Busy when events > 10 for 3 windows")];
        let mut alerts =
            RowAlerts::new("activity", spec(), &rules, AlertsState::default()).unwrap();
        let mut raised = Vec::new();
        for minute in 0..3 {
            raised.extend(alerts.observe(&[row(minute, "CLICK", 20)]));
        }
        // Only another group's rows from now on, after an idle gap.
        raised.extend(alerts.observe(&[row(10, "VIEW", 1)]));
        assert_eq!(
            seen(&raised),
            [
                ("FIRING", "event_type=CLICK", 2),
                ("RESOLVED", "event_type=CLICK", 5)
            ]
        );
        assert_eq!(raised[1].value, 0.0, "no row: the figure is shown as 0");
    }

    #[test]
    fn a_rule_on_a_column_that_is_not_an_aggregate_is_refused_with_the_choices() {
        let wrong = rule("Busy when event_type > 1");
        let why = RowAlerts::new("activity", spec(), &[wrong], AlertsState::default())
            .err()
            .unwrap();
        assert!(
            why.contains("\"event_type\"") && why.contains("(events)"),
            "{why}"
        );
    }
}
