//! The alerts behind `GET /api/alerts`, built with DataFrame expressions:
//! no SQL text is ever assembled from request input.

use datafusion::common::JoinType;
use datafusion::prelude::{col, lit};

use crate::error::Result;
use crate::{QueryEngine, QueryResult};

/// Which alerts to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only FIRING alerts of incidents without a RESOLVED one yet.
    pub firing_only: bool,
    pub service: Option<String>,
    /// Newest first, at most this many.
    pub limit: usize,
}

/// The columns listed, in order.
const COLUMNS: [&str; 13] = [
    "alert_id",
    "incident_id",
    "state",
    "rule",
    "severity",
    "service",
    "value",
    "threshold",
    "window_start",
    "window_end",
    "incident_start",
    "detected_at",
    "summary",
];

impl QueryEngine {
    /// The alerts `filter` selects, newest first.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<QueryResult> {
        self.register_new_tables().await?;
        let mut frame = self.ctx.table("alerts").await?;
        if filter.firing_only {
            let resolved = self
                .ctx
                .table("alerts")
                .await?
                .filter(col("state").eq(lit("RESOLVED")))?
                .select(vec![col("incident_id").alias("resolved_incident")])?;
            frame = frame.filter(col("state").eq(lit("FIRING")))?.join(
                resolved,
                JoinType::LeftAnti,
                &["incident_id"],
                &["resolved_incident"],
                None,
            )?;
        }
        if let Some(service) = &filter.service {
            frame = frame.filter(col("service").eq(lit(service.as_str())))?;
        }
        let frame = frame
            .select(COLUMNS.iter().map(|c| col(*c)).collect::<Vec<_>>())?
            .sort(vec![
                col("detected_at").sort(false, true),
                col("window_end").sort(false, true),
                col("alert_id").sort(true, false),
            ])?
            .limit(0, Some(filter.limit))?;
        crate::collect(frame, filter.limit, self.limits.max_memory_bytes, None).await
    }
}
