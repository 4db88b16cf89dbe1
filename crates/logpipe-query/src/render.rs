//! A query's result and how it is printed: a table for people, CSV, or
//! JSON rows for the API.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::error::{QueryError, Result};

/// A query result, possibly cut at a row limit.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// True when more rows existed than the limit allowed.
    pub truncated: bool,
}

/// How `logpipe sql` prints a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

impl QueryResult {
    fn batches_or_empty(&self) -> Vec<RecordBatch> {
        if self.batches.is_empty() {
            vec![RecordBatch::new_empty(self.schema.clone())]
        } else {
            self.batches.clone()
        }
    }

    /// Renders the result.
    pub fn render(&self, format: OutputFormat) -> Result<String> {
        let error = |e: arrow::error::ArrowError| QueryError::Format(e.to_string());
        match format {
            OutputFormat::Table => Ok(arrow::util::pretty::pretty_format_batches(
                &self.batches_or_empty(),
            )
            .map_err(error)?
            .to_string()),
            OutputFormat::Csv => {
                let mut out = Vec::new();
                {
                    let mut writer = arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(&mut out);
                    for batch in self.batches_or_empty() {
                        writer.write(&batch).map_err(error)?;
                    }
                }
                String::from_utf8(out).map_err(|e| QueryError::Format(e.to_string()))
            }
            OutputFormat::Json => self.rows_json(),
        }
    }

    /// The rows as a JSON array of objects (`[]` when empty).
    pub fn rows_json(&self) -> Result<String> {
        let mut out = Vec::new();
        {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut out);
            for batch in &self.batches {
                writer
                    .write(batch)
                    .map_err(|e| QueryError::Format(e.to_string()))?;
            }
            writer
                .finish()
                .map_err(|e| QueryError::Format(e.to_string()))?;
        }
        if out.is_empty() {
            return Ok("[]".to_string());
        }
        String::from_utf8(out).map_err(|e| QueryError::Format(e.to_string()))
    }

    /// Column names in order.
    pub fn columns(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
}
