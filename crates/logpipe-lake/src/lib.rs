//! The Parquet lake: partition layout, writer and exactly-once commit protocol over object_store.
