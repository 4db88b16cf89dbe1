//! What a commit record holds for the window job: its whole state with the
//! offsets it belongs to, and the step's output.

use serde::{Deserialize, Serialize};

use crate::aggregate::{ClosedWindow, WindowSnapshot};
use crate::alerts::{Alert, DetectorState};
use crate::sql_job::aggregator::{Group, Snapshot};

/// What a commit record holds for this job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct JobState {
    /// The open windows of its statement (`None` in a record written
    /// before the job ran SQL: `windows` holds them then).
    #[serde(default)]
    pub(super) aggregator: Option<Snapshot>,
    pub(super) detector: DetectorState,
    /// This step's output: the groups that closed, each with its
    /// service's figures.
    #[serde(default)]
    pub(super) groups: Vec<Group>,
    pub(super) alerts: Vec<Alert>,
    /// When this step ran (the alerts' `detected_at`).
    pub(super) step_micros: i64,
    /// A record written before the job ran SQL: its open windows and the
    /// windows its step closed, as the job's own aggregator kept them.
    /// Read once and converted ([`super::builtin::Columns`]), never
    /// written.
    #[serde(default, skip_serializing)]
    pub(super) windows: Option<WindowSnapshot>,
    #[serde(default, skip_serializing)]
    pub(super) closed: Vec<ClosedWindow>,
}
