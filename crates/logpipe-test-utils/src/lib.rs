//! Test doubles, fixtures and service harnesses, shared by every crate's
//! tests (DataFusion's `test-utils`, InfluxDB's `influxdb3_test_helpers`).
//! Not published; a dev-dependency only.
//!
//! - [`bus`] — [`FaultyBus`] (a real bus with faults planted per call) and
//!   topic fixtures.
//! - [`running`] — the real `logpipe` binary on `127.0.0.1:0`.
//! - [`services`] — an Apache Kafka cluster, an S3 server and an HDFS per test.
//! - [`http`], [`process`]: talking to what runs.
//! - [`assertions`] — exactly-once checks on the lake.
//! - [`modules`] — the module graph of a crate and its cycles (the
//!   architecture test in `tests/architecture.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

pub mod assertions;
pub mod bus;
pub mod http;
pub mod modules;
pub mod process;
pub mod running;
pub mod services;

pub use assertions::{assert_exactly_once, assert_none_missing};
pub use bus::{FaultyBus, embedded_bus, record_topics};
pub use http::{call, post, wait_for_count};
/// The repository's root (deploy/, docs/ and the scripts tests run).
///
/// From the package folder cargo names when it runs the test (every
/// package is `crates/NAME`), not the one this crate was compiled in:
/// clones share one build cache outside them, and cargo reuses this crate
/// compiled in another clone, whose folder may be gone.
pub fn repo() -> std::path::PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    package.join("../..")
}

pub use process::{code_and_output, output_within, python, spark_job, spark_python, stdout_of};
pub use running::{Running, UP, binary, sql_json, sql_json_env, up_refused};
pub use services::hdfs::HdfsServer;
pub use services::kafka::Broker;
pub use services::s3::S3Server;
