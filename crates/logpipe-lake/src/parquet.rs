//! Encoding record batches as Parquet files.

use arrow::array::RecordBatch;
use bytes::Bytes;
use logpipe_config::Compression;
use logpipe_core::parallel::on_threads;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, compute_leaves,
};
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

/// Batches with fewer rows are encoded on the calling thread alone.
const PARALLEL_FROM_ROWS: usize = 16_384;

/// Threads a batch's columns are encoded on (this machine class has two
/// cores; the lake job's flush waits for the encoding).
const ENCODE_THREADS: usize = 2;

/// Encodes one batch as a Parquet file. A large batch's columns are encoded
/// and compressed on [`ENCODE_THREADS`] threads (column chunks are
/// independent), then spliced into row groups in schema order: the same
/// file [`ArrowWriter`] writes, in about half the time on two cores.
pub fn encode_parquet(batch: &RecordBatch, compression: Compression) -> Result<Bytes> {
    let properties = writer_properties(compression)?;
    let group_rows = properties
        .max_row_group_row_count()
        .unwrap_or(usize::MAX)
        .max(1);
    let mut buffer = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(properties))?;
    if batch.num_rows() < PARALLEL_FROM_ROWS {
        writer.write(batch)?;
        writer.close()?;
        return Ok(Bytes::from(buffer));
    }
    let (mut file, factory) = writer.into_serialized_writer()?;
    let schema = batch.schema();
    let mut start = 0;
    for index in 0.. {
        if start >= batch.num_rows() {
            break;
        }
        let rows = group_rows.min(batch.num_rows() - start);
        let slice = batch.slice(start, rows);
        start += rows;
        // One writer per leaf column, in schema order.
        let mut work: Vec<Column> = Vec::new();
        let mut writers = factory.create_column_writers(index)?.into_iter();
        for (field, column) in schema.fields().iter().zip(slice.columns()) {
            for leaf in compute_leaves(field, column)? {
                let writer = writers.next().ok_or_else(|| {
                    parquet::errors::ParquetError::General(
                        "fewer column writers than leaves".into(),
                    )
                })?;
                let size = column.get_array_memory_size();
                work.push((size, writer, leaf));
            }
        }
        let chunks = encode_columns(work)?;
        let mut row_group = file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
    }
    file.close()?;
    Ok(Bytes::from(buffer))
}

/// One leaf column to encode: its memory size (the work it is), its writer
/// and its values.
type Column = (usize, ArrowColumnWriter, ArrowLeafColumn);

/// Encodes each column and returns the chunks in the order given. The
/// largest columns are dealt first, each to the thread with the least work
/// so far.
fn encode_columns(columns: Vec<Column>) -> Result<Vec<ArrowColumnChunk>> {
    let mut largest_first: Vec<(usize, Column)> = columns.into_iter().enumerate().collect();
    largest_first.sort_by_key(|(_, (size, ..))| std::cmp::Reverse(*size));
    let mut loads = [0usize; ENCODE_THREADS];
    let mut shares: Vec<Vec<(usize, Column)>> = (0..ENCODE_THREADS).map(|_| Vec::new()).collect();
    for (i, column) in largest_first {
        let thread = (0..ENCODE_THREADS)
            .min_by_key(|&t| loads[t])
            .unwrap_or_default();
        loads[thread] += column.0;
        shares[thread].push((i, column));
    }
    let encoded = on_threads(shares, |share| {
        share
            .into_iter()
            .map(|(i, (_, mut writer, leaf))| {
                writer.write(&leaf)?;
                Ok((i, writer.close()?))
            })
            .collect::<Result<Vec<(usize, ArrowColumnChunk)>>>()
    });
    let mut chunks = Vec::new();
    for share in encoded {
        chunks.extend(share?);
    }
    chunks.sort_by_key(|(i, _)| *i);
    Ok(chunks.into_iter().map(|(_, chunk)| chunk).collect())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn batch(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("message", DataType::Utf8, false),
            Field::new("code", DataType::Int32, true),
            Field::new("ms", DataType::Float64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("message {}", i % 977)),
            )),
            Arc::new(Int32Array::from_iter(
                (0..rows).map(|i| (i % 7 != 0).then_some(i as i32)),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| i as f64 / 3.0),
            )),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// What the plain writer makes of `batch`.
    fn sequential(batch: &RecordBatch) -> Bytes {
        let mut buffer = Vec::new();
        let properties = writer_properties(Compression::Zstd).unwrap();
        let mut writer =
            ArrowWriter::try_new(&mut buffer, batch.schema(), Some(properties)).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
        Bytes::from(buffer)
    }

    /// Columns encoded on two threads make the file one thread makes, byte
    /// for byte, and it reads back as the batch (schema included).
    #[test]
    fn columns_encoded_in_parallel_make_the_same_file() {
        for rows in [10, PARALLEL_FROM_ROWS + 1, 100_000] {
            let batch = batch(rows);
            let parallel = encode_parquet(&batch, Compression::Zstd).unwrap();
            assert_eq!(parallel, sequential(&batch), "{rows} rows");
            let read: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(parallel)
                .unwrap()
                .with_batch_size(rows)
                .build()
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(read, vec![batch], "{rows} rows");
        }
    }
}
