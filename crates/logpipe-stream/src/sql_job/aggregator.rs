//! The state of a streaming SQL job: its open windows, one accumulator per
//! aggregate per (window, keys), with the same event clock, lateness and
//! closing rules as the built-in window job ([`crate::aggregate`]): a window
//! closes once its end is at or before the watermark (event clock minus
//! the allowed lateness), and a record whose windows have all closed is
//! late: counted, and it never reopens a window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use logpipe_core::stream_sql::{Aggregate, AggregateKind, Row, Scalar, StreamSpec};
use serde::{Deserialize, Serialize};

use crate::aggregate::sketch::QuantileSketch;

/// Relative accuracy of `approx_percentile_cont`.
const PERCENTILE_ACCURACY: f64 = 0.01;

/// One aggregate's running value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Acc {
    Count(u64),
    Distinct(BTreeSet<String>),
    Sum { int: i64, float: f64, any: bool },
    Avg { sum: f64, count: u64 },
    Min(Option<f64>),
    Max(Option<f64>),
    Sketch(QuantileSketch),
}

impl Acc {
    fn new(aggregate: &Aggregate) -> Acc {
        match aggregate.kind {
            AggregateKind::Count => Acc::Count(0),
            AggregateKind::CountDistinct => Acc::Distinct(BTreeSet::new()),
            AggregateKind::Sum => Acc::Sum {
                int: 0,
                float: 0.0,
                any: false,
            },
            AggregateKind::Avg => Acc::Avg { sum: 0.0, count: 0 },
            AggregateKind::Min => Acc::Min(None),
            AggregateKind::Max => Acc::Max(None),
            AggregateKind::Percentile(_) => Acc::Sketch(QuantileSketch::new(PERCENTILE_ACCURACY)),
        }
    }

    fn add(&mut self, value: Scalar) {
        if value == Scalar::Null {
            return;
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Distinct(seen) => {
                if let Some(text) = value.into_key_text() {
                    seen.insert(text);
                }
            }
            Acc::Sum { int, float, any } => {
                match value {
                    Scalar::Int(v) => *int = int.saturating_add(v),
                    other => *float += other.as_f64().unwrap_or(0.0),
                }
                *any = true;
            }
            Acc::Avg { sum, count } => {
                if let Some(v) = value.as_f64() {
                    *sum += v;
                    *count += 1;
                }
            }
            Acc::Min(min) => {
                if let Some(v) = value.as_f64() {
                    *min = Some(min.map_or(v, |m| m.min(v)));
                }
            }
            Acc::Max(max) => {
                if let Some(v) = value.as_f64() {
                    *max = Some(max.map_or(v, |m| m.max(v)));
                }
            }
            Acc::Sketch(sketch) => {
                if let Some(v) = value.as_f64() {
                    sketch.add(v);
                }
            }
        }
    }

    /// The aggregate's value.
    pub fn value(&self, aggregate: &Aggregate) -> Scalar {
        match self {
            Acc::Count(n) => Scalar::Int(*n as i64),
            Acc::Distinct(seen) => Scalar::Int(seen.len() as i64),
            Acc::Sum { any: false, .. } => Scalar::Null,
            Acc::Sum { int, float, .. } if aggregate.integer => Scalar::Int(*int + *float as i64),
            Acc::Sum { int, float, .. } => Scalar::Float(*int as f64 + *float),
            Acc::Avg { count: 0, .. } => Scalar::Null,
            Acc::Avg { sum, count } => Scalar::Float(*sum / *count as f64),
            Acc::Min(v) | Acc::Max(v) => v.map_or(Scalar::Null, Scalar::Float),
            Acc::Sketch(sketch) => match aggregate.kind {
                AggregateKind::Percentile(q) => {
                    sketch.quantile(q).map_or(Scalar::Null, Scalar::Float)
                }
                _ => Scalar::Null,
            },
        }
    }
}

/// One (window, keys) group and its accumulators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub start: i64,
    /// Key values as text (`None`: NULL).
    pub keys: Vec<Option<String>>,
    pub accs: Vec<Acc>,
}

/// The checkpointed state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub max_event_micros: Option<i64>,
    pub max_seen_micros: Option<i64>,
    pub late_records: u64,
    pub open: Vec<Group>,
}

type Open = BTreeMap<i64, BTreeMap<Vec<Option<String>>, Vec<Acc>>>;

pub struct SqlAggregator {
    spec: Arc<StreamSpec>,
    lateness_micros: i64,
    max_event_micros: Option<i64>,
    max_seen_micros: Option<i64>,
    open: Open,
    late_records: u64,
    /// Records counted since this process started (not checkpointed).
    counted: u64,
}

impl SqlAggregator {
    pub fn restore(
        spec: Arc<StreamSpec>,
        lateness_micros: i64,
        snapshot: Snapshot,
    ) -> SqlAggregator {
        let mut open = Open::new();
        for group in snapshot.open {
            open.entry(group.start)
                .or_default()
                .insert(group.keys, group.accs);
        }
        SqlAggregator {
            spec,
            lateness_micros,
            max_event_micros: snapshot.max_event_micros,
            max_seen_micros: snapshot.max_seen_micros.or(snapshot.max_event_micros),
            open,
            late_records: snapshot.late_records,
            counted: 0,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            max_event_micros: self.max_event_micros,
            max_seen_micros: self.max_seen_micros,
            late_records: self.late_records,
            open: groups(self.open.clone()),
        }
    }

    pub fn late_records(&self) -> u64 {
        self.late_records
    }

    pub fn counted(&self) -> u64 {
        self.counted
    }

    /// The event clock.
    pub fn event_time_micros(&self) -> Option<i64> {
        self.max_event_micros
    }

    pub fn open_groups(&self) -> usize {
        self.open.values().map(BTreeMap::len).sum()
    }

    fn watermark_micros(&self) -> Option<i64> {
        self.max_event_micros.map(|max| max - self.lateness_micros)
    }

    /// Counts `row` (stamped `micros`) into its open windows; returns the
    /// event time when it was counted, `None` when filtered out or late.
    pub fn observe(&mut self, row: &dyn Row, micros: i64) -> Option<i64> {
        if let Some(filter) = &self.spec.filter
            && !filter.holds(row)
        {
            return None;
        }
        let size = self.spec.size_micros;
        let watermark = self.watermark_micros();
        let starts: Vec<i64> = self
            .spec
            .windows_of(micros)
            .into_iter()
            .filter(|start| watermark.is_none_or(|w| start + size > w))
            .collect();
        if starts.is_empty() {
            self.late_records += 1;
            return None;
        }
        self.max_seen_micros = self.max_seen_micros.max(Some(micros));
        self.counted += 1;
        let keys: Vec<Option<String>> = self
            .spec
            .keys
            .iter()
            .map(|k| row.get(k).into_key_text())
            .collect();
        // Which aggregates take this row, and what value each takes.
        let values: Vec<Option<Scalar>> = self
            .spec
            .aggregates
            .iter()
            .map(|aggregate| {
                if aggregate.filter.as_ref().is_some_and(|f| !f.holds(row)) {
                    return None;
                }
                Some(match &aggregate.column {
                    None => Scalar::Bool(true),
                    Some(column) => row.get(column),
                })
            })
            .collect();
        for start in starts {
            let groups = self.open.entry(start).or_default();
            if !groups.contains_key(&keys) {
                let accs = self.spec.aggregates.iter().map(Acc::new).collect();
                groups.insert(keys.clone(), accs);
            }
            if let Some(accs) = groups.get_mut(&keys) {
                for (acc, value) in accs.iter_mut().zip(&values) {
                    if let Some(value) = value {
                        acc.add(value.clone());
                    }
                }
            }
        }
        Some(micros)
    }

    /// Moves the event clock up to the largest event time seen, not past
    /// `limit`, never backwards.
    pub fn advance_to(&mut self, limit: Option<i64>) {
        let Some(seen) = self.max_seen_micros else {
            return;
        };
        let target = limit.map_or(seen, |limit| limit.min(seen));
        self.max_event_micros = self.max_event_micros.max(Some(target));
    }

    /// Moves event time forward without a record (an idle input).
    pub fn advance_idle(&mut self, micros: i64) {
        if let Some(max) = &mut self.max_event_micros {
            *max += micros.max(0);
            self.max_seen_micros = self.max_seen_micros.max(Some(*max));
        }
    }

    /// The windows whose end is at or before the watermark, in (start,
    /// keys) order.
    pub fn close_ready(&mut self) -> Vec<Group> {
        let Some(watermark) = self.watermark_micros() else {
            return Vec::new();
        };
        let first_open = watermark - self.spec.size_micros + 1;
        let still_open = self.open.split_off(&first_open);
        groups(std::mem::replace(&mut self.open, still_open))
    }
}

fn groups(open: Open) -> Vec<Group> {
    open.into_iter()
        .flat_map(|(start, groups)| {
            groups
                .into_iter()
                .map(move |(keys, accs)| Group { start, keys, accs })
        })
        .collect()
}
