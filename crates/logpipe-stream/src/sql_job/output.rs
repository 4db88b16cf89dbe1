//! A step's closed windows as rows of the job's table, one batch per hour
//! of window start (the table is partitioned by it, like `windows`).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use logpipe_core::stream_sql::{OutputColumn, Scalar, StreamSpec};
use logpipe_core::tables::TableDef;
use logpipe_lake::TableGroups;

use super::aggregator::{Group, value_of};
use crate::alerts::table::by_hour;

/// The table's file schema: the SELECT list in order.
pub fn schema(spec: &StreamSpec) -> SchemaRef {
    let fields: Vec<Field> = spec
        .output
        .iter()
        .map(|column| {
            let name = spec.column_name(column);
            match column {
                OutputColumn::WindowStart(_) | OutputColumn::WindowEnd(_) => Field::new(
                    name,
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                OutputColumn::Key(_) => Field::new(name, DataType::Utf8, true),
                OutputColumn::Aggregate(index) if spec.aggregates[*index].integer => {
                    Field::new(name, DataType::Int64, true)
                }
                OutputColumn::Aggregate(_) => Field::new(name, DataType::Float64, true),
                OutputColumn::Rollup(index) if spec.rollup_aggregates()[*index].integer => {
                    Field::new(name, DataType::Int64, true)
                }
                OutputColumn::Rollup(_) => Field::new(name, DataType::Float64, true),
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

enum Builder {
    Time(TimestampMicrosecondBuilder),
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
}

/// One row per group, in `schema` (the job's own, or a table's with the
/// same columns: the built-in window job writes `windows`).
pub fn batch(
    spec: &StreamSpec,
    schema: &SchemaRef,
    groups: &[Group],
) -> Result<RecordBatch, ArrowError> {
    let mut builders: Vec<Builder> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Timestamp(..) => {
                Builder::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            DataType::Utf8 => Builder::Text(StringBuilder::new()),
            DataType::Int64 => Builder::Int(Int64Builder::new()),
            _ => Builder::Float(Float64Builder::new()),
        })
        .collect();
    for group in groups {
        for (column, builder) in spec.output.iter().zip(builders.iter_mut()) {
            match (column, builder) {
                (OutputColumn::WindowStart(_), Builder::Time(b)) => b.append_value(group.start),
                (OutputColumn::WindowEnd(_), Builder::Time(b)) => {
                    b.append_value(group.start + spec.size_micros)
                }
                (OutputColumn::Key(i), Builder::Text(b)) => {
                    b.append_option(group.keys[*i].as_deref())
                }
                (OutputColumn::Aggregate(_) | OutputColumn::Rollup(_), builder) => {
                    let (aggregates, accs, index) = match column {
                        OutputColumn::Aggregate(i) => (&spec.aggregates[..], &group.accs, *i),
                        OutputColumn::Rollup(i) => (spec.rollup_aggregates(), &group.rollup, *i),
                        _ => unreachable!("matched above"),
                    };
                    let aggregate = &aggregates[index];
                    let value = value_of(aggregates, accs, index);
                    match builder {
                        Builder::Int(b) => b.append_option(match value {
                            Scalar::Int(v) => Some(v),
                            _ => None,
                        }),
                        Builder::Float(b) => b.append_option(value.as_f64()),
                        _ => {
                            return Err(ArrowError::SchemaError(format!(
                                "column {} has the wrong type",
                                aggregate.name
                            )));
                        }
                    }
                }
                _ => {
                    return Err(ArrowError::SchemaError(
                        "output column and schema disagree".to_string(),
                    ));
                }
            }
        }
    }
    let columns: Vec<ArrayRef> = builders
        .into_iter()
        .map(|builder| -> ArrayRef {
            match builder {
                Builder::Time(mut b) => Arc::new(b.finish()),
                Builder::Text(mut b) => Arc::new(b.finish()),
                Builder::Int(mut b) => Arc::new(b.finish()),
                Builder::Float(mut b) => Arc::new(b.finish()),
            }
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns)
}

/// The closed groups as files of `table`, by hour of window start.
pub fn output_groups(
    spec: &StreamSpec,
    schema: &SchemaRef,
    table: &'static TableDef,
    closed: &[Group],
) -> Result<TableGroups, ArrowError> {
    let mut out = TableGroups::new();
    for (hour, groups) in by_hour(closed, |g| g.start) {
        out.insert((table, hour), batch(spec, schema, &groups)?.into());
    }
    Ok(out)
}
