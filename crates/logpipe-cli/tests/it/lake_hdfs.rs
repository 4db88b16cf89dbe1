//! The lake on HDFS (a MiniDFSCluster per test, started by
//! `deploy/hdfs/hdfs.sh`): `logpipe up` writes it through the native HDFS
//! client, a kill -9 loses and doubles nothing, the windows, `logpipe sql`
//! and a batch report read it, retention deletes whole expired hours, and
//! none of it is on the process's disk.

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
