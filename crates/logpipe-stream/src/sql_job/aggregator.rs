//! The state of a streaming SQL job (the built-in window job's too): its
//! open windows, one accumulator per aggregate per (window, keys), and for
//! a two-level job the coarser groups' accumulators beside them. A window
//! closes once its end is at or before the watermark (event clock minus
//! the allowed lateness), and a record whose windows have all closed is
//! late: counted, and it never reopens a window. A closed group of a
//! two-level job carries its coarser group's accumulators.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use logpipe_core::stream_sql::{Aggregate, AggregateKind, Row, Scalar, StreamSpec};
use serde::{Deserialize, Serialize};

use logpipe_core::stream_sql::Value;

use super::eval::{Compiled, CompiledAggregate, Input};
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
    pub fn new(aggregate: &Aggregate) -> Acc {
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

    #[inline]
    fn add(&mut self, value: Value<'_>) {
        if value == Value::Null {
            return;
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Distinct(seen) => match value {
                Value::Text(text) => {
                    if !seen.contains(text) {
                        seen.insert(text.to_string());
                    }
                }
                other => {
                    if let Some(text) = other.to_scalar().into_key_text() {
                        seen.insert(text);
                    }
                }
            },
            Acc::Sum { int, float, any } => {
                match value {
                    Value::Int(v) => *int = int.saturating_add(v),
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
    /// A closed group of a two-level job: its coarser group's
    /// accumulators (`StreamSpec::rollup`). Empty while open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollup: Vec<Acc>,
}

/// The checkpointed state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub max_event_micros: Option<i64>,
    pub max_seen_micros: Option<i64>,
    pub late_records: u64,
    pub open: Vec<Group>,
    /// The coarser groups of a two-level job (keys: the rollup's keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollup_open: Vec<Group>,
}

/// The accumulator aggregate `index` reads: its own, or that of an
/// earlier percentile of the same input and filter (one sketch serves p50,
/// p95 and p99; the others' stay empty).
pub fn source_of(aggregates: &[Aggregate], index: usize) -> usize {
    let aggregate = &aggregates[index];
    if !matches!(aggregate.kind, AggregateKind::Percentile(_)) {
        return index;
    }
    aggregates[..index]
        .iter()
        .position(|other| {
            matches!(other.kind, AggregateKind::Percentile(_))
                && other.column == aggregate.column
                && other.argument == aggregate.argument
                && other.filter == aggregate.filter
        })
        .unwrap_or(index)
}

/// Aggregate `index`'s value from a group's accumulators.
pub fn value_of(aggregates: &[Aggregate], accs: &[Acc], index: usize) -> Scalar {
    accs.get(source_of(aggregates, index))
        .map_or(Scalar::Null, |acc| acc.value(&aggregates[index]))
}

/// A hasher for keys already hashed.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// One group's keys and accumulators.
type Entry = (Vec<Option<String>>, Vec<Acc>);

/// A window's groups, by a hash of their keys: a record finds its group
/// from borrowed key text, without building owned keys (per record).
#[derive(Debug, Clone, Default)]
struct Window {
    by_hash: HashMap<u64, Vec<Entry>, BuildHasherDefault<Prehashed>>,
}

impl Window {
    fn len(&self) -> usize {
        self.by_hash.values().map(Vec::len).sum()
    }

    /// The group of `keys` (hashed `hash`), created if new.
    fn group(
        &mut self,
        hash: u64,
        keys: &[Option<&str>],
        aggregates: &[Aggregate],
    ) -> &mut Vec<Acc> {
        let bucket = self.by_hash.entry(hash).or_default();
        let found = bucket.iter().position(|(owned, _)| {
            owned.len() == keys.len() && owned.iter().zip(keys).all(|(a, b)| a.as_deref() == *b)
        });
        let index = match found {
            Some(index) => index,
            None => {
                let owned = keys.iter().map(|k| k.map(str::to_string)).collect();
                bucket.push((owned, aggregates.iter().map(Acc::new).collect()));
                bucket.len() - 1
            }
        };
        &mut bucket[index].1
    }

    /// Its groups in key order.
    fn into_sorted(self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self.by_hash.into_values().flatten().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }
}

/// Keys up to this many live on the stack while a record is counted.
const INLINE_KEYS: usize = 8;
/// Columns read per record up to this many live on the stack.
const INLINE_SLOTS: usize = 8;

/// `n` key slots: in `inline` when they fit, else in `spilled`.
fn key_slots<'s, 'a>(
    inline: &'s mut [Option<&'a str>; INLINE_KEYS],
    spilled: &'s mut Vec<Option<&'a str>>,
    n: usize,
) -> &'s mut [Option<&'a str>] {
    if n <= INLINE_KEYS {
        &mut inline[..n]
    } else {
        spilled.resize(n, None);
        spilled
    }
}

/// A fast hash of the keys, eight bytes at a time (short text; no DoS to
/// fear in a job's own state, and equal hashes are compared in full).
fn key_hash(keys: &[Option<&str>]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash: u64 = 0;
    let mut mix = |word: u64| hash = (hash.rotate_left(5) ^ word).wrapping_mul(K);
    for key in keys {
        match key {
            None => mix(0),
            Some(text) => {
                mix(1 + text.len() as u64);
                let mut chunks = text.as_bytes().chunks_exact(8);
                for chunk in &mut chunks {
                    mix(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
                }
                // The tail in a register (bytes stored and read back as
                // one word would stall on store forwarding).
                let tail = chunks
                    .remainder()
                    .iter()
                    .enumerate()
                    .fold(0u64, |word, (i, byte)| word | u64::from(*byte) << (8 * i));
                mix(tail);
            }
        }
    }
    hash
}

type Open = BTreeMap<i64, Window>;

pub struct SqlAggregator {
    spec: Arc<StreamSpec>,
    lateness_micros: i64,
    max_event_micros: Option<i64>,
    max_seen_micros: Option<i64>,
    open: Open,
    /// The coarser groups of a two-level job.
    rollup_open: Open,
    /// Its filters, keys and inputs resolved to column slots.
    compiled: Compiled,
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
        let open_of = |groups: Vec<Group>| {
            let mut open = Open::new();
            for group in groups {
                let keys: Vec<Option<&str>> = group.keys.iter().map(|k| k.as_deref()).collect();
                let hash = key_hash(&keys);
                open.entry(group.start)
                    .or_default()
                    .by_hash
                    .entry(hash)
                    .or_default()
                    .push((group.keys.clone(), group.accs));
            }
            open
        };
        let sources = |aggregates: &[Aggregate]| -> Vec<usize> {
            (0..aggregates.len())
                .map(|i| source_of(aggregates, i))
                .collect()
        };
        SqlAggregator {
            compiled: Compiled::new(
                &spec,
                &sources(&spec.aggregates),
                &sources(spec.rollup_aggregates()),
            ),
            spec,
            lateness_micros,
            max_event_micros: snapshot.max_event_micros,
            max_seen_micros: snapshot.max_seen_micros.or(snapshot.max_event_micros),
            open: open_of(snapshot.open),
            rollup_open: open_of(snapshot.rollup_open),
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
            rollup_open: groups(self.rollup_open.clone()),
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
        self.open.values().map(Window::len).sum()
    }

    /// Open coarser groups of a two-level job (the window job's open
    /// (window, service) pairs).
    pub fn open_rollups(&self) -> usize {
        self.rollup_open.values().map(Window::len).sum()
    }

    pub fn watermark_micros(&self) -> Option<i64> {
        self.max_event_micros.map(|max| max - self.lateness_micros)
    }

    /// Counts `row` (stamped `micros`) into its open windows; returns the
    /// event time when it was counted, `None` when filtered out or late.
    pub fn observe<R: Row + ?Sized>(&mut self, row: &R, micros: i64) -> Option<i64> {
        let spec = &*self.spec;
        let compiled = &self.compiled;
        // Each column the job reads, read once (on the stack for up to
        // INLINE_SLOTS columns).
        let slots = compiled.slots.len();
        let mut values_inline: [Value<'_>; INLINE_SLOTS] = [Value::Null; INLINE_SLOTS];
        let mut values_spilled = Vec::new();
        let values = if slots <= INLINE_SLOTS {
            &mut values_inline[..slots]
        } else {
            values_spilled.resize(slots, Value::Null);
            &mut values_spilled[..]
        };
        compiled.slots.read(row, values);
        let values: &[Value<'_>] = values;
        if let Some(filter) = &compiled.filter
            && !filter.holds(values)
        {
            return None;
        }
        let size = spec.size_micros.max(1);
        let watermark = self.watermark_micros();
        let starts = spec
            .windows_of(micros)
            .filter(move |start| watermark.is_none_or(|w| start + size > w));
        if starts.clone().next().is_none() {
            self.late_records += 1;
            return None;
        }
        self.max_seen_micros = self.max_seen_micros.max(Some(micros));
        self.counted += 1;
        // Keys as text: borrowed, or made here for a number.
        let numbers: Vec<(usize, String)> = compiled
            .keys
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match values[*slot] {
                Value::Null | Value::Text(_) => None,
                other => other.to_scalar().into_key_text().map(|text| (i, text)),
            })
            .collect();
        let mut inline: [Option<&str>; INLINE_KEYS] = [None; INLINE_KEYS];
        let mut spilled: Vec<Option<&str>> = Vec::new();
        let keys = key_slots(&mut inline, &mut spilled, compiled.keys.len());
        for (i, slot) in compiled.keys.iter().enumerate() {
            keys[i] = match values[*slot] {
                Value::Text(text) => Some(text),
                Value::Null => None,
                _ => numbers
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, text)| text.as_str()),
            };
        }
        let keys: &[Option<&str>] = keys;
        let hash = key_hash(keys);
        for start in starts.clone() {
            let accs = self
                .open
                .entry(start)
                .or_default()
                .group(hash, keys, &spec.aggregates);
            add_record(accs, &compiled.aggregates, values);
        }
        if let Some(rollup) = &spec.rollup {
            let mut inline: [Option<&str>; INLINE_KEYS] = [None; INLINE_KEYS];
            let mut spilled: Vec<Option<&str>> = Vec::new();
            let coarse = key_slots(&mut inline, &mut spilled, rollup.keys.len());
            for (slot, i) in coarse.iter_mut().zip(&rollup.keys) {
                *slot = keys[*i];
            }
            let keys: &[Option<&str>] = coarse;
            let hash = key_hash(keys);
            for start in starts {
                let accs = self.rollup_open.entry(start).or_default().group(
                    hash,
                    keys,
                    &rollup.aggregates,
                );
                add_record(accs, &compiled.rollup, values);
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
    /// keys) order; a two-level job's each carrying its coarser group's
    /// accumulators.
    pub fn close_ready(&mut self) -> Vec<Group> {
        let Some(watermark) = self.watermark_micros() else {
            return Vec::new();
        };
        let first_open = watermark - self.spec.size_micros + 1;
        let still_open = self.open.split_off(&first_open);
        let closed = std::mem::replace(&mut self.open, still_open);
        let still_open = self.rollup_open.split_off(&first_open);
        let rollups = std::mem::replace(&mut self.rollup_open, still_open);
        let mut closed = groups(closed);
        if let Some(rollup) = &self.spec.rollup {
            let rollups: BTreeMap<(i64, Vec<Option<String>>), Vec<Acc>> = groups(rollups)
                .into_iter()
                .map(|g| ((g.start, g.keys), g.accs))
                .collect();
            for group in &mut closed {
                let keys: Vec<Option<String>> =
                    rollup.keys.iter().map(|i| group.keys[*i].clone()).collect();
                // Every record of a finer group is in its coarser group.
                if let Some(accs) = rollups.get(&(group.start, keys)) {
                    group.rollup = accs.clone();
                }
            }
        }
        closed
    }
}

/// Adds a record (its column `values`) to a group's accumulators.
fn add_record(accs: &mut [Acc], aggregates: &[Option<CompiledAggregate>], values: &[Value<'_>]) {
    for (acc, aggregate) in accs.iter_mut().zip(aggregates) {
        let Some(aggregate) = aggregate else {
            continue;
        };
        if !aggregate.admits(values) {
            continue;
        }
        match (&aggregate.input, &mut *acc) {
            // `count(*) [FILTER …]`, the most common aggregate: no value.
            (Input::Star, Acc::Count(n)) => *n += 1,
            // Aggregates of numbers take the input as one.
            (_, Acc::Avg { .. } | Acc::Min(_) | Acc::Max(_) | Acc::Sketch(_)) => {
                if let Some(number) = aggregate.number(values) {
                    acc.add(Value::Float(number));
                }
            }
            (_, _) => acc.add(aggregate.unfiltered_input(values)),
        }
    }
}

fn groups(open: Open) -> Vec<Group> {
    open.into_iter()
        .flat_map(|(start, window)| {
            window
                .into_sorted()
                .into_iter()
                .map(move |(keys, accs)| Group {
                    start,
                    keys,
                    accs,
                    rollup: Vec::new(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use logpipe_core::stream_sql::{OutputColumn, StreamSource};

    use super::*;

    /// A row of a text, a number and a float column.
    struct Fields {
        service: &'static str,
        status: i64,
        latency: f64,
    }

    impl Row for Fields {
        fn value(&self, column: &str) -> Value<'_> {
            match column {
                "service" => Value::Text(self.service),
                "status_code" => Value::Int(self.status),
                "response_time_ms" => Value::Float(self.latency),
                _ => Value::Null,
            }
        }
    }

    fn aggregate(name: &str, kind: AggregateKind, column: Option<&str>) -> Aggregate {
        Aggregate {
            name: name.to_string(),
            kind,
            column: column.map(str::to_string),
            argument: None,
            filter: None,
            integer: kind == AggregateKind::Count,
        }
    }

    /// Groups keyed by a text column and a number (as text), in
    /// key order; three percentiles of one column read one sketch.
    #[test]
    fn groups_by_borrowed_and_owned_keys_and_shares_one_sketch() {
        let spec = Arc::new(StreamSpec {
            source: StreamSource::Logs,
            size_micros: 10,
            slide_micros: 10,
            keys: vec!["service".to_string(), "status_code".to_string()],
            aggregates: vec![
                aggregate("n", AggregateKind::Count, None),
                aggregate(
                    "p50",
                    AggregateKind::Percentile(0.5),
                    Some("response_time_ms"),
                ),
                aggregate(
                    "p99",
                    AggregateKind::Percentile(0.99),
                    Some("response_time_ms"),
                ),
            ],
            filter: None,
            output: vec![OutputColumn::WindowStart("window_start".to_string())],
            rollup: None,
        });
        assert_eq!(
            (0..3)
                .map(|i| source_of(&spec.aggregates, i))
                .collect::<Vec<_>>(),
            [0, 1, 1]
        );
        let mut aggregator = SqlAggregator::restore(spec.clone(), 0, Snapshot::default());
        for i in 0..40 {
            let row = Fields {
                service: ["b", "a"][i % 2],
                status: [200, 500][(i / 2) % 2],
                latency: i as f64 + 1.0,
            };
            aggregator.observe(&row, 1);
        }
        assert_eq!(aggregator.open_groups(), 4);
        // The state survives a checkpoint.
        let mut aggregator = SqlAggregator::restore(spec.clone(), 0, aggregator.snapshot());
        aggregator.observe(
            &Fields {
                service: "a",
                status: 200,
                latency: 100.0,
            },
            2,
        );
        aggregator.advance_to(None);
        aggregator.advance_idle(100);
        let closed = aggregator.close_ready();
        let rows: Vec<(Vec<Option<String>>, Scalar)> = closed
            .iter()
            .map(|g| (g.keys.clone(), value_of(&spec.aggregates, &g.accs, 0)))
            .collect();
        let key = |s: &str, c: &str| vec![Some(s.to_string()), Some(c.to_string())];
        assert_eq!(
            rows,
            [
                (key("a", "200"), Scalar::Int(11)),
                (key("a", "500"), Scalar::Int(10)),
                (key("b", "200"), Scalar::Int(10)),
                (key("b", "500"), Scalar::Int(10)),
            ]
        );
        // p99 of group ("a", 200) reads p50's sketch: of 2, 6, … 38 and
        // 100, the tenth value (within 1 %), and p50 the sixth.
        let value = |i: usize| {
            value_of(&spec.aggregates, &closed[0].accs, i)
                .as_f64()
                .unwrap()
        };
        assert!((value(2) - 38.0).abs() <= 0.4, "{}", value(2));
        assert!((value(1) - 22.0).abs() <= 0.3, "{}", value(1));
        assert_eq!(
            closed[0].accs[2],
            Acc::new(&spec.aggregates[2]),
            "p99 keeps no sketch of its own"
        );
    }
}
