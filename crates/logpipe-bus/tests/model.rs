//! Model test: random operation sequences against the embedded bus and a
//! plain in-memory model (a Vec of records per partition). After every step
//! the bus must read back exactly what the model holds, including after
//! crashes that leave torn, never-acknowledged bytes at a segment's tail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use logpipe_bus::{Bus, BusRecord, EmbeddedBus, TopicSpec};
use logpipe_config::{EmbeddedBusConfig, FsyncPolicy};

const TOPIC: &str = "model.topic";
const PARTITIONS: u32 = 3;

fn spec() -> TopicSpec {
    TopicSpec {
        name: TOPIC.to_string(),
        partitions: PARTITIONS,
        retention: Duration::from_secs(3600),
        retention_bytes: 0,
        replication_factor: None,
        min_insync_replicas: None,
    }
}

async fn open(dir: &Path, options: &EmbeddedBusConfig) -> EmbeddedBus {
    let bus = EmbeddedBus::open(dir, options).unwrap();
    bus.create_topics(&[spec()]).await.unwrap();
    bus
}

/// Per partition: (key, value, encoded headers) of each record in order.
type Model = BTreeMap<u32, Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>>;

/// With interval fsync, acknowledged records become visible at the next
/// periodic sync; wait (bounded) until the bus shows `total` records.
async fn wait_visible(bus: &EmbeddedBus, total: u64) {
    for _ in 0..400 {
        if bus.end_offsets(TOPIC).unwrap().iter().sum::<u64>() >= total {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("records did not become visible within 2 s");
}

fn model_total(model: &Model) -> u64 {
    model.values().map(|v| v.len() as u64).sum()
}

async fn check(bus: &EmbeddedBus, model: &Model) {
    wait_visible(bus, model_total(model)).await;
    for partition in 0..PARTITIONS {
        let expected = model.get(&partition).cloned().unwrap_or_default();
        assert_eq!(
            bus.end_offsets(TOPIC).unwrap()[partition as usize],
            expected.len() as u64,
            "end offset of partition {partition}"
        );
        // Read from a random-ish start to exercise the sparse index.
        for start in [0, expected.len() / 3, expected.len() / 2, expected.len()] {
            let mut got = Vec::new();
            let mut offset = start as u64;
            loop {
                let records = bus.read(TOPIC, partition, offset, 1000).unwrap();
                if records.is_empty() {
                    break;
                }
                for record in &records {
                    assert_eq!(record.offset, offset, "offsets are dense and ordered");
                    offset += 1;
                    got.push((
                        record.key.to_vec(),
                        record.value.to_vec(),
                        record.headers.encoded().to_vec(),
                    ));
                }
            }
            assert_eq!(got, expected[start..], "partition {partition} from {start}");
        }
    }
}

/// Simulates a crash in the middle of a write: garbage or a half batch at
/// the tail of a partition's active segment.
fn tear_tail(dir: &Path, rng: &mut fastrand::Rng) {
    let partition = rng.u32(0..PARTITIONS);
    let partition_dir = dir.join(TOPIC).join(partition.to_string());
    let mut segments: Vec<_> = std::fs::read_dir(&partition_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let active = segments.last().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(active)
        .unwrap();
    let garbage: Vec<u8> = match rng.u8(0..3) {
        // A plausible header claiming more bytes than follow.
        0 => {
            let mut bytes = vec![200, 0, 0, 0, 1, 2, 3, 4, 1];
            bytes.extend(std::iter::repeat_n(7u8, rng.usize(0..40)));
            bytes
        }
        // Random bytes.
        1 => (0..rng.usize(1..100)).map(|_| rng.u8(..)).collect(),
        // A single byte.
        _ => vec![0],
    };
    file.write_all(&garbage).unwrap();
}

async fn run_model(seed: u64, steps: usize, options: EmbeddedBusConfig) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut bus = open(dir.path(), &options).await;
    let mut model: Model = BTreeMap::new();
    for step in 0..steps {
        match rng.u8(0..10) {
            0..=5 => {
                let count = rng.usize(1..60);
                let records: Vec<BusRecord> = (0..count)
                    .map(|i| {
                        let mut record = BusRecord::new(
                            format!("key-{}", rng.u8(0..12)),
                            format!("v{step}-{i}-{}", "x".repeat(rng.usize(0..300))),
                        );
                        // Some records carry headers, some none.
                        let value = vec![rng.u8(..); rng.usize(0..30)];
                        record.headers = match rng.u8(0..3) {
                            0 => logpipe_bus::Headers::default(),
                            1 => [("h", &value[..])].into_iter().collect(),
                            _ => [("h", &value[..]), ("empty", &b""[..])]
                                .into_iter()
                                .collect(),
                        };
                        record
                    })
                    .collect();
                bus.append(TOPIC, records.clone()).await.unwrap();
                for record in records {
                    let partition =
                        logpipe_core::partition::partition_for_key(&record.key, PARTITIONS);
                    model.entry(partition).or_default().push((
                        record.key,
                        record.value,
                        record.headers.encoded().to_vec(),
                    ));
                }
            }
            6 => {
                // Concurrent appends share a group commit; order within each
                // request must hold, and every acknowledged record be there.
                let mut tasks = Vec::new();
                for task in 0..4 {
                    let bus = bus.clone();
                    let key = format!("concurrent-{task}").into_bytes();
                    let records: Vec<BusRecord> = (0..20)
                        .map(|i| {
                            BusRecord::new(key.clone(), format!("c{step}-{task}-{i}").into_bytes())
                        })
                        .collect();
                    tasks.push(tokio::spawn(async move {
                        bus.append(TOPIC, records.clone()).await.unwrap();
                        records
                    }));
                }
                // Acknowledgement order is not submission order; rebuild the
                // model from what the bus reports per key instead.
                let mut appended = Vec::new();
                for task in tasks {
                    appended.push(task.await.unwrap());
                }
                wait_visible(&bus, model_total(&model) + 80).await;
                for partition in 0..PARTITIONS {
                    let before = model.get(&partition).map(Vec::len).unwrap_or(0);
                    let read = bus.read(TOPIC, partition, before as u64, 10_000).unwrap();
                    let entry = model.entry(partition).or_default();
                    for record in read {
                        entry.push((
                            record.key.to_vec(),
                            record.value.to_vec(),
                            record.headers.encoded().to_vec(),
                        ));
                    }
                }
                for records in appended {
                    let partition =
                        logpipe_core::partition::partition_for_key(&records[0].key, PARTITIONS);
                    let in_partition: Vec<_> = model[&partition]
                        .iter()
                        .filter(|(k, _, _)| *k == records[0].key)
                        .map(|(_, v, _)| v.clone())
                        .collect();
                    let expected: Vec<_> = records.iter().map(|r| r.value.clone()).collect();
                    assert!(in_partition.ends_with(&expected), "per-key order kept");
                }
            }
            7 => {
                // Clean restart.
                bus.shutdown();
                drop(bus);
                bus = open(dir.path(), &options).await;
            }
            8 => {
                // Crash with a torn tail, then restart.
                bus.shutdown();
                drop(bus);
                tear_tail(dir.path(), &mut rng);
                bus = open(dir.path(), &options).await;
            }
            _ => check(&bus, &model).await,
        }
    }
    check(&bus, &model).await;
    bus.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_matches_model_with_fsync_always() {
    for seed in 0..6 {
        run_model(
            seed,
            120,
            EmbeddedBusConfig {
                fsync: FsyncPolicy::Always,
                // Tiny segments: rolling and cross-segment reads happen often.
                segment_bytes: 4 * 1024,
                max_pending_appends: 64,
                ..EmbeddedBusConfig::default()
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_matches_model_with_interval_fsync() {
    for seed in 100..103 {
        run_model(
            seed,
            80,
            EmbeddedBusConfig {
                fsync: FsyncPolicy::Interval,
                fsync_interval: Duration::from_millis(5),
                segment_bytes: 16 * 1024,
                max_pending_appends: 64,
                ..EmbeddedBusConfig::default()
            },
        )
        .await;
    }
}

#[tokio::test]
async fn retention_deletes_sealed_segments_and_reports_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedBusConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 2 * 1024,
        max_pending_appends: 8,
        ..EmbeddedBusConfig::default()
    };
    let bus = EmbeddedBus::open(dir.path(), &options).unwrap();
    let mut topic = spec();
    topic.partitions = 1;
    topic.retention_bytes = 8 * 1024;
    bus.create_topics(&[topic]).await.unwrap();
    for i in 0..100 {
        let record = BusRecord::new(b"k".to_vec(), vec![b'a' + (i % 26) as u8; 500]);
        bus.append(TOPIC, vec![record]).await.unwrap();
    }
    bus.enforce_retention().unwrap();
    let mut consumer = bus.consumer("g", &[TOPIC]).await.unwrap();
    let start = consumer.start_offsets(TOPIC).unwrap()[0];
    assert!(start > 0, "old segments were deleted");
    assert_eq!(bus.end_offsets(TOPIC).unwrap()[0], 100);
    let error = bus.read(TOPIC, 0, 0, 10).unwrap_err();
    assert!(
        error.to_string().contains("gone") && error.to_string().contains(&start.to_string()),
        "{error}"
    );
    // A consumer without a committed position starts at the oldest kept record.
    let polled = consumer
        .poll(1000, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(polled.first().unwrap().offset, start);
    assert_eq!(polled.last().unwrap().offset, 99);
    bus.shutdown();
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(dir.path(), &EmbeddedBusConfig::default()).unwrap();
    let second = EmbeddedBus::open(dir.path(), &EmbeddedBusConfig::default());
    let Err(error) = second else {
        panic!("second open must fail")
    };
    assert!(
        error
            .to_string()
            .contains("in use by another logpipe process"),
        "{error}"
    );
    bus.shutdown();
}

#[tokio::test]
async fn consumer_commits_survive_restart_and_poll_waits_for_data() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path(), &EmbeddedBusConfig::default()).await;
    let mut consumer = bus.consumer("lake", &[TOPIC]).await.unwrap();
    assert!(
        consumer
            .poll(10, Duration::from_millis(20))
            .await
            .unwrap()
            .is_empty()
    );
    let producer = bus.clone();
    let append = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let records = (0..5)
            .map(|i| BusRecord::new(b"same".to_vec(), vec![i]))
            .collect();
        producer.append(TOPIC, records).await.unwrap();
    });
    let polled = consumer.poll(10, Duration::from_secs(5)).await.unwrap();
    append.await.unwrap();
    assert_eq!(polled.len(), 5, "poll woke up when records arrived");
    let partition = polled[0].partition;
    consumer
        .commit(&[(
            logpipe_bus::TopicPartition {
                topic: TOPIC.into(),
                partition,
            },
            3,
        )])
        .await
        .unwrap();
    drop(consumer);
    bus.shutdown();
    drop(bus);
    let bus = open(dir.path(), &EmbeddedBusConfig::default()).await;
    let mut consumer = bus.consumer("lake", &[TOPIC]).await.unwrap();
    let polled = consumer.poll(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(
        polled.iter().map(|r| r.value[0]).collect::<Vec<_>>(),
        vec![3, 4]
    );
    bus.shutdown();
}

/// Damage in the middle of the active segment, with intact batches after
/// it, is not a crash's torn tail: the bus refuses to open rather than cut
/// acknowledged records, naming the file, the byte and the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_intact_records_stops_the_open_instead_of_truncating() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedBusConfig::default();
    let bus = open(dir.path(), &options).await;
    for n in 0..200u32 {
        let record = BusRecord::new(b"one-key".to_vec(), format!("value {n:04}").into_bytes());
        bus.append(TOPIC, vec![record]).await.unwrap();
    }
    bus.shutdown();
    drop(bus);
    let partition = logpipe_core::partition::partition_for_key(b"one-key", PARTITIONS);
    let segment = dir
        .path()
        .join(TOPIC)
        .join(partition.to_string())
        .join(format!("{:020}.log", 0));
    let length = std::fs::metadata(&segment).unwrap().len();
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.write_all_at(b"DAMAGED!", length / 2).unwrap();
    }
    // The partitions' files are opened with the topics.
    let message = match EmbeddedBus::open(dir.path(), &options) {
        Err(error) => error.to_string(),
        Ok(bus) => {
            let error = bus.create_topics(&[spec()]).await.err();
            bus.shutdown();
            error
                .expect("opening the damaged partition must fail")
                .to_string()
        }
    };
    assert!(
        message.contains(&segment.display().to_string())
            && message.contains("intact records follow")
            && message.contains("truncate -s"),
        "{message}"
    );
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        length,
        "nothing was cut"
    );

    // Giving the records up as the message says: the bus opens, and a
    // reader that had read past the cut fails there instead of waiting and
    // then skipping the records appended next under the same offsets.
    let cut: u64 = message
        .split("truncate -s ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let bus = open(dir.path(), &options).await;
    let mut reader = bus.reader("lake", &[TOPIC]).await.unwrap();
    reader.seek(TOPIC, partition, 200).unwrap();
    bus.append(
        TOPIC,
        vec![BusRecord::new(b"one-key".to_vec(), b"new".to_vec())],
    )
    .await
    .unwrap();
    let error = reader
        .poll(100, Duration::from_millis(200))
        .await
        .expect_err("a read past the end must fail");
    assert!(
        error.to_string().contains("past the end of the log"),
        "{error}"
    );
    bus.shutdown();
}
