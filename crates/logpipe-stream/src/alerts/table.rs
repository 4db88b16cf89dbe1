//! Alerts as rows of the lake table `alerts`, and the grouping by hour
//! every windowed job's output files follow.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::error::ArrowError;
use logpipe_core::tables::alerts;
use logpipe_core::time::HourPartition;

use super::Alert;

/// One row per alert.
pub fn alerts_batch(alerts: &[Alert], detected_at_micros: i64) -> Result<RecordBatch, ArrowError> {
    let mut text: [StringBuilder; 6] = std::array::from_fn(|_| StringBuilder::new());
    let mut value = Float64Builder::new();
    let mut threshold = Float64Builder::new();
    let mut times: [TimestampMicrosecondBuilder; 4] =
        std::array::from_fn(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"));
    let mut summary = StringBuilder::new();
    for alert in alerts {
        for (builder, field) in text.iter_mut().zip([
            alert.alert_id.as_str(),
            alert.incident_id.as_str(),
            alert.state.as_str(),
            alert.rule.as_str(),
            alert.severity(),
            alert.service.as_str(),
        ]) {
            builder.append_value(field);
        }
        value.append_value(alert.value);
        threshold.append_value(alert.threshold);
        for (builder, micros) in times.iter_mut().zip([
            alert.window_start_micros,
            alert.window_end_micros,
            alert.incident_start_micros,
            detected_at_micros,
        ]) {
            builder.append_value(micros);
        }
        summary.append_value(&alert.summary);
    }
    let mut columns: Vec<ArrayRef> = text
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    columns.push(Arc::new(value.finish()));
    columns.push(Arc::new(threshold.finish()));
    columns.extend(times.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(summary.finish()));
    RecordBatch::try_new(alerts::schema(), columns)
}

/// `items` grouped by the hour of their window start.
pub(crate) fn by_hour<T: Clone>(
    items: &[T],
    start: impl Fn(&T) -> i64,
) -> BTreeMap<HourPartition, Vec<T>> {
    let mut hours: BTreeMap<HourPartition, Vec<T>> = BTreeMap::new();
    for item in items {
        hours
            .entry(HourPartition::of_micros(start(item)))
            .or_default()
            .push(item.clone());
    }
    hours
}
