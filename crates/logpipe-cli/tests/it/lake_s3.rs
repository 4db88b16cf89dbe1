//! The lake on S3 (a versitygw per test, which honours conditional writes
//! as AWS S3 does): `logpipe up` writes it, a kill -9 loses and doubles
//! nothing, `logpipe sql` and the batch jobs read it, and none of it is on
//! the process's disk. The Kafka layout on S3 is in `kafka.rs`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common::{
    Running, S3Server, assert_exactly_once, binary, code_and_output, sql_json_env,
};
use crate::load::wait_for_lake_in;

/// 2026-01-11T09:00:00Z.
const HOUR: &str = "2026-01-11T09:";

pub(crate) async fn post_batch(client: &reqwest::Client, base_url: &str, batch: usize) -> u16 {
    let logs: Vec<_> = (0..50)
        .map(|i| {
            json!({
                "timestamp": format!("{HOUR}{:02}:{:02}Z", batch % 60, i),
                "level": if i % 10 == 0 { "ERROR" } else { "INFO" },
                "service": format!("svc-{}", i % 3),
                "message": "on s3",
                "metadata": {"request_id": format!("s3-{batch}-{i}"), "response_time_ms": 12.5},
            })
        })
        .collect();
    client
        .post(format!("{base_url}/api/collect/logs"))
        .header("Idempotency-Key", format!("batch-{batch}"))
        .json(&logs)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// `logpipe up` on the lake `lake_env` names: quick flushes and window
/// closes, no scheduled reports.
pub(crate) fn up_env<'a>(lake_env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    let mut env: Vec<(&str, &str)> = lake_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("LOGPIPE__REPORTS__SCHEDULE", "false"));
    env.push(("LOGPIPE__LAKE__FLUSH_INTERVAL", "300ms"));
    env.push(("LOGPIPE__WINDOWS__IDLE_CLOSE", "1s"));
    env
}

/// Every record of `batches` batches ([`post_batch`]) in the lake once.
pub(crate) fn assert_batches_once(
    data: &std::path::Path,
    env: &[(&str, &str)],
    running: &Running,
    batches: usize,
) {
    let wanted: BTreeSet<String> = (0..batches)
        .flat_map(|batch| (0..50).map(move |i| format!("s3-{batch}-{i}")))
        .collect();
    let counts = wait_for_lake_in(data, env, "s3-", &wanted);
    assert_exactly_once(&wanted, &counts, &running.log());
}

/// `logpipe up` on `env`'s lake, loaded with 40 batches ([`post_batch`])
/// and killed (-9) mid-load: every record in the lake once, on a store the
/// start found to honour conditional writes (the fencing the commit chain
/// needs). The running process is returned.
pub(crate) async fn load_across_a_kill(data: &std::path::Path, env: &[(&str, &str)]) -> Running {
    let client = reqwest::Client::new();
    let mut running = Running::start(data, env);
    for batch in 0..40 {
        if batch == 20 {
            // Between flushes, mid-load: some of the last batches are
            // committed, some only on the bus.
            tokio::time::sleep(Duration::from_millis(150)).await;
            running.kill_hard();
            running = Running::start(data, env);
        }
        assert_eq!(
            post_batch(&client, &running.base_url, batch).await,
            200,
            "{}",
            running.log()
        );
    }
    assert_batches_once(data, env, &running, 40);
    assert!(
        running
            .log()
            .contains("lake store honours conditional writes"),
        "{}",
        running.log()
    );
    assert!(!data.join("logs").exists(), "lake files on the local disk");
    running
}

/// After [`load_across_a_kill`]: once the last windows closed (idle) they
/// count every record once; then, the process stopped, the daily report
/// written into the same lake counts every error once.
pub(crate) fn windows_and_report_count_every_record(
    data: &std::path::Path,
    env: &[(&str, &str)],
    running: Running,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let windows = sql_json_env(
            data,
            env,
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
        std::thread::sleep(Duration::from_millis(500));
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
        .arg(data)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let errors = sql_json_env(
        data,
        env,
        "SELECT CAST(sum(count) AS BIGINT) AS n FROM daily_report WHERE level = 'ERROR'",
    );
    assert_eq!(errors[0]["n"], json!(200), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_an_s3_lake_keeps_every_record_once_across_a_kill() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_env = s3.lake_env("lake");
    let env = up_env(&lake_env);
    let running = load_across_a_kill(&data, &env).await;
    // The lake is in the bucket; the process's disk has only its bus.
    assert!(s3.object_path("lake/logs").is_dir(), "{}", s3.log());
    assert!(s3.object_path("lake/_logpipe/commits/raw").is_dir());

    // The windows and a batch report read and write the same bucket.
    windows_and_report_count_every_record(&data, &env, running);
    assert!(
        s3.object_path("lake/reports/daily").is_dir(),
        "no report in the bucket"
    );
}

/// A wrong endpoint or refused credentials stop the start, naming the root.
#[test]
fn an_unreachable_s3_lake_stops_the_start_with_the_root() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut lake_env = s3.lake_env("lake");
    for (key, value) in lake_env.iter_mut() {
        if *key == "LOGPIPE__LAKE__S3__SECRET_ACCESS_KEY" {
            *value = "not-the-secret".to_string();
        }
    }
    let env: Vec<(&str, &str)> = lake_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stderr = crate::common::up_refused(&data, &[], &env);
    assert!(
        stderr.contains("the lake cannot be written") && stderr.contains("s3://logpipe/lake"),
        "{stderr}"
    );
}

/// Garage ignores `If-None-Match`, so two writers of one commit chain could
/// both create step n. On the embedded bus (one writer) logpipe says so and
/// runs, every record once; where several processes may write the lake
/// (the Kafka bus) the start is refused, before any broker is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_ignores_conditional_writes_is_refused_where_several_write() {
    let s3 = S3Server::garage();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_env = s3.lake_env("lake");
    let env = up_env(&lake_env);
    let running = Running::start(&data, &env);
    for batch in 0..10 {
        assert_eq!(
            post_batch(&client(), &running.base_url, batch).await,
            200,
            "{}",
            running.log()
        );
    }
    assert_batches_once(&data, &env, &running, 10);
    assert!(
        running
            .log()
            .contains("overwrote an object logpipe asked to create only if absent")
            && running
                .log()
                .contains("do not point a second logpipe at it"),
        "{}",
        running.log()
    );
    assert!(running.terminate().success());

    let mut kafka = env.clone();
    kafka.push(("LOGPIPE__BUS__KIND", "kafka"));
    kafka.push(("LOGPIPE__BUS__KAFKA__BROKERS", "127.0.0.1:9"));
    let stderr = crate::common::up_refused(&data, &[], &kafka);
    assert!(
        stderr.contains("overwrote an object")
            && stderr.contains("logpipe refuses it")
            && stderr.contains("versitygw"),
        "{stderr}"
    );
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Retention on an S3 lake: the expired hours' objects are deleted in bulk
/// (DeleteObjects), the young hour and the events, however old, stay
/// (`pipeline::retention_deletes_expired_hours` checks through `logpipe
/// sql` and the metric); nothing of the expired hour is left in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_expired_hours_on_s3() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_env = s3.lake_env("lake");
    let env: Vec<(&str, &str)> = lake_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let expired = crate::pipeline::retention_deletes_expired_hours(&data, &env).await;
    fn parquet_under(path: &std::path::Path) -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(path) else {
            return Vec::new();
        };
        entries
            .flatten()
            .flat_map(|entry| {
                let path = entry.path();
                if path.is_dir() {
                    parquet_under(&path)
                } else if path.extension().is_some_and(|e| e == "parquet") {
                    vec![path]
                } else {
                    Vec::new()
                }
            })
            .collect()
    }
    assert!(
        !parquet_under(&s3.object_path("lake/logs/raw")).is_empty(),
        "the young hour's objects are in the bucket"
    );
    let left = parquet_under(&s3.object_path("lake/logs/raw").join(expired.hive_path()));
    assert!(
        left.is_empty(),
        "objects of the expired hour left: {left:?}"
    );
    assert!(!parquet_under(&s3.object_path("lake/events")).is_empty());
    assert!(!data.join("logs").exists(), "lake files on the local disk");
}

/// Compaction on S3 (`pipeline::compaction_under_queries`): the hour's
/// small objects merged into one while `logpipe sql` counts every row once;
/// the Delta log kept beside them on S3 (`[lake.delta]`) is read by
/// delta-rs over S3 with every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_an_hour_on_s3() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_env = s3.lake_env("lake");
    let mut env: Vec<(&str, &str)> = lake_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend(crate::pipeline::DELTA_UNDER_COMPACTION);
    let hour_dir = |hour: &str| s3.object_path(&format!("lake/logs/raw/{hour}"));
    let total = crate::pipeline::compaction_under_queries(&data, &env, |hour| {
        crate::pipeline::parquet_files_in(&hour_dir(hour))
    })
    .await;
    assert!(!data.join("logs").exists(), "lake files on the local disk");
    assert!(
        s3.object_path("lake/logs/raw/_delta_log/_last_checkpoint")
            .exists(),
        "no Delta checkpoint in the bucket"
    );
    let read = delta_rs_counts(&s3, "lake/logs/raw", "");
    assert_eq!(read, json!([total, total]), "delta-rs over S3");
}

/// `[rows, distinct request ids]` of the Delta table at `s3://logpipe/PATH`
/// on `s3` as delta-rs (PyPI `deltalake`) reads its newest version, with
/// `filter` (a SQL condition, or empty).
pub(crate) fn delta_rs_counts(s3: &S3Server, path: &str, filter: &str) -> serde_json::Value {
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {filter}")
    };
    let read = crate::common::python(
        "import json, sys\n\
         from deltalake import DeltaTable, QueryBuilder\n\
         table = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2]))\n\
         rows = QueryBuilder().register('logs', table).execute(\n\
             'SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM logs' + sys.argv[3]).read_all()\n\
         print(json.dumps([rows.column('n')[0].as_py(), rows.column('d')[0].as_py()]))",
        &[
            &format!("s3://{}/{path}", crate::common::services::s3::BUCKET),
            &s3.storage_options(),
            &filter,
        ],
    );
    serde_json::from_str(read.trim()).unwrap()
}

/// `logpipe check [--repair]` on the S3 lake `env` names: exit status and
/// everything printed.
fn check_s3(data: &std::path::Path, env: &[(&str, &str)], repair: bool) -> (Option<i32>, String) {
    let mut command = Command::new(binary());
    command.arg("check");
    if repair {
        command.arg("--repair");
    }
    code_and_output(
        command
            .arg("--data-dir")
            .arg(data)
            .envs(env.iter().copied()),
    )
}

/// `logpipe check` reads a lake on S3 through as it does a directory: clean,
/// it counts every row; a damaged Parquet file and an orphan are named by
/// their s3:// paths, `--repair` moves both into the bucket's
/// `_logpipe/quarantine/`, and the next start writes the damaged one again
/// from the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logpipe_check_reads_an_s3_lake_and_repairs_it() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_env = s3.lake_env("lake");
    let mut env = up_env(&lake_env);
    // Only the raw job's files: the row count is the records'.
    env.push(("LOGPIPE__WINDOWS__ENABLED", "false"));
    let running = Running::start(&data, &env);
    let client = client();
    for batch in 0..4 {
        assert_eq!(post_batch(&client, &running.base_url, batch).await, 200);
    }
    wait_for_lake_in(
        &data,
        &env,
        "s",
        &(0..4)
            .flat_map(|b| (0..50).map(move |i| format!("s3-{b}-{i}")))
            .collect::<BTreeSet<String>>(),
    );
    assert!(running.terminate().success());
    let (code, out) = check_s3(&data, &env, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("no damage found") && out.contains("200 rows"),
        "{out}"
    );

    // One committed file damaged, one file no commit record lists.
    let mut files = Vec::new();
    let mut stack = vec![s3.object_path("lake/logs")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    let damaged = files.last().unwrap().clone();
    let orphan = damaged.with_file_name(
        damaged
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("-000.parquet", "-007.parquet"),
    );
    std::fs::copy(&damaged, &orphan).unwrap();
    std::fs::write(&damaged, b"not parquet").unwrap();
    let in_bucket = |path: &std::path::Path| {
        let relative = path.strip_prefix(s3.object_path("")).unwrap();
        format!("s3://logpipe/{}", relative.display())
    };
    let (code, out) = check_s3(&data, &env, false);
    assert_eq!(code, Some(1), "{out}");
    for (path, says) in [(&damaged, "is damaged"), (&orphan, "an orphan")] {
        assert!(
            out.lines()
                .any(|l| l.contains(&in_bucket(path)) && l.contains(says)),
            "{} {says}:\n{out}",
            in_bucket(path)
        );
    }
    let (code, out) = check_s3(&data, &env, true);
    assert_eq!(code, Some(0), "{out}");
    assert!(!damaged.exists() && !orphan.exists(), "{out}");
    assert!(
        out.contains("moved to s3://logpipe/lake/_logpipe/quarantine/"),
        "{out}"
    );
    // The next start writes the damaged step's file again from the bus.
    let running = Running::start(&data, &env);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !damaged.exists() {
        assert!(std::time::Instant::now() < deadline, "{}", running.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(running.terminate().success());
    let (code, out) = check_s3(&data, &env, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("200 rows"), "{out}");
}
