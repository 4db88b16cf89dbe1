//! A streaming job compiled for the per-record path: its filter, keys
//! and aggregate inputs over the slots of the columns it reads
//! ([`logpipe_core::stream_sql::eval`]). The built-in window job reads 5
//! columns and evaluates 7 filters per record; by name that was most of
//! its cost.

use logpipe_core::stream_sql::eval::{Program, Slots};
use logpipe_core::stream_sql::{Aggregate, StreamSpec, Value};

/// What an aggregate takes from each record.
#[derive(Debug, Clone)]
pub enum Input {
    /// `count(*)`: every record that passes the filter.
    Star,
    Slot(usize),
    Expr(Program),
}

/// An aggregate compiled: its input and filter, or `None` when it reads
/// another's accumulator (`aggregator::source_of`).
#[derive(Debug, Clone)]
pub struct CompiledAggregate {
    pub input: Input,
    pub filter: Option<Program>,
}

/// A job compiled for the per-record path.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub slots: Slots,
    pub filter: Option<Program>,
    /// The slot of each GROUP BY key.
    pub keys: Vec<usize>,
    pub aggregates: Vec<Option<CompiledAggregate>>,
    pub rollup: Vec<Option<CompiledAggregate>>,
}

impl Compiled {
    pub fn new(spec: &StreamSpec, sources: &[usize], rollup_sources: &[usize]) -> Compiled {
        let slots = Slots::new(
            spec.columns_read()
                .into_iter()
                .map(str::to_string)
                .collect(),
        );
        let aggregate = |aggregates: &[Aggregate], sources: &[usize]| {
            aggregates
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    (sources[i] == i).then(|| CompiledAggregate {
                        input: match (&a.column, &a.argument) {
                            (Some(column), _) => Input::Slot(slots.index(column)),
                            (None, Some(argument)) => {
                                Input::Expr(Program::compile(argument, &slots))
                            }
                            (None, None) => Input::Star,
                        },
                        filter: a.filter.as_ref().map(|f| Program::compile(f, &slots)),
                    })
                })
                .collect()
        };
        Compiled {
            filter: spec.filter.as_ref().map(|f| Program::compile(f, &slots)),
            keys: spec.keys.iter().map(|k| slots.index(k)).collect(),
            aggregates: aggregate(&spec.aggregates, sources),
            rollup: aggregate(spec.rollup_aggregates(), rollup_sources),
            slots,
        }
    }
}

impl CompiledAggregate {
    /// What the aggregate takes from the record: `None` when its filter
    /// leaves it out.
    #[inline]
    pub fn input<'a>(&'a self, values: &[Value<'a>]) -> Option<Value<'a>> {
        if self.filter.as_ref().is_some_and(|f| !f.holds(values)) {
            return None;
        }
        Some(match &self.input {
            Input::Star => Value::Bool(true),
            Input::Slot(index) => values[*index],
            Input::Expr(program) => program.eval(values),
        })
    }
}
