//! The anomaly detector: rules evaluated on closed windows.
//!
//! Three rules, each per service:
//! - **HighErrorRate**: the ERROR share of a window is above `threshold` (and
//!   the window holds at least `min_errors` errors, so three records with one
//!   error are not an incident) for `windows` consecutive windows.
//! - **LatencySpike**: the window's p95 `response_time_ms` is above `factor`
//!   × an EWMA baseline of earlier p95s, for `windows` consecutive windows.
//!   The baseline learns only from normal windows, and only after
//!   `baseline_windows` of them does the rule judge at all.
//! - **ServiceSilent**: a service seen before has no records for `windows`
//!   closed windows in a row.
//!
//! An incident produces exactly one FIRING alert and one RESOLVED alert (a
//! rule resolves after `windows` consecutive normal windows, or when a
//! silent service sends again), never one per window: no alert storm. The
//! detector's state is part of the window job's checkpoint, so a restart
//! neither forgets a firing incident nor fires it twice.
//!
//! - [`rules`] — the rules and their thresholds (`[alerts]`).
//! - [`detector`] — streaks per service, and the alerts of an incident.
//! - [`message`] — an alert as the JSON the sinks and `/api/alerts` carry.
//! - [`table`] — alerts as rows of the lake table `alerts`.

pub mod detector;
mod message;
pub mod rules;
pub mod table;

pub use detector::{Alert, AlertState, Detector, DetectorState};
pub use message::announce;
pub use rules::{AlertRules, Rule};
