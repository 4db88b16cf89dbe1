//! The bus topics logpipe writes and reads (SPEC §1.4).

/// Log records from the collector (key: `service`).
pub const LOGS_RAW: &str = "logs.raw";
/// User activity events from the collector (key: `user_id`).
pub const EVENTS_ACTIVITY: &str = "events.activity";
/// Alerts the window job raises (key: `service`), as
/// [`crate::tables::AlertMessage`] JSON.
pub const ALERTS_REALTIME: &str = "alerts.realtime";
