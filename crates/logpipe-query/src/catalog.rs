//! Registering the lake's tables (from `logpipe_core::tables`) as listing
//! tables over the lake's store.
//!
//! The store is registered in DataFusion under [`LAKE_URL`], so every table
//! is `lake://root/<dir>/` whatever the store is (a directory, memory, S3
//! later): DataFusion lists and reads through the same object store the
//! lake writes with, and nothing here touches the file system.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SessionContext;
use futures::StreamExt;
use logpipe_core::tables::{Partitioning, TableDef};
use logpipe_lake::LakeStore;
use object_store::path::Path as StorePath;

use crate::error::{QueryError, Result};

/// The URL the lake's store is registered under in each session.
pub const LAKE_URL: &str = "lake://root/";

/// The listing URL of `table`'s directory.
pub(crate) fn table_url(table: &TableDef) -> Result<ListingTableUrl> {
    Ok(ListingTableUrl::parse(format!("{LAKE_URL}{}/", table.dir))?)
}

/// Whether `table`'s directory holds a Parquet file at any depth.
pub(crate) async fn has_parquet(store: &LakeStore, table: &TableDef) -> Result<bool> {
    let prefix = StorePath::from(table.dir);
    let mut listing = store.store().list(Some(&prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| QueryError::Lake {
            table: table.name.to_string(),
            reason: e.to_string(),
        })?;
        if meta.location.extension() == Some("parquet") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `schema` with its strings read as views (`Utf8View`): the Parquet
/// reader then points into the pages it decoded instead of copying every
/// string into one buffer per column, and grouping compares views. The
/// seed's GROUP BY service, level over 5 M rows took 74–84 ms instead of
/// 98–110 (docs/BENCHMARKS.md, the seed's read table). What DataFusion
/// does for the schemas it infers; the lake's own tables give theirs
/// explicitly.
fn string_views(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => {
                field.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            _ => field.as_ref().clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// Registers `table`, with `file_schema` or the schema of its first file.
pub(crate) async fn register(
    ctx: &SessionContext,
    table: &TableDef,
    file_schema: Option<SchemaRef>,
) -> Result<()> {
    let partition_type = match table.partitioning {
        Partitioning::Hourly => DataType::Int32,
        Partitioning::Text(_) | Partitioning::None => DataType::Utf8,
    };
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            table
                .partitioning
                .columns()
                .iter()
                .map(|column| (column.to_string(), partition_type.clone()))
                .collect(),
        );
    let config = ListingTableConfig::new(table_url(table)?).with_listing_options(options);
    let config = match file_schema {
        Some(file_schema) => config.with_schema(string_views(&file_schema)),
        // Inference reads strings as views already
        // (`schema_force_view_types`).
        None => config.infer_schema(&ctx.state()).await?,
    };
    let listing = ListingTable::try_new(config)?;
    // Replaces a stand-in registered while planning (`register_planned`).
    ctx.deregister_table(table.name)?;
    ctx.register_table(table.name, Arc::new(listing))?;
    Ok(())
}
