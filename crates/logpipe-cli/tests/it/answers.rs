//! The collector's answer is the truth on both buses: a 200 means every
//! record reaches the lake once, a 503 that none of them is ever read. On
//! Kafka (with `bus.kafka.transactions`, off by default) each request is
//! written in a transaction, committed before the 200
//! and aborted before a 503, and logpipe's readers read committed records
//! only; the embedded bus truncates a failed write back. The broker
//! failures (1 and 3 brokers) are in `kafka.rs` (`outage_keeps_every_answer_true`);
//! here the collector dies, and the embedded bus's disk fills up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::services::free_port;
use crate::common::{Broker, Running, python, sql_json};
use crate::kafka::{ATTEMPTS, TRANSACTIONS, kafka_env};
use crate::load::{Outcomes, Retries, assert_none_stored, check_answers, load, log, outcomes_of};

/// Reads `logs.raw` from its first offset with `isolation.level` =
/// ISOLATION, without a group (every partition assigned), until it has
/// been idle for 5 s; prints rows per request_id starting with PREFIX.
const READ_TOPIC: &str = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
brokers, isolation, prefix = sys.argv[1:4]
consumer = Consumer({"bootstrap.servers": brokers, "group.id": "logpipe-test-" + isolation,
                     "enable.auto.commit": False, "isolation.level": isolation})
partitions = consumer.list_topics("logs.raw", timeout=10).topics["logs.raw"].partitions
consumer.assign([TopicPartition("logs.raw", p, OFFSET_BEGINNING) for p in partitions])
counts, idle = {}, 0
while idle < 10:
    message = consumer.poll(0.5)
    if message is None:
        idle += 1
        continue
    if message.error():
        continue
    idle = 0
    request_id = json.loads(message.value())["metadata"]["request_id"]
    if request_id.startswith(prefix):
        counts[request_id] = counts.get(request_id, 0) + 1
consumer.close()
print(json.dumps(counts))
"#;

/// Waits until `collector` has committed `n` Kafka transactions.
async fn wait_for_commits(collector: &Running, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let committed = collector
            .metrics()
            .await
            .lines()
            .find_map(|line| {
                line.strip_prefix("logpipe_bus_transactions_total{outcome=\"committed\"} ")
            })
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0);
        if committed >= n as f64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the collector committed {committed} transactions in 60 s:\n{}",
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_topic(brokers: &str, isolation: &str, prefix: &str) -> BTreeMap<String, u64> {
    serde_json::from_str(&python(READ_TOPIC, &[brokers, isolation, prefix])).unwrap()
}

/// A collector is killed with SIGKILL mid-load three times and started
/// again on the same address (so with the same `transactional.id`), under
/// clients that retry a 503 without an Idempotency-Key. Then:
/// - every answer holds in the lake: 200 exactly once, a final 503 not at
///   all, no answer whole or not at all;
/// - a `read_committed` consumer (confluent-kafka) and Spark Structured
///   Streaming (`kafka.isolation.level=read_committed`) see exactly the
///   records the lake holds, and the window job counted each of them once;
/// - a `read_uncommitted` consumer sees records the lake does not have:
///   the killed collector had written them in transactions that were then
///   aborted (without transactions they would be in the lake).
///
/// The transaction timeout is two minutes: the lake catches up within the
/// test's wait only because each restarted collector fences its killed
/// predecessor and aborts its open transaction at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_collector_leaves_nothing_a_committed_reader_sees() {
    let (Ok(_), Ok(jars)) = (
        std::env::var("LOGPIPE_TEST_SPARK_PYTHON"),
        std::env::var("LOGPIPE_TEST_SPARK_JARS"),
    ) else {
        panic!(
            "LOGPIPE_TEST_SPARK_PYTHON and LOGPIPE_TEST_SPARK_JARS are not set: run ./scripts/test.sh, \
             which installs pyspark and Spark's Kafka source"
        );
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = kafka_env(&broker.brokers, "logpipe-txn");
    env.extend([
        ("LOGPIPE__WINDOWS__ENABLED", "true"),
        ("LOGPIPE__WINDOWS__IDLE_CLOSE", "2s"),
        ("LOGPIPE__BUS__KAFKA__TRANSACTION_TIMEOUT", "120s"),
        TRANSACTIONS,
    ]);
    // The lake, the windows and /metrics; its own collector stays idle.
    let stream = Running::start(&data, &env);
    let address = format!("127.0.0.1:{}", free_port());
    let collector_args = ["collector", "--listen", address.as_str()];
    let collector_dir = dir.path().join("collector");
    let mut collector = Running::start_role(&collector_args, &collector_dir, &env);
    let collector_url = collector.base_url.clone();

    // Rounds of load with three kills each, until a kill has left records
    // of an open transaction on the broker (an abort to hide): whether a
    // kill lands between a transaction's writes and its commit is chance
    // (four rounds were once not enough on a busy machine: up to eight;
    // a lucky run stops after the first).
    let mut outcomes = Outcomes::default();
    let mut killed_logs = Vec::new();
    let mut aborted = 0u64;
    let mut rounds = 0;
    while aborted == 0 && rounds < 8 {
        rounds += 1;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let senders: Vec<_> = (0..2)
            .map(|task| {
                tokio::spawn(load(
                    collector_url.clone(),
                    format!("x{rounds}{task}"),
                    500,
                    Retries::Unkeyed(ATTEMPTS),
                    stopped.clone(),
                ))
            })
            .collect();
        for _ in 0..3 {
            // Mid-load: once this collector has committed a few transactions
            // (on a busy machine its start and the load clients' retries take
            // a while), one is open at almost any moment.
            wait_for_commits(&collector, 3).await;
            tokio::time::sleep(Duration::from_millis(200 + 100 * rounds)).await;
            killed_logs.push(collector.log());
            collector.kill_hard();
            tokio::time::sleep(Duration::from_millis(300)).await;
            collector = Running::start_role(&collector_args, &collector_dir, &env);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = stop.send(true);
        outcomes.merge(outcomes_of(senders).await);
        // With the load stopped and the last transactions ended, what a
        // read_uncommitted consumer sees beyond a read_committed one is
        // aborted records.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let committed = read_topic(&broker.brokers, "read_committed", "x");
        let uncommitted = read_topic(&broker.brokers, "read_uncommitted", "x");
        aborted = uncommitted
            .iter()
            .map(|(id, copies)| copies.saturating_sub(committed.get(id).copied().unwrap_or(0)))
            .sum();
    }
    let logs = || {
        format!(
            "{}\n--- collectors:\n{}\n{}",
            stream.log(),
            killed_logs.join("\n---\n"),
            collector.log()
        )
    };
    assert!(
        aborted > 0,
        "in {rounds} rounds of three kills, no kill left records of an open transaction:\n{}",
        logs()
    );
    assert!(
        !outcomes.unanswered.is_empty(),
        "no request was cut off by the kills:\n{}",
        logs()
    );
    let counts = check_answers(&data, "x", &outcomes, &logs());

    let committed = read_topic(&broker.brokers, "read_committed", "x");
    assert!(
        committed == counts,
        "a read_committed consumer sees {} records, the lake holds {}",
        committed.values().sum::<u64>(),
        counts.values().sum::<u64>()
    );

    // The window job counted every record of the lake once: in a window,
    // or as late.
    let lake_rows = || sql_json(&data, "SELECT count(*) AS n FROM logs")[0]["n"].as_u64();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (windowed, late) = loop {
        let windowed = sql_json(
            &data,
            "SELECT CAST(coalesce(sum(count), 0) AS BIGINT) AS n FROM windows",
        )[0]["n"]
            .as_u64()
            .unwrap_or(0);
        let late = metric(&stream.metrics().await, "logpipe_window_late_records_total");
        if Some(windowed + late) >= lake_rows() || Instant::now() > deadline {
            break (windowed, late);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        Some(windowed + late),
        lake_rows(),
        "records in windows ({windowed}) and late ({late}) differ from the lake's"
    );
    assert!(stream.terminate().success());
    assert!(collector.terminate().success());

    let spark = spark_read(&jars, &broker.brokers, "x", dir.path());
    assert_eq!(spark["unparsed"], 0, "records Spark could not parse");
    let spark_ids: BTreeMap<String, u64> = serde_json::from_value(spark["ids"].clone()).unwrap();
    assert!(
        spark_ids == counts,
        "Spark (read_committed) sees {} records, the lake holds {}",
        spark["rows"],
        counts.values().sum::<u64>()
    );
    eprintln!(
        "{} collector kills: {} acknowledged, {} finally refused, {} requests unanswered; \
         {aborted} aborted records visible only read_uncommitted; Spark and confluent-kafka \
         (read_committed) see exactly the lake's {} records",
        3 * rounds,
        outcomes.acked.len(),
        outcomes.failed.len(),
        outcomes.unanswered.len(),
        counts.values().sum::<u64>()
    );
}

/// The value of an unlabelled counter in Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// Runs `deploy/spark/read_logs_raw.py` (the seed's Spark job, pyspark
/// 4.2.0 with Spark's Kafka source) over `logs.raw`; its JSON totals.
fn spark_read(jars: &str, brokers: &str, prefix: &str, dir: &Path) -> serde_json::Value {
    crate::common::spark_job(
        "read_logs_raw.py",
        &[
            brokers.as_ref(),
            prefix.as_ref(),
            dir.join("spark-out").as_os_str(),
        ],
        &[("SPARK_KAFKA_JARS", jars), ("LOGPIPE_SPARK_IDS", "1")],
        "the Spark job",
    )
}

/// The embedded bus on a "disk" that fills up: every file of the process
/// is limited to 3 MiB, so once a partition's segment reaches it each write
/// fails. Requests are answered 200 until then and 503 after, and no
/// record of a 503 is in the lake: the bus truncated every partition of the
/// failed write back, also those whose part of it had been written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_from_the_embedded_bus_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("LOGPIPE__LAKE__FLUSH_INTERVAL", "300ms"),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
    ];
    let running = Running::start_with_file_limit(crate::common::UP, &data, &env, 3 << 20);
    let client = reqwest::Client::new();
    let services = ["api", "billing", "search", "auth", "payments"];
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for batch in 0..120u64 {
        let ids: Vec<String> = (0..500)
            .map(|i| format!("full-{batch:03}-{i:03}"))
            .collect();
        let body: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| log(id, services[i % services.len()], batch * 500 + i as u64))
            .collect();
        let (status, answer) = crate::common::post(
            &client,
            &format!("{}/api/collect/logs", running.base_url),
            serde_json::to_string(&body).unwrap(),
        )
        .await;
        match status {
            200 => acked.extend(ids),
            503 => {
                let error = answer["error"].as_str().unwrap_or_default();
                assert!(error.contains("nothing"), "503 says {answer}");
                refused.extend(ids);
            }
            other => panic!("answered {other}: {answer}"),
        }
    }
    assert!(
        !acked.is_empty() && !refused.is_empty(),
        "{} records acknowledged and {} refused: the limit was not reached, or at once",
        acked.len(),
        refused.len()
    );
    let wanted = acked.iter().cloned().collect();
    crate::load::wait_for_lake(&data, "full-", &wanted);
    // A moment more for records that should not be there.
    std::thread::sleep(Duration::from_secs(1));
    let counts = crate::load::lake_counts(&data, "full-");
    crate::common::assert_exactly_once(&wanted, &counts, &running.log());
    assert_none_stored(&refused, &counts, &running.log());
    eprintln!(
        "a full disk: {} records acknowledged and in the lake once, {} refused with 503 and not there",
        acked.len(),
        refused.len()
    );
    assert!(running.terminate().success());
}
