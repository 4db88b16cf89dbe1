//! What the lake job pays per record to write Parquet: 200,000 generated
//! logs and 200,000 events (one flush at `lake.max_buffered_rows`)
//! encoded with the lake's writer settings (`writer_properties`), then
//! with parquet's defaults and one setting changed at a time, so each
//! choice's cost shows, and each column on its own. Single-threaded (`ArrowWriter`): CPU per record, which the
//! lake's two encoding threads share.
//!
//! `cargo bench --workspace --locked --bench lake_encode` prints ns per
//! record, best of five rounds.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use logpipe_config::Compression;
use logpipe_core::RecordKind;
use logpipe_core::record::{ActivityEvent, LogRecord, ValidationLimits};
use logpipe_core::tables::{events::EventBatchBuilder, logs::LogBatchBuilder};
use logpipe_gen::synthetic::{SyntheticOptions, SyntheticSource};
use logpipe_lake::parquet::writer_properties;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

const ROWS: usize = 200_000;

fn batch(kind: RecordKind) -> RecordBatch {
    let mut source = SyntheticSource::new(SyntheticOptions {
        seed: Some(7),
        ..SyntheticOptions::default()
    });
    let limits = ValidationLimits::now();
    let mut text = String::new();
    let mut logs = LogBatchBuilder::default();
    let mut events = EventBatchBuilder::default();
    for _ in 0..ROWS {
        text.clear();
        source.write_record(kind, &mut text);
        match kind {
            RecordKind::Log => logs.append(&LogRecord::parse(&text, &limits).expect("a valid log")),
            RecordKind::Event => {
                events.append(&ActivityEvent::parse(&text, &limits).expect("a valid event"))
            }
        }
    }
    match kind {
        RecordKind::Log => logs.finish(),
        RecordKind::Event => events.finish(),
    }
    .expect("a batch")
}

/// Best of five encodings of `batch`, in ns per row.
fn encode_ns(batch: &RecordBatch, properties: &WriterProperties) -> (f64, usize) {
    let mut bytes = 0;
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut out = Vec::with_capacity(16 << 20);
            let mut writer =
                ArrowWriter::try_new(&mut out, batch.schema(), Some(properties.clone()))
                    .expect("a writer");
            writer.write(batch).expect("encoded");
            writer.close().expect("closed");
            bytes = out.len();
            start.elapsed().as_nanos() as f64 / batch.num_rows() as f64
        })
        .fold(f64::INFINITY, f64::min);
    (best, bytes)
}

fn main() {
    for kind in [RecordKind::Log, RecordKind::Event] {
        let batch = batch(kind);
        let lake =
            writer_properties(Compression::Zstd, &batch.schema()).expect("the lake's settings");
        println!(
            "{kind:?}: {} rows, {} MiB in Arrow; best of 5, ns/record and file size:",
            batch.num_rows(),
            batch.get_array_memory_size() >> 20
        );
        run(&batch, &lake);
    }
}

fn run(batch: &RecordBatch, lake: &WriterProperties) {
    let timestamp = ColumnPath::from("timestamp");
    // The lake's codec, every other setting parquet's default.
    let defaults = || -> WriterPropertiesBuilder {
        WriterProperties::builder()
            .set_compression(lake.compression(&timestamp))
            .set_created_by(lake.created_by().to_string())
    };
    let variants: Vec<(&str, WriterProperties)> = vec![
        ("the lake's settings (zstd 1)", lake.clone()),
        ("  parquet's defaults, zstd 1", defaults().build()),
        (
            "    timestamp delta-encoded",
            defaults()
                .set_column_dictionary_enabled(timestamp.clone(), false)
                .set_column_encoding(timestamp.clone(), Encoding::DELTA_BINARY_PACKED)
                .build(),
        ),
        (
            "    statistics per chunk, not per page",
            defaults()
                .set_statistics_enabled(EnabledStatistics::Chunk)
                .build(),
        ),
        (
            "    no statistics",
            defaults()
                .set_statistics_enabled(EnabledStatistics::None)
                .build(),
        ),
        (
            "    no dictionaries",
            defaults().set_dictionary_enabled(false).build(),
        ),
        (
            "    snappy",
            defaults()
                .set_compression(ParquetCompression::SNAPPY)
                .build(),
        ),
        (
            "    uncompressed",
            defaults()
                .set_compression(ParquetCompression::UNCOMPRESSED)
                .build(),
        ),
    ];
    for (name, properties) in &variants {
        let (ns, bytes) = encode_ns(batch, properties);
        println!("{name:<42} {ns:>6.1}   {:>5.2} MiB", mib(bytes));
    }
    println!("  each column alone, the lake's settings:");
    let schema = batch.schema();
    for (i, field) in schema.fields().iter().enumerate() {
        let one = RecordBatch::try_new(
            Arc::new(Schema::new(vec![field.clone()])),
            vec![batch.column(i).clone()],
        )
        .expect("one column");
        let (ns, bytes) = encode_ns(&one, lake);
        println!(
            "    {:<38} {ns:>6.1}   {:>5.2} MiB",
            field.name(),
            mib(bytes)
        );
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1_048_576.0
}
