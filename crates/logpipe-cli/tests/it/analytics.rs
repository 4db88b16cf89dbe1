//! End-to-end tests of the analysis half against the real binary: window
//! rows in a real PostgreSQL 15 (started by `scripts/test.sh`), the lake
//! tables `windows` and `alerts`, and alert delivery to a webhook.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Running, binary, sql_json};
use logpipe_sinks::postgres::Postgres;
use serde_json::Value;

/// 2026-01-11T00:00:00Z.
const T0: i64 = 1_768_089_600;
const SERVICES: [&str; 3] = ["api", "auth", "pay"];
const SECONDS: i64 = 60;
const PER_SECOND: i64 = 30;

/// A fresh database on the test server (`LOGPIPE_TEST_POSTGRES_URL`, set by
/// scripts/test.sh).
pub(crate) async fn fresh_database(name: &str) -> String {
    let admin = std::env::var("LOGPIPE_TEST_POSTGRES_URL").expect(
        "LOGPIPE_TEST_POSTGRES_URL is not set: run ./scripts/test.sh, which starts PostgreSQL 15",
    );
    Postgres::lazy(&admin).fresh_database(name).await.unwrap()
}

/// POSTs each second of `seconds` twice with the same `Idempotency-Key`,
/// as a client does whose first answer was lost: the lake and the windows
/// must count each record once.
async fn send_seconds_twice(
    client: &reqwest::Client,
    running: &Running,
    seconds: impl IntoIterator<Item = i64>,
) {
    for second in seconds {
        for _attempt in 0..2 {
            let response = client
                .post(format!("{}/api/collect/logs", running.base_url))
                .header("Idempotency-Key", format!("second-{second}"))
                .body(second_of_logs(second))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
    }
}

/// One second of seeded logs: 30 records over three services, all levels.
pub(crate) fn second_of_logs(second: i64) -> String {
    let records: Vec<String> = (0..PER_SECOND)
        .map(|j| {
            let level = match (j * 7 + second) % 10 {
                0 => "ERROR",
                1 => "WARN",
                2 => "DEBUG",
                _ => "INFO",
            };
            let status = if level == "ERROR" { 500 } else { 200 };
            format!(
                r#"{{"timestamp": {}.{:03}, "level": "{level}", "service": "{}", "message": "m",
                   "metadata": {{"response_time_ms": {}, "status_code": {status}, "endpoint": "/e"}}}}"#,
                T0 + second,
                j * 1000 / PER_SECOND,
                SERVICES[(j % 3) as usize],
                10 + (j * 13 + second * 7) % 200
            )
        })
        .collect();
    format!("[{}]", records.join(","))
}

fn up(dir: &std::path::Path, postgres_url: &str) -> Running {
    Running::start(
        dir,
        &[
            ("LOGPIPE__POSTGRES__URL", postgres_url),
            ("LOGPIPE__WINDOWS__SIZE", "1s"),
            ("LOGPIPE__WINDOWS__ALLOWED_LATENESS", "1s"),
            ("LOGPIPE__WINDOWS__IDLE_CLOSE", "1h"),
        ],
    )
}

type WindowKey = (i64, String, String);

async fn postgres_windows(postgres: &Postgres) -> BTreeMap<WindowKey, i64> {
    postgres
        .query_text(
            "SELECT extract(epoch FROM window_start)::bigint, service, level, count, service_count \
             FROM window_stats",
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let cell = |i: usize| row[i].clone().unwrap();
            (
                (cell(0).parse().unwrap(), cell(1), cell(2)),
                cell(3).parse().unwrap(),
            )
        })
        .collect()
}

fn lake_counts(dir: &std::path::Path, sql: &str) -> BTreeMap<WindowKey, i64> {
    sql_json(dir, sql)
        .into_iter()
        .map(|row| {
            (
                (
                    row["w"].as_i64().unwrap(),
                    row["service"].as_str().unwrap().to_string(),
                    row["level"].as_str().unwrap().to_string(),
                ),
                row["n"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_rows_equal_lake_counts_across_a_kill_and_restart() {
    let url = fresh_database("logpipe_windows_e2e").await;
    let postgres = Postgres::lazy(&url);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let client = reqwest::Client::new();

    // Every second is sent twice (a retry after a lost answer, with the
    // same Idempotency-Key); the second copy must count nowhere.
    let running = up(&dir, &url);
    send_seconds_twice(&client, &running, 0..SECONDS / 2).await;
    // Let some windows reach PostgreSQL, then kill without any shutdown.
    let deadline = Instant::now() + Duration::from_secs(30);
    while postgres_windows(&postgres).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no window row: {}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.kill_hard();

    let running = up(&dir, &url);
    // Retries of requests sent before the kill: both jobs rebuilt their
    // duplicate check from the bus when they started again.
    send_seconds_twice(&client, &running, SECONDS / 2 - 3..SECONDS / 2).await;
    send_seconds_twice(&client, &running, SECONDS / 2..SECONDS).await;
    // The last record is at T0+59.97 s; with 1 s lateness every window up
    // to the one starting at T0+57 s closes.
    let last_closed = T0 + SECONDS - 3;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let windows = postgres_windows(&postgres).await;
        if windows.keys().any(|(w, ..)| *w >= last_closed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "windows did not close: {}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = running.terminate();
    assert!(status.success());

    let in_postgres = postgres_windows(&postgres).await;
    let from_lake = lake_counts(
        &dir,
        "SELECT CAST(floor(extract(epoch FROM timestamp)) AS BIGINT) AS w, service, level, \
         count(*) AS n FROM logs GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    );
    assert_eq!(
        from_lake.values().sum::<i64>(),
        SECONDS * PER_SECOND,
        "the raw lake holds every record once (each was sent twice, some again after a restart)"
    );
    let closed_from_lake: BTreeMap<_, _> = from_lake
        .into_iter()
        .filter(|((w, ..), _)| *w <= last_closed)
        .collect();
    let closed_in_postgres: BTreeMap<_, _> = in_postgres
        .iter()
        .filter(|((w, ..), _)| *w <= last_closed)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let differences: Vec<_> = closed_from_lake
        .keys()
        .chain(closed_in_postgres.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|key| closed_from_lake.get(*key) != closed_in_postgres.get(*key))
        .map(|key| (key, closed_from_lake.get(key), closed_in_postgres.get(key)))
        .collect();
    assert!(
        differences.is_empty(),
        "window_stats differs from counts computed from the lake (key, lake, postgres): {differences:?}\n{}",
        std::fs::read_to_string(dir.with_extension(format!("{}.log", std::process::id())))
            .unwrap_or_default()
    );
    // Windows still open at shutdown stay open (checkpointed), not flushed
    // half-counted.
    assert!(in_postgres.keys().all(|(w, ..)| *w <= last_closed + 1));
    // The lake table `windows` holds the same rows, each once.
    let windows_rows = sql_json(
        &dir,
        "SELECT CAST(extract(epoch FROM window_start) AS BIGINT) AS w, service, level, count AS n \
         FROM windows ORDER BY 1, 2, 3",
    );
    assert_eq!(
        windows_rows.len(),
        in_postgres.len(),
        "no duplicate window row in the lake"
    );
    assert_eq!(
        lake_counts(
            &dir,
            "SELECT CAST(extract(epoch FROM window_start) AS BIGINT) AS w, service, level, count AS n FROM windows",
        ),
        in_postgres
    );
    // service_count is the sum over the levels of a window.
    let sums = postgres
        .query_text(
            "SELECT count(*) FROM (SELECT window_start, service FROM window_stats \
             GROUP BY window_start, service HAVING sum(count) <> min(service_count)) bad",
        )
        .await
        .unwrap();
    assert_eq!(sums[0][0].as_deref(), Some("0"));
}

/// A webhook receiver: collects each POSTed JSON body.
pub(crate) fn webhook_server() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v2/alerts", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(value) = serde_json::from_slice::<Value>(&body)
            {
                sink.lock().unwrap().push(value);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_burst_fires_once_and_resolves_once_at_the_webhook() {
    let (webhook_url, received) = webhook_server();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let running = Running::start(
        &dir,
        &[
            ("LOGPIPE__WINDOWS__SIZE", "1s"),
            ("LOGPIPE__WINDOWS__ALLOWED_LATENESS", "1s"),
            ("LOGPIPE__ALERTS__WEBHOOK_URL", &webhook_url),
        ],
    );
    // 400 logs/s over four services for 15 s; payment-service has an error
    // burst from 5 s to 10 s. No other errors, so any other alert is wrong.
    let started_micros = chrono::Utc::now().timestamp_micros();
    crate::common::stdout_of(
        Command::new(binary()).args([
            "generate",
            "--target",
            &running.base_url,
            "--count",
            "6000",
            "--rate",
            "400",
            "--batch-size",
            "40",
            "--concurrency",
            "2",
            "--error-rate",
            "0",
            "--incident",
            "error_burst:payment-service:5s:5s",
        ]),
        "logpipe generate",
    );
    let burst_start = started_micros + 5_000_000;

    let deadline = Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let alerts: Vec<Value> = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| body.as_array().cloned().unwrap_or_default())
            .collect();
        if alerts.iter().any(|a| a.get("endsAt").is_some()) {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "no RESOLVED alert; received {alerts:?}\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let firing: Vec<&Value> = alerts
        .iter()
        .filter(|a| a.get("endsAt").is_none())
        .collect();
    let resolved: Vec<&Value> = alerts
        .iter()
        .filter(|a| a.get("endsAt").is_some())
        .collect();
    assert_eq!(
        (firing.len(), resolved.len()),
        (1, 1),
        "one FIRING, one RESOLVED: {alerts:#?}"
    );
    for alert in &alerts {
        assert_eq!(alert["labels"]["service"], "payment-service", "{alert}");
        assert_eq!(alert["labels"]["alertname"], "HighErrorRate", "{alert}");
    }
    assert_eq!(
        firing[0]["annotations"]["incident_id"],
        resolved[0]["annotations"]["incident_id"]
    );
    // Decided within two windows of the burst's start.
    let decided = chrono::DateTime::parse_from_rfc3339(
        firing[0]["annotations"]["window_start"].as_str().unwrap(),
    )
    .unwrap()
    .timestamp_micros();
    assert!(
        decided >= burst_start - 1_000_000 && decided <= burst_start + 2_000_000,
        "FIRING decided by the window at {decided}, burst started at {burst_start}"
    );
    let ended = chrono::DateTime::parse_from_rfc3339(resolved[0]["endsAt"].as_str().unwrap())
        .unwrap()
        .timestamp_micros();
    assert!(
        ended >= burst_start + 5_000_000,
        "RESOLVED only after the burst ended"
    );

    // The same two alerts are in the lake and behind GET /api/alerts.
    let listed: Value = reqwest::get(format!("{}/api/alerts", running.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["count"], 2, "{listed}");
    let firing_now: Value = reqwest::get(format!("{}/api/alerts?state=firing", running.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(firing_now["count"], 0, "{firing_now}");
    let bad = reqwest::get(format!("{}/api/alerts?state=maybe", running.base_url))
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let metrics = running.metrics().await;
    assert!(
        metrics.contains("logpipe_alerts_total{rule=\"HighErrorRate\",state=\"FIRING\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("logpipe_window_error_rate{service=\"payment-service\"}"));
    assert!(running.terminate().success());
    let rows = sql_json(&dir, "SELECT state, service FROM alerts ORDER BY state");
    assert_eq!(rows.len(), 2);
}
