//! The window job's statement (`jobs/windows.sql`) and what the job needs
//! of it besides its rows: which columns feed the anomaly detector and
//! the `logpipe_window_*` metrics (each service's figures), and how a
//! commit record written before the job ran SQL becomes its state.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::Schema;
use logpipe_core::record::Level;
use logpipe_core::stream_sql::{AggregateKind, SAMPLE_COLUMNS, StreamSpec};
use logpipe_core::tables::windows;

use crate::aggregate::{ClosedWindow, ServiceWindow, WindowSnapshot};
use crate::sql_job::aggregator::{Acc, Group, Snapshot, source_of};

/// The built-in window job, as the streaming SQL it runs. `logpipe up`
/// runs it with `[windows] size` in place of its window.
pub const WINDOWS_SQL: &str = include_str!("../../jobs/windows.sql");

/// Where each service's figures are in the statement's groups.
#[derive(Debug, Clone)]
pub(super) struct Columns {
    /// Index of `service` and `level` in the keys.
    service: usize,
    level: usize,
    /// The per-level `count` aggregate.
    count: usize,
    /// The per-service aggregates, by name (`service_count`, `error_rate`,
    /// `p50_ms`…, `status_1xx`…).
    rollup: BTreeMap<String, usize>,
    /// The sketch behind the service's percentiles (`p95_ms`).
    latency: usize,
    /// `status_1xx` … `status_5xx`.
    status: [usize; 5],
}

impl Columns {
    /// Checks that `spec` is a window job the detector, the metrics and
    /// the `windows` table can take: rows keyed by service and level with
    /// each service's figures, the columns of `windows` in order, read
    /// from the fields a window needs only.
    pub(super) fn of(spec: &StreamSpec) -> Result<Columns, String> {
        let key = |name: &str| {
            spec.keys.iter().position(|k| k == name).ok_or_else(|| {
                format!(
                    "the window job groups by service and level, not {:?}",
                    spec.keys
                )
            })
        };
        let (service, level) = (key("service")?, key("level")?);
        let rollup = spec.rollup.as_ref().filter(|r| r.keys == [service]).ok_or(
            "the window job joins each row to its service's figures (a WITH grouped by service)",
        )?;
        let count = spec
            .aggregates
            .iter()
            .position(|a| a.name == "count" && a.kind == AggregateKind::Count)
            .ok_or("the window job counts each level as `count`")?;
        let names: BTreeMap<String, usize> = rollup
            .aggregates
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), i))
            .collect();
        let named = |name: &str| {
            names
                .get(name)
                .copied()
                .ok_or_else(|| format!("the window job's service figures have no {name}"))
        };
        let latency = named("p95_ms")?;
        if !matches!(
            rollup.aggregates[latency].kind,
            AggregateKind::Percentile(_)
        ) {
            return Err("p95_ms is a percentile of response_time_ms".to_string());
        }
        // The sketch p95_ms reads (shared with p50_ms and p99_ms).
        let latency = source_of(&rollup.aggregates, latency);
        let status = [
            named("status_1xx")?,
            named("status_2xx")?,
            named("status_3xx")?,
            named("status_4xx")?,
            named("status_5xx")?,
        ];
        named("service_count")?;
        named("error_rate")?;
        if let Some(column) = spec
            .columns_read()
            .into_iter()
            .find(|c| !SAMPLE_COLUMNS.contains(c))
        {
            return Err(format!(
                "the window job reads {} only, not {column}",
                SAMPLE_COLUMNS.join(", ")
            ));
        }
        let ours = crate::sql_job::output::schema(spec);
        if !same_columns(&ours, &windows::schema()) {
            return Err(format!(
                "the window job's columns must be the windows table's, in order: {}",
                windows::schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Columns {
            service,
            level,
            count,
            rollup: names,
            latency,
            status,
        })
    }

    /// Each service's figures in the closed `groups` (ordered by window
    /// and keys), as the detector and the metrics take them.
    pub(super) fn service_windows(&self, groups: &[Group]) -> Vec<ClosedWindow> {
        let mut out: Vec<ClosedWindow> = Vec::new();
        for group in groups {
            let service = group.keys[self.service].clone().unwrap_or_default();
            let level = group.keys[self.level].as_deref().and_then(Level::parse);
            let count = match group.accs.get(self.count) {
                Some(Acc::Count(n)) => *n,
                _ => 0,
            };
            let same = out
                .last()
                .is_some_and(|w| w.window_start_micros == group.start && w.service == service);
            if !same {
                let mut figures = ServiceWindow::default();
                if let Some(Acc::Sketch(sketch)) = group.rollup.get(self.latency) {
                    figures.latency = sketch.clone();
                }
                for (class, index) in self.status.iter().enumerate() {
                    if let Some(Acc::Count(n)) = group.rollup.get(*index) {
                        figures.status_classes[class] = *n;
                    }
                }
                out.push(ClosedWindow {
                    window_start_micros: group.start,
                    service,
                    figures,
                });
            }
            let window = out.last_mut().expect("pushed above");
            window.figures.count += count;
            if let Some(level) = level {
                *window.figures.by_level.entry(level).or_insert(0) += count;
            }
        }
        out
    }

    /// The groups of one service's window as the window job's own
    /// aggregator kept it before it ran SQL: one group per level, with
    /// the service's figures as the coarser group's accumulators.
    fn groups_of(&self, spec: &StreamSpec, window: &ClosedWindow) -> (Vec<Group>, Vec<Acc>) {
        let rollup = spec.rollup_aggregates();
        let figures = &window.figures;
        let errors = figures.by_level.get(&Level::Error).copied().unwrap_or(0);
        let mut accs: Vec<Acc> = rollup.iter().map(Acc::new).collect();
        for (name, index) in &self.rollup {
            accs[*index] = match name.as_str() {
                "service_count" => Acc::Count(figures.count),
                "error_rate" => Acc::Avg {
                    sum: errors as f64,
                    count: figures.count,
                },
                "p50_ms" | "p95_ms" | "p99_ms" => Acc::Sketch(figures.latency.clone()),
                _ => match self.status.iter().position(|i| i == index) {
                    Some(class) => Acc::Count(figures.status_classes[class]),
                    None => continue,
                },
            };
        }
        let groups = figures
            .by_level
            .iter()
            .map(|(level, n)| {
                let mut keys = vec![None; spec.keys.len()];
                keys[self.service] = Some(window.service.clone());
                keys[self.level] = Some(level.as_str().to_string());
                let mut group_accs: Vec<Acc> = spec.aggregates.iter().map(Acc::new).collect();
                group_accs[self.count] = Acc::Count(*n);
                Group {
                    start: window.window_start_micros,
                    keys,
                    accs: group_accs,
                    rollup: Vec::new(),
                }
            })
            .collect();
        (groups, accs)
    }

    /// A state written by the window job before it ran SQL, as the SQL
    /// aggregator's.
    pub(super) fn migrate_state(&self, spec: &StreamSpec, old: WindowSnapshot) -> Snapshot {
        let mut snapshot = Snapshot {
            max_event_micros: old.max_event_micros,
            max_seen_micros: old.max_seen_micros,
            late_records: old.late_records,
            open: Vec::new(),
            rollup_open: Vec::new(),
        };
        for window in &old.open {
            let (groups, accs) = self.groups_of(spec, window);
            snapshot.open.extend(groups);
            snapshot.rollup_open.push(Group {
                start: window.window_start_micros,
                keys: vec![Some(window.service.clone())],
                accs,
                rollup: Vec::new(),
            });
        }
        snapshot
    }

    /// A step's closed windows written before the job ran SQL, as closed
    /// groups (each carrying its service's figures).
    pub(super) fn migrate_closed(&self, spec: &StreamSpec, old: &[ClosedWindow]) -> Vec<Group> {
        let mut out = Vec::new();
        for window in old {
            let (groups, accs) = self.groups_of(spec, window);
            out.extend(groups.into_iter().map(|mut g| {
                g.rollup = accs.clone();
                g
            }));
        }
        out
    }
}

/// Same column names and types in the same order (nullability aside).
fn same_columns(a: &Arc<Schema>, b: &Arc<Schema>) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use logpipe_core::record::sample::Sample;

    use super::*;
    use crate::sql_job::aggregator::SqlAggregator;

    const T0: i64 = 1_736_645_160_000_000; // 2025-01-12T01:26:00Z, a 5 s boundary

    fn spec() -> Arc<StreamSpec> {
        Arc::new(logpipe_query::stream_sql::parse_stream(WINDOWS_SQL).unwrap())
    }

    fn sample(ms: i64, service: &str, level: Level, latency: f64, status: i32) -> Sample<'_> {
        Sample {
            timestamp_micros: T0 + ms * 1000,
            level,
            service: Cow::Borrowed(service),
            response_time_ms: Some(latency),
            status_code: Some(status),
        }
    }

    fn observe(aggregator: &mut SqlAggregator, sample: &Sample<'_>) -> bool {
        aggregator
            .observe(sample, sample.timestamp_micros)
            .is_some()
    }

    #[test]
    fn records_land_in_their_window_and_close_in_order() {
        let spec = spec();
        let columns = Columns::of(&spec).unwrap();
        let mut windows = SqlAggregator::restore(spec.clone(), 2_000_000, Snapshot::default());
        for (ms, service, level) in [
            (0, "b", Level::Info),
            (4_999, "a", Level::Error),
            (1_000, "a", Level::Info),
            (5_000, "a", Level::Info),
        ] {
            assert!(observe(
                &mut windows,
                &sample(ms, service, level, 10.0, 200)
            ));
        }
        // Max event time 5.0 s, watermark 3.0 s: the first window (end 5 s) is still open.
        windows.advance_to(None);
        assert!(windows.close_ready().is_empty());
        observe(&mut windows, &sample(7_000, "a", Level::Info, 10.0, 200));
        // A backlogged partition holds the clock at 6 s: nothing closes.
        windows.advance_to(Some(T0 + 6_000_000));
        assert!(windows.close_ready().is_empty());
        windows.advance_to(None);
        let closed = columns.service_windows(&windows.close_ready());
        let keys: Vec<_> = closed
            .iter()
            .map(|w| {
                (
                    w.window_start_micros - T0,
                    w.service.as_str(),
                    w.figures.count,
                )
            })
            .collect();
        assert_eq!(keys, vec![(0, "a", 2), (0, "b", 1)]);
        assert_eq!(closed[0].figures.error_rate(), 0.5);
        // A record for the closed window is late and changes nothing.
        assert!(!observe(
            &mut windows,
            &sample(100, "a", Level::Error, 10.0, 500)
        ));
        assert_eq!(windows.late_records(), 1);
        windows.advance_idle(60_000_000);
        let rest = columns.service_windows(&windows.close_ready());
        assert_eq!(rest.len(), 1);
        assert_eq!(
            (rest[0].window_start_micros - T0, rest[0].figures.count),
            (5_000_000, 2)
        );
    }

    /// 100 records of one service: its figures, and the rows of the
    /// `windows` table they make (one per level, each with the service's
    /// figures).
    #[test]
    fn each_service_has_its_figures_on_every_level_row() {
        let spec = spec();
        let columns = Columns::of(&spec).unwrap();
        let mut windows = SqlAggregator::restore(spec.clone(), 0, Snapshot::default());
        for i in 0..100 {
            let level = if i < 7 { Level::Error } else { Level::Info };
            let status = if i < 7 {
                503
            } else if i < 10 {
                404
            } else {
                200
            };
            observe(
                &mut windows,
                &sample(i * 10, "api", level, f64::from(i as i32 + 1), status),
            );
        }
        windows.advance_to(None);
        windows.advance_idle(60_000_000);
        let groups = windows.close_ready();
        let closed = columns.service_windows(&groups);
        let figures = &closed[0].figures;
        assert_eq!(figures.count, 100);
        assert!((figures.error_rate() - 0.07).abs() < 1e-12);
        assert_eq!(figures.status_classes, [0, 90, 0, 3, 7]);
        let p95 = figures.latency.quantile(0.95).unwrap();
        assert!((p95 - 95.0).abs() <= 95.0 * 0.01, "p95 {p95}");
        assert_eq!(figures.by_level[&Level::Info], 93);

        let rows = crate::sql_job::output::batch(&spec, &windows::schema(), &groups).unwrap();
        assert_eq!(rows.num_rows(), 2);
        let column = |name: &str| rows.column_by_name(name).unwrap().clone();
        let ints = |name: &str| -> Vec<i64> {
            column(name)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        assert_eq!(ints("count"), [7, 93]); // ERROR, INFO
        assert_eq!(ints("service_count"), [100, 100]);
        assert_eq!(ints("status_5xx"), [7, 7]);
        let rate = column("error_rate");
        let rate = rate
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap();
        assert_eq!(rate.value(0), figures.error_rate());
        let p95_column = column("p95_ms");
        let p95_column = p95_column
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap();
        assert_eq!(p95_column.value(1), p95);
    }

    /// A commit record written by the window job before it ran SQL: its
    /// open windows go on, and its step's output is rebuilt, with the
    /// same figures.
    #[test]
    fn a_commit_record_from_before_sql_resumes_with_the_same_figures() {
        let spec = spec();
        let columns = Columns::of(&spec).unwrap();
        let mut figures = ServiceWindow {
            count: 10,
            ..ServiceWindow::default()
        };
        figures.by_level.insert(Level::Error, 3);
        figures.by_level.insert(Level::Warn, 7);
        for ms in 1..=10 {
            figures.latency.add(f64::from(ms) * 10.0);
        }
        figures.status_classes = [0, 6, 0, 1, 3];
        let old = ClosedWindow {
            window_start_micros: T0,
            service: "api".to_string(),
            figures,
        };
        // The step's output, rebuilt from the record.
        let groups = columns.migrate_closed(&spec, std::slice::from_ref(&old));
        assert_eq!(columns.service_windows(&groups), std::slice::from_ref(&old));
        // The open window, which new records join.
        let snapshot = WindowSnapshot {
            max_event_micros: Some(T0 + 1_000_000),
            max_seen_micros: Some(T0 + 1_000_000),
            late_records: 4,
            open: vec![old.clone()],
        };
        let mut windows =
            SqlAggregator::restore(spec.clone(), 0, columns.migrate_state(&spec, snapshot));
        observe(&mut windows, &sample(2_000, "api", Level::Error, 55.0, 500));
        windows.advance_idle(60_000_000);
        let closed = columns.service_windows(&windows.close_ready());
        let mut expected = old.figures.clone();
        expected.count += 1;
        *expected.by_level.get_mut(&Level::Error).unwrap() += 1;
        expected.latency.add(55.0);
        expected.status_classes[4] += 1;
        assert_eq!(closed[0].figures, expected);
        assert_eq!(windows.late_records(), 4);
    }

    #[test]
    fn a_statement_that_cannot_feed_the_windows_table_is_refused() {
        let mut spec = (*spec()).clone();
        spec.keys[1] = "host".to_string();
        assert!(
            Columns::of(&spec)
                .unwrap_err()
                .contains("service and level")
        );
        let mut spec = (*super::tests::spec()).clone();
        spec.output.pop();
        assert!(Columns::of(&spec).unwrap_err().contains("windows table's"));
    }
}
