//! The lake on HDFS (a MiniDFSCluster per test, started by
//! `deploy/hdfs/hdfs.sh`): `logpipe up` writes it through the native HDFS
//! client, a kill -9 loses and doubles nothing, the windows, `logpipe sql`,
//! a batch report and Spark (pyspark, its own Hadoop client) read it,
//! retention deletes whole expired hours, and none of it is on the
//! process's disk.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common::{HdfsServer, Running, binary, sql_json_env};
use crate::lake_s3::{assert_batches_once, post_batch, up_env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_an_hdfs_lake_keeps_every_record_once_across_a_kill() {
    let hdfs = HdfsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_env = hdfs.lake_env("lake");
    let env = up_env(&lake_env);
    let client = reqwest::Client::new();
    let mut running = Running::start(&data, &env);
    for batch in 0..40 {
        if batch == 20 {
            // Between flushes, mid-load: some of the last batches are
            // committed, some only on the bus.
            tokio::time::sleep(Duration::from_millis(150)).await;
            running.kill_hard();
            running = Running::start(&data, &env);
        }
        assert_eq!(
            post_batch(&client, &running.base_url, batch).await,
            200,
            "{}",
            running.log()
        );
    }
    assert_batches_once(&data, &env, &running, 40);
    // HDFS renames without overwrite, which the NameNode refuses
    // atomically: the fencing the commit chain needs.
    assert!(
        running
            .log()
            .contains("lake store honours conditional writes"),
        "{}",
        running.log()
    );
    assert!(!data.join("logs").exists(), "lake files on the local disk");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let windows = sql_json_env(
            &data,
            &env,
            "SELECT CAST(sum(count) AS BIGINT) AS n FROM windows",
        );
        if windows[0]["n"] == json!(2000) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && windows[0]["n"].as_i64() < Some(2000),
            "the windows count {} of 2000 records",
            windows[0]["n"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(running.terminate().success());
    let run = Command::new(binary())
        .args([
            "jobs",
            "run",
            "daily_report",
            "--date",
            "2026-01-11",
            "--data-dir",
        ])
        .arg(&data)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let errors = sql_json_env(
        &data,
        &env,
        "SELECT CAST(sum(count) AS BIGINT) AS n FROM daily_report WHERE level = 'ERROR'",
    );
    assert_eq!(errors[0]["n"], json!(200), "{errors:?}\n{}", hdfs.log());

    // Spark reads the same lake in HDFS, as the seed's jobs read theirs:
    // every record once.
    let spark_python = std::env::var("LOGPIPE_TEST_SPARK_PYTHON").expect(
        "LOGPIPE_TEST_SPARK_PYTHON is not set: run ./scripts/test.sh, which installs pyspark",
    );
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/spark/read_lake.py");
    let spark = Command::new(&spark_python)
        .arg(&script)
        .arg(format!("{}/lake", hdfs.url))
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&spark.stdout);
    assert!(
        spark.status.success(),
        "Spark could not read the HDFS lake:\n{stdout}\n{}",
        String::from_utf8_lossy(&spark.stderr)
    );
    let read: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
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
