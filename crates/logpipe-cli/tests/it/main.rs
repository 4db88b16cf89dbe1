//! The binary's end-to-end tests, in one test binary (one link instead of
//! one per file): the real `logpipe`, real HTTP, the real bus and lake, and
//! the real services `./scripts/test.sh` starts.
//!
//! - `pipeline.rs`: ingest to lake, exactly once across kill -9, SQL.
//! - `analytics.rs`: windows, alerts, PostgreSQL, the webhook.
//! - `kafka.rs`: the same on a Kafka-protocol broker.
//! - `auth.rs`: tokens and scopes on every route, query limits.
//! - `faults.rs`: the disk fills up and frees under load.
//! - `jobs.rs`: a batch job of the user's own, scheduled, by hand, backfilled.
//! - `console.rs`: the web console in a real browser, `logpipe tail`.
//! - `answers.rs`: a refused request stores nothing, on both buses.
//! - `load.rs`: load clients and what the lake holds of their records.
//! - `otlp.rs`: OpenTelemetry's SDK exporting logs over OTLP/HTTP.
//! - `tls.rs`: HTTPS on the listener, certificates reloaded on SIGHUP.
//! - `lake_s3.rs`, `lake_hdfs.rs`: the lake on S3 (versitygw, Garage) and
//!   on HDFS (a MiniDFSCluster).
//! - `hosts.rs`: the seed's master and two workers as network namespaces.
//! - `deploy.rs`: the container image and the one-PC Compose file on podman.
//! - `cdc.rs`: MariaDB → Debezium on Kafka Connect → Kafka → `logpipe cdc`
//!   → PostgreSQL, under writes, kill -9 and schema changes.
//! - `hot_store.rs`: the PostgreSQL hot store across kill -9, with retention.
//! - `observability.rs`: the Prometheus rules, Alertmanager and Grafana
//!   dashboards of `deploy/` against real Prometheus and Alertmanager.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

/// The harnesses every module uses.
use logpipe_test_utils as common;

mod analytics;
mod answers;
mod auth;
mod cdc;
mod console;
mod deploy;
mod faults;
mod hosts;
mod hot_store;
mod jobs;
mod kafka;
mod lake_hdfs;
mod lake_s3;
mod load;
mod observability;
mod otlp;
mod pipeline;
mod tls;
