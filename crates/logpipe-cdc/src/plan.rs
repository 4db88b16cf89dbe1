//! A batch of changes turned into what one target transaction does.
//!
//! Per table, changes are kept in their bus order and cut into segments
//! where the row's columns change (an `ALTER TABLE` in the source) or the
//! table is truncated. Within a segment only each key's last change counts
//! — every change carries the whole row — so a key updated 50 times in a
//! batch is written once. Segments are applied in order, so a change never
//! overtakes an earlier one of the same key, and a column is added before
//! the first row that has it.

use std::collections::{BTreeMap, HashMap};

use logpipe_config::CdcSinkConfig;
use serde_json::{Map, Value};

use crate::event::{Change, Op, SqlType, type_of_value};
use crate::step::TableStep;

/// Where one topic's changes go, and under which column names.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub schema: String,
    pub table: String,
    renames: BTreeMap<String, String>,
    exclude: Vec<String>,
}

impl Mapping {
    /// `[[cdc.sinks.tables]]` for `topic`, or the table named after the
    /// topic's last dot-separated part in `schema` (the target's default).
    pub fn of(sink: &CdcSinkConfig, topic: &str, schema: &str) -> Mapping {
        let configured = sink.table_of(topic);
        let name = configured
            .map(|t| t.table.clone())
            .unwrap_or_else(|| topic.rsplit('.').next().unwrap_or(topic).to_string());
        let (schema, table) = match name.split_once('.') {
            Some((schema, table)) => (schema.to_string(), table.to_string()),
            None => (schema.to_string(), name),
        };
        Mapping {
            schema,
            table,
            renames: configured.map(|t| t.columns.clone()).unwrap_or_default(),
            exclude: configured.map(|t| t.exclude.clone()).unwrap_or_default(),
        }
    }

    /// `schema.table`: the key of the sink's table cache.
    pub fn key(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// The target name of a source column (`None`: excluded).
    fn column(&self, source: &str) -> Option<String> {
        if self.exclude.iter().any(|c| c == source) {
            return None;
        }
        Some(
            self.renames
                .get(source)
                .cloned()
                .unwrap_or_else(|| source.to_string()),
        )
    }

    fn row(&self, row: Map<String, Value>) -> Map<String, Value> {
        row.into_iter()
            .filter_map(|(column, value)| self.column(&column).map(|c| (c, value)))
            .collect()
    }
}

/// The last change of a key within a segment.
#[derive(Debug)]
enum Action {
    Upsert(Map<String, Value>),
    Delete(Map<String, Value>),
}

#[derive(Debug)]
enum Segment {
    Rows {
        /// Target columns and types (`None`: from the values, no schema).
        columns: Vec<(String, Option<SqlType>)>,
        actions: Vec<Action>,
        by_key: HashMap<String, usize>,
    },
    Truncate,
}

/// One table's share of a batch.
#[derive(Debug)]
pub struct TablePlan {
    pub mapping: Mapping,
    /// The key's target column names, as the changes carry them.
    pub key: Vec<String>,
    segments: Vec<Segment>,
}

impl TablePlan {
    /// The columns of the first rows: what a new table is made with.
    pub fn first_columns(&self) -> Vec<(String, SqlType)> {
        self.segments
            .iter()
            .find_map(|segment| match segment {
                Segment::Rows { .. } => Some(columns_of(segment)),
                Segment::Truncate => None,
            })
            .unwrap_or_default()
    }
}

/// A batch being planned.
#[derive(Debug, Default)]
pub struct Planner {
    tables: Vec<TablePlan>,
    index: HashMap<String, usize>,
    /// Changes per (table, op) for the metrics.
    pub counts: BTreeMap<(String, &'static str), u64>,
}

impl Planner {
    /// Adds a change of the topic `mapping` maps, after those added before.
    pub fn add(&mut self, mapping: &Mapping, change: Change) {
        let table_key = mapping.key();
        *self
            .counts
            .entry((table_key.clone(), change.op.label()))
            .or_default() += 1;
        let at = *self.index.entry(table_key).or_insert_with(|| {
            self.tables.push(TablePlan {
                mapping: mapping.clone(),
                key: Vec::new(),
                segments: Vec::new(),
            });
            self.tables.len() - 1
        });
        let table = &mut self.tables[at];
        if change.op == Op::Truncate {
            table.segments.push(Segment::Truncate);
            return;
        }
        let key = mapping.row(change.key);
        if table.key.is_empty() {
            table.key = key.keys().cloned().collect();
        }
        let columns: Vec<(String, Option<SqlType>)> = match (&change.columns, &change.after) {
            (Some(columns), _) => columns
                .iter()
                .filter_map(|c| mapping.column(&c.name).map(|name| (name, Some(c.sql))))
                .collect(),
            (None, Some(after)) => after
                .keys()
                .filter_map(|c| mapping.column(c).map(|name| (name, None)))
                .collect(),
            // A delete without a schema: it fits any segment.
            (None, None) => Vec::new(),
        };
        let fits = |segment: &Segment| match segment {
            Segment::Rows {
                columns: current, ..
            } => columns.is_empty() || *current == columns,
            Segment::Truncate => false,
        };
        if !table.segments.last().is_some_and(fits) {
            table.segments.push(Segment::Rows {
                columns,
                actions: Vec::new(),
                by_key: HashMap::new(),
            });
        }
        let Some(Segment::Rows {
            actions, by_key, ..
        }) = table.segments.last_mut()
        else {
            unreachable!("a rows segment was just made")
        };
        let identity = identity(&key);
        let action = match change.after {
            Some(after) => Action::Upsert(mapping.row(after)),
            None => Action::Delete(key),
        };
        match by_key.get(&identity) {
            Some(&i) => actions[i] = action,
            None => {
                by_key.insert(identity, actions.len());
                actions.push(action);
            }
        }
    }

    /// The tables of the batch, to be described or made before
    /// [`Planner::steps`].
    pub fn tables(&self) -> &[TablePlan] {
        &self.tables
    }

    /// The statements, per table in bus order.
    pub fn steps(self) -> Vec<(String, TableStep)> {
        let mut steps = Vec::new();
        for table in self.tables {
            let key = table.mapping.key();
            for segment in table.segments {
                let columns = columns_of(&segment);
                match segment {
                    Segment::Truncate => steps.push((key.clone(), TableStep::Truncate)),
                    Segment::Rows { actions, .. } => {
                        if !columns.is_empty() {
                            steps.push((key.clone(), TableStep::Columns(columns.clone())));
                        }
                        let mut deletes = Vec::new();
                        let mut upserts = Vec::new();
                        for action in actions {
                            match action {
                                Action::Delete(key) => deletes.push(key),
                                Action::Upsert(row) => upserts.push(row),
                            }
                        }
                        if !deletes.is_empty() {
                            steps.push((key.clone(), TableStep::Deletes(deletes)));
                        }
                        if !upserts.is_empty() {
                            let names = columns.into_iter().map(|(name, _)| name).collect();
                            steps.push((
                                key.clone(),
                                TableStep::Upserts {
                                    columns: names,
                                    rows: upserts,
                                },
                            ));
                        }
                    }
                }
            }
        }
        steps
    }
}

/// A segment's columns with types: the schema's, or the first non-null
/// value's (text when every value is null).
fn columns_of(segment: &Segment) -> Vec<(String, SqlType)> {
    let Segment::Rows {
        columns, actions, ..
    } = segment
    else {
        return Vec::new();
    };
    columns
        .iter()
        .map(|(name, sql)| {
            let sql = sql.unwrap_or_else(|| {
                actions
                    .iter()
                    .find_map(|action| match action {
                        Action::Upsert(row) => {
                            row.get(name).filter(|v| !v.is_null()).map(type_of_value)
                        }
                        Action::Delete(_) => None,
                    })
                    .unwrap_or(SqlType::Text)
            });
            (name.clone(), sql)
        })
        .collect()
}

/// A key's values in column order, as one string.
fn identity(key: &Map<String, Value>) -> String {
    let mut pairs: Vec<(&String, &Value)> = key.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    serde_json::to_string(&pairs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Decoded, decode};

    fn sink() -> CdcSinkConfig {
        let mut sink = CdcSinkConfig {
            name: "t".into(),
            topics: vec!["car.car.uservehicle".into()],
            ..CdcSinkConfig::default()
        };
        sink.tables.push(logpipe_config::CdcTableConfig {
            topic: "car.car.uservehicle".into(),
            table: "inventory.vehicles".into(),
            columns: BTreeMap::from([("vin".to_string(), "vehicle_vin".to_string())]),
            exclude: vec!["secret".into()],
            score: None,
        });
        sink
    }

    fn change(op: &str, id: i64, row: Value) -> Change {
        let value = serde_json::json!({"op": op, "before": row, "after": if op == "d" { Value::Null } else { row.clone() }});
        match decode(
            format!("{{\"id\":{id}}}").as_bytes(),
            value.to_string().as_bytes(),
        )
        .unwrap()
        {
            Decoded::Change(change) => change,
            Decoded::Tombstone => unreachable!(),
        }
    }

    #[test]
    fn only_each_keys_last_change_is_written_with_mapped_names() {
        let mapping = Mapping::of(&sink(), "car.car.uservehicle", "public");
        assert_eq!(mapping.key(), "inventory.vehicles");
        let mut planner = Planner::default();
        planner.add(
            &mapping,
            change(
                "c",
                1,
                serde_json::json!({"id": 1, "vin": "A", "secret": "s"}),
            ),
        );
        planner.add(
            &mapping,
            change(
                "u",
                1,
                serde_json::json!({"id": 1, "vin": "B", "secret": "s"}),
            ),
        );
        planner.add(
            &mapping,
            change(
                "c",
                2,
                serde_json::json!({"id": 2, "vin": "C", "secret": "s"}),
            ),
        );
        planner.add(
            &mapping,
            change(
                "d",
                2,
                serde_json::json!({"id": 2, "vin": "C", "secret": "s"}),
            ),
        );
        planner.add(
            &mapping,
            change(
                "c",
                3,
                serde_json::json!({"id": 3, "vin": "D", "secret": "s"}),
            ),
        );
        assert_eq!(
            planner.counts[&("inventory.vehicles".to_string(), "upsert")],
            4
        );
        let steps = planner.steps();
        let shown: Vec<String> = steps.iter().map(|(_, step)| format!("{step:?}")).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(shown[0].starts_with("Columns("), "{shown:#?}");
        assert!(!shown[0].contains("secret") && shown[0].contains("vehicle_vin"));
        assert!(
            shown[1].contains("Deletes([{\"id\": Number(2)}])"),
            "{shown:#?}"
        );
        assert!(
            shown[2].contains("\"vehicle_vin\": String(\"B\")"),
            "{shown:#?}"
        );
        assert!(
            shown[2].contains("\"vehicle_vin\": String(\"D\")"),
            "{shown:#?}"
        );
        assert!(
            !shown[2].contains("\"A\"") && !shown[2].contains("\"C\""),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_new_column_or_a_truncate_starts_a_segment_in_order() {
        let mapping = Mapping::of(&sink(), "other.db.t", "public");
        assert_eq!(mapping.key(), "public.t");
        let mut planner = Planner::default();
        planner.add(&mapping, change("c", 1, serde_json::json!({"id": 1})));
        planner.add(
            &mapping,
            change("u", 1, serde_json::json!({"id": 1, "added": 5})),
        );
        let mut truncate = change("c", 9, serde_json::json!({"id": 9}));
        truncate.op = Op::Truncate;
        planner.add(&mapping, truncate);
        planner.add(
            &mapping,
            change("c", 2, serde_json::json!({"id": 2, "added": 6})),
        );
        let kinds: Vec<String> = planner
            .steps()
            .iter()
            .map(|(_, step)| {
                format!("{step:?}")
                    .split('(')
                    .next()
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Columns", "Upserts", "Columns", "Upserts", "Truncate", "Columns", "Upserts"
            ]
        );
    }
}
