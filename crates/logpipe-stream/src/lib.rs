//! Stream jobs that consume the bus: raw records into the Parquet lake.
