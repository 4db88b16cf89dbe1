//! The lake on HDFS (a MiniDFSCluster per test, started by
//! `deploy/hdfs/hdfs.sh`): `logpipe up` writes it through the native HDFS
//! client, a kill -9 loses and doubles nothing, the windows, `logpipe sql`,
//! a batch report and Spark (pyspark, its own Hadoop client) read it,
//! retention deletes whole expired hours, compaction merges an hour under
//! queries (Spark reading its Delta log), and none of it is on the
//! process's disk.

use serde_json::json;

use crate::common::HdfsServer;
use crate::lake_s3::{load_across_a_kill, up_env, windows_and_report_count_every_record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_an_hdfs_lake_keeps_every_record_once_across_a_kill() {
    let hdfs = HdfsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_env = hdfs.lake_env("lake");
    let env = up_env(&lake_env);
    // HDFS renames without overwrite, which the NameNode refuses
    // atomically: the fencing the commit chain needs.
    let running = load_across_a_kill(&data, &env).await;
    windows_and_report_count_every_record(&data, &env, running);

    // Spark reads the same lake in HDFS, as the seed's jobs read theirs:
    // every record once.
    let read = crate::common::spark_job(
        "read_lake.py",
        &[format!("{}/lake", hdfs.url).as_ref()],
        &[],
        "Spark reading the HDFS lake",
    );
    assert_eq!(
        read,
        json!({"rows": 2000, "ids": 2000, "levels": {"ERROR": 200, "INFO": 1800}}),
        "Spark's reading of the HDFS lake"
    );
}

/// Retention on HDFS: the expired hours deleted whole, the young hour and
/// the old events kept (`pipeline::retention_deletes_expired_hours`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_expired_hours_on_hdfs() {
    let hdfs = HdfsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_env = hdfs.lake_env("lake");
    let env: Vec<(&str, &str)> = lake_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::pipeline::retention_deletes_expired_hours(&data, &env).await;
    assert!(!data.join("logs").exists(), "lake files on the local disk");
}

/// Compaction on HDFS (`pipeline::compaction_under_queries`): the hour's
/// small files merged into one while `logpipe sql` counts every row once;
/// the Delta log kept beside them in HDFS is read by Spark over `hdfs://`
/// with every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_an_hour_on_hdfs_and_spark_reads_its_delta_log() {
    let hdfs = HdfsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_env = hdfs.lake_env("lake");
    let mut env: Vec<(&str, &str)> = lake_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend(crate::pipeline::DELTA_UNDER_COMPACTION);
    // The hour's files as HDFS lists them (logpipe's own client).
    let store = logpipe_lake::resolve(&format!("{}/lake", hdfs.url))
        .unwrap()
        .store()
        .clone();
    let files_in_hour = move |hour: &str| {
        let prefix = object_store::path::Path::from(format!("logs/raw/{hour}"));
        let store = store.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                store
                    .list_with_delimiter(Some(&prefix))
                    .await
                    .map(|listed| {
                        listed
                            .objects
                            .iter()
                            .filter(|meta| meta.location.extension() == Some("parquet"))
                            .count()
                    })
                    .unwrap_or(0)
            })
        })
    };
    let total = crate::pipeline::compaction_under_queries(&data, &env, files_in_hour).await;
    assert!(!data.join("logs").exists(), "lake files on the local disk");
    crate::pipeline::spark_reads_delta(format!("{}/lake", hdfs.url).as_ref(), total);
}
