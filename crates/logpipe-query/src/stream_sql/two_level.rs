//! A job whose rows group at two levels: a `WITH` of two groupings of the
//! same records, the coarser one's figures joined to each row of the
//! finer one. The built-in window job is one (docs/jobs.md):
//!
//! ```sql
//! WITH by_level AS (
//!     SELECT window_start, service, level, count(*) AS count
//!     FROM logs GROUP BY tumble(timestamp, INTERVAL '5 seconds'), service, level
//! ), by_service AS (
//!     SELECT window_start, service, count(*) AS service_count
//!     FROM logs GROUP BY tumble(timestamp, INTERVAL '5 seconds'), service
//! )
//! SELECT l.window_start, l.service, l.level, l.count, s.service_count
//! FROM by_level l JOIN by_service s ON l.window_start = s.window_start AND l.service = s.service
//! ```
//!
//! Both read the same table with the same window and `WHERE`; the coarser
//! one's keys are some of the finer one's; they join on the window and the
//! coarser one's keys. It is plain SQL, so the same text runs as a batch
//! query once `tumble` is spelled as `date_bin`.

use std::collections::BTreeSet;

use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, JoinConstraint, JoinOperator, ObjectNamePart, SelectItem, SetExpr,
    TableFactor,
};
use logpipe_core::stream_sql::{OutputColumn, Rollup, StreamSpec};

use super::{at_ident, check_output, parse_grouping, problem, unsupported};
use crate::SqlProblem;

const FORM: &str = "a streaming job's WITH names two groupings of the same records (same table, \
     window and WHERE; the second's keys some of the first's) and its SELECT joins them ON the \
     window and the coarser one's keys (docs/jobs.md)";

/// One named grouping of the `WITH`, and the names it goes by in the
/// outer query.
struct Part {
    names: Vec<String>,
    spec: StreamSpec,
}

pub(super) fn parse(query: &ast::Query, with: &ast::With) -> Result<StreamSpec, SqlProblem> {
    if with.recursive {
        return Err(unsupported(with, "WITH RECURSIVE"));
    }
    let [first, second] = &with.cte_tables[..] else {
        return Err(problem(with, FORM));
    };
    let mut parts = Vec::new();
    for cte in [first, second] {
        parts.push(Part {
            names: vec![cte.alias.name.value.to_lowercase()],
            spec: parse_grouping(&cte.query)?,
        });
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(unsupported(query.body.as_ref(), "this statement"));
    };
    if let Some(selection) = &select.selection {
        return Err(problem(
            selection,
            "put the WHERE inside both groupings of the WITH",
        ));
    }
    if let ast::GroupByExpr::Expressions(group, _) = &select.group_by
        && let Some(first) = group.first()
    {
        return Err(problem(
            first,
            "the SELECT after a WITH joins its groupings; it does not group again",
        ));
    }
    if let Some(having) = &select.having {
        return Err(unsupported(having, "HAVING"));
    }
    let [from] = &select.from[..] else {
        return Err(problem(&select.select_token.0, FORM));
    };
    let [join] = &from.joins[..] else {
        return Err(problem(&from.relation, FORM));
    };
    let constraint = match &join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => c,
        _ => return Err(problem(&join.relation, format!("an inner JOIN: {FORM}"))),
    };
    // FROM a [x] JOIN b [y]: which part each is, and its alias.
    let mut sides = Vec::new();
    for relation in [&from.relation, &join.relation] {
        let TableFactor::Table { name, alias, .. } = relation else {
            return Err(unsupported(relation, "this FROM"));
        };
        let table = match name.0.last() {
            Some(ObjectNamePart::Identifier(ident)) => ident.value.to_lowercase(),
            _ => String::new(),
        };
        let index = parts
            .iter()
            .position(|p| p.names[0] == table)
            .ok_or_else(|| {
                problem(
                    name,
                    format!(
                        "{table:?} is not one of the WITH's groupings ({}, {})",
                        parts[0].names[0], parts[1].names[0]
                    ),
                )
            })?;
        if sides.contains(&index) {
            return Err(problem(name, format!("join the two groupings: {FORM}")));
        }
        if let Some(alias) = alias {
            parts[index].names.push(alias.name.value.to_lowercase());
        }
        sides.push(index);
    }

    // The finer grouping has more keys, and the coarser one's are among them.
    let (fine, coarse) = if parts[0].spec.keys.len() >= parts[1].spec.keys.len() {
        (0, 1)
    } else {
        (1, 0)
    };
    let (f, c) = (&parts[fine].spec, &parts[coarse].spec);
    let same = f.source == c.source
        && f.size_micros == c.size_micros
        && f.slide_micros == c.slide_micros
        && f.filter == c.filter;
    if !same {
        return Err(problem(
            with,
            format!(
                "{} and {} must read the same table with the same window and WHERE: {FORM}",
                parts[0].names[0], parts[1].names[0]
            ),
        ));
    }
    if f.keys.len() == c.keys.len() || !c.keys.iter().all(|k| f.keys.contains(k)) {
        return Err(problem(
            with,
            format!(
                "{}'s keys ({}) must be some of {}'s ({}): {FORM}",
                parts[coarse].names[0],
                c.keys.join(", "),
                parts[fine].names[0],
                f.keys.join(", ")
            ),
        ));
    }

    // The join: on the window and every key of the coarser grouping.
    let joined = join_columns(constraint)?;
    let mut expected: BTreeSet<String> = c.keys.iter().cloned().collect();
    let window = ["window_start", "window_end"]
        .into_iter()
        .find(|w| joined.contains(*w))
        .ok_or_else(|| {
            problem(
                &join.relation,
                format!("join on window_start (or window_end): {FORM}"),
            )
        })?;
    expected.insert(window.to_string());
    for other in ["window_start", "window_end"] {
        if joined.contains(other) {
            expected.insert(other.to_string());
        }
    }
    if joined != expected {
        return Err(problem(
            &join.relation,
            format!(
                "join on exactly {} (the window and {}'s keys), not {}",
                expected.iter().cloned().collect::<Vec<_>>().join(", "),
                parts[coarse].names[0],
                joined.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }

    let mut spec = parts[fine].spec.clone();
    let mut rollup_aggregates = parts[coarse].spec.aggregates.clone();
    let rollup_keys: Vec<usize> = c
        .keys
        .iter()
        .map(|k| f.keys.iter().position(|fk| fk == k).expect("checked above"))
        .collect();
    let mut output = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(expr) => (expr, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            other => return Err(unsupported(other, "a wildcard")),
        };
        let (qualifier, ident) = match expr {
            ast::Expr::Identifier(ident) => (None, ident),
            ast::Expr::CompoundIdentifier(idents) if idents.len() == 2 => {
                (Some(idents[0].value.to_lowercase()), &idents[1])
            }
            other => {
                return Err(unsupported(
                    other,
                    "this SELECT expression after a WITH (select the groupings' columns)",
                ));
            }
        };
        let name = ident.value.to_lowercase();
        let side =
            match &qualifier {
                Some(q) => Some(parts.iter().position(|p| p.names.contains(q)).ok_or_else(
                    || at_ident(ident, format!("{q} is neither grouping of the WITH")),
                )?),
                None => None,
            };
        let in_fine = parts[fine]
            .spec
            .aggregates
            .iter()
            .position(|a| a.name == name);
        let in_coarse = parts[coarse]
            .spec
            .aggregates
            .iter()
            .position(|a| a.name == name);
        let is_key = f.keys.contains(&name) && (side != Some(coarse) || c.keys.contains(&name));
        let column = match name.as_str() {
            "window_start" | "window_end" => {
                let output_name = alias.map_or(name.clone(), |a| a.value.to_lowercase());
                if name == "window_start" {
                    OutputColumn::WindowStart(output_name)
                } else {
                    OutputColumn::WindowEnd(output_name)
                }
            }
            _ if is_key => {
                if alias.is_some() {
                    return Err(at_ident(ident, "a key keeps its name (no AS)"));
                }
                OutputColumn::Key(f.keys.iter().position(|k| *k == name).expect("a key"))
            }
            _ => {
                let rename = |aggregate: &mut logpipe_core::stream_sql::Aggregate| {
                    if let Some(alias) = alias {
                        aggregate.name = alias.value.to_lowercase();
                    }
                };
                // Ok: the finer grouping's aggregate; Err: the coarser one's.
                let pick = match side {
                    Some(s) if s == fine => in_fine.map(Ok),
                    Some(_) => in_coarse.map(Err),
                    None => match (in_fine, in_coarse) {
                        (Some(_), Some(_)) => {
                            return Err(at_ident(
                                ident,
                                format!(
                                    "both groupings have {name}: say which (for example {}.{name})",
                                    parts[fine].names.last().expect("named")
                                ),
                            ));
                        }
                        (Some(i), None) => Some(Ok(i)),
                        (None, Some(i)) => Some(Err(i)),
                        (None, None) => None,
                    },
                };
                match pick {
                    Some(Ok(i)) => {
                        rename(&mut spec.aggregates[i]);
                        OutputColumn::Aggregate(i)
                    }
                    Some(Err(i)) => {
                        rename(&mut rollup_aggregates[i]);
                        OutputColumn::Rollup(i)
                    }
                    None => {
                        return Err(at_ident(
                            ident,
                            format!("no grouping of the WITH has a column {name}"),
                        ));
                    }
                }
            }
        };
        let output_name = match &column {
            OutputColumn::WindowStart(n) | OutputColumn::WindowEnd(n) => n.clone(),
            OutputColumn::Key(i) => f.keys[*i].clone(),
            OutputColumn::Aggregate(i) => spec.aggregates[*i].name.clone(),
            OutputColumn::Rollup(i) => rollup_aggregates[*i].name.clone(),
        };
        if names.contains(&output_name) {
            return Err(problem(
                expr,
                format!("two output columns are named {output_name}"),
            ));
        }
        names.push(output_name);
        output.push(column);
    }
    check_output(&output, &f.keys)?;
    spec.output = output;
    spec.rollup = Some(Rollup {
        keys: rollup_keys,
        aggregates: rollup_aggregates,
    });
    Ok(spec)
}

/// The columns an `ON a.x = b.x AND …` or `USING (x, …)` joins on.
fn join_columns(constraint: &JoinConstraint) -> Result<BTreeSet<String>, SqlProblem> {
    let mut columns = BTreeSet::new();
    match constraint {
        JoinConstraint::Using(names) => {
            for name in names {
                columns.insert(name.to_string().to_lowercase());
            }
        }
        JoinConstraint::On(expr) => on_columns(expr, &mut columns)?,
        _ => {
            return Err(SqlProblem {
                message: format!("join ON or USING: {FORM}"),
                at: None,
            });
        }
    }
    Ok(columns)
}

fn on_columns(expr: &ast::Expr, columns: &mut BTreeSet<String>) -> Result<(), SqlProblem> {
    let last = |e: &ast::Expr| match e {
        ast::Expr::Identifier(ident) => Some(ident.value.to_lowercase()),
        ast::Expr::CompoundIdentifier(idents) => idents.last().map(|i| i.value.to_lowercase()),
        _ => None,
    };
    match expr {
        ast::Expr::Nested(inner) => on_columns(inner, columns),
        ast::Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            on_columns(left, columns)?;
            on_columns(right, columns)
        }
        ast::Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => match (last(left), last(right)) {
            (Some(a), Some(b)) if a == b => {
                columns.insert(a);
                Ok(())
            }
            _ => Err(problem(
                expr,
                format!(
                    "the join compares each column with the same column of the other grouping: {FORM}"
                ),
            )),
        },
        other => Err(problem(
            other,
            format!("the join is equalities joined by AND: {FORM}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use logpipe_core::stream_sql::{AggregateKind, Expr, OutputColumn};

    use super::super::parse_stream;

    const TWO_LEVEL: &str = "WITH by_level AS (
        SELECT window_start, service, level, count(*) AS count
        FROM logs WHERE service <> 'x'
        GROUP BY tumble(timestamp, INTERVAL '5 seconds'), service, level
    ), by_service AS (
        SELECT window_start, service, count(*) AS service_count,
               avg(CASE WHEN level = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate,
               approx_percentile_cont(response_time_ms, 0.95) AS p95_ms
        FROM logs WHERE service <> 'x'
        GROUP BY tumble(timestamp, INTERVAL '5 seconds'), service
    )
    SELECT l.window_start, l.window_end, l.service, level, l.count, s.service_count, error_rate, s.p95_ms AS p95
    FROM by_level l JOIN by_service s ON l.window_start = s.window_start AND l.service = s.service";

    #[test]
    fn two_groupings_joined_become_one_job_with_a_rollup() {
        let spec = parse_stream(TWO_LEVEL).unwrap();
        assert_eq!(spec.keys, ["service", "level"]);
        let rollup = spec.rollup.as_ref().unwrap();
        assert_eq!(rollup.keys, [0]);
        let names: Vec<String> = spec.output.iter().map(|c| spec.column_name(c)).collect();
        assert_eq!(
            names,
            [
                "window_start",
                "window_end",
                "service",
                "level",
                "count",
                "service_count",
                "error_rate",
                "p95"
            ]
        );
        assert_eq!(spec.output[5], OutputColumn::Rollup(0));
        assert_eq!(rollup.aggregates[2].kind, AggregateKind::Percentile(0.95));
        assert!(matches!(
            rollup.aggregates[1].argument,
            Some(Expr::Case { .. })
        ));
        assert_eq!(rollup.aggregates[1].column, None);
        // USING says the same.
        let using = TWO_LEVEL.replace(
            "ON l.window_start = s.window_start AND l.service = s.service",
            "USING (window_start, service)",
        );
        assert_eq!(parse_stream(&using).unwrap(), spec);
    }

    #[test]
    fn groupings_that_do_not_nest_are_refused_with_the_reason() {
        let error = |sql: String| parse_stream(&sql).unwrap_err().message;
        let e = error(TWO_LEVEL.replacen("WHERE service <> 'x'", "", 1));
        assert!(
            e.contains("same table with the same window and WHERE"),
            "{e}"
        );
        let e = error(TWO_LEVEL.replace("AND l.service = s.service", ""));
        assert!(e.contains("join on exactly service, window_start"), "{e}");
        let e = error(
            TWO_LEVEL
                .replace(
                    "INTERVAL '5 seconds'), service\n",
                    "INTERVAL '5 seconds'), host\n",
                )
                .replace(
                    "SELECT window_start, service, count(*) AS service_count",
                    "SELECT window_start, host, count(*) AS service_count",
                ),
        );
        assert!(e.contains("must be some of"), "{e}");
        let e = error(TWO_LEVEL.replace("s.p95_ms AS p95", "s.p99_ms"));
        assert!(
            e.contains("no grouping of the WITH has a column p99_ms"),
            "{e}"
        );
        let e = error(TWO_LEVEL.replace("JOIN by_service s", "LEFT JOIN by_service s"));
        assert!(e.contains("an inner JOIN"), "{e}");
    }
}
