//! The pipeline on Apache Kafka: each test starts its own KRaft cluster with
//! `deploy/kafka/kafka.sh` (the profiles users run), one node or three. The
//! tests take a bootstrap address, so they also run against a cluster you
//! run (`LOGPIPE_TEST_KAFKA_BROKERS`), skipping the ones that stop or
//! configure the broker (see docs/operations.md, "Kafka").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Broker, Running, assert_exactly_once, post, python, sql_json};
use crate::load::{
    Retries, check_answers, lake_counts, load, log, outcomes_of, wait_for_lake, wait_for_lake_in,
};

/// Attempts of the load clients that retry without an Idempotency-Key.
pub const ATTEMPTS: u32 = 5;

/// Kafka transactions on (off by default): what the tests of "a 503 stores
/// nothing" run with. The other Kafka tests run the default.
pub const TRANSACTIONS: (&str, &str) = ("LOGPIPE__BUS__KAFKA__TRANSACTIONS", "true");

/// Unique topic names per test are not needed: each test has its own
/// broker, or (external broker) its own consumer group and record ids.
pub fn kafka_env<'a>(brokers: &'a str, group: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("LOGPIPE__BUS__KIND", "kafka"),
        ("LOGPIPE__BUS__KAFKA__BROKERS", brokers),
        ("LOGPIPE__BUS__KAFKA__GROUP", group),
        ("LOGPIPE__BUS__KAFKA__SESSION_TIMEOUT", "6s"),
        ("LOGPIPE__LAKE__FLUSH_INTERVAL", "300ms"),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
    ]
}

const TOPICS_AND_ORDER: &str = r#"
import json, sys
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
brokers, group, produce_n = sys.argv[1], sys.argv[2], int(sys.argv[3])
topics = AdminClient({"bootstrap.servers": brokers}).list_topics(timeout=10).topics
partitions = {name: len(t.partitions) for name, t in topics.items()}
# What the collector produced: consume logs.raw from the start in a group.
consumer = Consumer({"bootstrap.servers": brokers, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
consumer.subscribe(["logs.raw"])
seen = []
idle = 0
while idle < 20:
    message = consumer.poll(0.5)
    if message is None:
        idle += 1
        continue
    if message.error():
        continue
    idle = 0
    value = json.loads(message.value())
    seen.append({"partition": message.partition(), "offset": message.offset(),
                 "key": message.key().decode(), "service": value["service"],
                 "request_id": value["metadata"]["request_id"],
                 "headers": [name for name, _ in message.headers() or []]})
consumer.close()
# Records from an outside producer, in the documented format.
producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True})
for i in range(produce_n):
    record = {"timestamp": "2025-01-12T01:30:00Z", "level": "WARN", "service": "billing",
              "message": "produced by confluent-kafka",
              "metadata": {"request_id": "ext-%05d" % i}}
    producer.produce("logs.raw", key="billing", value=json.dumps(record))
producer.flush(30)
print(json.dumps({"partitions": partitions, "seen": seen}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_keys_and_external_clients_on_a_real_broker() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Windows on (the other Kafka tests leave them off), with the summary
    // header (off by default on Kafka): the collector writes it as a Kafka
    // record header, and the window job reads it back.
    let mut env = kafka_env(&broker.brokers, "logpipe-topics");
    env.extend([
        ("LOGPIPE__WINDOWS__ENABLED", "true"),
        ("LOGPIPE__WINDOWS__IDLE_CLOSE", "1s"),
        ("LOGPIPE__WINDOWS__SUMMARY_HEADER", "true"),
    ]);
    let running = Running::start(&data, &env);
    // A `logpipe collector` process beside the one in `up`: the batches
    // below go to each in turn and land in the same topics, keyed and in
    // order, as collectors are stateless producers.
    let collector = Running::start_role(&["collector", "--listen", "127.0.0.1:0"], &data, &env);
    let client = reqwest::Client::new();

    // Keyed records: three services, each with an increasing sequence.
    // Names no other test uses, so the window counts below hold on a
    // broker the tests share (LOGPIPE_TEST_KAFKA_BROKERS).
    let services = ["kt-gateway", "kt-payments", "kt-users"];
    let mut sent = 0u64;
    for batch in 0..5u64 {
        let body: Vec<_> = (0..90u64)
            .map(|i| {
                let seq = batch * 90 + i;
                let service = services[(seq % 3) as usize];
                let mut record = log(&format!("own-{service}-{seq:05}"), service, seq);
                // A day after the other tests' event times: on a shared
                // broker this job may read their records first, and its
                // windows would count these as late.
                record["timestamp"] = json!(1736731566.0 + seq as f64 * 0.01);
                record
            })
            .collect();
        let to = if batch % 2 == 0 { &running } else { &collector };
        let (status, answer) = post(
            &client,
            &format!("{}/api/collect/logs", to.base_url),
            serde_json::Value::from(body).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{answer}\n{}", to.log());
        sent += 90;
    }

    let out = python(
        TOPICS_AND_ORDER,
        &[&broker.brokers, "external-reader", "200"],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // Topics were created by logpipe with the configured partitions.
    assert_eq!(report["partitions"]["logs.raw"], 3, "{report}");
    assert_eq!(report["partitions"]["events.activity"], 3, "{report}");
    assert_eq!(report["partitions"]["alerts.realtime"], 1, "{report}");

    // The external client read everything the collector produced; each key
    // stayed in one partition, in the order it was sent.
    let seen: Vec<&serde_json::Value> = report["seen"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["request_id"].as_str().unwrap().starts_with("own-"))
        .collect();
    assert_eq!(seen.len() as u64, sent, "records read by confluent-kafka");
    let mut partition_of: BTreeMap<&str, u64> = BTreeMap::new();
    let mut last: BTreeMap<&str, (u64, String)> = BTreeMap::new();
    for record in &seen {
        let key = record["key"].as_str().unwrap();
        assert_eq!(key, record["service"].as_str().unwrap(), "key = service");
        // The window fields travel as a Kafka record header.
        assert_eq!(record["headers"], serde_json::json!(["logpipe.summary"]));
        let partition = record["partition"].as_u64().unwrap();
        assert_eq!(
            *partition_of.entry(key).or_insert(partition),
            partition,
            "{key} spread over partitions"
        );
        let offset = record["offset"].as_u64().unwrap();
        let id = record["request_id"].as_str().unwrap().to_string();
        if let Some((last_offset, last_id)) = last.get(key) {
            assert!(
                offset > *last_offset && id > *last_id,
                "{key}: {id} at offset {offset} after {last_id} at {last_offset}"
            );
        }
        last.insert(key, (offset, id));
    }
    assert_eq!(partition_of.len(), 3);

    // Records from confluent-kafka reach the lake like the collector's.
    let wanted: BTreeSet<String> = (0..200).map(|i| format!("ext-{i:05}")).collect();
    let counts = wait_for_lake(&data, "ext-", &wanted);
    assert_eq!(
        counts.len(),
        200,
        "external records in the lake\n{}",
        running.log()
    );
    assert!(counts.values().all(|n| *n == 1), "external records doubled");
    let own: BTreeSet<String> = seen
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    let counts = wait_for_lake(&data, "own-", &own);
    assert_eq!(counts.len() as u64, sent);
    assert!(counts.values().all(|n| *n == 1));

    // The window job counted each of the collector's records once, in its
    // service's windows (read through the header).
    let deadline = Instant::now() + Duration::from_secs(60);
    let windowed: BTreeMap<String, u64> = loop {
        let counts: BTreeMap<String, u64> = match data.join("windows").exists() {
            true => sql_json(
                &data,
                r#"SELECT service, sum("count") AS n FROM windows WHERE service LIKE 'kt-%' GROUP BY service"#,
            )
            .iter()
            .map(|row| (row["service"].as_str().unwrap().to_string(), row["n"].as_u64().unwrap()))
            .collect(),
            false => BTreeMap::new(),
        };
        if counts.values().sum::<u64>() >= sent || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let expected: BTreeMap<String, u64> =
        services.iter().map(|s| (s.to_string(), sent / 3)).collect();
    assert_eq!(windowed, expected, "{}", running.log());
    assert!(running.terminate().success());
    assert!(collector.terminate().success());
}

/// Posts batches of fresh ids until `stop` (or the collector goes away);
/// retries a refused batch with the same ids and the same `Idempotency-Key`
/// until `stop`. Returns (acked ids, ids of batches that were refused at
/// least once).
/// How many partitions a `logpipe stream` member holds after its newest
/// rebalance (from its log).
fn partitions_held(member: &Running) -> usize {
    member
        .log()
        .lines()
        .rev()
        .filter(|l| l.contains("Kafka group"))
        .find_map(|l| {
            let held = l.split(" held=").nth(1)?;
            held.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Waits up to 60 s until `members` each hold some of the 6 partitions and
/// together all of them.
async fn wait_for_split(members: &[&Running], failure: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: Vec<usize> = members.iter().map(|m| partitions_held(m)).collect();
        if held.iter().all(|n| *n > 0) && held.iter().sum::<usize>() == 6 {
            return;
        }
        let logs: Vec<String> = members.iter().map(|m| m.log()).collect();
        assert!(
            Instant::now() < deadline,
            "{failure} (held {held:?}):\n{}",
            logs.join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stream process that holds all 6 partitions shows a lag series for
/// each, labelled with its group, and is ready.
async fn survivor_reports_every_partition(survivor: &Running, group: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = survivor.metrics().await;
        let series: BTreeSet<String> = metrics
            .lines()
            .filter(|line| line.starts_with("logpipe_bus_consumer_lag_records{"))
            .map(|line| line.split_once('}').unwrap().0.to_string())
            .collect();
        let ready = reqwest::get(format!("{}/ready", survivor.base_url))
            .await
            .unwrap();
        let status = ready.status().as_u16();
        let body = ready.text().await.unwrap();
        if series.len() == 6 && status == 200 {
            assert!(
                series
                    .iter()
                    .all(|s| s.contains(&format!("group=\"{group}\""))),
                "{series:?}"
            );
            assert!(body.contains("\"job:raw\":\"ok\""), "{body}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor's /metrics shows lag for {series:?}, /ready {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Two `logpipe stream` processes in one group split the 6 partitions
/// under load from two `logpipe collector` processes (a load client each);
/// one stream process is killed with `kill -9` and the survivor takes its
/// partitions over, starting each where the lake's last commit ended, in
/// the middle of a record batch as often as not. The lake must end with
/// every acknowledged record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stream_processes_share_partitions_and_a_kill_loses_nothing() {
    kill_one_of_two_members(Rebalancing::Cooperative, None).await;
}

/// The same with the lake on S3 (versitygw, which honours conditional
/// writes): the two processes share one bucket, and their commit chains
/// are fenced by `If-None-Match` instead of a local hard link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stream_processes_share_an_s3_lake_and_a_kill_loses_nothing() {
    let s3 = crate::common::S3Server::start();
    let mut env = s3.lake_env("scaled");
    // Both members publish the Delta log too (`[lake.delta]`): two
    // publishers of one log, fenced by creating each version if absent.
    env.extend([
        ("LOGPIPE__LAKE__DELTA__ENABLED", "true".to_string()),
        ("LOGPIPE__LAKE__DELTA__INTERVAL", "300ms".to_string()),
        ("LOGPIPE__LAKE__DELTA__CHECKPOINT_INTERVAL", "5".to_string()),
    ]);
    // What delta-rs reads from the log: rows and distinct ids of this
    // test's records.
    let s3 = std::sync::Arc::new(s3);
    let delta_rows = {
        let s3 = s3.clone();
        Box::new(move || {
            crate::lake_s3::delta_rs_counts(&s3, "scaled/logs/raw", "request_id LIKE 's3%'")
        })
    };
    let lake = SharedLake {
        tag: "s3",
        env,
        delta_rows: Some(delta_rows),
    };
    kill_one_of_two_members(Rebalancing::Cooperative, Some(lake)).await;
    // The lake is on the server, not on the processes' disk.
    assert!(
        s3.object_path("scaled/logs").is_dir(),
        "no logs/ in the bucket"
    );
}

/// The same with the lake on HDFS (a MiniDFSCluster): the two processes
/// write one file system, their commit chains fenced by the NameNode's
/// rename without overwrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stream_processes_share_an_hdfs_lake_and_a_kill_loses_nothing() {
    let hdfs = crate::common::HdfsServer::start();
    let lake = SharedLake {
        tag: "hdfs",
        env: hdfs.lake_env("scaled"),
        delta_rows: None,
    };
    kill_one_of_two_members(Rebalancing::Cooperative, Some(lake)).await;
}

/// The same with eager rebalancing (`range`), which users may choose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_rebalancing_members_share_partitions_and_a_kill_loses_nothing() {
    kill_one_of_two_members(Rebalancing::Eager, None).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rebalancing {
    /// logpipe's default, `cooperative-sticky`.
    Cooperative,
    /// `"partition.assignment.strategy" = "range"`.
    Eager,
}

/// A shared lake for [`kill_one_of_two_members`]: its name in the group
/// and the record ids, and the environment that points logpipe at it.
struct SharedLake {
    tag: &'static str,
    env: Vec<(&'static str, String)>,
    /// With `[lake.delta]` on: `[rows, distinct ids]` of the test's
    /// records in the Delta log's newest version.
    delta_rows: Option<Box<dyn Fn() -> serde_json::Value + Send>>,
}

async fn kill_one_of_two_members(rebalancing: Rebalancing, shared: Option<SharedLake>) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The group and the record ids differ between the tests, which may
    // share one external broker.
    let (group, ids) = match (rebalancing, &shared) {
        (Rebalancing::Cooperative, None) => ("scale-out".to_string(), "c"),
        (Rebalancing::Cooperative, Some(lake)) => (format!("scale-out-{}", lake.tag), lake.tag),
        (Rebalancing::Eager, _) => ("scale-out-eager".to_string(), "e"),
    };
    let group = group.as_str();
    let (lake_env, delta_rows) = shared
        .map(|lake| (lake.env, lake.delta_rows))
        .unwrap_or_default();
    let lake: Vec<(&str, &str)> = lake_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut env = kafka_env(&broker.brokers, group);
    env.extend(&lake);
    // A record missing from the lake then shows in the members' logs as
    // offsets the broker passed over (or not).
    env.push(("LOGPIPE_LOG", "info,logpipe_bus::kafka=debug"));
    // Two collectors, both producing to every partition at once.
    let collectors: Vec<Running> = (0..2)
        .map(|_| Running::start_role(&["collector", "--listen", "127.0.0.1:0"], &data, &env))
        .collect();
    let eager_config = dir.path().join("eager.toml");
    std::fs::write(
        &eager_config,
        "[bus.kafka.properties]\n\"partition.assignment.strategy\" = \"range\"\n",
    )
    .unwrap();
    let stream_args: Vec<&str> = match rebalancing {
        Rebalancing::Cooperative => vec!["stream"],
        Rebalancing::Eager => vec!["stream", "--config", eager_config.to_str().unwrap()],
    };
    // The survivor serves /metrics and /ready, as Prometheus scrapes a
    // stream process.
    let listen = [stream_args.as_slice(), &["--listen", "127.0.0.1:0"]].concat();
    let survivor = Running::start_role(&listen, &data, &env);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let senders: Vec<_> = collectors
        .iter()
        .enumerate()
        .map(|(task, collector)| {
            let url = collector.base_url.clone();
            tokio::spawn(load(
                url,
                format!("{ids}{task}"),
                100,
                Retries::Keyed,
                stopped.clone(),
            ))
        })
        .collect();
    wait_for_split(
        &[&survivor],
        "the first member did not take all 6 partitions",
    )
    .await;
    let member = Running::spawn(&stream_args, &data, &env);
    wait_for_split(
        &[&survivor, &member],
        "the two members did not split the 6 partitions",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // kill -9 one member mid-load; its partitions move on.
    member.kill_hard();
    wait_for_split(
        &[&survivor],
        "the survivor did not take the killed member's partitions over",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    survivor_reports_every_partition(&survivor, group).await;
    let _ = stop.send(true);
    let mut acked = Vec::new();
    for (task, sender) in senders.into_iter().enumerate() {
        let by_this_client = sender.await.unwrap().acked;
        assert!(
            by_this_client.len() >= 500,
            "load client {task} had only {} records acknowledged",
            by_this_client.len()
        );
        acked.extend(by_this_client);
    }
    let wanted: BTreeSet<String> = acked.iter().cloned().collect();
    let counts = wait_for_lake_in(&data, &lake, ids, &wanted);
    if wanted.iter().any(|id| counts.get(id) != Some(&1)) {
        // Keep the lake and the logs to look into.
        eprintln!("kept for inspection: {:?}", dir.keep());
    }
    let logs = format!(
        "{}\n--- collectors:\n{}",
        survivor.log(),
        collectors
            .iter()
            .map(Running::log)
            .collect::<Vec<_>>()
            .join("\n---\n"),
    );
    assert_exactly_once(&wanted, &counts, &logs);
    eprintln!(
        "{} acknowledged records exactly once after a member was killed",
        wanted.len()
    );
    if let Some(delta_rows) = delta_rows {
        // The survivor publishes what the killed member left, too.
        let expected = json!([wanted.len(), wanted.len()]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let read = delta_rows();
            if read == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Delta log holds {read} of this test's records, the lake {expected}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(survivor.terminate().success());
    for collector in collectors {
        assert!(collector.terminate().success());
    }
}

/// What an outage test does to the broker under load. Both last longer
/// than the collector's delivery timeout (2 s), so requests are refused
/// with 503 meanwhile and retried.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `SIGSTOP` for 5 s: the broker keeps its data and connections but
    /// answers nothing, like a hung or unreachable host.
    Freeze,
    /// `kill -9`, 5 s down, then started again on its stored data (which
    /// takes the JVM another 10 s or so).
    Restart,
}

/// Runs `logpipe up` with Kafka transactions under load from two clients
/// that retry a 503 without an Idempotency-Key (as the seed's generator),
/// up to [`ATTEMPTS`] times (a third starts once the broker is out),
/// interrupts the broker, and checks what the collector's answers promise:
/// every record of a request finally answered 200 is in the lake exactly
/// once (also those acknowledged only on a retry), and no record of a
/// request finally refused is there at all (its transactions were
/// aborted, so the retries did not double anything either).
async fn outage_keeps_every_answer_true(broker: &mut Broker, outage: Outage, data: &Path) {
    let mut env = kafka_env(&broker.brokers, "outage");
    env.push(("LOGPIPE__BUS__KAFKA__DELIVERY_TIMEOUT", "2s"));
    env.push(TRANSACTIONS);
    let running = Running::start(data, &env);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let senders: Vec<_> = (0..2)
        .map(|task| {
            let task = format!("k{task}");
            let retries = Retries::Unkeyed(ATTEMPTS);
            tokio::spawn(load(
                running.base_url.clone(),
                task,
                500,
                retries,
                stopped.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A client that starts sending once the broker is gone: its first
    // request is answered 503 whatever the others' requests were doing
    // at that moment (queued behind a writer that waits for the broker,
    // withdrawn after the delivery timeout; or in a transaction of its
    // own whose records cannot be delivered, aborted). Without it, the
    // two clients' requests may both sit in transactions whose commit
    // was under way when the broker went, which wait and are then
    // answered 200: no 503 at all in the run.
    let late_client = |running: &Running| {
        tokio::spawn(load(
            running.base_url.clone(),
            "k2".into(),
            500,
            Retries::Unkeyed(ATTEMPTS),
            stopped.clone(),
        ))
    };
    let late = match outage {
        Outage::Freeze => {
            broker.signal("-STOP");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let late = late_client(&running);
            tokio::time::sleep(Duration::from_millis(4500)).await;
            broker.signal("-CONT");
            late
        }
        Outage::Restart => {
            broker.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let late = late_client(&running);
            tokio::time::sleep(Duration::from_millis(4500)).await;
            broker.restart();
            late
        }
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = stop.send(true);
    let mut outcomes = outcomes_of(senders).await;
    let late = late.await.unwrap();
    assert!(
        late.refused_once
            .iter()
            .any(|id| id.starts_with("k2-00000-")),
        "the first request sent while the broker was out ({outage:?}) was not answered 503"
    );
    outcomes.merge(late);
    // An acknowledged record missing behind an open transaction reads
    // differently from one never written: then the report adds the
    // stable offsets, the producers each partition tracks and what the
    // broker logged about transactions (it runs Kafka's tools, so only
    // when something is missing).
    let wanted: BTreeSet<String> = outcomes.acked.iter().cloned().collect();
    let counts = wait_for_lake(data, "k", &wanted);
    let report = match wanted.iter().all(|id| counts.contains_key(id)) {
        true => broker.stable_offsets("logs.raw"),
        false => broker.transactions_report("logs.raw", 3),
    };
    let logs = format!("{}\n--- broker:\n{}\n{report}", running.log(), broker.log());
    check_answers(data, "k", &outcomes, &logs);
    eprintln!(
        "{outage:?}: {} acknowledged, {} answered 503 at least once, {} finally refused and not in the lake",
        outcomes.acked.len(),
        outcomes.refused_once.len(),
        outcomes.failed.len(),
    );
    assert!(running.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_is_503_and_every_answer_holds() {
    let mut broker = Broker::start();
    if !broker.controllable() {
        eprintln!("LOGPIPE_TEST_KAFKA_BROKERS is an outside broker: skipping the outage test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    outage_keeps_every_answer_true(&mut broker, Outage::Freeze, &dir.path().join("data")).await;
}

/// The broker process is killed under load and started again on its
/// stored data, an outage longer than the delivery timeout (against an
/// outside broker this test is skipped, as the test cannot restart it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_unkeyed_retries_stores_each_answer_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start_persistent(dir.path()) else {
        eprintln!("LOGPIPE_TEST_KAFKA_BROKERS is an outside broker: skipping the restart test");
        return;
    };
    outage_keeps_every_answer_true(&mut broker, Outage::Restart, &dir.path().join("data")).await;
}

/// A collector-only process is a producer: it opens no lake and no bus
/// directory (a collector pod needs no volume), and its query API answers
/// over the lake without creating one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_process_creates_no_directory() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector-data");
    let env = kafka_env(&broker.brokers, "logpipe-collector-only");
    let collector = Running::start_role(&["collector", "--listen", "127.0.0.1:0"], &data, &env);
    let client = reqwest::Client::new();
    let batch = json!([log("collector-only-1", "billing", 1)]).to_string();
    let (status, answer) = post(
        &client,
        &format!("{}/api/collect/logs", collector.base_url),
        batch,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(
        &client,
        &format!("{}/api/query", collector.base_url),
        json!({"sql": "SELECT count(*) AS n FROM logs"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let created: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        created.is_empty(),
        "the collector created {created:?} in its data directory"
    );
    assert!(collector.terminate().success());
}

/// A replication factor above the broker count stops the start with both
/// numbers (the seed's InvalidReplicationFactor). On a broker the tests
/// share (`LOGPIPE_TEST_KAFKA_BROKERS`) another test may have created the
/// topics already; nothing is created then, and the start goes on with a
/// warning that names the difference, which is checked instead.
#[test]
fn a_replication_factor_above_the_broker_count_fails_with_the_count() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // Its own group: a member of another test's group would hold that
    // test's partitions while it runs.
    let mut env = kafka_env(&broker.brokers, "logpipe-replication");
    env.push(("LOGPIPE__BUS__KAFKA__REPLICATION_FACTOR", "5"));
    let mut up = Running::spawn(crate::common::UP, &dir.path().join("data"), &env);
    let warning = "the topic exists with a different replication factor";
    let status = up.wait_for_exit_or(
        Duration::from_secs(60),
        "nor warned that the topics differ",
        |up| up.log().contains(warning),
    );
    let log = up.log();
    let Some(status) = status else {
        assert!(
            log.lines()
                .any(|l| l.contains(warning) && l.contains("configured=5")),
            "the warning does not name the configured factor:\n{log}"
        );
        assert!(up.terminate().success());
        return;
    };
    assert!(!status.success(), "started anyway:\n{log}");
    let brokers = python(
        "import sys\nfrom confluent_kafka.admin import AdminClient\n\
         print(len(AdminClient({'bootstrap.servers': sys.argv[1]}).list_topics(timeout=10).brokers))",
        &[&broker.brokers],
    );
    let brokers = brokers.trim();
    assert!(
        log.contains("replication_factor is 5") && log.contains(&format!("has {brokers} broker")),
        "the error does not name the factor and the broker count ({brokers}):\n{log}"
    );
}

/// Topics that already exist are kept as they are (changing the partition
/// count would move keys between partitions), and each difference from the
/// configuration is logged. Client properties reach librdkafka unchanged:
/// one it does not know stops the start with its name in the error.
#[test]
fn existing_topics_are_kept_with_a_warning_and_properties_reach_librdkafka() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = kafka_env(&broker.brokers, "logpipe-settings");
    // A compacted alerts topic made by someone else (kept only if it did not
    // exist yet, as on a fresh broker).
    let made = python(
        "import sys\nfrom confluent_kafka.admin import AdminClient, NewTopic\n\
         admin = AdminClient({'bootstrap.servers': sys.argv[1]})\n\
         topic = NewTopic('alerts.realtime', 1, 1, config={'cleanup.policy': 'compact'})\n\
         try:\n    admin.create_topics([topic])['alerts.realtime'].result(10)\n    print('made')\n\
         except Exception as error:\n    print(error)",
        &[&broker.brokers],
    );
    // The first start creates the other topics (on an external broker they
    // may exist already, with the same defaults).
    let running = Running::start(&data, &env);
    let log = running.log();
    running.terminate();
    if made.trim() == "made" {
        assert!(
            log.contains("the topic is compacted") && log.contains("alerts.realtime"),
            "no warning that alerts.realtime is compacted:\n{log}"
        );
    }

    let mut changed = env.clone();
    changed.push(("LOGPIPE__TOPICS__LOGS__PARTITIONS", "5"));
    changed.push(("LOGPIPE__TOPICS__LOGS__RETENTION", "1h"));
    let running = Running::start(&data, &changed);
    let log = running.log();
    running.terminate();
    assert!(
        log.contains("different partition count")
            && log.contains("existing=3")
            && log.contains("configured=5"),
        "no warning names the partition counts:\n{log}"
    );
    assert!(
        log.contains("different retention")
            && log.contains("existing_ms=\"604800000\"")
            && log.contains("configured_ms=\"3600000\""),
        "no warning names the retentions:\n{log}"
    );
    let partitions = python(
        "import sys\nfrom confluent_kafka.admin import AdminClient\n\
         print(len(AdminClient({'bootstrap.servers': sys.argv[1]}).list_topics(timeout=10).topics['logs.raw'].partitions))",
        &[&broker.brokers],
    );
    assert_eq!(partitions.trim(), "3", "the existing topic was changed");

    let config = dir.path().join("logpipe.toml");
    std::fs::write(
        &config,
        "[bus.kafka.properties]\n\"no.such.property\" = \"1\"\n",
    )
    .unwrap();
    let stderr = crate::common::up_refused(&data, &["--config", config.to_str().unwrap()], &env);
    assert!(
        stderr.contains("no.such.property"),
        "the error does not name the property:\n{stderr}"
    );
}

/// Managed Kafka clusters require TLS and SASL (`SASL_SSL`). Against a
/// broker that requires SCRAM-SHA-512, behind TLS with a self-signed
/// certificate (`Broker::start_secured`), logpipe configured through
/// `[bus.kafka.properties]` creates its topics and the records it accepts
/// reach the lake. A wrong password and an unverifiable certificate each
/// stop the start with librdkafka's reason and the settings to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_over_tls_reaches_the_lake_and_each_refusal_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start_secured(dir.path(), "s3cret-pass") else {
        eprintln!("skipped: it configures the broker's users (LOGPIPE_TEST_KAFKA_BROKERS is set)");
        return;
    };
    // The password is never in the file: it comes from the environment
    // variable LOGPIPE_TEST_KAFKA_PASSWORD, or from a file (`password`
    // names the file's content).
    let config = |name: &str, password: Option<&str>, ca: bool| {
        let secret = match password {
            None => "{ env = \"LOGPIPE_TEST_KAFKA_PASSWORD\" }".to_string(),
            Some(password) => {
                let file = dir.path().join(format!("{name}.password"));
                std::fs::write(&file, format!("{password}\n")).unwrap();
                format!("{{ file = {:?} }}", file.to_str().unwrap())
            }
        };
        let mut text = "[bus.kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
             \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"logpipe\"\n"
            .to_string();
        if ca {
            let cert = dir.path().join("cert.pem");
            text.push_str(&format!(
                "\"ssl.ca.location\" = {:?}\n",
                cert.to_str().unwrap()
            ));
        }
        text.push_str(&format!(
            "[bus.kafka.secret_properties]\n\"sasl.password\" = {secret}\n"
        ));
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let data = dir.path().join("data");
    let without_password = kafka_env(&broker.brokers, "logpipe-secured");
    let mut env = without_password.clone();
    env.push(("LOGPIPE_TEST_KAFKA_PASSWORD", "s3cret-pass"));

    let good = config("secured.toml", None, true);
    let running = Running::start_with_config(&data, &env, &good);
    let client = reqwest::Client::new();
    let body: Vec<_> = (0..300u64)
        .map(|seq| log(&format!("tls-{seq:05}"), "api-gateway", seq))
        .collect();
    let (status, answer) = post(
        &client,
        &format!("{}/api/collect/logs", running.base_url),
        serde_json::to_string(&body).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}\n{}", running.log());
    let acked: BTreeSet<String> = (0..300u64).map(|seq| format!("tls-{seq:05}")).collect();
    let counts = wait_for_lake(&data, "tls-", &acked);
    let log = running.log();
    running.terminate();
    assert_exactly_once(&acked, &counts, &log);

    // The variable not set: the start names it.
    let stderr = crate::common::up_refused(
        &data,
        &["--config", good.to_str().unwrap()],
        &without_password,
    );
    assert!(
        stderr.contains("LOGPIPE_TEST_KAFKA_PASSWORD is not set")
            && stderr.contains("secret_properties"),
        "the error does not name the missing variable:\n{stderr}"
    );
    let wrong = config("wrong-password.toml", Some("not-the-password"), true);
    let stderr = crate::common::up_refused(&data, &["--config", wrong.to_str().unwrap()], &env);
    assert!(
        stderr.contains("SASL authentication error") && stderr.contains("sasl.password"),
        "the error does not say the password was refused and what to check:\n{stderr}"
    );
    let no_ca = config("no-ca.toml", Some("s3cret-pass"), false);
    let stderr = crate::common::up_refused(&data, &["--config", no_ca.to_str().unwrap()], &env);
    assert!(
        stderr.contains("certificate verify failed") && stderr.contains("ssl.ca.location"),
        "the error does not say the certificate was not verified and what to check:\n{stderr}"
    );

    // A user the cluster does not let use transactions: the start says so
    // and which setting to change, instead of failing the first request.
    broker.acl(&[
        "--add",
        "--deny-principal",
        "User:logpipe",
        "--operation",
        "Write",
        "--transactional-id",
        "logpipe",
        "--resource-pattern-type",
        "prefixed",
    ]);
    let mut with = env.clone();
    with.push(TRANSACTIONS);
    let stderr = crate::common::up_refused(&data, &["--config", good.to_str().unwrap()], &with);
    assert!(
        stderr.contains("do not let logpipe use transactions")
            && stderr.contains("bus.kafka.transactions = false"),
        "the error does not say transactions are refused and what to set:\n{stderr}"
    );
    let running = Running::start_with_config(&data, &env, &good);
    assert!(running.terminate().success());
}

/// Produces ARGV3 records `ARGV2-00000…` to logs.raw partition 0 in the
/// documented format, stamped 8 days old (past the default 7-day
/// retention) when ARGV4 is `old`; with `wait-low=N`, then waits until the
/// partition's oldest kept offset reaches N. Prints the watermarks.
const PRODUCE_TO_PARTITION_0: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
brokers, prefix, n, age = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
wait_low = int(sys.argv[5].split("=")[1]) if len(sys.argv) > 5 else None
# All n records in one batch, so each call adds one segment's worth: old
# records roll the segment on the next append, and retention must not
# delete records the lake is still reading.
producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                     "linger.ms": 1000, "batch.num.messages": 10000})
# timestamp 0: the producer stamps the current time
stamp = int((time.time() - 8 * 86400) * 1000) if age == "old" else 0
for i in range(n):
    record = {"timestamp": "2025-01-12T01:30:00Z", "level": "INFO", "service": "billing",
              "message": "produced to partition 0", "metadata": {"request_id": "%s-%05d" % (prefix, i)}}
    producer.produce("logs.raw", value=json.dumps(record), key="billing", partition=0, timestamp=stamp)
assert producer.flush(30) == 0, "records not delivered"
consumer = Consumer({"bootstrap.servers": brokers, "group.id": "watermarks"})
deadline = time.time() + 60
while True:
    low, high = consumer.get_watermark_offsets(TopicPartition("logs.raw", 0), timeout=10)
    if wait_low is None or low >= wait_low or time.time() > deadline:
        break
    time.sleep(0.2)
consumer.close()
print(low, high)
"#;

/// Retention deletes records the lake has not read (the job was down too
/// long): `lake.on_data_loss = "fail"` (the default) stops the job with the
/// partition and both offsets; `"skip_ahead"` continues from the oldest kept
/// record and counts the lost ones. The records are produced 8 days old
/// (the topics keep 7 days): the next record rolls their segment, and the
/// broker deletes it at its next retention check (every half second on the
/// test broker), so the lake's next fetch gets the broker's own
/// `OFFSET_OUT_OF_RANGE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_by_retention_before_the_lake_read_them_follow_on_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    if !broker.controllable() {
        eprintln!(
            "skipped: it needs a broker that checks retention often (LOGPIPE_TEST_KAFKA_BROKERS is set)"
        );
        return;
    }
    let data = dir.path().join("data");
    let brokers = broker.brokers.clone();
    let env = kafka_env(&brokers, "logpipe-retention");
    let ids = |prefix: &str, n: u64| -> BTreeSet<String> {
        (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
    };

    // The lake reads 40 records (offsets 0-39 of logs.raw/0).
    let running = Running::start(&data, &env);
    python(
        PRODUCE_TO_PARTITION_0,
        &[&broker.brokers, "read", "40", "old"],
    );
    let counts = wait_for_lake(&data, "read-", &ids("read", 40));
    let log = running.log();
    running.terminate();
    assert_exactly_once(&ids("read", 40), &counts, &log);

    // 30 more arrive while no job runs; retention then deletes all 70.
    python(
        PRODUCE_TO_PARTITION_0,
        &[&broker.brokers, "lost", "30", "old"],
    );
    let marks = python(
        PRODUCE_TO_PARTITION_0,
        &[&broker.brokers, "kept", "20", "now", "wait-low=70"],
    );
    assert_eq!(
        marks.trim(),
        "70 90",
        "retention did not delete offsets 0-69"
    );

    let mut failing = Running::spawn(crate::common::UP, &data, &env);
    let status = failing.wait_for_exit(Duration::from_secs(60), "on lost records");
    let log = failing.log();
    assert!(!status.success(), "exited successfully:\n{log}");
    assert!(
        log.contains("offset 40 of logs.raw/0 is gone: the oldest kept offset is 70")
            && log.contains("lake.on_data_loss"),
        "the error does not name the partition, both offsets and the setting:\n{log}"
    );
    assert!(
        lake_counts(&data, "kept-").is_empty(),
        "records after the gap were written although the job stopped"
    );

    let mut skipping = env.clone();
    skipping.push(("LOGPIPE__LAKE__ON_DATA_LOSS", "skip_ahead"));
    let running = Running::start(&data, &skipping);
    let counts = wait_for_lake(&data, "kept-", &ids("kept", 20));
    let metrics = running.metrics().await;
    let log = running.log();
    running.terminate();
    assert_exactly_once(&ids("kept", 20), &counts, &log);
    assert!(
        lake_counts(&data, "lost-").is_empty(),
        "deleted records in the lake?"
    );
    assert!(
        metrics.contains("logpipe_lake_records_lost_total{table=\"logs\"} 30"),
        "the 30 lost records are not counted:\n{}",
        metrics
            .lines()
            .filter(|line| line.contains("lost"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A broker that advertises an address this host cannot reach (behind NAT,
/// a container's inner address, a port nobody forwarded) stops the start at
/// once with the broker and the address, instead of requests that time out
/// later (the seed's unreachable `advertised.listeners`).
#[test]
fn an_advertised_address_this_host_cannot_reach_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1: nothing listens there.
    let Some(broker) =
        Broker::start_with(dir.path(), "advertised.listeners=PLAINTEXT://127.0.0.1:1\n")
    else {
        eprintln!("skipped: it configures the broker (LOGPIPE_TEST_KAFKA_BROKERS is set)");
        return;
    };
    let env = kafka_env(&broker.brokers, "logpipe-advertised");
    let started = Instant::now();
    let stderr = crate::common::up_refused(&dir.path().join("data"), &[], &env);
    assert!(
        stderr.contains("broker 1 advertises 127.0.0.1:1")
            && stderr.contains("advertised.listeners"),
        "the error does not name the broker, its address and the setting:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the start took {:?} to fail",
        started.elapsed()
    );
}

/// Deletes `logs.raw` and waits until the broker no longer lists it.
const DELETE_LOGS_TOPIC: &str = r#"
import sys, time
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
for future in admin.delete_topics(["logs.raw"]).values():
    future.result(30)
deadline = time.time() + 60
while "logs.raw" in admin.list_topics(timeout=10).topics:
    assert time.time() < deadline, "logs.raw is still listed"
    time.sleep(0.2)
print("deleted")
"#;

/// A topic deleted and created again behind the lake's back starts empty,
/// below offsets the lake already committed: the job stops with
/// `OffsetBeyondEnd` whatever `lake.on_data_loss` says, since reading on
/// could skip or double records (the broker lost what the lake holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_behind_the_lakes_back_stops_the_job_past_its_end() {
    let broker = Broker::start();
    if !broker.controllable() {
        eprintln!("skipped: it deletes a topic (LOGPIPE_TEST_KAFKA_BROKERS is set)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut env = kafka_env(&broker.brokers, "logpipe-recreated");
    env.push(("LOGPIPE__LAKE__ON_DATA_LOSS", "skip_ahead"));
    let running = Running::start(&data, &env);
    let ids: BTreeSet<String> = (0..300u64).map(|i| format!("gone-{i:05}")).collect();
    let body: Vec<_> = (0..300u64)
        .map(|i| log(&format!("gone-{i:05}"), ["a", "b", "c"][i as usize % 3], i))
        .collect();
    let client = reqwest::Client::new();
    let (status, answer) = post(
        &client,
        &format!("{}/api/collect/logs", running.base_url),
        serde_json::to_string(&body).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let counts = wait_for_lake(&data, "gone-", &ids);
    let log = running.log();
    assert!(running.terminate().success());
    assert_exactly_once(&ids, &counts, &log);

    assert_eq!(
        python(DELETE_LOGS_TOPIC, &[&broker.brokers]).trim(),
        "deleted"
    );
    // logpipe creates the topic again at start, empty.
    let mut failing = Running::spawn(crate::common::UP, &data, &env);
    let status = failing.wait_for_exit(Duration::from_secs(60), "on a topic behind the lake");
    let log = failing.log();
    assert!(!status.success(), "exited successfully:\n{log}");
    assert!(
        log.contains("is past the end of the log") && log.contains("logs.raw"),
        "the error does not say the lake is past the end of logs.raw:\n{log}"
    );
}

/// Three brokers, replication factor 3, `min.insync.replicas` 2: the leader
/// of `logs.raw` partition 0 is killed with `kill -9` under load, and later
/// every broker is restarted in turn (a rolling restart). The collector
/// keeps acknowledging or answers 503 and the load client retries; the
/// killed broker rejoins and catches up; the lake ends with every
/// acknowledged record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_and_a_rolling_restart_on_three_brokers_keep_every_answer_true() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start_cluster(dir.path()) else {
        eprintln!("skipped: it kills brokers (LOGPIPE_TEST_KAFKA_BROKERS is set)");
        return;
    };
    let data = dir.path().join("data");
    let brokers = broker.brokers.clone();
    let mut env = kafka_env(&brokers, "logpipe-failover");
    env.extend([
        ("LOGPIPE__BUS__KAFKA__REPLICATION_FACTOR", "3"),
        ("LOGPIPE__BUS__KAFKA__MIN_INSYNC_REPLICAS", "2"),
        ("LOGPIPE__BUS__KAFKA__DELIVERY_TIMEOUT", "10s"),
        TRANSACTIONS,
    ]);
    let running = Running::start(&data, &env);
    assert_eq!(
        broker.in_sync("logs.raw"),
        3,
        "logs.raw is not on every broker"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let senders: Vec<_> = (0..2)
        .map(|task| {
            tokio::spawn(load(
                running.base_url.clone(),
                format!("f{task}"),
                500,
                Retries::Unkeyed(ATTEMPTS),
                stopped.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let leader = broker.leader("logs.raw", 0);
    broker.kill_node(leader);
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.start_node(leader);
    wait_for_in_sync(&broker, 3, "the killed broker did not catch up");

    for node in 1..=3 {
        broker.stop_node(node);
        broker.start_node(node);
        wait_for_in_sync(&broker, 3, "a restarted broker did not catch up");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    let outcomes = outcomes_of(senders).await;
    let logs = format!("{}\n--- brokers:\n{}", running.log(), broker.log());
    check_answers(&data, "f", &outcomes, &logs);
    eprintln!(
        "three brokers: {} acknowledged, {} answered 503 at least once, {} finally refused and not in the lake",
        outcomes.acked.len(),
        outcomes.refused_once.len(),
        outcomes.failed.len(),
    );
    assert!(running.terminate().success());

    // With a broker down and a topic that needs every replica in sync, a
    // start names the partitions whose writes will be refused.
    broker.alter_topic("logs.raw", "min.insync.replicas=3");
    let leader = broker.leader("logs.raw", 0);
    broker.kill_node(leader);
    wait_for_in_sync(&broker, 2, "a partition kept 3 replicas in sync");
    let collector = Running::start_role(&["collector", "--listen", "127.0.0.1:0"], &data, &env);
    let log = collector.log();
    assert!(
        log.contains("fewer replicas are in sync than min.insync.replicas")
            && log.contains("logs.raw"),
        "no warning about the partitions short of in-sync replicas:\n{log}"
    );
    assert!(collector.terminate().success());
}

/// Waits up to 90 s until the partitions of `logs.raw` have at least (and
/// the fewest exactly) `replicas` in sync.
fn wait_for_in_sync(broker: &Broker, replicas: usize, failure: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while broker.in_sync("logs.raw") != replicas {
        assert!(Instant::now() < deadline, "{failure}:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether `member`'s newest claims line says it runs streaming job `job`.
fn runs_job(member: &Running, job: &str) -> bool {
    member
        .log()
        .lines()
        .rev()
        .find(|line| {
            line.contains("streaming SQL jobs this process runs now")
                || line.contains("no streaming SQL job is this process's now")
                || line.contains("claims move away")
        })
        .is_some_and(|line| line.contains("runs now") && line.contains(&format!("\"{job}\"")))
}

/// Streaming SQL jobs on Kafka run in two `logpipe stream --jobs raw,sql`
/// processes, each job in the one holding its claim. The process running
/// the events job is killed with kill -9 mid-load; the other takes the
/// claim over after the session timeout and resumes the job from its last
/// commit. Its rows then equal the same aggregation run as a batch query
/// over the lake, window by window, none missing or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_sql_job_moves_to_the_survivor_of_a_kill_and_stays_exactly_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    // The load sends event time 40 times faster than the clock, and Kafka
    // partitions arrive a producer batch apart: a lateness of 20 s of event
    // time is half a second here (2 s is plenty at the real rate).
    std::fs::write(
        jobs.join("activity.sql"),
        crate::jobs::ACTIVITY.replace("lateness: 2s", "lateness: 20s"),
    )
    .unwrap();
    std::fs::write(
        jobs.join("levels.sql"),
        "-- kind: stream\n-- lateness: 2s\n-- idle_close: 2s\n\
         SELECT window_start, level, count(*) AS n FROM logs\n\
         GROUP BY tumble(timestamp, INTERVAL '10 seconds'), level\n",
    )
    .unwrap();
    let mut env = kafka_env(&broker.brokers, "sql-claims");
    env.push(("LOGPIPE__JOBS__DIR", jobs.to_str().unwrap()));
    let collector = Running::start_role(&["collector", "--listen", "127.0.0.1:0"], &data, &env);
    let stream = ["stream", "--jobs", "raw,sql", "--listen", "127.0.0.1:0"];
    let first = Running::start_role(&stream, &data, &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !runs_job(&first, "activity") {
        assert!(
            Instant::now() < deadline,
            "no process claimed the jobs:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = Running::start_role(&stream, &data, &env);
    // The group hands the new member half of the claims (which half is
    // the assignor's choice).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !second.log().contains("Kafka group") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let client = reqwest::Client::new();
    let seconds = 200;
    let (mut first, mut second) = (Some(first), Some(second));
    for s in 0..seconds {
        crate::jobs::send_events_second(&client, &collector.base_url, s).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
        if s == 100 {
            // Let the job take steps, then kill whoever runs it.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let first_runs = runs_job(first.as_ref().unwrap(), "activity");
            let second_runs = runs_job(second.as_ref().unwrap(), "activity");
            assert!(
                first_runs != second_runs,
                "one process must run the job (first: {first_runs}, second: {second_runs}):\n{}\n---\n{}",
                first.as_ref().unwrap().log(),
                second.as_ref().unwrap().log()
            );
            let victim = if first_runs {
                first.take()
            } else {
                second.take()
            }
            .unwrap();
            eprintln!(
                "killing the {} process, which runs the events job",
                if first_runs { "first" } else { "second" }
            );
            victim.kill_hard();
        }
    }
    let survivor = first.or(second).unwrap();
    let total = seconds as u64 * 12;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = crate::jobs::sql_with_jobs(
            &data,
            &jobs,
            "SELECT CAST(coalesce(sum(events), 0) AS BIGINT) AS n FROM activity",
        );
        if rows[0]["n"].as_u64() == Some(total) {
            break;
        }
        if Instant::now() >= deadline {
            let metrics = survivor.metrics().await;
            panic!(
                "the activity table holds {} of {total} events:\n{}\n{metrics}",
                rows[0]["n"],
                survivor.log(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        runs_job(&survivor, "activity") && runs_job(&survivor, "levels"),
        "{}",
        survivor.log()
    );
    assert!(survivor.terminate().success());
    assert!(collector.terminate().success());
    crate::jobs::assert_activity_equals_the_batch_aggregation(&data, &jobs, 20);
}
