//! End-to-end: the real binary, real HTTP, the real bus and lake on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::common::{Running, assert_exactly_once, post, sql_json, sql_json_env, wait_for_count};
use serde_json::json;

fn log(id: &str, timestamp: serde_json::Value) -> serde_json::Value {
    json!({"timestamp": timestamp, "level": "INFO", "service": "api-gateway", "host": "worker-1",
           "message": "Request processed successfully",
           "metadata": {"request_id": id, "response_time_ms": 45, "status_code": 200,
                        "endpoint": "/api/users", "method": "GET"}})
}

/// (request_id, "year/month/day/hour" from the directory, hour of the
/// timestamp column) for every row of every Parquet file under `logs/raw`.
fn rows_from_parquet_files(data_dir: &Path) -> Vec<(String, String, String)> {
    use arrow::array::{AsArray, TimestampMicrosecondArray};
    let mut rows = Vec::new();
    let mut stack = vec![data_dir.join("logs/raw")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("parquet"),
                "only committed Parquet files under a table: {}",
                path.display()
            );
            let relative = path
                .parent()
                .unwrap()
                .strip_prefix(data_dir.join("logs/raw"))
                .unwrap();
            let partition: Vec<String> = relative
                .components()
                .map(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .split('=')
                        .nth(1)
                        .unwrap()
                        .to_string()
                })
                .collect();
            let file = std::fs::File::open(&path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let ids = batch
                    .column_by_name("request_id")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                let times = batch
                    .column_by_name("timestamp")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .unwrap()
                    .clone();
                for row in 0..batch.num_rows() {
                    let time = chrono::DateTime::from_timestamp_micros(times.value(row)).unwrap();
                    rows.push((
                        ids.value(row).to_string(),
                        partition.join("/"),
                        time.format("%Y/%-m/%-d/%-H").to_string(),
                    ));
                }
            }
        }
    }
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_batches_reach_the_right_partitions_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let running = Running::start(&data, &[("LOGPIPE__COLLECTOR__MAX_BODY_BYTES", "65536")]);
    let client = reqwest::Client::new();
    let logs_url = format!("{}/api/collect/logs", running.base_url);

    // Epoch floats and ISO strings (with Z, without offset, with +09:00),
    // mixed with records that must be refused, each for a reason.
    let batch = json!([
        log("epoch", json!(1736645166.291045)),
        {"timestamp": 1736645166, "level": "INFO", "service": "s"},
        log("iso-z", json!("2024-01-15T10:30:00.123Z")),
        log("iso-naive", json!("2024-01-15 10:31:00")),
        {"timestamp": "15/01/2024", "level": "INFO", "service": "s", "message": "m"},
        log("iso-offset", json!("2024-01-15T19:30:00+09:00")),
        log("year-end", json!("2024-12-31T23:59:59.999999Z")),
        {"timestamp": 1736645166, "level": "CRITICAL", "service": "s", "message": "m"},
        log("midnight", json!(1735689600)),
    ]);
    let (status, answer) = post(&client, &logs_url, batch.to_string()).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["accepted"], 6);
    let rejected: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rejected.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 4, 7]
    );
    assert!(
        rejected[0].1.contains("missing field `message`"),
        "{rejected:?}"
    );
    assert!(rejected[1].1.contains("timestamp"), "{rejected:?}");
    assert!(rejected[2].1.contains("level"), "{rejected:?}");

    // NDJSON events, one bad line.
    let events = concat!(
        r#"{"event_id": "evt-1", "timestamp": 1736645166.456789, "user_id": "user_12345", "session_id": "sess_abcde", "event_type": "CLICK", "event_data": {"page": "/products/123", "element": "add_to_cart_button", "position": {"x": 450, "y": 320}}, "device": {"type": "mobile", "os": "iOS", "browser": "Safari"}}"#,
        "\n{\"event_id\": \"evt-2\", \"timestamp\": 1736645167, \"user_id\": \"u\", \"event_type\": \"TELEPORT\"}\n",
        r#"{"event_id": "evt-3", "timestamp": "2025-01-12T01:30:00Z", "user_id": "user_9", "event_type": "PURCHASE", "event_data": {"amount": 12.5}}"#,
        "\n"
    );
    let (status, answer) = post(
        &client,
        &format!("{}/api/collect/activities", running.base_url),
        events,
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"][0]["index"], 1);

    // Hostile requests against the real server: 4xx with a reason, never 5xx.
    for (body, expected) in [
        (b"not json at all".to_vec(), 400),
        (b"[{\"timestamp\": 17".to_vec(), 400),
        (vec![0xff, 0xfe, 0x00], 400),
        (vec![b'['; 70_000], 413),
        (format!("[{}]", log("huge", json!(1e300))).into_bytes(), 422),
    ] {
        let (status, answer) = post(&client, &logs_url, body).await;
        assert_eq!(status, expected, "{answer}");
        assert!(
            answer["error"].is_string() || answer["rejected"].is_array(),
            "{answer}"
        );
    }
    // Valid records keep flowing, and become queryable quickly.
    let more: Vec<_> = (0..50)
        .map(|i| log(&format!("more-{i:02}"), json!(1736645200 + i)))
        .collect();
    let (status, answer) = post(
        &client,
        &logs_url,
        serde_json::Value::from(more).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let visible_after = wait_for_count(
        &client,
        &running.base_url,
        "SELECT count(*) AS n FROM logs",
        56,
        Duration::from_secs(20),
    )
    .await;
    eprintln!("rows queryable {visible_after:?} after the acknowledgement");

    // Through `logpipe sql`: exactly the accepted rows, in the right partitions.
    let rows = sql_json(
        &data,
        "SELECT request_id, year, month, day, hour FROM logs WHERE request_id NOT LIKE 'more-%' ORDER BY request_id",
    );
    let expected = json!([
        {"request_id": "epoch", "year": 2025, "month": 1, "day": 12, "hour": 1},
        {"request_id": "iso-naive", "year": 2024, "month": 1, "day": 15, "hour": 10},
        {"request_id": "iso-offset", "year": 2024, "month": 1, "day": 15, "hour": 10},
        {"request_id": "iso-z", "year": 2024, "month": 1, "day": 15, "hour": 10},
        {"request_id": "midnight", "year": 2025, "month": 1, "day": 1, "hour": 0},
        {"request_id": "year-end", "year": 2024, "month": 12, "day": 31, "hour": 23},
    ]);
    assert_eq!(serde_json::Value::from(rows), expected);
    let flattened = sql_json(
        &data,
        "SELECT CAST(timestamp AS VARCHAR) AS ts, level, service, host, message, response_time_ms, status_code, endpoint, method FROM logs WHERE request_id = 'epoch'",
    );
    assert_eq!(
        flattened[0],
        json!({"ts": "2025-01-12T01:26:06.291045Z", "level": "INFO", "service": "api-gateway", "host": "worker-1",
               "message": "Request processed successfully", "response_time_ms": 45.0, "status_code": 200,
               "endpoint": "/api/users", "method": "GET"})
    );
    let events = sql_json(
        &data,
        "SELECT event_id, event_type, page, position_x, device_os, event_data, day, hour FROM events ORDER BY event_id",
    );
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["page"], "/products/123");
    assert_eq!(events[0]["position_x"], 450.0);
    assert_eq!(events[0]["device_os"], "iOS");
    assert_eq!(events[1]["event_data"], r#"{"amount":12.5}"#);
    assert_eq!(
        (events[1]["day"].clone(), events[1]["hour"].clone()),
        (json!(12), json!(1))
    );

    // Reading the Parquet files directly: every row once, each in the
    // directory of its own event hour, nothing in a default partition.
    let files = rows_from_parquet_files(&data);
    assert_eq!(files.len(), 56);
    for (id, directory, hour) in &files {
        assert_eq!(
            directory, hour,
            "{id} is in the partition of its event time"
        );
    }
    let ids: BTreeSet<_> = files.iter().map(|r| r.0.clone()).collect();
    assert_eq!(ids.len(), 56, "no row twice");

    // Another engine reads the same tree as plain Hive-partitioned Parquet.
    duckdb_reads_the_lake(&data, 56);

    let status = running.terminate();
    assert!(status.success(), "clean exit after SIGTERM: {status}");
}

/// DuckDB (the test script provides it through `LOGPIPE_TEST_PYTHON`)
/// reads `logs/raw` with hive partitioning and finds every row once.
fn duckdb_reads_the_lake(data: &Path, expected_rows: u64) {
    let Ok(python) = std::env::var("LOGPIPE_TEST_PYTHON") else {
        eprintln!(
            "LOGPIPE_TEST_PYTHON not set: skipping the DuckDB reader check (./scripts/test.sh sets it)"
        );
        return;
    };
    let script = format!(
        "import duckdb, json\n\
         rows = duckdb.sql(\"SELECT count(*), count(DISTINCT request_id), min(year), max(year), \
         sum(CASE WHEN hour = hour(timestamp AT TIME ZONE 'UTC') THEN 1 ELSE 0 END) \
         FROM read_parquet('{}/logs/raw/**/*.parquet', hive_partitioning = true)\").fetchall()\n\
         print(json.dumps(rows[0]))",
        data.display()
    );
    let stdout = crate::common::stdout_of(
        std::process::Command::new(python).args(["-c", &script]),
        "duckdb",
    );
    let row: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(
        row,
        json!([expected_rows, expected_rows, 2024, 2025, expected_rows]),
        "DuckDB sees every row once, each in the hour partition of its timestamp"
    );
}

/// One sender: posts batches with unique request ids until the server goes
/// away; returns the ids of every record the server acknowledged.
async fn send_until_refused(base_url: String, task: usize) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    for batch in 0.. {
        let ids: Vec<String> = (0..200)
            .map(|i| format!("t{task}-b{batch:04}-{i:03}"))
            .collect();
        let body: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| log(id, json!(1736645166.0 + (batch * 200 + i) as f64 * 0.37)))
            .collect();
        let response = client
            .post(format!("{base_url}/api/collect/logs"))
            .body(serde_json::Value::from(body).to_string())
            .send()
            .await;
        match response {
            Ok(response) if response.status().as_u16() == 200 => acked.extend(ids),
            Ok(response) if response.status().as_u16() == 503 => continue,
            _ => break,
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_kill_loses_no_acked_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut acked: Vec<String> = Vec::new();
    // Two rounds: kill -9 under load, restart on the same directory.
    for round in 0..2 {
        let running = Running::start(&data, &[("LOGPIPE__LAKE__FLUSH_INTERVAL", "200ms")]);
        let senders: Vec<_> = (0..3)
            .map(|task| {
                tokio::spawn(send_until_refused(
                    running.base_url.clone(),
                    round * 10 + task,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        running.kill_hard();
        for sender in senders {
            acked.extend(sender.await.unwrap());
        }
        assert!(
            !acked.is_empty(),
            "round {round}: the load was acknowledged at all"
        );
    }

    let running = Running::start(&data, &[]);
    let client = reqwest::Client::new();
    // Wait for the lake to hold every acknowledged record.
    let wanted: BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(wanted.len(), acked.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let counts: BTreeMap<String, u64> = loop {
        let (status, answer) = post(
            &client,
            &format!("{}/api/query", running.base_url),
            json!({"sql": "SELECT request_id, count(*) AS n FROM logs GROUP BY request_id", "max_rows": 1_000_000}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let counts: BTreeMap<String, u64> = answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["request_id"].as_str().unwrap().to_string(),
                    r["n"].as_u64().unwrap(),
                )
            })
            .collect();
        if wanted.iter().all(|id| counts.contains_key(id)) || std::time::Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_exactly_once(&wanted, &counts, &running.log());
    eprintln!(
        "{} acknowledged records survived two kill -9 restarts exactly once",
        wanted.len()
    );
    assert!(running.terminate().success());
}

/// `lake.retention.logs = "2h"`: the hour partitions of `logs` that ended
/// more than two hours ago are deleted whole at the next pass, with a log
/// line and the metric; the younger hour stays, and so do the events (no
/// retention of their own), however old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_whole_expired_hours_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let expired = retention_deletes_expired_hours(&data, &[]).await;
    assert!(
        !data.join("logs/raw").join(expired.hive_path()).exists(),
        "the expired hour's directory is gone"
    );
}

/// Runs `logpipe up` on the lake `lake_env` names (local under `data`
/// when empty) with `lake.retention.logs = "2h"`, posts logs 5, 3 and 1
/// hours old and an event 5 hours old, and waits until retention left the
/// young logs and the event: the expired hours went whole, counted in
/// `logpipe_lake_retention_deleted_files_total` and logged. Returns the
/// oldest expired hour. Shared with the S3 lake's test (`lake_s3.rs`).
pub(crate) async fn retention_deletes_expired_hours(
    data: &std::path::Path,
    lake_env: &[(&str, &str)],
) -> logpipe_core::time::HourPartition {
    let mut env = lake_env.to_vec();
    env.extend([
        ("LOGPIPE__LAKE__RETENTION__LOGS", "2h"),
        ("LOGPIPE__LAKE__RETENTION__INTERVAL", "1s"),
        ("LOGPIPE__LAKE__RETENTION__GRACE", "5s"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
    ]);
    let running = Running::start(data, &env);
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let mut logs = Vec::new();
    for (age, hours) in [("old", 5), ("older-than-cutoff", 3), ("young", 1)] {
        for i in 0..10 {
            logs.push(log(&format!("{age}-{i}"), json!(now - hours * 3600)));
        }
    }
    let (status, answer) = post(
        &client,
        &format!("{}/api/collect/logs", running.base_url),
        json!(logs).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let event = json!([{"event_id": "old-event", "timestamp": now - 5 * 3600, "user_id": "u", "event_type": "CLICK"}]);
    let (status, answer) = post(
        &client,
        &format!("{}/api/collect/activities", running.base_url),
        event.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut hidden_before_deleted = false;
    loop {
        // Expired hours are hidden before they are deleted: a query never
        // fails on a file retention deleted after the query listed it.
        let output = std::process::Command::new(crate::common::binary())
            .args(["sql", "--format", "json", "--data-dir"])
            .arg(data)
            .arg(
                "SELECT (SELECT count(*) FROM logs) AS logs, \
                 (SELECT count(*) FROM logs WHERE request_id LIKE 'young-%') AS young, \
                 (SELECT count(*) FROM events) AS events",
            )
            .envs(lake_env.iter().copied())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "logpipe sql failed while retention works: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
        let metrics = running.metrics().await;
        let deleted = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("logpipe_lake_retention_deleted_files_total{table=\"logs\"} ")
            })
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        // Hidden from queries before deleted: the expired hours' rows gone
        // from the answer while their files are still there.
        if rows[0]["logs"] == json!(10) && rows[0]["young"] == json!(10) && deleted == 0 {
            hidden_before_deleted = true;
        }
        // Only the young hour's 10 (not 10 of an old hour before the young
        // one's file is there), the old event, and the old hours deleted.
        if rows[0]["logs"] == json!(10)
            && rows[0]["young"] == json!(10)
            && rows[0]["events"] == json!(1)
            && deleted >= 2
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lake {rows:?}, {deleted} files deleted:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        hidden_before_deleted,
        "the expired hours were never seen hidden before their deletion (grace 5 s)"
    );
    let left = sql_json_env(data, lake_env, "SELECT DISTINCT request_id FROM logs");
    assert!(
        left.iter()
            .all(|row| row["request_id"].as_str().unwrap().starts_with("young-")),
        "{left:?}"
    );
    assert!(
        running
            .log()
            .contains("retention deleted an expired partition"),
        "{}",
        running.log()
    );
    assert!(running.terminate().success());
    logpipe_core::time::HourPartition::of_micros((now - 5 * 3600) * 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_an_hour_while_queries_count_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake = data.clone();
    let total = compaction_under_queries(&data, &[], move |hour| {
        parquet_files_in(&lake.join("logs/raw").join(hour))
    })
    .await;
    // An outside reader of the plain tree, once the replaced files are
    // gone: every row of the compacted hour once (other hours may still be
    // in a compaction's grace period when logpipe stopped).
    if let Ok(python) = std::env::var("LOGPIPE_TEST_PYTHON") {
        let script = format!(
            "import duckdb, json\n\
             print(json.dumps(duckdb.sql(\"SELECT count(*), count(DISTINCT request_id) \
             FROM read_parquet('{}/logs/raw/{COMPACTED_HOUR}/*.parquet')\").fetchall()[0]))",
            data.display()
        );
        let stdout = crate::common::stdout_of(
            std::process::Command::new(python).args(["-c", &script]),
            "duckdb",
        );
        let row: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        // 60 batches of 25 went into the compacted hour.
        assert_eq!(row, json!([1500, 1500]), "DuckDB after the compaction");
        assert!(total > 1500);
    }
    // The merged files are nobody's orphans.
    let check = std::process::Command::new(crate::common::binary())
        .args(["check", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A reader of the Delta log (delta-rs, PyPI's `deltalake`) in a loop while
/// an hour is compacted: each version it reads holds every row once and
/// never fewer than the one before, so the compaction's merged file and
/// the removal of its inputs came in one version; it read versions on both
/// sides of that one, and the newest names the hour's merged file only.
const DELTA_READER: &str = r#"
import json, os, sys, time
import duckdb
from deltalake import DeltaTable, QueryBuilder
path, stop, hour = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(stop):
    if not DeltaTable.is_deltatable(path):
        time.sleep(0.05)
        continue
    table = DeltaTable(path)
    try:
        # DuckDB over the files the version names, and delta-rs's own
        # engine over the same version.
        files = [uri.removeprefix("file://") for uri in table.file_uris()]
        rows, distinct = duckdb.sql(
            f"SELECT count(*), count(DISTINCT request_id) FROM read_parquet({files!r})").fetchall()[0]
        engine = QueryBuilder().register("logs", table).execute(
            "SELECT count(*) AS n FROM logs").read_all()
        engine_rows = engine.column("n")[0].as_py()
        print(json.dumps([table.version(), rows, distinct, sum(hour in f for f in files), engine_rows]), flush=True)
    except Exception as error:
        print(json.dumps(["error", table.version(), repr(error)]), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_reader_sees_a_compaction_in_one_version_never_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stop = dir.path().join("stop-reader");
    let python = std::env::var("LOGPIPE_TEST_PYTHON")
        .expect("LOGPIPE_TEST_PYTHON is not set: run ./scripts/test.sh");
    let reader = std::process::Command::new(&python)
        .arg("-c")
        .arg(DELTA_READER)
        .arg(data.join("logs/raw"))
        .arg(&stop)
        .arg(COMPACTED_HOUR)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lake = data.clone();
    let total = compaction_under_queries(
        &data,
        &[
            ("LOGPIPE__LAKE__DELTA__ENABLED", "true"),
            ("LOGPIPE__LAKE__DELTA__INTERVAL", "300ms"),
            ("LOGPIPE__LAKE__DELTA__CHECKPOINT_INTERVAL", "10"),
            ("LOGPIPE__LAKE__COMPACTION__GRACE", "3s"),
        ],
        move |hour| parquet_files_in(&lake.join("logs/raw").join(hour)),
    )
    .await;
    std::fs::write(&stop, b"").unwrap();
    let output = reader.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Delta reader failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        seen.iter().all(|read| read[0] != "error"),
        "a read of the Delta table failed: {stdout}"
    );
    assert!(
        seen.len() >= 5,
        "the reader read only {} versions",
        seen.len()
    );
    // Each compaction is one version (OPTIMIZE) that removes and adds.
    let log_dir = data.join("logs/raw/_delta_log");
    let mut optimized = 0;
    for entry in std::fs::read_dir(&log_dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if text.contains("\"operation\":\"OPTIMIZE\"") {
            assert!(
                text.contains("\"remove\"") && text.contains("compacted-"),
                "a compaction's version does not both remove and add: {text}"
            );
            optimized += 1;
        }
    }
    assert!(optimized >= 1, "no OPTIMIZE version in the Delta log");
    let mut last = (0u64, 0u64, 0u64);
    let mut most_hour_files = 0;
    for read in &seen {
        let (version, rows, distinct, hour_files) = (
            read[0].as_u64().unwrap(),
            read[1].as_u64().unwrap(),
            read[2].as_u64().unwrap(),
            read[3].as_u64().unwrap(),
        );
        assert_eq!(
            rows, distinct,
            "version {version} holds a row twice: {stdout}"
        );
        assert_eq!(
            read[4].as_u64(),
            Some(rows),
            "delta-rs counted otherwise: {stdout}"
        );
        if version >= last.0 {
            assert!(rows >= last.1, "version {version} lost rows: {stdout}");
            last = (version, rows, hour_files);
        }
        most_hour_files = most_hour_files.max(hour_files);
    }
    // The reader saw the hour in small files and, at the end, merged.
    assert!(
        most_hour_files > 1,
        "no read before the compaction: {stdout}"
    );
    assert_eq!(last.2, 1, "the newest version read: {stdout}");
    assert_eq!(last.1, total, "the newest version read: {stdout}");
    assert!(
        log_dir.join("_last_checkpoint").exists(),
        "no checkpoint was written"
    );
    // Spark (pyspark 4.2.0 with delta-spark 4.3.0) reads the same log:
    // schema, partition columns, the checkpoint and the versions after it.
    spark_reads_delta(data.as_os_str(), total);
}

/// `[lake.delta]` publishing often enough for a compaction test's grace
/// period (at most half of it), with a checkpoint every 5 versions.
pub(crate) const DELTA_UNDER_COMPACTION: [(&str, &str); 4] = [
    ("LOGPIPE__LAKE__DELTA__ENABLED", "true"),
    ("LOGPIPE__LAKE__DELTA__INTERVAL", "500ms"),
    ("LOGPIPE__LAKE__DELTA__CHECKPOINT_INTERVAL", "5"),
    ("LOGPIPE__LAKE__COMPACTION__GRACE", "3s"),
];

/// Spark (pyspark 4.2.0 with delta-spark 4.3.0, deploy/spark/delta-pom.xml)
/// reading the Delta log of `LAKE/logs/raw` finds `total` rows, each id once.
pub(crate) fn spark_reads_delta(lake: &std::ffi::OsStr, total: u64) {
    let jars_dir = std::env::var("LOGPIPE_TEST_SPARK_DELTA_JARS")
        .expect("LOGPIPE_TEST_SPARK_DELTA_JARS is not set: run ./scripts/test.sh");
    let mut jars: Vec<String> = std::fs::read_dir(&jars_dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path().display().to_string())
        .filter(|path| path.ends_with(".jar"))
        .collect();
    jars.sort();
    let read = crate::common::spark_job(
        "read_lake.py",
        &[lake, "--delta".as_ref()],
        &[("SPARK_DELTA_JARS", jars.join(",").as_str())],
        "Spark reading the Delta log",
    );
    assert_eq!(
        (&read["rows"], &read["ids"]),
        (&json!(total), &json!(total)),
        "Spark's reading of the Delta log: {read}"
    );
}

/// The Parquet files directly in `dir`.
pub(crate) fn parquet_files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                .count()
        })
        .unwrap_or(0)
}

/// The hour compaction works on: 2026-01-11T09.
const COMPACTED_HOUR: &str = "year=2026/month=1/day=11/hour=9";

/// `logpipe up` on `lake_env`'s lake with compaction every second: many
/// small steps into one past hour, then more into another hour (so the
/// first hour's steps leave the kept commit records and may be merged).
/// Meanwhile `logpipe sql` counts the rows again and again: never a row
/// twice, never fewer than before. At the end the hour holds one merged
/// file (`files_in_hour` counts an hour directory's Parquet files under
/// `logs/raw`) and every row once. Returns the rows posted.
pub(crate) async fn compaction_under_queries(
    data: &Path,
    lake_env: &[(&str, &str)],
    files_in_hour: impl Fn(&str) -> usize,
) -> u64 {
    // `lake_env` last: it may override these.
    let mut env = vec![
        ("LOGPIPE__LAKE__COMPACTION__ENABLED", "true"),
        ("LOGPIPE__LAKE__COMPACTION__INTERVAL", "1s"),
        ("LOGPIPE__LAKE__COMPACTION__MIN_AGE", "0s"),
        ("LOGPIPE__LAKE__COMPACTION__LOOKBACK", "3650d"),
        ("LOGPIPE__LAKE__COMPACTION__MIN_FILES", "2"),
        ("LOGPIPE__LAKE__COMPACTION__GRACE", "2s"),
        ("LOGPIPE__LAKE__FLUSH_INTERVAL", "150ms"),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
    ];
    env.extend_from_slice(lake_env);
    let running = Running::start(data, &env);
    let client = reqwest::Client::new();

    // The reader: counts and distinct ids through `logpipe sql`, in a loop
    // until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let data = data.to_path_buf();
        let env: Vec<(String, String)> = lake_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::thread::spawn(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = sql_json_env(
                    &data,
                    &env,
                    "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM logs",
                );
                if let Some(row) = rows.first() {
                    seen.push((
                        row["n"].as_u64().unwrap_or(0),
                        row["d"].as_u64().unwrap_or(0),
                    ));
                }
            }
            seen
        })
    };

    let mut total = 0u64;
    let batch = |hour: u32, n: usize| -> serde_json::Value {
        json!(
            (0..25)
                .map(|i| log(
                    &format!("c-{hour}-{n}-{i}"),
                    json!(format!("2026-01-11T{hour:02}:{:02}:{:02}Z", n % 60, i))
                ))
                .collect::<Vec<_>>()
        )
    };
    // Many small steps into the hour compacted, then enough steps into
    // another that the first hour's commit records are pruned.
    for (hour, batches) in [(9, 60), (11, 50)] {
        for n in 0..batches {
            let (status, answer) = post(
                &client,
                &format!("{}/api/collect/logs", running.base_url),
                batch(hour, n).to_string(),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            total += 25;
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    }

    // Until the hour is one merged file, its manifest gone, every row in.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut extra = 0;
    loop {
        let files = files_in_hour(COMPACTED_HOUR);
        let metrics = running.metrics().await;
        let compactions: u64 = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("logpipe_lake_compactions_total{table=\"logs\"} "))
            .filter_map(|n| n.parse::<f64>().ok())
            .map(|n| n as u64)
            .sum();
        let deleted: u64 = metrics
            .lines()
            .filter_map(|l| {
                l.strip_prefix("logpipe_lake_compaction_deleted_files_total{table=\"logs\"} ")
            })
            .filter_map(|n| n.parse::<f64>().ok())
            .map(|n| n as u64)
            .sum();
        let rows = sql_json_env(data, lake_env, "SELECT count(*) AS n FROM logs");
        if files == 1 && compactions >= 1 && deleted >= 4 && rows[0]["n"] == json!(total) {
            break;
        }
        if files > 1 {
            // A slower store (HDFS) made fewer, larger steps: more steps
            // into a third hour push the first hour's out of the kept
            // commit records.
            let (status, answer) = post(
                &client,
                &format!("{}/api/collect/logs", running.base_url),
                batch(13, extra).to_string(),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            total += 25;
            extra += 1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hour {COMPACTED_HOUR}: {files} files, {compactions} compactions, {deleted} deleted, {} of {total} rows:\n{}",
            rows[0]["n"],
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The replaced files went a grace period ago: the manifest another
    // grace period later.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(
        seen.len() >= 5,
        "the reader ran only {} queries",
        seen.len()
    );
    for pair in seen.windows(2) {
        assert!(
            pair[1].0 >= pair[0].0,
            "a query counted fewer rows than the one before: {seen:?}"
        );
    }
    assert!(
        seen.iter().all(|(n, d)| n == d),
        "a query counted a row twice: {seen:?}"
    );
    assert!(
        running.log().contains("compacted an hour"),
        "{}",
        running.log()
    );
    let rows = sql_json_env(
        data,
        lake_env,
        "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM logs",
    );
    assert_eq!(rows[0], json!({"n": total, "d": total}));
    assert!(running.terminate().success());
    total
}

/// `logpipe compact` merges now what `[lake.compaction]` would on its
/// schedule, and says what it did; the rows stay the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logpipe_compact_merges_the_closed_hours_now() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("LOGPIPE__LAKE__FLUSH_INTERVAL", "100ms"),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
    ];
    let running = Running::start(&data, &env);
    let client = reqwest::Client::new();
    let mut total = 0;
    for (hour, batches) in [(9, 30), (11, 30)] {
        for n in 0..batches {
            let logs: Vec<_> = (0..10)
                .map(|i| {
                    log(
                        &format!("now-{hour}-{n}-{i}"),
                        json!(format!("2026-01-11T{hour:02}:{n:02}:{i:02}Z")),
                    )
                })
                .collect();
            let (status, answer) = post(
                &client,
                &format!("{}/api/collect/logs", running.base_url),
                json!(logs).to_string(),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            total += 10;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    wait_for_count(
        &client,
        &running.base_url,
        "SELECT count(*) AS n FROM logs",
        total,
        Duration::from_secs(30),
    )
    .await;
    assert!(running.terminate().success());
    let before = parquet_files_in(&data.join("logs/raw").join(COMPACTED_HOUR));
    assert!(before > 10, "only {before} files in the hour");

    let compact = std::process::Command::new(crate::common::binary())
        .args([
            "compact",
            "--min-age",
            "0s",
            "--lookback",
            "3650d",
            "--grace",
            "0s",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&compact.stderr);
    assert!(compact.status.success(), "{said}");
    assert!(
        said.contains("logs: ") && said.contains("merged into"),
        "{said}"
    );
    // The first hour's steps are all done: one file. The second keeps its
    // 16 newest steps (their records may still be rolled forward).
    assert_eq!(
        parquet_files_in(&data.join("logs/raw").join(COMPACTED_HOUR)),
        1
    );
    let rows = sql_json(
        &data,
        "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM logs",
    );
    assert_eq!(rows[0], json!({"n": total, "d": total}));
    // Finished: no manifest is left.
    let manifests = std::process::Command::new("find")
        .arg(data.join("_logpipe"))
        .args(["-name", "manifest.json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&manifests.stdout), "");
}

/// The storage gauges: after 300 logs of this hour and 200 of an hour
/// three days ago, `/metrics` shows the `logs` table's rows, its files (at
/// least one per hour) and this hour's files, from a listing every
/// `lake.usage_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_gauges_show_what_each_table_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let running = Running::start(
        &data,
        &[
            ("LOGPIPE__LAKE__USAGE_INTERVAL", "1s"),
            ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ],
    );
    let now = chrono::Utc::now().timestamp();
    let logs: Vec<serde_json::Value> = (0..500)
        .map(|i| {
            let at = if i < 300 { now } else { now - 3 * 86_400 };
            log(&format!("usage-{i}"), serde_json::json!(at))
        })
        .collect();
    let client = reqwest::Client::new();
    let (status, answer) = crate::common::http::post(
        &client,
        &format!("{}/api/collect/logs", running.base_url),
        serde_json::to_string(&logs).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let gauge = |page: &str, name: &str| -> Option<f64> {
        page.lines()
            .find(|l| l.starts_with(&format!("{name}{{table=\"logs\"}} ")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = running.metrics().await;
        let rows = gauge(&page, "logpipe_lake_table_rows");
        if rows == Some(500.0) {
            assert!(
                gauge(&page, "logpipe_lake_table_files").unwrap() >= 2.0,
                "{page}"
            );
            assert!(
                gauge(&page, "logpipe_lake_table_bytes").unwrap() > 0.0,
                "{page}"
            );
            let open = gauge(&page, "logpipe_lake_open_hour_files").unwrap();
            assert!(open >= 1.0, "{page}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rows {rows:?}:\n{page}\n{}",
            running.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(running.terminate().success());
}

/// The binary allocates with jemalloc and the options
/// `crates/logpipe-cli/src/malloc_conf.c` bakes in (two arenas, purging on
/// background threads): `background_thread:true` starts jemalloc's purging
/// threads, which exist only if the linked-in options were read — neither
/// glibc's malloc nor jemalloc's defaults start any.
#[test]
fn the_binary_allocates_with_jemalloc_and_its_baked_options() {
    // The options can also come from the environment, which the child
    // inherits: then this test would not show the baked-in ones.
    assert!(
        std::env::var_os("_RJEM_MALLOC_CONF").is_none(),
        "unset _RJEM_MALLOC_CONF to run this test"
    );
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(&dir.path().join("data"), &[]);
    let tasks = format!("/proc/{}/task", running.child.id());
    let mut names = Vec::new();
    for _ in 0..100 {
        names = std::fs::read_dir(&tasks)
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect();
        if names.iter().any(|name| name == "jemalloc_bg_thd") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no jemalloc background thread in `logpipe up`; its threads: {names:?}");
}
