//! The detector: per-service streaks of anomalous and normal windows, and
//! the alerts that start and end an incident.

use std::collections::BTreeMap;

use logpipe_core::time::micros_to_rfc3339;
use serde::{Deserialize, Serialize};

use super::{AlertRules, Rule};
use crate::aggregate::ClosedWindow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "FIRING",
            AlertState::Resolved => "RESOLVED",
        }
    }
}

/// One alert: the start or the end of an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `<incident_id>:<state>`: unique, and the same if re-sent after a crash.
    pub alert_id: String,
    /// `<rule>:<service>:<start micros>`: shared by FIRING and RESOLVED.
    pub incident_id: String,
    pub state: AlertState,
    /// A built-in [`Rule`]'s name, or a streaming SQL job's alert's.
    pub rule: String,
    /// `warning` or `critical` (empty in checkpoints written before it was
    /// kept: [`Alert::severity`] answers for those).
    #[serde(default)]
    pub severity: String,
    /// The service, or a streaming job's group (`key=value, …`).
    pub service: String,
    /// The figure that crossed (or came back under) the threshold.
    pub value: f64,
    pub threshold: f64,
    /// The window that decided.
    pub window_start_micros: i64,
    pub window_end_micros: i64,
    /// When the incident started (the first anomalous window's start).
    pub incident_start_micros: i64,
    pub summary: String,
}

/// A rule's per-service progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Streak {
    /// Consecutive anomalous windows while not firing, or consecutive normal
    /// windows while firing.
    pub(crate) run: u32,
    /// Start of the first window of the current anomalous run.
    pub(crate) run_start: Option<i64>,
    /// Start micros of the firing incident.
    pub(crate) firing: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ServiceState {
    pub(super) error: Streak,
    pub(super) latency: Streak,
    /// EWMA of p95 latency over normal windows, and how many fed it.
    pub(super) baseline: Option<f64>,
    pub(super) baseline_windows: u32,
    /// Start of the last window the service had records in.
    pub(super) last_seen: i64,
    pub(super) silent_since: Option<i64>,
}

/// The detector's checkpointed state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorState {
    services: BTreeMap<String, ServiceState>,
}

pub struct Detector {
    rules: AlertRules,
    window_micros: i64,
    state: DetectorState,
}

/// What one window says about one rule.
pub(crate) enum Verdict {
    Anomalous,
    Normal(f64),
    /// Too little data to judge: the streak stays as it is.
    Unknown,
}

impl Detector {
    pub fn new(rules: AlertRules, window_micros: i64, state: DetectorState) -> Detector {
        Detector {
            rules,
            window_micros,
            state,
        }
    }

    pub fn state(&self) -> &DetectorState {
        &self.state
    }

    /// Incidents currently firing.
    pub fn firing(&self) -> i64 {
        self.state
            .services
            .values()
            .map(|s| {
                i64::from(s.error.firing.is_some())
                    + i64::from(s.latency.firing.is_some())
                    + i64::from(s.silent_since.is_some())
            })
            .sum()
    }

    /// Evaluates `closed` (in window order) and the silence rule up to
    /// `closed_through` (every window ending at or before it is closed).
    pub fn observe(&mut self, closed: &[ClosedWindow], closed_through: Option<i64>) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for window in closed {
            self.observe_window(window, &mut alerts);
        }
        if let Some(through) = closed_through {
            self.check_silence(through, &mut alerts);
        }
        alerts
    }

    pub(super) fn observe_window(&mut self, window: &ClosedWindow, alerts: &mut Vec<Alert>) {
        let rules = self.rules.clone();
        let size = self.window_micros;
        let start = window.window_start_micros;
        let state = self
            .state
            .services
            .entry(window.service.clone())
            .or_default();
        state.last_seen = state.last_seen.max(start);
        if let Some(since) = state.silent_since.take() {
            alerts.push(make_alert(
                Rule::ServiceSilent,
                AlertState::Resolved,
                &window.service,
                window.figures.count as f64,
                f64::from(rules.silence.windows),
                (start, start + size),
                since,
                format!(
                    "{} sends again: {} records in the window from {}",
                    window.service,
                    window.figures.count,
                    micros_to_rfc3339(start)
                ),
            ));
        }

        let figures = &window.figures;
        let errors = figures
            .by_level
            .get(&logpipe_core::Level::Error)
            .copied()
            .unwrap_or(0);
        let rate = figures.error_rate();
        let error_verdict = if rate > rules.error_rate.threshold {
            if errors >= rules.error_rate.min_errors {
                Verdict::Anomalous
            } else {
                Verdict::Unknown
            }
        } else {
            Verdict::Normal(rate)
        };
        let (threshold, windows) = (rules.error_rate.threshold, rules.error_rate.windows);
        if let Some((alert_state, incident_start)) =
            step(&mut state.error, error_verdict, windows, start)
        {
            let summary = match alert_state {
                AlertState::Firing => format!(
                    "{}: error rate {:.1}% above {:.1}% for {windows} windows of {}s (since {})",
                    window.service,
                    rate * 100.0,
                    threshold * 100.0,
                    size / 1_000_000,
                    micros_to_rfc3339(incident_start)
                ),
                AlertState::Resolved => format!(
                    "{}: error rate back to {:.1}% (at most {:.1}%) for {windows} windows",
                    window.service,
                    rate * 100.0,
                    threshold * 100.0
                ),
            };
            alerts.push(make_alert(
                Rule::HighErrorRate,
                alert_state,
                &window.service,
                rate,
                threshold,
                (start, start + size),
                incident_start,
                summary,
            ));
        }

        let p95 = (figures.latency.count() >= rules.latency.min_records)
            .then(|| figures.latency.quantile(0.95))
            .flatten();
        let ready = state.baseline_windows >= rules.latency.baseline_windows;
        let limit = state.baseline.map(|b| b * rules.latency.factor);
        let latency_verdict = match (p95, limit) {
            (Some(p95), Some(limit)) if ready && p95 > limit => Verdict::Anomalous,
            (Some(p95), _) => Verdict::Normal(p95),
            (None, _) => Verdict::Unknown,
        };
        let learn = match latency_verdict {
            Verdict::Normal(p95) if state.latency.firing.is_none() => Some(p95),
            _ => None,
        };
        if let Some((alert_state, incident_start)) = step(
            &mut state.latency,
            latency_verdict,
            rules.latency.windows,
            start,
        ) {
            let limit = limit.unwrap_or(0.0);
            let p95 = p95.unwrap_or(0.0);
            let summary = match alert_state {
                AlertState::Firing => format!(
                    "{}: p95 latency {p95:.0} ms above {:.1} x its baseline ({limit:.0} ms) for {} windows (since {})",
                    window.service,
                    rules.latency.factor,
                    rules.latency.windows,
                    micros_to_rfc3339(incident_start)
                ),
                AlertState::Resolved => format!(
                    "{}: p95 latency back to {p95:.0} ms (limit {limit:.0} ms)",
                    window.service
                ),
            };
            alerts.push(make_alert(
                Rule::LatencySpike,
                alert_state,
                &window.service,
                p95,
                limit,
                (start, start + size),
                incident_start,
                summary,
            ));
        }
        if let Some(p95) = learn {
            // EWMA with the span of `baseline_windows`.
            let alpha = 2.0 / (f64::from(rules.latency.baseline_windows.max(1)) + 1.0);
            state.baseline = Some(match state.baseline {
                Some(baseline) => baseline + alpha * (p95 - baseline),
                None => p95,
            });
            state.baseline_windows = state.baseline_windows.saturating_add(1);
        }
    }

    pub(super) fn check_silence(&mut self, closed_through: i64, alerts: &mut Vec<Alert>) {
        let size = self.window_micros;
        let needed = i64::from(self.rules.silence.windows.max(1));
        for (service, state) in &mut self.state.services {
            if state.silent_since.is_some() {
                continue;
            }
            let first_missing = state.last_seen + size;
            let missing = (closed_through - first_missing).div_euclid(size);
            if missing >= needed {
                state.silent_since = Some(first_missing);
                let decided = first_missing + (needed - 1) * size;
                alerts.push(make_alert(
                    Rule::ServiceSilent,
                    AlertState::Firing,
                    service,
                    0.0,
                    needed as f64,
                    (decided, decided + size),
                    first_missing,
                    format!(
                        "{service}: no records for {needed} windows of {}s (since {})",
                        size / 1_000_000,
                        micros_to_rfc3339(first_missing)
                    ),
                ));
            }
        }
    }
}

/// Advances one rule's streak; returns an alert to emit, with the
/// incident's start.
pub(crate) fn step(
    streak: &mut Streak,
    verdict: Verdict,
    windows: u32,
    window_start: i64,
) -> Option<(AlertState, i64)> {
    let windows = windows.max(1);
    match (streak.firing, verdict) {
        (_, Verdict::Unknown) => None,
        (None, Verdict::Anomalous) => {
            let start = *streak.run_start.get_or_insert(window_start);
            streak.run += 1;
            if streak.run >= windows {
                streak.firing = Some(start);
                streak.run = 0;
                streak.run_start = None;
                Some((AlertState::Firing, start))
            } else {
                None
            }
        }
        (None, Verdict::Normal(_)) => {
            streak.run = 0;
            streak.run_start = None;
            None
        }
        (Some(_), Verdict::Anomalous) => {
            streak.run = 0;
            None
        }
        (Some(start), Verdict::Normal(_)) => {
            streak.run += 1;
            if streak.run >= windows {
                streak.firing = None;
                streak.run = 0;
                Some((AlertState::Resolved, start))
            } else {
                None
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn make_alert(
    rule: Rule,
    state: AlertState,
    service: &str,
    value: f64,
    threshold: f64,
    (window_start_micros, window_end_micros): (i64, i64),
    incident_start_micros: i64,
    summary: String,
) -> Alert {
    let incident_id = format!("{}:{service}:{incident_start_micros}", rule.as_str());
    Alert {
        alert_id: format!("{incident_id}:{}", state.as_str()),
        incident_id,
        state,
        rule: rule.as_str().to_string(),
        severity: rule.severity().to_string(),
        service: service.to_string(),
        value,
        threshold,
        window_start_micros,
        window_end_micros,
        incident_start_micros,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::ServiceWindow;
    use logpipe_core::Level;

    const SIZE: i64 = 5_000_000;

    fn window(n: i64, service: &str, count: u64, errors: u64, latency: f64) -> ClosedWindow {
        let mut figures = ServiceWindow {
            count,
            ..ServiceWindow::default()
        };
        figures.by_level.insert(Level::Error, errors);
        figures.by_level.insert(Level::Info, count - errors);
        for _ in 0..count {
            figures.latency.add(latency);
        }
        ClosedWindow {
            window_start_micros: n * SIZE,
            service: service.to_string(),
            figures,
        }
    }

    /// (rule, state, service, window number) of each alert.
    fn seen(alerts: &[Alert]) -> Vec<(Rule, AlertState, &str, i64)> {
        alerts
            .iter()
            .map(|a| {
                (
                    Rule::from_name(&a.rule).expect("a built-in rule"),
                    a.state,
                    a.service.as_str(),
                    a.window_start_micros / SIZE,
                )
            })
            .collect()
    }

    fn run(detector: &mut Detector, n: i64, windows: &[ClosedWindow]) -> Vec<Alert> {
        detector.observe(windows, Some((n + 1) * SIZE))
    }

    #[test]
    fn an_error_burst_fires_once_and_resolves_once() {
        let mut detector = Detector::new(AlertRules::default(), SIZE, DetectorState::default());
        let mut alerts = Vec::new();
        for n in 0..20 {
            let errors = if (5..10).contains(&n) { 50 } else { 0 };
            alerts.extend(run(
                &mut detector,
                n,
                &[
                    window(n, "a", 100, errors, 20.0),
                    window(n, "b", 100, 0, 20.0),
                ],
            ));
        }
        assert_eq!(
            seen(&alerts),
            vec![
                (Rule::HighErrorRate, AlertState::Firing, "a", 6),
                (Rule::HighErrorRate, AlertState::Resolved, "a", 11),
            ]
        );
        assert_eq!(alerts[0].incident_id, alerts[1].incident_id);
        assert_eq!(alerts[0].incident_start_micros, 5 * SIZE);
        assert!(
            alerts[0].summary.contains("error rate 50.0% above 5.0%"),
            "{}",
            alerts[0].summary
        );
        assert_eq!(detector.firing(), 0);
    }

    #[test]
    fn a_few_errors_in_a_small_window_are_not_an_incident() {
        let mut detector = Detector::new(AlertRules::default(), SIZE, DetectorState::default());
        for n in 0..10 {
            // 3 of 10 is 30 %, but below min_errors.
            assert!(run(&mut detector, n, &[window(n, "a", 10, 3, 20.0)]).is_empty());
        }
    }

    #[test]
    fn latency_spike_needs_a_baseline_and_fires_once() {
        let mut detector = Detector::new(AlertRules::default(), SIZE, DetectorState::default());
        // A spike before the baseline is learnt is not judged.
        assert!(run(&mut detector, 0, &[window(0, "a", 50, 0, 900.0)]).is_empty());
        let mut alerts = Vec::new();
        for n in 1..40 {
            let latency = if (20..25).contains(&n) { 500.0 } else { 50.0 };
            alerts.extend(run(&mut detector, n, &[window(n, "a", 50, 0, latency)]));
        }
        let seen: Vec<_> = alerts
            .iter()
            .map(|a| {
                (
                    Rule::from_name(&a.rule).expect("a built-in rule"),
                    a.state,
                    a.window_start_micros / SIZE,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (Rule::LatencySpike, AlertState::Firing, 21),
                (Rule::LatencySpike, AlertState::Resolved, 26),
            ]
        );
    }

    #[test]
    fn a_silent_service_fires_then_resolves_when_it_returns() {
        let rules = AlertRules::default();
        let needed = i64::from(rules.silence.windows);
        let mut detector = Detector::new(rules, SIZE, DetectorState::default());
        let mut alerts = run(
            &mut detector,
            0,
            &[window(0, "a", 10, 0, 1.0), window(0, "b", 10, 0, 1.0)],
        );
        for n in 1..=needed + 3 {
            alerts.extend(run(&mut detector, n, &[window(n, "b", 10, 0, 1.0)]));
        }
        let n = needed + 4;
        alerts.extend(run(
            &mut detector,
            n,
            &[window(n, "a", 10, 0, 1.0), window(n, "b", 10, 0, 1.0)],
        ));
        assert_eq!(
            seen(&alerts),
            vec![
                (Rule::ServiceSilent, AlertState::Firing, "a", needed),
                (Rule::ServiceSilent, AlertState::Resolved, "a", n),
            ]
        );
    }

    #[test]
    fn state_survives_a_checkpoint() {
        let mut detector = Detector::new(AlertRules::default(), SIZE, DetectorState::default());
        for n in 0..3 {
            run(&mut detector, n, &[window(n, "a", 100, 50, 20.0)]);
        }
        let json = serde_json::to_string(detector.state()).unwrap();
        let restored: DetectorState = serde_json::from_str(&json).unwrap();
        assert_eq!(&restored, detector.state());
        let mut detector = Detector::new(AlertRules::default(), SIZE, restored);
        // Still firing: more bad windows do not fire again.
        for n in 3..6 {
            assert!(run(&mut detector, n, &[window(n, "a", 100, 50, 20.0)]).is_empty());
        }
        assert_eq!(detector.firing(), 1);
    }
}
