//! The query engine's errors, and their kind.

use logpipe_core::error::{Classify, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is wrong (syntax, unknown column, …): the user's to fix.
    #[error("{0}")]
    Sql(String),
    #[error("query failed: {0}")]
    Execution(String),
    #[error("formatting the result failed: {0}")]
    Format(String),
    #[error("lake table {table}: {reason}")]
    Lake { table: String, reason: String },
    /// A `[query]` limit stopped the query: the message names the setting.
    #[error("{0}")]
    Limit(String),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match error.find_root() {
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => {
                QueryError::Sql(error.find_root().to_string())
            }
            E::ResourcesExhausted(reason) => QueryError::Limit(format!(
                "the query needs more memory than query.max_memory_bytes allows ({reason}); \
                 narrow it (a WHERE on year/month/day/hour, fewer columns) or raise the setting"
            )),
            _ => QueryError::Execution(error.to_string()),
        }
    }
}

impl Classify for QueryError {
    fn kind(&self) -> ErrorKind {
        match self {
            QueryError::Sql(_) | QueryError::Limit(_) => ErrorKind::Input,
            // Reading the lake's store failed for now.
            QueryError::Lake { .. } => ErrorKind::Transient,
            QueryError::Execution(_) | QueryError::Format(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
