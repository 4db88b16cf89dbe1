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
    /// Whether the record passes the aggregate's `FILTER` (if any).
    #[inline]
    pub fn admits(&self, values: &[Value<'_>]) -> bool {
        self.filter.as_ref().is_none_or(|f| f.holds(values))
    }

    /// The aggregate's input as a number, its filter aside: `None` when
    /// NULL or not a number (what an average, min, max or percentile
    /// skips).
    #[inline]
    pub fn number(&self, values: &[Value<'_>]) -> Option<f64> {
        match &self.input {
            Input::Star => None,
            Input::Slot(index) => values[*index].as_f64(),
            Input::Expr(program) => program.eval_number(values),
        }
    }

    /// What the aggregate takes from the record, its filter aside.
    #[inline]
    pub fn unfiltered_input<'a>(&'a self, values: &[Value<'a>]) -> Value<'a> {
        match &self.input {
            Input::Star => Value::Bool(true),
            Input::Slot(index) => values[*index],
            Input::Expr(program) => program.eval(values),
        }
    }
}
