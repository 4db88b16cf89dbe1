//! A step's output as rows: the `windows` table (the statement's rows in
//! the table's schema) and `alerts`, one batch per table and hour.

use arrow::error::ArrowError;
use logpipe_core::stream_sql::StreamSpec;
use logpipe_core::tables::{ALERTS, WINDOWS, windows};
use logpipe_lake::TableGroups;

use super::state::JobState;
use crate::alerts::table::{alerts_batch, by_hour};
use crate::sql_job::output::output_groups as output_groups_of;

/// A step's output as files: closed windows and alerts by table and hour.
pub(super) fn output_groups(
    state: &JobState,
    spec: &StreamSpec,
) -> Result<TableGroups, ArrowError> {
    let mut groups = output_groups_of(spec, &windows::schema(), &WINDOWS, &state.groups)?;
    for (hour, rows) in by_hour(&state.alerts, |a| a.window_start_micros) {
        groups.insert(
            (&ALERTS, hour),
            alerts_batch(&rows, state.step_micros)?.into(),
        );
    }
    Ok(groups)
}
