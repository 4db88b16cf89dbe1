//! A step's output as rows: the `windows` and `alerts` tables, one batch
//! per table and hour.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::error::ArrowError;
use logpipe_core::tables::{ALERTS, WINDOWS, alerts, windows};
use logpipe_core::time::HourPartition;
use logpipe_lake::TableGroups;

use super::state::JobState;
use crate::aggregate::ClosedWindow;
use crate::alerts::Alert;

/// One row per (window, service, level), with the service's figures.
pub fn windows_batch(
    windows: &[ClosedWindow],
    size_micros: i64,
) -> Result<RecordBatch, ArrowError> {
    let mut start = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut end = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut service = StringBuilder::new();
    let mut level = StringBuilder::new();
    let mut count = Int64Builder::new();
    let mut service_count = Int64Builder::new();
    let mut error_rate = Float64Builder::new();
    let mut quantiles = [
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
    ];
    let mut classes: [Int64Builder; 5] = std::array::from_fn(|_| Int64Builder::new());
    for window in windows {
        let figures = &window.figures;
        let latency = figures.latency_percentiles();
        for (row_level, row_count) in &figures.by_level {
            start.append_value(window.window_start_micros);
            end.append_value(window.window_start_micros + size_micros);
            service.append_value(&window.service);
            level.append_value(row_level.as_str());
            count.append_value(*row_count as i64);
            service_count.append_value(figures.count as i64);
            error_rate.append_value(figures.error_rate());
            for (builder, value) in quantiles.iter_mut().zip(latency) {
                builder.append_option(value);
            }
            for (builder, value) in classes.iter_mut().zip(figures.status_classes) {
                builder.append_value(value as i64);
            }
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(service.finish()),
        Arc::new(level.finish()),
        Arc::new(count.finish()),
        Arc::new(service_count.finish()),
        Arc::new(error_rate.finish()),
    ];
    columns.extend(
        quantiles
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef),
    );
    columns.extend(classes.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    RecordBatch::try_new(windows::schema(), columns)
}

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

/// A step's output as files: closed windows and alerts by table and hour.
pub(super) fn output_groups(state: &JobState, size_micros: i64) -> Result<TableGroups, ArrowError> {
    let mut groups = TableGroups::new();
    for (hour, rows) in by_hour(&state.closed, |w| w.window_start_micros) {
        groups.insert((&WINDOWS, hour), windows_batch(&rows, size_micros)?);
    }
    for (hour, rows) in by_hour(&state.alerts, |a| a.window_start_micros) {
        groups.insert((&ALERTS, hour), alerts_batch(&rows, state.step_micros)?);
    }
    Ok(groups)
}
