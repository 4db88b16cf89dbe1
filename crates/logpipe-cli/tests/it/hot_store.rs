//! The PostgreSQL hot store (`[postgres.hot]`) against the real binary and
//! a real PostgreSQL 15: every acknowledged record in the day-partitioned
//! table once across kill -9 restarts (on the embedded bus and on Apache
//! Kafka, logs and events), a retried record's second copy dropped, records
//! past the retention not written, and a day past it dropped whole.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::analytics::fresh_database;
use crate::common::{Broker, Running, assert_exactly_once};
use crate::kafka::kafka_env;
use logpipe_sinks::postgres::Postgres;
use serde_json::json;

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn log(id: &str, timestamp: f64) -> serde_json::Value {
    json!({"timestamp": timestamp, "level": "INFO", "service": "api-gateway", "host": "worker-1",
           "message": "Request processed successfully",
           "metadata": {"request_id": id, "response_time_ms": 45, "status_code": 200,
                        "endpoint": "/api/users", "method": "GET"}})
}

/// Five days before now: a day the test's 2-day retention drops.
const OLD: f64 = 5.0 * 86_400.0;

fn event(id: &str, timestamp: f64) -> serde_json::Value {
    json!({"event_id": id, "timestamp": timestamp, "user_id": "user_12345", "session_id": "sess_abcde",
           "event_type": "CLICK",
           "event_data": {"page": "/products/123", "element": "add_to_cart_button",
                          "position": {"x": 450, "y": 320}},
           "device": {"type": "mobile", "os": "iOS", "browser": "Safari"}})
}

/// What a sender posts: logs, or activity events.
#[derive(Clone, Copy)]
enum Kind {
    Logs,
    Events,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Logs => "logs",
            Kind::Events => "activities",
        }
    }

    fn record(self, id: &str, timestamp: f64) -> serde_json::Value {
        match self {
            Kind::Logs => log(id, timestamp),
            Kind::Events => event(id, timestamp),
        }
    }
}

/// Posts batches of 200 recent logs (each batch twice: the second copy with
/// the same Idempotency-Key, as a client that lost the first answer) until
/// the server goes away; every 10th batch is five days old. Returns the ids
/// acknowledged, recent and old apart.
async fn send_until_refused(base_url: String, task: usize) -> (Vec<String>, Vec<String>) {
    send_kind_until_refused(base_url, task, Kind::Logs, 10).await
}

/// [`send_until_refused`] for `kind`, every `old_every`th batch five days
/// old (0: none).
async fn send_kind_until_refused(
    base_url: String,
    task: usize,
    kind: Kind,
    old_every: usize,
) -> (Vec<String>, Vec<String>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (mut recent, mut old) = (Vec::new(), Vec::new());
    for batch in 0.. {
        let ids: Vec<String> = (0..200)
            .map(|i| format!("h{task}-b{batch:04}-{i:03}"))
            .collect();
        let is_old = old_every > 0 && batch % old_every == old_every - 1;
        let at = now_seconds() - if is_old { OLD } else { 1.0 };
        let body: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| kind.record(id, at + i as f64 * 0.001))
            .collect();
        let body = serde_json::Value::from(body).to_string();
        let key = format!("hot-{task}-{batch}");
        let mut acked = false;
        for _ in 0..2 {
            let response = client
                .post(format!("{base_url}/api/collect/{}", kind.path()))
                .header("Idempotency-Key", &key)
                .body(body.clone())
                .send()
                .await;
            match response {
                Ok(response) if response.status().as_u16() == 200 => acked = true,
                Ok(response) if response.status().as_u16() == 503 => {}
                _ => {
                    if acked {
                        break;
                    }
                    return (recent, old);
                }
            }
        }
        if acked {
            if is_old { &mut old } else { &mut recent }.extend(ids);
        }
    }
    (recent, old)
}

/// The value of the sample `series` (name and labels) in a Prometheus text.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// request_id → rows of it in `hot.logs`.
async fn stored_ids(url: &str) -> BTreeMap<String, u64> {
    stored(
        url,
        "SELECT request_id, count(*) FROM hot.logs GROUP BY request_id",
    )
    .await
}

/// event_id → rows of it in `hot.events`.
async fn stored_event_ids(url: &str) -> BTreeMap<String, u64> {
    stored(
        url,
        "SELECT event_id, count(*) FROM hot.events GROUP BY event_id",
    )
    .await
}

/// The (id, count) rows of `sql`.
async fn stored(url: &str, sql: &str) -> BTreeMap<String, u64> {
    hot_rows(url, sql)
        .await
        .into_iter()
        .map(|row| {
            (
                row[0].clone().unwrap(),
                row[1].as_deref().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

async fn hot_rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    Postgres::lazy(url).query_text(sql).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_store_holds_every_acked_record_once_across_kill_9_and_drops_old_days() {
    let url = fresh_database("logpipe_hot_store").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = |retention: &'static str| {
        vec![
            ("LOGPIPE__POSTGRES__URL", url.clone()),
            ("LOGPIPE__POSTGRES__HOT__ENABLED", "true".to_string()),
            ("LOGPIPE__POSTGRES__HOT__RETENTION", retention.to_string()),
            ("LOGPIPE__POSTGRES__HOT__LINGER", "100ms".to_string()),
            ("LOGPIPE__POSTGRES__HOT__BATCH", "3000".to_string()),
            ("LOGPIPE__WINDOWS__ENABLED", "false".to_string()),
        ]
    };
    let start = |retention: &'static str| {
        let env = env(retention);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Running::start(&data, &env)
    };
    let (mut recent, mut old) = (Vec::new(), Vec::new());
    // Two rounds under load, each ended by kill -9; the retention is long
    // enough to keep the five-day-old records.
    for round in 0..2 {
        let running = start("30d");
        let senders: Vec<_> = (0..3)
            .map(|task| {
                tokio::spawn(send_until_refused(
                    running.base_url.clone(),
                    round * 10 + task,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        running.kill_hard();
        for sender in senders {
            let (r, o) = sender.await.unwrap();
            recent.extend(r);
            old.extend(o);
        }
    }
    assert!(
        !recent.is_empty() && !old.is_empty(),
        "the load was acknowledged"
    );

    // Started again with a 2-day retention: the old day's partition goes,
    // and old records sent now are not written.
    let running = start("2d");
    let client = reqwest::Client::new();
    let late: Vec<String> = (0..50).map(|i| format!("late-old-{i:03}")).collect();
    let body: Vec<_> = late.iter().map(|id| log(id, now_seconds() - OLD)).collect();
    let status = client
        .post(format!("{}/api/collect/logs", running.base_url))
        .body(serde_json::Value::from(body).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);

    let wanted: BTreeSet<String> = recent.iter().cloned().collect();
    assert_eq!(wanted.len(), recent.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts: BTreeMap<String, u64> = loop {
        let counts = stored_ids(&url).await;
        let metrics = running.metrics().await;
        // At least the 50 sent now (old records the killed rounds had not
        // written yet are past the retention now too).
        let expired = sample(
            &metrics,
            "logpipe_hot_records_expired_total{table=\"logs\"}",
        ) >= 50.0;
        if (wanted.iter().all(|id| counts.contains_key(id)) && expired) || Instant::now() > deadline
        {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_exactly_once(&wanted, &counts, &running.log());
    // (A record stored when the kill came before its answer is in it too:
    // stored, not acknowledged.)
    let stored_old: Vec<&String> = old
        .iter()
        .chain(&late)
        .filter(|id| counts.contains_key(*id))
        .take(5)
        .collect();
    assert!(
        stored_old.is_empty(),
        "records older than the retention are in the hot store: {stored_old:?}"
    );

    // The day partitions left: only recent days (today, maybe yesterday).
    let partitions = hot_rows(
        &url,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'hot.logs'::regclass ORDER BY 1",
    )
    .await;
    let old_day = chrono::DateTime::from_timestamp(now_seconds() as i64 - OLD as i64, 0)
        .unwrap()
        .format("logs_%Y%m%d")
        .to_string();
    let names: Vec<String> = partitions
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert!(
        !names.contains(&old_day) && !names.is_empty() && names.len() <= 2,
        "partitions of hot.logs: {names:?} (the five-day-old {old_day} must be dropped)"
    );
    let metrics = running.metrics().await;
    assert!(
        sample(
            &metrics,
            "logpipe_hot_partitions_dropped_total{table=\"logs\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        running
            .log()
            .contains("hot store: day past the retention dropped"),
        "{}",
        running.log()
    );
    // Positions: one row per partition of logs.raw and events.activity
    // read, each at the bus's end.
    let positions = hot_rows(
        &url,
        "SELECT count(*) FROM hot.logpipe_hot_positions WHERE topic = 'logs.raw'",
    )
    .await;
    assert!(positions[0][0].as_deref().unwrap().parse::<u64>().unwrap() >= 1);
    eprintln!(
        "{} acknowledged recent records in hot.logs exactly once across two kill -9 restarts; {} five-day-old ones dropped with their day",
        wanted.len(),
        old.len()
    );
    assert!(running.terminate().success());
}

/// Two writers of the same store (two processes with the hot store on):
/// the second to move a position loses its whole transaction, rows and
/// all, so nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_of_the_same_positions_is_fenced_and_stores_nothing() {
    use logpipe_core::record::{LogRecord, Record, RecordKind, ValidationLimits};
    use logpipe_core::tables::{self, BatchBuilder};
    use logpipe_sinks::postgres::PgError;
    use logpipe_sinks::postgres::hot::{DayRows, HotStore, PositionMove};

    let url = fresh_database("logpipe_hot_fenced").await;
    let now = now_seconds();
    let mut builder = BatchBuilder::new(RecordKind::Log);
    for i in 0..10 {
        let text = log(&format!("f-{i}"), now).to_string();
        let record = LogRecord::parse(&text, &ValidationLimits::now()).unwrap();
        builder.append(&Record::Log(record)).unwrap();
    }
    let batch = builder.finish().unwrap();
    let day = chrono::DateTime::from_timestamp(now as i64, 0)
        .unwrap()
        .date_naive();
    let rows = [DayRows {
        table: "logs",
        day,
        batch: &batch,
    }];
    let schema = (tables::of_kind(RecordKind::Log).schema.unwrap())();
    let mut first = HotStore::connect(&url, "hot").await.unwrap();
    let mut second = HotStore::connect(&url, "hot").await.unwrap();
    for store in [&mut first, &mut second] {
        store.ensure_table("logs", &schema).await.unwrap();
    }
    let moved = |from, to| {
        [PositionMove {
            topic: "logs.raw".into(),
            partition: 0,
            from,
            to,
        }]
    };
    // Both read "no position yet"; the first to write wins.
    assert_eq!(
        first.write("hot", &rows, &moved(None, 10)).await.unwrap(),
        10
    );
    let refused = second.write("hot", &rows, &moved(None, 10)).await;
    assert!(
        matches!(refused, Err(PgError::Fenced { .. })),
        "{refused:?}"
    );
    // A writer whose position is stale loses too; one that read the
    // current one moves it on.
    let refused = second.write("hot", &rows, &moved(Some(5), 20)).await;
    assert!(
        matches!(refused, Err(PgError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(
        second
            .write("hot", &rows, &moved(Some(10), 20))
            .await
            .unwrap(),
        10
    );
    let counts = hot_rows(
        &url,
        "SELECT count(*), count(DISTINCT request_id) FROM hot.logs;
         SELECT next_offset FROM hot.logpipe_hot_positions",
    )
    .await;
    // 10 rows from each successful write (the same ids twice: this test
    // sends the same batch on purpose), none from the fenced ones.
    assert_eq!(
        counts[0],
        vec![Some("20".to_string()), Some("10".to_string())]
    );
    assert_eq!(counts[1], vec![Some("20".to_string())]);
}

/// PostgreSQL cuts the hot store's connection again and again under load
/// (`pg_terminate_backend`: mid-COPY, mid-commit, or between a commit and
/// its answer): the job starts again from the positions PostgreSQL holds,
/// and every acknowledged record is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_store_whose_connection_is_cut_under_load_stores_every_record_once() {
    let url = fresh_database("logpipe_hot_cut").await;
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(
        &dir.path().join("data"),
        &[
            ("LOGPIPE__POSTGRES__URL", url.as_str()),
            ("LOGPIPE__POSTGRES__HOT__ENABLED", "true"),
            ("LOGPIPE__POSTGRES__HOT__LINGER", "50ms"),
            ("LOGPIPE__POSTGRES__HOT__BATCH", "2000"),
            ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ],
    );
    let client = reqwest::Client::new();
    let admin = Postgres::lazy(&url);
    let mut wanted = BTreeSet::new();
    let mut cut = 0;
    // Load until the connection was cut four times (each time the job
    // waits its backoff before it connects again).
    for batch in 0..400 {
        if cut >= 4 && batch % 5 == 0 {
            break;
        }
        let ids: Vec<String> = (0..500).map(|i| format!("c{batch:03}-{i:03}")).collect();
        let body: Vec<_> = ids.iter().map(|id| log(id, now_seconds())).collect();
        let status = client
            .post(format!("{}/api/collect/logs", running.base_url))
            .body(serde_json::Value::from(body).to_string())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200);
        wanted.extend(ids);
        if batch % 5 == 2 {
            let rows = admin
                .query_text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE application_name = 'logpipe-hot-store'",
                )
                .await
                .unwrap();
            cut += rows[0][0].as_deref().unwrap().parse::<u32>().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cut >= 4, "the hot store's connection was cut {cut} times");
    let deadline = Instant::now() + Duration::from_secs(90);
    let counts: BTreeMap<String, u64> = loop {
        let counts = stored_ids(&url).await;
        if wanted.iter().all(|id| counts.contains_key(id)) || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_exactly_once(&wanted, &counts, &running.log());
    assert_eq!(counts.len(), wanted.len(), "rows no client sent");
    let metrics = running.metrics().await;
    assert!(
        sample(
            &metrics,
            "logpipe_stream_job_restarts_total{job_name=\"hot_store\"}"
        ) >= 1.0,
        "the job never restarted:\n{metrics}"
    );
    eprintln!(
        "{} records in hot.logs once after the connection was cut {cut} times",
        wanted.len()
    );
    assert!(running.terminate().success());
}

/// The hot store on Apache Kafka (`logpipe up` on a one-node KRaft
/// cluster): logs and activity events, each batch posted twice with one
/// Idempotency-Key, a kill -9 under load and a restart; every acknowledged
/// log in `hot.logs` and every acknowledged event in `hot.events` once,
/// with the flattened event columns filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_logs_and_events_reach_the_hot_store_once_across_kill_9() {
    let broker = Broker::start();
    let url = fresh_database("logpipe_hot_kafka").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let group = format!("hot-kafka-{}", std::process::id());
    let mut env = kafka_env(&broker.brokers, &group);
    env.extend([
        ("LOGPIPE__POSTGRES__URL", url.as_str()),
        ("LOGPIPE__POSTGRES__HOT__ENABLED", "true"),
        ("LOGPIPE__POSTGRES__HOT__LINGER", "100ms"),
        ("LOGPIPE__POSTGRES__HOT__BATCH", "3000"),
    ]);
    let (mut logs, mut events) = (Vec::new(), Vec::new());
    for round in 0..2 {
        let running = Running::start(&data, &env);
        let senders: Vec<_> = [Kind::Logs, Kind::Events]
            .into_iter()
            .map(|kind| {
                tokio::spawn(send_kind_until_refused(
                    running.base_url.clone(),
                    round,
                    kind,
                    0,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        if round == 0 {
            running.kill_hard();
        } else {
            // The last round ends cleanly: the senders stop when the
            // server does, and the restart below finds everything read.
            assert!(running.terminate().success());
        }
        let mut senders = senders.into_iter();
        logs.extend(senders.next().unwrap().await.unwrap().0);
        events.extend(senders.next().unwrap().await.unwrap().0);
    }
    assert!(
        !logs.is_empty() && !events.is_empty(),
        "the load was acknowledged"
    );
    let running = Running::start(&data, &env);
    let wanted_logs: BTreeSet<String> = logs.iter().cloned().collect();
    let wanted_events: BTreeSet<String> = events.iter().cloned().collect();
    assert_eq!(
        (wanted_logs.len(), wanted_events.len()),
        (logs.len(), events.len())
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (log_counts, event_counts) = loop {
        let (l, e) = (stored_ids(&url).await, stored_event_ids(&url).await);
        let complete = wanted_logs.iter().all(|id| l.contains_key(id))
            && wanted_events.iter().all(|id| e.contains_key(id));
        if complete || Instant::now() > deadline {
            break (l, e);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_exactly_once(&wanted_logs, &log_counts, &running.log());
    assert_exactly_once(&wanted_events, &event_counts, &running.log());
    // This test's events (ids `h<round>-b…`; a broker you run may hold
    // other tests' events too).
    let columns = hot_rows(
        &url,
        "SELECT count(*) FILTER (WHERE event_type = 'CLICK' AND page = '/products/123'
           AND position_x = 450 AND device_os = 'iOS' AND event_data LIKE '%add_to_cart_button%'),
           count(*)
         FROM hot.events WHERE event_id LIKE 'h_-b%'",
    )
    .await;
    let (filled, all) = (
        columns[0][0].as_deref().unwrap(),
        columns[0][1].as_deref().unwrap(),
    );
    // (More when the kill came between storing a batch and its answer.)
    assert!(
        all.parse::<usize>().unwrap() >= wanted_events.len(),
        "this test's events: {all}"
    );
    assert_eq!(filled, all, "every event's flattened columns");
    eprintln!(
        "on Kafka: {} logs and {} events acknowledged, each once in the hot store across a kill -9",
        wanted_logs.len(),
        wanted_events.len()
    );
    assert!(running.terminate().success());
}
