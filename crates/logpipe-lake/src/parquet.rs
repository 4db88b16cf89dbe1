//! Encoding record batches as Parquet files.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, FieldRef, Schema};
use bytes::Bytes;
use logpipe_config::Compression;
use logpipe_core::parallel::on_threads;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, compute_leaves};
use parquet::basic::{Compression as ParquetCompression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::Result;
use object_store::ObjectStoreExt;

/// How every Parquet file of the lake with columns `schema` is written
/// (compaction's merged files too; public for the encoding benchmark).
///
/// Beside the codec, two per-column choices (`cargo bench --workspace
/// --locked --bench lake_encode` shows what each costs):
/// - **Timestamps are delta-encoded**, not dictionary-encoded. Records
///   arrive in about time order, so the deltas are small: a third smaller
///   files and 15 % less encoding CPU than a dictionary of mostly unique
///   values that overflows into plain pages.
/// - **Text columns carry no statistics** (no min/max, null counts or
///   column index), in every table. In `logs` and `events`, files of
///   records in arrival order, every page of `service`, `message` or
///   `request_id` spans nearly all their values, so min/max prune nothing,
///   while computing them compared every value twice: a fifth of the
///   encoding CPU. The small tables (windows, alerts, reports) gain little
///   either way; one rule keeps the files alike. Readers lose no answers,
///   only pruning that had nothing to prune. Time and numbers keep
///   theirs: `timestamp` is what time-range queries prune by, and a
///   number's statistics are nearly free.
pub fn writer_properties(compression: Compression, schema: &Schema) -> Result<WriterProperties> {
    let compression = match compression {
        Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::try_new(1)?),
        Compression::Snappy => ParquetCompression::SNAPPY,
    };
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_created_by(format!("logpipe {}", env!("CARGO_PKG_VERSION")));
    for field in schema.fields() {
        let column = ColumnPath::from(field.name().as_str());
        match field.data_type() {
            DataType::Timestamp(..) => {
                builder = builder
                    .set_column_dictionary_enabled(column.clone(), false)
                    .set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                builder = builder.set_column_statistics_enabled(column, EnabledStatistics::None);
            }
            _ => {}
        }
    }
    Ok(builder.build())
}

/// Batches with fewer rows are encoded on the calling thread alone.
const PARALLEL_FROM_ROWS: usize = 16_384;

/// Threads a batch's columns are encoded on (this machine class has two
/// cores; the lake job's flush waits for the encoding).
const ENCODE_THREADS: usize = 2;

/// Encodes one batch as a Parquet file. A large batch's columns are encoded
/// and compressed on [`ENCODE_THREADS`] threads (column chunks are
/// independent), then spliced into row groups in schema order: the same
/// file [`ArrowWriter`] writes, in about half the time on two cores. The
/// batch is taken, not borrowed: each column is freed once encoded (unless
/// the caller still holds it), so the batch and its encoded file are not
/// both whole in memory at the end.
pub fn encode_parquet(batch: RecordBatch, compression: Compression) -> Result<Bytes> {
    encode_parquet_parts(vec![batch], compression)
}

/// [`encode_parquet`] of the rows of `parts` (one schema, at least one
/// part), in order, without joining them first: the file [`ArrowWriter`]
/// writes when given the parts one after another.
pub fn encode_parquet_parts(parts: Vec<RecordBatch>, compression: Compression) -> Result<Bytes> {
    let Some(first) = parts.first() else {
        return Err(parquet::errors::ParquetError::General("no rows to encode".into()).into());
    };
    let schema = first.schema();
    if let Some(other) = parts.iter().find(|p| p.schema() != schema) {
        return Err(parquet::errors::ParquetError::General(format!(
            "the parts of one file must have one schema: {schema:?} and {:?}",
            other.schema()
        ))
        .into());
    }
    let properties = writer_properties(compression, &schema)?;
    encode_with(parts, properties)
}

/// [`encode_parquet_parts`] with `properties` (the tests' row-group limits).
fn encode_with(parts: Vec<RecordBatch>, properties: WriterProperties) -> Result<Bytes> {
    let group_rows = properties
        .max_row_group_row_count()
        .unwrap_or(usize::MAX)
        .max(1);
    let schema = parts[0].schema();
    let total_rows: usize = parts.iter().map(RecordBatch::num_rows).sum();
    let size: usize = parts.iter().map(RecordBatch::get_array_memory_size).sum();
    let mut buffer = Vec::with_capacity(size / 4);
    let mut writer = ArrowWriter::try_new(&mut buffer, schema.clone(), Some(properties))?;
    if total_rows < PARALLEL_FROM_ROWS {
        for part in &parts {
            writer.write(part)?;
        }
        writer.close()?;
        return Ok(Bytes::from(buffer));
    }
    let (mut file, factory) = writer.into_serialized_writer()?;
    let lengths: Vec<usize> = parts.iter().map(RecordBatch::num_rows).collect();
    // Each part's columns, taken out by the row group that ends the part,
    // so each is freed as soon as it is encoded.
    let mut columns: Vec<Vec<Option<ArrayRef>>> = parts
        .into_iter()
        .map(|part| part.columns().iter().cloned().map(Some).collect())
        .collect();
    // Where the next row group starts: part and row within it.
    let (mut part, mut row) = (0, 0);
    for index in 0.. {
        // The row group's pieces: (part, first row, rows).
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        let mut wanted = group_rows;
        while wanted > 0 && part < lengths.len() {
            let rows = wanted.min(lengths[part] - row);
            if rows > 0 {
                pieces.push((part, row, rows));
            }
            wanted -= rows;
            row += rows;
            if row == lengths[part] {
                part += 1;
                row = 0;
            }
        }
        if pieces.is_empty() {
            // Every row is written (what is left, if anything, is empty).
            break;
        }
        // The writers of each field's leaves, in schema order.
        let mut writers = factory.create_column_writers(index)?.into_iter();
        let mut work: Vec<Column> = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let slices: Vec<ArrayRef> = pieces
                .iter()
                .map(|&(p, start, rows)| {
                    let ends_part = start + rows == lengths[p];
                    let column = if ends_part {
                        columns[p][i].take()
                    } else {
                        columns[p][i].clone()
                    }
                    .expect("a part's column is taken only by the row group that ends it");
                    if start == 0 && ends_part {
                        column
                    } else {
                        column.slice(start, rows)
                    }
                })
                .collect();
            let leaves = compute_leaves(field, &slices[0].slice(0, 0))?.len();
            let mine: Vec<ArrowColumnWriter> = writers.by_ref().take(leaves).collect();
            if mine.len() != leaves {
                return Err(parquet::errors::ParquetError::General(
                    "fewer column writers than leaves".into(),
                )
                .into());
            }
            let size = slices.iter().map(|s| s.get_array_memory_size()).sum();
            work.push(Column {
                size,
                field: field.clone(),
                slices,
                writers: mine,
            });
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

/// One field to encode: its memory size (the work it is), its values (one
/// slice per part the row group takes rows from) and the writers of its
/// leaves (one for a flat column).
struct Column {
    size: usize,
    field: FieldRef,
    slices: Vec<ArrayRef>,
    writers: Vec<ArrowColumnWriter>,
}

impl Column {
    /// Turns the values into leaves (levels and values) only now, on the
    /// encoding thread, writes them, frees them and returns the leaves'
    /// chunks: one field's leaves in memory per thread, not every field's.
    /// (Writing a column in smaller slices would hold less still, but it
    /// moves page boundaries: the file would differ from [`ArrowWriter`]'s.)
    fn encode(self) -> Result<Vec<ArrowColumnChunk>> {
        let Column {
            field,
            slices,
            mut writers,
            ..
        } = self;
        for slice in slices {
            let leaves = compute_leaves(&field, &slice)?;
            for (writer, leaf) in writers.iter_mut().zip(leaves) {
                writer.write(&leaf)?;
            }
        }
        writers
            .into_iter()
            .map(|writer| Ok(writer.close()?))
            .collect()
    }
}

/// Encodes each field and returns the chunks of their leaves in the order
/// given. The largest columns are dealt first, each to the thread with the
/// least work so far.
fn encode_columns(columns: Vec<Column>) -> Result<Vec<ArrowColumnChunk>> {
    let mut largest_first: Vec<(usize, Column)> = columns.into_iter().enumerate().collect();
    largest_first.sort_by_key(|(_, column)| std::cmp::Reverse(column.size));
    let mut loads = [0usize; ENCODE_THREADS];
    let mut shares: Vec<Vec<(usize, Column)>> = (0..ENCODE_THREADS).map(|_| Vec::new()).collect();
    for (i, column) in largest_first {
        let thread = (0..ENCODE_THREADS)
            .min_by_key(|&t| loads[t])
            .unwrap_or_default();
        loads[thread] += column.size;
        shares[thread].push((i, column));
    }
    let encoded = on_threads(shares, |share| {
        share
            .into_iter()
            .map(|(i, column)| Ok((i, column.encode()?)))
            .collect::<Result<Vec<(usize, Vec<ArrowColumnChunk>)>>>()
    });
    let mut chunks = Vec::new();
    for share in encoded {
        chunks.extend(share?);
    }
    chunks.sort_by_key(|(i, _)| *i);
    Ok(chunks.into_iter().flat_map(|(_, chunks)| chunks).collect())
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

    /// [`batch`] of `rows` with a UTC `timestamp` column first, row `i` at
    /// `micros(i)`: the column the lake's settings treat apart.
    fn timestamped(rows: usize, micros: impl Fn(i64) -> i64) -> RecordBatch {
        use arrow::array::{Array, TimestampMicrosecondArray};
        let flat = batch(rows);
        let times = TimestampMicrosecondArray::from_iter_values((0..rows as i64).map(micros))
            .with_timezone("UTC");
        let mut fields: Vec<Arc<Field>> = vec![Arc::new(Field::new(
            "timestamp",
            times.data_type().clone(),
            false,
        ))];
        fields.extend(flat.schema().fields().iter().cloned());
        let mut columns: Vec<ArrayRef> = vec![Arc::new(times)];
        columns.extend(flat.columns().iter().cloned());
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// What the plain writer makes of `batch`.
    fn sequential(batch: &RecordBatch) -> Bytes {
        written_by_arrow_writer(
            std::slice::from_ref(batch),
            writer_properties(Compression::Zstd, &batch.schema()).unwrap(),
        )
    }

    /// The file [`ArrowWriter`] writes from `parts`, one after another.
    fn written_by_arrow_writer(parts: &[RecordBatch], properties: WriterProperties) -> Bytes {
        let mut buffer = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut buffer, parts[0].schema(), Some(properties)).unwrap();
        for part in parts {
            writer.write(part).unwrap();
        }
        writer.close().unwrap();
        Bytes::from(buffer)
    }

    /// The rows of `file`, read back in batches of `rows`.
    fn read_back(file: Bytes, rows: usize) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .with_batch_size(rows)
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Columns encoded on two threads make the file one thread makes, byte
    /// for byte, and it reads back as the batch (schema included).
    #[test]
    fn columns_encoded_in_parallel_make_the_same_file() {
        for rows in [10, PARALLEL_FROM_ROWS + 1, 100_000] {
            let batch = batch(rows);
            let parallel = encode_parquet(batch.clone(), Compression::Zstd).unwrap();
            assert_eq!(parallel, sequential(&batch), "{rows} rows");
            let read = read_back(parallel, rows);
            assert_eq!(read, vec![batch], "{rows} rows");
        }
    }

    /// The lake's per-column choices reach the file: the timestamp
    /// delta-encoded without a dictionary and with its min/max, numbers
    /// with theirs, text without statistics; and the file reads back as
    /// the batch.
    #[test]
    fn timestamps_are_delta_encoded_and_text_has_no_statistics() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let rows = 50_000;
        let batch = timestamped(rows, |i| 1_736_645_160_000_000 + i * 997 - (i % 3) * 50);
        let file = encode_parquet(batch.clone(), Compression::Zstd).unwrap();
        // Encoded on two threads (and from parts) with the lake's settings:
        // still the file `ArrowWriter` writes with them.
        assert_eq!(file, sequential(&batch));
        let parts = vec![batch.slice(0, 20_000), batch.slice(20_000, rows - 20_000)];
        let properties = writer_properties(Compression::Zstd, &batch.schema()).unwrap();
        assert_eq!(
            encode_parquet_parts(parts.clone(), Compression::Zstd).unwrap(),
            written_by_arrow_writer(&parts, properties)
        );
        let reader = SerializedFileReader::new(file.clone()).unwrap();
        let group = reader.metadata().row_group(0);
        let chunk = |name: &str| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap()
        };
        let timestamp = chunk("timestamp");
        assert!(
            timestamp
                .encodings()
                .any(|e| e == Encoding::DELTA_BINARY_PACKED),
            "{:?}",
            timestamp.encodings().collect::<Vec<_>>()
        );
        assert_eq!(timestamp.dictionary_page_offset(), None);
        let stats = timestamp.statistics().expect("the timestamp's statistics");
        assert_eq!(
            stats
                .min_bytes_opt()
                .map(|b| i64::from_le_bytes(b.try_into().unwrap())),
            Some(1_736_645_160_000_000)
        );
        assert!(chunk("code").statistics().is_some());
        assert!(chunk("ms").statistics().is_some());
        assert!(chunk("message").statistics().is_none());
        assert!(chunk("message").dictionary_page_offset().is_some());
        let read = read_back(file, rows);
        assert_eq!(read, vec![batch]);
    }

    /// Several row groups (the last one short) and nested columns (a struct
    /// of two leaves, a list): each row group's chunks in schema order, each
    /// field's leaves to their own writers — again byte for byte
    /// `ArrowWriter`'s file.
    #[test]
    fn row_groups_and_nested_columns_make_the_same_file() {
        use arrow::array::{Array, ListArray, StructArray};
        use arrow::datatypes::Int32Type;
        let rows = 35_000;
        let flat = batch(rows);
        let inner = Arc::new(StructArray::from(vec![
            (
                Arc::new(Field::new("x", DataType::Float64, true)),
                Arc::new(Float64Array::from_iter(
                    (0..rows).map(|i| (i % 5 != 0).then_some(i as f64)),
                )) as ArrayRef,
            ),
            (
                Arc::new(Field::new("tag", DataType::Utf8, true)),
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i % 3 != 0).then(|| format!("t{}", i % 11))),
                )) as ArrayRef,
            ),
        ]));
        let list = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            (0..rows).map(|i| (i % 4 != 0).then(|| (0..(i % 3) as i32).map(Some))),
        ));
        let mut fields: Vec<Arc<Field>> = flat.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(
            "point",
            inner.data_type().clone(),
            false,
        )));
        fields.push(Arc::new(Field::new(
            "codes",
            list.data_type().clone(),
            true,
        )));
        let mut columns = flat.columns().to_vec();
        columns.push(inner);
        columns.push(list);
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let properties = || {
            WriterProperties::builder()
                .set_max_row_group_row_count(Some(10_000))
                .build()
        };
        let parallel = encode_with(vec![batch.clone()], properties()).unwrap();
        assert_eq!(
            parallel,
            written_by_arrow_writer(std::slice::from_ref(&batch), properties())
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(parallel).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 4);
        let read: Vec<RecordBatch> = reader
            .with_batch_size(rows)
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, vec![batch.clone()]);

        // The same rows in parts (empty ones among them) that row groups
        // cut across: the file `ArrowWriter` writes from the parts one
        // after another, and it reads back as the rows in order.
        for cuts in [
            vec![0, 3_000, 15_500, 15_500, 35_000],
            vec![20_000, 35_000],
            vec![9_999, 10_001, 34_999, 35_000, 35_000],
        ] {
            let mut start = 0;
            let parts: Vec<RecordBatch> = cuts
                .iter()
                .map(|&end| {
                    let part = batch.slice(start, end - start);
                    start = end;
                    part
                })
                .collect();
            let expected = written_by_arrow_writer(&parts, properties());
            let file = encode_with(parts, properties()).unwrap();
            assert_eq!(file, expected, "cuts {cuts:?}");
            let read = read_back(file, rows);
            assert_eq!(read, vec![batch.clone()], "cuts {cuts:?}");
        }
    }

    /// The lake's own settings at the lake's own row-group size: rows past
    /// one full row group, in parts cut across its end, make the file
    /// `ArrowWriter` writes with those settings, in two row groups, and it
    /// reads back as the rows.
    #[test]
    fn the_lakes_settings_across_a_full_row_group_make_the_same_file() {
        use parquet::file::properties::DEFAULT_MAX_ROW_GROUP_ROW_COUNT;
        let rows = DEFAULT_MAX_ROW_GROUP_ROW_COUNT + 30_000;
        let batch = timestamped(rows, |i| 1_736_645_160_000_000 + i * 97);
        let cut = DEFAULT_MAX_ROW_GROUP_ROW_COUNT - 10_000;
        let parts = vec![batch.slice(0, cut), batch.slice(cut, rows - cut)];
        let properties = writer_properties(Compression::Zstd, &batch.schema()).unwrap();
        assert_eq!(
            properties.max_row_group_row_count(),
            Some(DEFAULT_MAX_ROW_GROUP_ROW_COUNT)
        );
        let expected = written_by_arrow_writer(&parts, properties);
        let file = encode_parquet_parts(parts, Compression::Zstd).unwrap();
        assert!(file == expected, "not the file ArrowWriter writes");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file.clone()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 2);
        let read = arrow::compute::concat_batches(&batch.schema(), &read_back(file, rows)).unwrap();
        assert!(read == batch, "the rows read back differ");
    }

    /// A file's rows in parts, with the lake's settings: few rows (encoded
    /// on one thread) and many; no parts at all is an error.
    #[test]
    fn parts_make_the_file_of_their_rows() {
        for rows in [100, PARALLEL_FROM_ROWS * 3] {
            let batch = batch(rows);
            let parts = vec![
                batch.slice(0, rows / 3),
                batch.slice(rows / 3, 0),
                batch.slice(rows / 3, rows - rows / 3),
            ];
            let file = encode_parquet_parts(parts, Compression::Zstd).unwrap();
            let read = read_back(file, rows);
            assert_eq!(read, vec![batch], "{rows} rows");
        }
        assert!(encode_parquet_parts(Vec::new(), Compression::Zstd).is_err());
        let narrower = batch(10).project(&[0, 1]).unwrap();
        let error = encode_parquet_parts(vec![batch(10), narrower], Compression::Zstd)
            .unwrap_err()
            .to_string();
        assert!(error.contains("one schema"), "{error}");
    }
}
