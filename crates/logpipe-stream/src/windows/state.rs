//! What a commit record holds for the window job: its whole state with the
//! offsets it belongs to, and the step's output.

use serde::{Deserialize, Serialize};

use crate::aggregate::{ClosedWindow, WindowSnapshot};
use crate::alerts::{Alert, DetectorState};

/// What a commit record holds for this job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct JobState {
    pub(super) windows: WindowSnapshot,
    pub(super) detector: DetectorState,
    /// This step's output.
    pub(super) closed: Vec<ClosedWindow>,
    pub(super) alerts: Vec<Alert>,
    /// When this step ran (the alerts' `detected_at`).
    pub(super) step_micros: i64,
}
