//! Expressions compiled for the per-record path: each column an
//! expression reads is read from the record once into a slot (text
//! borrowed, not copied), and the expression is evaluated over the slots
//! by index instead of by name. This is the one evaluator of [`Expr`]:
//! [`Expr::eval`] compiles and runs it, and a streaming job
//! (`logpipe_stream::sql_job`) compiles its filters and inputs once.
//! SQL's three-valued logic throughout.

use super::{CmpOp, Expr, RecordColumn, Row, Scalar, Value};

/// An [`Expr`] with its columns resolved to slots.
#[derive(Debug, Clone)]
pub enum Program {
    Slot(usize),
    /// `column OP number`, the common filter, without building the literal.
    SlotVsNumber(usize, CmpOp, f64),
    /// `column OP 'text'`.
    SlotVsText(usize, CmpOp, String),
    /// `column OP a AND column OP b`, a range (`status_code >= 200 AND
    /// status_code < 300`): the column read once, no recursion.
    SlotInRange(usize, (CmpOp, f64), (CmpOp, f64)),
    Literal(Scalar),
    Compare(Box<Program>, CmpOp, Box<Program>),
    And(Box<Program>, Box<Program>),
    Or(Box<Program>, Box<Program>),
    Not(Box<Program>),
    IsNull {
        inner: Box<Program>,
        negated: bool,
    },
    InList {
        inner: Box<Program>,
        list: Vec<Scalar>,
        negated: bool,
    },
    Case {
        branches: Vec<(Program, Program)>,
        otherwise: Option<Box<Program>>,
    },
}

impl Program {
    pub fn compile(expr: &Expr, slots: &Slots) -> Program {
        let boxed = |e: &Expr| Box::new(Program::compile(e, slots));
        match expr {
            Expr::Column(name) => Program::Slot(slots.index(name)),
            Expr::Literal(value) => Program::Literal(value.clone()),
            Expr::Compare(a, op, b) => match (a.as_ref(), b.as_ref()) {
                (Expr::Column(c), Expr::Literal(l)) => Program::leaf(slots.index(c), *op, l),
                (Expr::Literal(l), Expr::Column(c)) => {
                    Program::leaf(slots.index(c), flipped(*op), l)
                }
                _ => Program::Compare(boxed(a), *op, boxed(b)),
            },
            Expr::And(a, b) => match (Program::compile(a, slots), Program::compile(b, slots)) {
                (Program::SlotVsNumber(x, op, n), Program::SlotVsNumber(y, op2, m)) if x == y => {
                    Program::SlotInRange(x, (op, n), (op2, m))
                }
                (a, b) => Program::And(Box::new(a), Box::new(b)),
            },
            Expr::Or(a, b) => Program::Or(boxed(a), boxed(b)),
            Expr::Not(inner) => Program::Not(boxed(inner)),
            Expr::IsNull { expr, negated } => Program::IsNull {
                inner: boxed(expr),
                negated: *negated,
            },
            Expr::InList {
                expr,
                list,
                negated,
            } => Program::InList {
                inner: boxed(expr),
                list: list.clone(),
                negated: *negated,
            },
            Expr::Case {
                branches,
                otherwise,
            } => Program::Case {
                branches: branches
                    .iter()
                    .map(|(c, v)| (Program::compile(c, slots), Program::compile(v, slots)))
                    .collect(),
                otherwise: otherwise.as_ref().map(|v| boxed(v)),
            },
        }
    }

    /// `slot OP literal`, specialised where the literal is a number or text.
    fn leaf(slot: usize, op: CmpOp, literal: &Scalar) -> Program {
        match literal {
            Scalar::Int(v) => Program::SlotVsNumber(slot, op, *v as f64),
            Scalar::Float(v) => Program::SlotVsNumber(slot, op, *v),
            Scalar::Text(v) => Program::SlotVsText(slot, op, v.clone()),
            other => Program::Compare(
                Box::new(Program::Slot(slot)),
                op,
                Box::new(Program::Literal(other.clone())),
            ),
        }
    }

    pub fn eval<'a>(&'a self, values: &[Value<'a>]) -> Value<'a> {
        let truth = |v: Option<bool>| v.map_or(Value::Null, Value::Bool);
        match self {
            Program::Slot(index) => values[*index],
            Program::SlotVsNumber(slot, op, number) => truth(
                values[*slot]
                    .as_f64()
                    .and_then(|v| v.partial_cmp(number))
                    .map(|o| op.holds(o)),
            ),
            Program::SlotInRange(slot, low, high) => {
                let side = |(op, number): &(CmpOp, f64)| {
                    values[*slot]
                        .as_f64()
                        .and_then(|v| v.partial_cmp(number))
                        .map(|o| op.holds(o))
                };
                // AND's three-valued logic, as `And` of the two sides.
                match (side(low), side(high)) {
                    (Some(false), _) | (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Null,
                }
            }
            Program::SlotVsText(slot, op, text) => truth(match values[*slot] {
                Value::Text(v) => Some(op.holds(v.cmp(text.as_str()))),
                _ => None,
            }),
            Program::Literal(value) => Value::of_scalar(value),
            Program::Compare(a, op, b) => {
                truth(a.eval(values).compare(b.eval(values)).map(|o| op.holds(o)))
            }
            Program::And(a, b) => match (a.eval(values), b.eval(values)) {
                (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
                (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                _ => Value::Null,
            },
            Program::Or(a, b) => match (a.eval(values), b.eval(values)) {
                (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
                (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                _ => Value::Null,
            },
            Program::Not(inner) => match inner.eval(values) {
                Value::Bool(v) => Value::Bool(!v),
                _ => Value::Null,
            },
            Program::IsNull { inner, negated } => {
                Value::Bool((inner.eval(values) == Value::Null) != *negated)
            }
            Program::InList {
                inner,
                list,
                negated,
            } => {
                let value = inner.eval(values);
                if value == Value::Null {
                    return Value::Null;
                }
                let found = list.iter().any(|item| {
                    value
                        .compare(Value::of_scalar(item))
                        .is_some_and(|o| o.is_eq())
                });
                Value::Bool(found != *negated)
            }
            Program::Case {
                branches,
                otherwise,
            } => branches
                .iter()
                .find(|(condition, _)| condition.holds(values))
                .map(|(_, value)| value.eval(values))
                .or_else(|| otherwise.as_ref().map(|value| value.eval(values)))
                .unwrap_or(Value::Null),
        }
    }

    /// `eval(values).as_f64()`, for an aggregate that takes numbers (avg,
    /// min, max, percentiles). An `Option<f64>` comes back in registers,
    /// while a [`Value`] comes back through memory and stalled the caller
    /// reading it (store forwarding): the window job's `error_rate`
    /// (`avg(CASE …)`) paid that per record.
    pub fn eval_number(&self, values: &[Value<'_>]) -> Option<f64> {
        match self {
            Program::Slot(index) => values[*index].as_f64(),
            Program::Literal(value) => Value::of_scalar(value).as_f64(),
            Program::Case {
                branches,
                otherwise,
            } => match branches
                .iter()
                .find(|(condition, _)| condition.holds(values))
            {
                Some((_, value)) => value.eval_number(values),
                None => otherwise
                    .as_ref()
                    .and_then(|value| value.eval_number(values)),
            },
            other => other.eval(values).as_f64(),
        }
    }

    /// Whether the record passes (NULL does not). Comparisons and
    /// AND/OR answer without building values: a NULL side makes AND not
    /// hold and OR hold only by its other side, as SQL's logic says.
    pub fn holds(&self, values: &[Value<'_>]) -> bool {
        match self {
            Program::SlotVsNumber(slot, op, number) => values[*slot]
                .as_f64()
                .and_then(|v| v.partial_cmp(number))
                .is_some_and(|o| op.holds(o)),
            Program::SlotVsText(slot, op, text) => {
                matches!(values[*slot], Value::Text(v) if op.holds(v.cmp(text.as_str())))
            }
            Program::SlotInRange(slot, (low, a), (high, b)) => {
                values[*slot].as_f64().is_some_and(|v| {
                    v.partial_cmp(a).is_some_and(|o| low.holds(o))
                        && v.partial_cmp(b).is_some_and(|o| high.holds(o))
                })
            }
            Program::And(a, b) => a.holds(values) && b.holds(values),
            Program::Or(a, b) => a.holds(values) || b.holds(values),
            other => other.eval(values) == Value::Bool(true),
        }
    }
}

/// The columns a job reads, one slot each.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    names: Vec<String>,
    /// Each name resolved to a record's column.
    columns: Vec<RecordColumn>,
}

impl Slots {
    /// Slots for `names`, each read once per record.
    pub fn new(names: Vec<String>) -> Slots {
        let columns = names.iter().map(|n| RecordColumn::of(n)).collect();
        Slots { names, columns }
    }

    /// The slot of column `name`, which must be one of the names.
    pub fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("every column the job reads has a slot")
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Reads each slot's column from `row` into `values` (`len()` long).
    /// Generic, not `dyn`: a row's `value_of` inlines here, and a value
    /// returned through memory by a virtual call stalled on store
    /// forwarding, once per column and record. By resolved column, not by
    /// name: matching each name against the columns' per record was a
    /// fifth of the window job's aggregation.
    #[inline]
    pub fn read<'a, R: Row + ?Sized>(&self, row: &'a R, values: &mut [Value<'a>]) {
        for ((value, name), column) in values.iter_mut().zip(&self.names).zip(&self.columns) {
            *value = row.value_of(*column, name);
        }
    }
}

/// `a OP b` as `b OP' a`.
fn flipped(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::LtEq => CmpOp::GtEq,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::GtEq => CmpOp::LtEq,
        same => same,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fields(Vec<(&'static str, Scalar)>);

    impl Row for Fields {
        fn value(&self, column: &str) -> Value<'_> {
            self.0
                .iter()
                .find(|(name, _)| *name == column)
                .map_or(Value::Null, |(_, v)| Value::of_scalar(v))
        }
    }

    /// Each program, compiled once over shared slots, gives what
    /// `Expr::eval` gives, NULLs included; and its `holds` (which answers
    /// comparisons and AND/OR without building values) agrees with "the
    /// value is TRUE".
    #[test]
    fn compiled_filters_agree_with_the_expressions() {
        let column = |name: &str| Box::new(Expr::Column(name.to_string()));
        let literal = |v: Scalar| Box::new(Expr::Literal(v));
        let level = Expr::Compare(
            column("level"),
            CmpOp::Eq,
            literal(Scalar::Text("ERROR".into())),
        );
        let server = Expr::Compare(
            column("status_code"),
            CmpOp::GtEq,
            literal(Scalar::Int(500)),
        );
        let missing = Expr::Compare(
            column("endpoint"),
            CmpOp::Eq,
            literal(Scalar::Text("/".into())),
        );
        let exprs = vec![
            level.clone(),
            server.clone(),
            missing.clone(),
            Expr::And(Box::new(level.clone()), Box::new(missing.clone())),
            Expr::Or(Box::new(missing.clone()), Box::new(server.clone())),
            Expr::Not(Box::new(missing.clone())),
            Expr::IsNull {
                expr: column("endpoint"),
                negated: true,
            },
            Expr::InList {
                expr: column("level"),
                list: vec![Scalar::Text("WARN".into()), Scalar::Text("ERROR".into())],
                negated: false,
            },
            Expr::Compare(literal(Scalar::Int(300)), CmpOp::Gt, column("status_code")),
            Expr::Compare(
                literal(Scalar::Text("A".into())),
                CmpOp::Lt,
                column("level"),
            ),
            Expr::Case {
                branches: vec![(level.clone(), Expr::Literal(Scalar::Float(1.0)))],
                otherwise: Some(literal(Scalar::Float(0.0))),
            },
            Expr::Case {
                branches: vec![(server.clone(), Expr::Column("status_code".into()))],
                otherwise: None,
            },
            // Ranges of one column (compiled to `SlotInRange`), literal
            // first or second, and a range over two columns (not one).
            Expr::And(
                Box::new(Expr::Compare(
                    column("status_code"),
                    CmpOp::GtEq,
                    literal(Scalar::Int(200)),
                )),
                Box::new(Expr::Compare(
                    column("status_code"),
                    CmpOp::Lt,
                    literal(Scalar::Int(300)),
                )),
            ),
            Expr::And(
                Box::new(Expr::Compare(
                    literal(Scalar::Int(600)),
                    CmpOp::Gt,
                    column("status_code"),
                )),
                Box::new(server.clone()),
            ),
            Expr::And(Box::new(server.clone()), Box::new(level.clone())),
        ];
        let slots = Slots::new(vec![
            "level".into(),
            "status_code".into(),
            "endpoint".into(),
        ]);
        let mut ranges = 0;
        for row in [
            Fields(vec![
                ("level", Scalar::Text("ERROR".into())),
                ("status_code", Scalar::Int(503)),
            ]),
            Fields(vec![
                ("level", Scalar::Text("INFO".into())),
                ("status_code", Scalar::Int(200)),
                ("endpoint", Scalar::Text("/".into())),
            ]),
            Fields(vec![("status_code", Scalar::Int(250))]),
            Fields(vec![("status_code", Scalar::Float(f64::NAN))]),
            Fields(vec![("status_code", Scalar::Text("500".into()))]),
            Fields(vec![]),
        ] {
            let mut values = vec![Value::Null; slots.len()];
            slots.read(&row, &mut values);
            for expr in &exprs {
                let program = Program::compile(expr, &slots);
                let value = program.eval(&values);
                assert_eq!(value.to_scalar(), expr.eval(&row), "{expr:?}");
                assert_eq!(
                    program.holds(&values),
                    value == Value::Bool(true),
                    "{expr:?}"
                );
                assert_eq!(program.eval_number(&values), value.as_f64(), "{expr:?}");
                // `Expr::eval` compiles too: check a range against the
                // `And` of its two sides, as it was compiled before ranges.
                if let (Program::SlotInRange(..), Expr::And(a, b)) = (&program, expr) {
                    let and = Program::And(
                        Box::new(Program::compile(a, &slots)),
                        Box::new(Program::compile(b, &slots)),
                    );
                    assert_eq!(value, and.eval(&values), "{expr:?}");
                    assert_eq!(program.holds(&values), and.holds(&values), "{expr:?}");
                    ranges += 1;
                }
            }
        }
        // Both ranges compiled as ranges, on each of the six rows.
        assert_eq!(ranges, 12);
    }
}
