//! Encoding record batches as Parquet files.

use arrow::array::RecordBatch;
use bytes::Bytes;
use logpipe_config::Compression;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::Result;

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
