//! What a sink asks of a target database, whichever it is: the tables it
//! knows, the steps of one transaction, and why the target refused.

use std::collections::BTreeMap;

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
