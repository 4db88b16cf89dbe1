//! The streaming SQL subset: a statement parsed with DataFusion's SQL
//! parser into a [`StreamSpec`] the stream job runs, or refused with what
//! is supported and where the unsupported part is (docs/jobs.md).
//!
//! ```sql
//! SELECT window_start, window_end, KEY…, AGG(…) [FILTER (WHERE …)] AS name, …
//! FROM logs | events
//! [WHERE filter]
//! GROUP BY tumble(timestamp, INTERVAL '1 minute') | hop(timestamp, INTERVAL 'slide', INTERVAL 'size'), KEY…
//! ```
//!
//! Aggregates: `count(*)`, `count(col)`, `count(DISTINCT col)`, `sum`,
//! `avg`, `min`, `max`, `approx_percentile_cont(col, q)`, over a column or
//! a `CASE WHEN … THEN … END`. Filters: comparisons of a column with a
//! literal, `AND`, `OR`, `NOT`, `IS [NOT] NULL`, `[NOT] IN (…)`. A `WITH`
//! of two groupings joined on the window makes rows that carry a coarser
//! group's figures ([`two_level`]).

use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, ObjectNamePart, SelectItem, SetExpr, Spanned, Statement, TableFactor,
    UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use logpipe_core::stream_sql::{
    Aggregate, AggregateKind, CmpOp, ColumnType, Expr, OutputColumn, Scalar, StreamSource,
    StreamSpec,
};

use crate::SqlProblem;

mod two_level;

const SUPPORTED: &str = "a streaming job is SELECT window_start, window_end, keys and aggregates \
     (count, count(DISTINCT …), sum, avg, min, max, approx_percentile_cont, each with an optional \
     FILTER (WHERE …)) FROM logs or events [WHERE …] GROUP BY tumble(timestamp, INTERVAL '…') or \
     hop(timestamp, INTERVAL 'slide', INTERVAL 'size') and the keys, or a WITH of two such groupings \
     joined on the window and the coarser one's keys (docs/jobs.md)";

fn problem<T: Spanned + ?Sized>(at: &T, message: impl Into<String>) -> SqlProblem {
    let start = at.span().start;
    let at = (start.line > 0).then_some((start.line, start.column));
    SqlProblem {
        message: message.into(),
        at,
    }
}

fn at_ident(ident: &ast::Ident, message: impl Into<String>) -> SqlProblem {
    let start = ident.span.start;
    SqlProblem {
        message: message.into(),
        at: (start.line > 0).then_some((start.line, start.column)),
    }
}

fn unsupported<T: Spanned + ?Sized>(at: &T, what: &str) -> SqlProblem {
    problem(
        at,
        format!("{what} is not supported in a streaming job: {SUPPORTED}"),
    )
}

/// Parses a streaming job's statement.
pub fn parse_stream(sql: &str) -> Result<StreamSpec, SqlProblem> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| {
        let message = e.to_string();
        let at = crate::parser_location(&message);
        SqlProblem { message, at }
    })?;
    let [Statement::Query(query)] = &statements[..] else {
        return Err(SqlProblem {
            message: format!("a streaming job is one SELECT statement: {SUPPORTED}"),
            at: None,
        });
    };
    no_order_or_limit(query)?;
    match &query.with {
        None => parse_grouping(query),
        Some(with) => two_level::parse(query, with),
    }
}

fn no_order_or_limit(query: &ast::Query) -> Result<(), SqlProblem> {
    if let Some(order) = &query.order_by {
        return Err(unsupported(order, "ORDER BY (a stream has no end to sort)"));
    }
    if let Some(limit) = &query.limit_clause {
        return Err(unsupported(limit, "LIMIT"));
    }
    Ok(())
}

/// One `SELECT … GROUP BY window, keys`.
fn parse_grouping(query: &ast::Query) -> Result<StreamSpec, SqlProblem> {
    no_order_or_limit(query)?;
    if let Some(with) = &query.with {
        return Err(unsupported(with, "a WITH inside a WITH"));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(unsupported(query.body.as_ref(), "this statement"));
    };
    let source = source_of(select)?;
    let columns = source.columns();
    let column_type = |ident: &ast::Ident| -> Result<ColumnType, SqlProblem> {
        let name = ident.value.to_lowercase();
        columns
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let known: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
                at_ident(
                    ident,
                    format!(
                        "{} has no column {name:?}; its columns are {}",
                        source.table(),
                        known.join(", ")
                    ),
                )
            })
    };

    // GROUP BY: one window function, then keys.
    let GroupByExpr::Expressions(group, _) = &select.group_by else {
        return Err(unsupported(&select.group_by, "GROUP BY ALL"));
    };
    let mut window = None;
    let mut keys: Vec<String> = Vec::new();
    for expr in group {
        match expr {
            ast::Expr::Function(function) => {
                if window.is_some() {
                    return Err(problem(function, "a streaming job groups by one window"));
                }
                window = Some(window_of(function, &column_type)?);
            }
            ast::Expr::Identifier(ident) => {
                column_type(ident)?;
                keys.push(ident.value.to_lowercase());
            }
            other => return Err(unsupported(other, "this GROUP BY expression")),
        }
    }
    let Some((size_micros, slide_micros)) = window else {
        return Err(SqlProblem {
            message: format!(
                "a streaming job groups by a window (an ORDER BY or aggregate without one never ends): {SUPPORTED}"
            ),
            at: None,
        });
    };

    let filter = select
        .selection
        .as_ref()
        .map(|e| filter_of(e, &column_type))
        .transpose()?;
    if let Some(having) = &select.having {
        return Err(unsupported(having, "HAVING"));
    }
    if select.distinct.is_some() {
        return Err(unsupported(&select.select_token.0, "SELECT DISTINCT"));
    }

    let mut aggregates: Vec<Aggregate> = Vec::new();
    let mut output = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(expr) => (expr, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            other => return Err(unsupported(other, "a wildcard")),
        };
        let column = match expr {
            ast::Expr::Identifier(ident) => {
                let name = ident.value.to_lowercase();
                match name.as_str() {
                    "window_start" => OutputColumn::WindowStart(alias.unwrap_or(name)),
                    "window_end" => OutputColumn::WindowEnd(alias.unwrap_or(name)),
                    _ => match keys.iter().position(|k| *k == name) {
                        Some(index) => {
                            if alias.is_some() {
                                return Err(at_ident(ident, "a key keeps its name (no AS)"));
                            }
                            OutputColumn::Key(index)
                        }
                        None => {
                            return Err(at_ident(
                                ident,
                                format!(
                                    "{name} is neither a GROUP BY key, window_start, window_end nor inside an aggregate"
                                ),
                            ));
                        }
                    },
                }
            }
            ast::Expr::Function(function) => {
                let Some(name) = alias else {
                    return Err(problem(
                        function,
                        "name each aggregate with AS (it is the output column's name)",
                    ));
                };
                aggregates.push(aggregate_of(function, name, &column_type)?);
                OutputColumn::Aggregate(aggregates.len() - 1)
            }
            other => return Err(unsupported(other, "this SELECT expression")),
        };
        let spec_name = match &column {
            OutputColumn::WindowStart(n) | OutputColumn::WindowEnd(n) => n.clone(),
            OutputColumn::Key(i) => keys[*i].clone(),
            OutputColumn::Aggregate(i) => aggregates[*i].name.clone(),
            OutputColumn::Rollup(_) => unreachable!("a one-level SELECT has no rollup"),
        };
        if names.contains(&spec_name) {
            return Err(problem(
                expr,
                format!("two output columns are named {spec_name}"),
            ));
        }
        names.push(spec_name);
        output.push(column);
    }
    check_output(&output, &keys)?;
    Ok(StreamSpec {
        source,
        size_micros,
        slide_micros,
        keys,
        aggregates,
        filter,
        output,
        rollup: None,
    })
}

/// What every job's SELECT must include: `window_start` (the output's time
/// and its hour partition) and every GROUP BY key (without one, rows of
/// different keys look alike).
fn check_output(output: &[OutputColumn], keys: &[String]) -> Result<(), SqlProblem> {
    if !output
        .iter()
        .any(|c| matches!(c, OutputColumn::WindowStart(_)))
    {
        return Err(SqlProblem {
            message: "select window_start: it is the output's time (and its hour partition)"
                .to_string(),
            at: None,
        });
    }
    for (index, key) in keys.iter().enumerate() {
        if !output.contains(&OutputColumn::Key(index)) {
            return Err(SqlProblem {
                message: format!(
                    "select the GROUP BY key {key}: without it, rows of different keys look alike"
                ),
                at: None,
            });
        }
    }
    Ok(())
}

fn source_of(select: &ast::Select) -> Result<StreamSource, SqlProblem> {
    let [from] = &select.from[..] else {
        return Err(SqlProblem {
            message: format!(
                "a streaming job reads one table (a join of two unbounded streams is not supported): {SUPPORTED}"
            ),
            at: select.from.get(1).map(|f| {
                let s = f.span().start;
                (s.line, s.column)
            }),
        });
    };
    if let Some(join) = from.joins.first() {
        return Err(unsupported(&join.relation, "a join"));
    }
    let TableFactor::Table { name, .. } = &from.relation else {
        return Err(unsupported(&from.relation, "this FROM"));
    };
    let table = match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident.value.to_lowercase(),
        _ => String::new(),
    };
    match table.as_str() {
        "logs" => Ok(StreamSource::Logs),
        "events" => Ok(StreamSource::Events),
        other => Err(problem(
            name,
            format!("a streaming job reads logs or events (their topics), not {other:?}"),
        )),
    }
}

fn function_name(function: &ast::Function) -> String {
    function.name.to_string().to_lowercase()
}

fn arguments(function: &ast::Function) -> Result<(&[FunctionArg], bool), SqlProblem> {
    match &function.args {
        FunctionArguments::List(list) => Ok((
            &list.args,
            list.duplicate_treatment == Some(DuplicateTreatment::Distinct),
        )),
        FunctionArguments::None => Ok((&[], false)),
        FunctionArguments::Subquery(query) => Err(unsupported(query.as_ref(), "a subquery")),
    }
}

fn argument_expr(arg: &FunctionArg) -> Option<&ast::Expr> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => Some(expr),
        _ => None,
    }
}

/// `tumble(timestamp, INTERVAL '1 minute')` → (size, size);
/// `hop(timestamp, INTERVAL 'slide', INTERVAL 'size')` → (size, slide).
fn window_of(
    function: &ast::Function,
    column_type: &dyn Fn(&ast::Ident) -> Result<ColumnType, SqlProblem>,
) -> Result<(i64, i64), SqlProblem> {
    let name = function_name(function);
    let (args, _) = arguments(function)?;
    let expected = match name.as_str() {
        "tumble" => 2,
        "hop" => 3,
        _ => return Err(unsupported(function, &format!("GROUP BY {name}(…)"))),
    };
    if args.len() != expected {
        return Err(problem(
            function,
            format!(
                "{name} takes the time column and {} interval(s)",
                expected - 1
            ),
        ));
    }
    match argument_expr(&args[0]) {
        Some(ast::Expr::Identifier(ident)) if ident.value.eq_ignore_ascii_case("timestamp") => {
            column_type(ident)?;
        }
        _ => {
            return Err(problem(
                function,
                format!("{name}'s first argument is the column timestamp (event time)"),
            ));
        }
    }
    let mut intervals = Vec::new();
    for arg in &args[1..] {
        let expr = argument_expr(arg)
            .ok_or_else(|| problem(function, "an interval like INTERVAL '1 minute'"))?;
        intervals.push(interval_micros(expr)?);
    }
    Ok(match intervals[..] {
        [size] => (size, size),
        [slide, size] => {
            if size % slide != 0 || slide > size {
                return Err(problem(
                    function,
                    "a hopping window's size is a whole multiple of its slide",
                ));
            }
            (size, slide)
        }
        _ => unreachable!("argument count checked above"),
    })
}

/// `INTERVAL '1 minute'`, `INTERVAL '5' SECOND`, `INTERVAL '10 seconds'`.
fn interval_micros(expr: &ast::Expr) -> Result<i64, SqlProblem> {
    let bad = || {
        problem(
            expr,
            "an interval like INTERVAL '1 minute' or INTERVAL '5 seconds'",
        )
    };
    let ast::Expr::Interval(interval) = expr else {
        return Err(bad());
    };
    let ast::Expr::Value(value) = interval.value.as_ref() else {
        return Err(bad());
    };
    let Value::SingleQuotedString(text) = &value.value else {
        return Err(bad());
    };
    let mut parts = text.split_whitespace();
    let amount: i64 = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
    let unit = match (parts.next(), &interval.leading_field) {
        (Some(unit), _) => unit.to_lowercase(),
        (None, Some(field)) => field.to_string().to_lowercase(),
        (None, None) => return Err(bad()),
    };
    let micros = match unit.trim_end_matches('s') {
        "millisecond" => 1_000,
        "second" => 1_000_000,
        "minute" => 60_000_000,
        "hour" => 3_600_000_000,
        "day" => 86_400_000_000,
        _ => return Err(bad()),
    };
    if amount <= 0 {
        return Err(problem(expr, "a window is longer than zero"));
    }
    Ok(amount * micros)
}

fn aggregate_of(
    function: &ast::Function,
    name: String,
    column_type: &dyn Fn(&ast::Ident) -> Result<ColumnType, SqlProblem>,
) -> Result<Aggregate, SqlProblem> {
    if function.over.is_some() {
        return Err(unsupported(function, "a window function (OVER)"));
    }
    let (args, distinct) = arguments(function)?;
    let kind_name = function_name(function);
    // A column, or a CASE (kept aside in `argument`; the column is then "").
    let mut argument = None;
    let mut column = |arg: Option<&FunctionArg>| -> Result<(String, ColumnType), SqlProblem> {
        match arg.and_then(argument_expr) {
            Some(ast::Expr::Identifier(ident)) => {
                Ok((ident.value.to_lowercase(), column_type(ident)?))
            }
            Some(case @ ast::Expr::Case { .. }) => {
                let (expr, value_type) = case_of(case, column_type)?;
                argument = Some(expr);
                Ok((String::new(), value_type))
            }
            _ => Err(problem(
                function,
                format!("{kind_name} takes a column or a CASE WHEN … THEN … END"),
            )),
        }
    };
    let numeric = |(name, t): (String, ColumnType)| -> Result<(String, ColumnType), SqlProblem> {
        if t == ColumnType::Text {
            return Err(problem(
                function,
                format!("{kind_name}({name}): {name} is text, not a number"),
            ));
        }
        Ok((name, t))
    };
    let (kind, column, integer) = match (kind_name.as_str(), distinct) {
        ("count", false) => match args.first() {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Wildcard)) | None => {
                (AggregateKind::Count, None, true)
            }
            arg => (AggregateKind::Count, Some(column(arg)?.0), true),
        },
        ("count", true) => (
            AggregateKind::CountDistinct,
            Some(column(args.first())?.0),
            true,
        ),
        ("sum", false) => {
            let (c, t) = numeric(column(args.first())?)?;
            (AggregateKind::Sum, Some(c), t == ColumnType::Int)
        }
        ("avg", false) => (
            AggregateKind::Avg,
            Some(numeric(column(args.first())?)?.0),
            false,
        ),
        ("min", false) => (
            AggregateKind::Min,
            Some(numeric(column(args.first())?)?.0),
            false,
        ),
        ("max", false) => (
            AggregateKind::Max,
            Some(numeric(column(args.first())?)?.0),
            false,
        ),
        ("approx_percentile_cont", false) => {
            let (c, _) = numeric(column(args.first())?)?;
            let q = match args.get(1).and_then(argument_expr) {
                Some(ast::Expr::Value(v)) => v.value.to_string().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|q| (0.0..=1.0).contains(q))
            .ok_or_else(|| {
                problem(
                    function,
                    "approx_percentile_cont(column, q) with q from 0 to 1",
                )
            })?;
            (AggregateKind::Percentile(q), Some(c), false)
        }
        (other, true) => return Err(unsupported(function, &format!("{other}(DISTINCT …)"))),
        (other, false) => return Err(unsupported(function, &format!("the aggregate {other}"))),
    };
    let filter = function
        .filter
        .as_ref()
        .map(|f| filter_of(f, column_type))
        .transpose()?;
    Ok(Aggregate {
        name: name.to_lowercase(),
        kind,
        column: column.filter(|c| !c.is_empty()),
        argument,
        filter,
        integer,
    })
}

/// `CASE WHEN condition THEN value … [ELSE value] END` (values: columns or
/// literals of one type), with the type of its values.
fn case_of(
    expr: &ast::Expr,
    column_type: &dyn Fn(&ast::Ident) -> Result<ColumnType, SqlProblem>,
) -> Result<(Expr, ColumnType), SqlProblem> {
    let ast::Expr::Case {
        operand,
        conditions,
        else_result,
        ..
    } = expr
    else {
        return Err(unsupported(expr, "this expression"));
    };
    if let Some(operand) = operand {
        return Err(unsupported(
            operand.as_ref(),
            "CASE x WHEN (write CASE WHEN x = … THEN)",
        ));
    }
    let mut types: Vec<ColumnType> = Vec::new();
    let mut value = |e: &ast::Expr| -> Result<Expr, SqlProblem> {
        match e {
            ast::Expr::Identifier(ident) => {
                types.push(column_type(ident)?);
                Ok(Expr::Column(ident.value.to_lowercase()))
            }
            other => {
                let literal = literal_of(other)?;
                match &literal {
                    Scalar::Int(_) => types.push(ColumnType::Int),
                    Scalar::Float(_) => types.push(ColumnType::Float),
                    Scalar::Text(_) | Scalar::Bool(_) => types.push(ColumnType::Text),
                    Scalar::Null => {}
                }
                Ok(Expr::Literal(literal))
            }
        }
    };
    let mut branches = Vec::new();
    for when in conditions {
        let condition = filter_of(&when.condition, column_type)?;
        branches.push((condition, value(&when.result)?));
    }
    let otherwise = else_result
        .as_ref()
        .map(|e| value(e).map(Box::new))
        .transpose()?;
    let value_type = if types.iter().all(|t| *t == ColumnType::Int) {
        ColumnType::Int
    } else if types.contains(&ColumnType::Text) {
        ColumnType::Text
    } else {
        ColumnType::Float
    };
    Ok((
        Expr::Case {
            branches,
            otherwise,
        },
        value_type,
    ))
}

fn literal_of(expr: &ast::Expr) -> Result<Scalar, SqlProblem> {
    match expr {
        ast::Expr::Value(value) => Ok(match &value.value {
            Value::SingleQuotedString(text) => Scalar::Text(text.clone()),
            Value::Boolean(b) => Scalar::Bool(*b),
            Value::Null => Scalar::Null,
            other => {
                let text = other.to_string();
                match text.parse::<i64>() {
                    Ok(n) => Scalar::Int(n),
                    Err(_) => Scalar::Float(
                        text.parse()
                            .map_err(|_| unsupported(expr, "this literal"))?,
                    ),
                }
            }
        }),
        ast::Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: inner,
        } => match literal_of(inner)? {
            Scalar::Int(n) => Ok(Scalar::Int(-n)),
            Scalar::Float(n) => Ok(Scalar::Float(-n)),
            _ => Err(unsupported(expr, "this literal")),
        },
        _ => Err(unsupported(
            expr,
            "this value (a filter compares a column with a literal)",
        )),
    }
}

fn filter_of(
    expr: &ast::Expr,
    column_type: &dyn Fn(&ast::Ident) -> Result<ColumnType, SqlProblem>,
) -> Result<Expr, SqlProblem> {
    let operand = |e: &ast::Expr| -> Result<Expr, SqlProblem> {
        match e {
            ast::Expr::Identifier(ident) => {
                column_type(ident)?;
                Ok(Expr::Column(ident.value.to_lowercase()))
            }
            other => literal_of(other).map(Expr::Literal),
        }
    };
    Ok(match expr {
        ast::Expr::Nested(inner) => filter_of(inner, column_type)?,
        ast::Expr::BinaryOp { left, op, right } => {
            let cmp = match op {
                BinaryOperator::And => {
                    return Ok(Expr::And(
                        Box::new(filter_of(left, column_type)?),
                        Box::new(filter_of(right, column_type)?),
                    ));
                }
                BinaryOperator::Or => {
                    return Ok(Expr::Or(
                        Box::new(filter_of(left, column_type)?),
                        Box::new(filter_of(right, column_type)?),
                    ));
                }
                BinaryOperator::Eq => CmpOp::Eq,
                BinaryOperator::NotEq => CmpOp::NotEq,
                BinaryOperator::Lt => CmpOp::Lt,
                BinaryOperator::LtEq => CmpOp::LtEq,
                BinaryOperator::Gt => CmpOp::Gt,
                BinaryOperator::GtEq => CmpOp::GtEq,
                other => return Err(unsupported(expr, &format!("the operator {other}"))),
            };
            Expr::Compare(Box::new(operand(left)?), cmp, Box::new(operand(right)?))
        }
        ast::Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: inner,
        } => Expr::Not(Box::new(filter_of(inner, column_type)?)),
        ast::Expr::IsNull(inner) => Expr::IsNull {
            expr: Box::new(operand(inner)?),
            negated: false,
        },
        ast::Expr::IsNotNull(inner) => Expr::IsNull {
            expr: Box::new(operand(inner)?),
            negated: true,
        },
        ast::Expr::InList {
            expr: inner,
            list,
            negated,
        } => Expr::InList {
            expr: Box::new(operand(inner)?),
            list: list.iter().map(literal_of).collect::<Result<_, _>>()?,
            negated: *negated,
        },
        other => return Err(unsupported(other, "this filter")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVITY: &str = "SELECT window_start, event_type,\n\
        count(*) AS events,\n\
        count(DISTINCT user_id) AS users,\n\
        count(*) FILTER (WHERE event_type = 'PURCHASE') AS purchases\n\
        FROM events\n\
        GROUP BY tumble(timestamp, INTERVAL '1 minute'), event_type";

    #[test]
    fn the_activity_job_is_understood() {
        let spec = parse_stream(ACTIVITY).unwrap();
        assert_eq!(spec.source, StreamSource::Events);
        assert_eq!(
            (spec.size_micros, spec.slide_micros),
            (60_000_000, 60_000_000)
        );
        assert_eq!(spec.keys, ["event_type"]);
        let names: Vec<String> = spec.output.iter().map(|c| spec.column_name(c)).collect();
        assert_eq!(
            names,
            ["window_start", "event_type", "events", "users", "purchases"]
        );
        assert_eq!(spec.aggregates[1].kind, AggregateKind::CountDistinct);
        assert!(spec.aggregates[2].filter.is_some());
    }

    #[test]
    fn hopping_windows_filters_and_percentiles() {
        let spec = parse_stream(
            "SELECT window_start, window_end, service, approx_percentile_cont(response_time_ms, 0.95) AS p95, \
             sum(status_code) AS s FROM logs WHERE level IN ('WARN', 'ERROR') AND NOT (status_code < 500) \
             GROUP BY hop(timestamp, INTERVAL '10 seconds', INTERVAL '1 minute'), service",
        )
        .unwrap();
        assert_eq!(
            (spec.size_micros, spec.slide_micros),
            (60_000_000, 10_000_000)
        );
        assert_eq!(spec.aggregates[0].kind, AggregateKind::Percentile(0.95));
        assert!(spec.aggregates[1].integer);
        assert!(spec.filter.is_some());
    }

    #[test]
    fn what_is_outside_the_subset_is_refused_where_it_is() {
        let error = |sql: &str| parse_stream(sql).unwrap_err();
        let e = error(
            "SELECT window_start, count(*) AS n FROM logs\nGROUP BY tumble(timestamp, INTERVAL '5 seconds')\nORDER BY n",
        );
        assert!(e.message.contains("ORDER BY"), "{e:?}");
        assert_eq!(e.at.map(|a| a.0), Some(3));
        let e = error("SELECT level, count(*) AS n FROM logs GROUP BY level");
        assert!(e.message.contains("groups by a window"), "{e:?}");
        let e = error(
            "SELECT window_start, count(*) AS n FROM logs, events GROUP BY tumble(timestamp, INTERVAL '1 minute')",
        );
        assert!(e.message.contains("join of two unbounded streams"), "{e:?}");
        let e = error(
            "SELECT window_start, levle, count(*) AS n FROM logs\nGROUP BY tumble(timestamp, INTERVAL '1 minute'), levle",
        );
        assert!(e.message.contains("no column \"levle\""), "{e:?}");
        assert_eq!(e.at, Some((2, 50)));
        let e = error(
            "SELECT window_start, median(response_time_ms) AS m FROM logs GROUP BY tumble(timestamp, INTERVAL '1 minute')",
        );
        assert!(e.message.contains("the aggregate median"), "{e:?}");
        let e = error(
            "SELECT window_start, sum(service) AS m FROM logs GROUP BY tumble(timestamp, INTERVAL '1 minute')",
        );
        assert!(e.message.contains("is text"), "{e:?}");
        let e = error(
            "SELECT window_start, count(*) FROM logs GROUP BY tumble(timestamp, INTERVAL '1 minute')",
        );
        assert!(e.message.contains("AS"), "{e:?}");
    }
}
