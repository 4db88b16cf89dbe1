//! What a sink asks of a target database, whichever it is: the tables it
//! knows, the steps of one transaction, and why the target refused.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::event::SqlType;

/// Why the target refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot connect to the target {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{url} is not a PostgreSQL URL: {source}")]
    Url {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("target {context}: {source}")]
    Query {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("target {context}: {source}")]
    MariaDb {
        context: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("target table {table}: {reason}")]
    Table { table: String, reason: String },
}

/// A target table: its name and what the sink knows of its columns.
#[derive(Debug, Clone)]
pub struct TargetTable {
    /// The PostgreSQL schema, or the MariaDB database.
    pub schema: String,
    pub name: String,
    /// Column → type (`None`: a type this sink does not make, e.g. a
    /// `varchar` of a table the user created; left as it is).
    pub columns: BTreeMap<String, Option<SqlType>>,
    pub key: Vec<String>,
}

impl TargetTable {
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// What `column` needs before rows whose values are `sql` go in:
    /// added when missing, widened when its type (one this sink makes)
    /// cannot hold them; `None` when it takes them as it is.
    pub fn column_change(&self, column: &str, sql: SqlType) -> Option<ColumnChange> {
        match self.columns.get(column) {
            None => Some(ColumnChange::Add),
            Some(Some(current)) if !current.holds(sql) => {
                Some(ColumnChange::Widen { from: *current })
            }
            Some(_) => None,
        }
    }

    /// The columns an upsert of `columns` updates: all but the key's.
    pub fn updated<'a>(&'a self, columns: &'a [String]) -> impl Iterator<Item = &'a String> + 'a {
        columns.iter().filter(|c| !self.key.contains(c))
    }
}

/// A column's change before a batch's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnChange {
    Add,
    Widen { from: SqlType },
}

/// The table `key` of a batch's steps, described before its steps run.
pub fn described<'a>(
    tables: &'a mut HashMap<String, TargetTable>,
    key: &str,
) -> Result<&'a mut TargetTable, TargetError> {
    tables.get_mut(key).ok_or_else(|| TargetError::Table {
        table: key.to_string(),
        reason: "not described before its changes".into(),
    })
}

/// `names`, each quoted by `quote`, comma-separated.
pub fn quoted_list<'a>(
    names: impl IntoIterator<Item = &'a String>,
    quote: fn(&str) -> String,
) -> String {
    names
        .into_iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A new table's column definitions (the key's NOT NULL) and its primary
/// key, quoted by `quote`, typed by `ddl(type, in the key)`.
pub fn table_definition(
    columns: &[(String, SqlType)],
    key: &[String],
    quote: fn(&str) -> String,
    ddl: impl Fn(SqlType, bool) -> &'static str,
) -> String {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|(column, sql)| {
            let in_key = key.contains(column);
            let not_null = if in_key { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quote(column), ddl(*sql, in_key))
        })
        .collect();
    defs.push(format!("PRIMARY KEY ({})", quoted_list(key, quote)));
    defs.join(", ")
}

/// What one transaction does to one table, in order.
#[derive(Debug)]
pub enum TableStep {
    /// Columns the rows need, with their types: added when missing, a
    /// type this sink made widened when the rows need more.
    Columns(Vec<(String, SqlType)>),
    Upserts {
        columns: Vec<String>,
        rows: Vec<Map<String, Value>>,
    },
    Deletes(Vec<Map<String, Value>>),
    Truncate,
}
