//! The databases a CDC sink writes: PostgreSQL and MariaDB/MySQL, chosen
//! by the URL's scheme, behind one type with the same five operations.
//! Both keep the same protocol: a batch's rows and the sink's bus positions
//! in one transaction (docs/cdc.md).

use std::collections::HashMap;

use crate::event::SqlType;
use crate::mariadb::MariaDbTarget;
use crate::postgres::PgTarget;
pub use crate::step::{TableStep, TargetError, TargetTable};

/// A connected target.
pub enum Target {
    Postgres(PgTarget),
    MariaDb(MariaDbTarget),
}

impl Target {
    /// Connects to `url` (`postgres://` or `mysql://`/`mariadb://`).
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        schema: &str,
    ) -> Result<Target, TargetError> {
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Target::MariaDb(
                MariaDbTarget::connect(url, password, schema).await?,
            ))
        } else {
            Ok(Target::Postgres(
                PgTarget::connect(url, password, schema).await?,
            ))
        }
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        match self {
            Target::Postgres(t) => t.url(),
            Target::MariaDb(t) => t.url(),
        }
    }

    /// Where tables named without a schema go: `schema` on PostgreSQL,
    /// the URL's database on MariaDB (unless `schema` names another).
    pub fn default_schema<'a>(&'a self, schema: &'a str) -> &'a str {
        match self {
            Target::Postgres(_) => schema,
            Target::MariaDb(t) => t.default_schema(),
        }
    }

    /// The next offset to apply per (topic, partition) of `sink`.
    pub async fn positions(
        &mut self,
        sink: &str,
    ) -> Result<HashMap<(String, u32), u64>, TargetError> {
        match self {
            Target::Postgres(t) => t.positions(sink).await,
            Target::MariaDb(t) => t.positions(sink).await,
        }
    }

    /// The table as it is in the target (`None`: it does not exist).
    pub async fn describe(
        &mut self,
        schema: &str,
        name: &str,
    ) -> Result<Option<TargetTable>, TargetError> {
        match self {
            Target::Postgres(t) => t.describe(schema, name).await,
            Target::MariaDb(t) => t.describe(schema, name).await,
        }
    }

    /// Creates the table with `columns` and primary key `key` unless it exists.
    pub async fn create(
        &mut self,
        schema: &str,
        name: &str,
        columns: &[(String, SqlType)],
        key: &[String],
    ) -> Result<(), TargetError> {
        match self {
            Target::Postgres(t) => t.create(schema, name, columns, key).await?,
            Target::MariaDb(t) => t.create(schema, name, columns, key).await?,
        }
        tracing::info!(table = %format!("{schema}.{name}"), key = %key.join(","), "CDC target: table created");
        Ok(())
    }

    /// Applies `steps` and moves `sink`'s positions in one transaction.
    pub async fn apply(
        &mut self,
        sink: &str,
        tables: &mut HashMap<String, TargetTable>,
        steps: Vec<(String, TableStep)>,
        positions: &[(String, u32, u64, Option<i64>)],
    ) -> Result<(), TargetError> {
        match self {
            Target::Postgres(t) => t.apply(sink, tables, steps, positions).await,
            Target::MariaDb(t) => t.apply(sink, tables, steps, positions).await,
        }
    }
}
