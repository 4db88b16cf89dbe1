//! Encoding record batches as Parquet files.

use arrow::array::RecordBatch;
use bytes::Bytes;
use logpipe_config::Compression;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::Result;
use object_store::ObjectStoreExt;

/// How every Parquet file of the lake is written (compaction's merged
/// files too).
pub(crate) fn writer_properties(compression: Compression) -> Result<WriterProperties> {
    let compression = match compression {
        Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::try_new(1)?),
        Compression::Snappy => ParquetCompression::SNAPPY,
    };
    Ok(WriterProperties::builder()
        .set_compression(compression)
        .set_created_by(format!("logpipe {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// Encodes one batch as a Parquet file.
pub fn encode_parquet(batch: &RecordBatch, compression: Compression) -> Result<Bytes> {
    let properties = writer_properties(compression)?;
    let mut buffer = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

/// The footer of the Parquet file `path` of `size` bytes: two ranged reads
/// (its last 8 bytes, then the footer).
pub(crate) async fn footer(
    store: &dyn object_store::ObjectStore,
    path: &object_store::path::Path,
    size: u64,
) -> Option<parquet::file::metadata::ParquetMetaData> {
    let tail = store
        .get_range(path, size.checked_sub(8)?..size)
        .await
        .ok()?;
    if &tail[4..] != b"PAR1" {
        return None;
    }
    let length = u64::from(u32::from_le_bytes(tail[..4].try_into().ok()?));
    let start = size.checked_sub(8 + length)?;
    let footer = store.get_range(path, start..size - 8).await.ok()?;
    parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer).ok()
}
