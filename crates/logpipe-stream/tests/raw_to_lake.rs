//! The raw→lake job against the real embedded bus and a local lake.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use logpipe_bus::{Bus, BusRecord, EmbeddedBus};
use logpipe_config::Compression;
use logpipe_core::job::job_metrics;
use logpipe_lake::Lake;
use logpipe_stream::raw::metrics::raw_metrics;
use logpipe_stream::{RawToLake, RawToLakeOptions};
use logpipe_test_utils::{FaultyBus, embedded_bus};
use object_store::ObjectStoreExt;
use object_store::path::Path as StorePath;

fn log_json(i: usize, hour: u64) -> Vec<u8> {
    // Spread over two event hours so files land in two partitions.
    let timestamp = 1_736_640_000 + hour * 3600 + (i % 3000) as u64;
    format!(
        r#"{{"timestamp": {timestamp}.25, "level": "INFO", "service": "svc-{}", "message": "m{i}", "metadata": {{"request_id": "r{i}"}}}}"#,
        i % 5
    )
    .into_bytes()
}

/// A local lake and an embedded bus with the raw topics, in a temporary
/// directory (kept while the returned guard lives).
async fn lake_and_bus() -> (tempfile::TempDir, Lake, EmbeddedBus) {
    let dir = tempfile::tempdir().unwrap();
    let store = logpipe_lake::resolve(dir.path().join("lake").to_str().unwrap()).unwrap();
    let lake = Lake::open(&store, Compression::Zstd);
    let bus = embedded_bus(&dir.path().join("bus")).await;
    (dir, lake, bus)
}

async fn run_job_until_committed(bus: Arc<dyn Bus>, lake: Lake, expected_rows: u64) {
    run_job_with(bus, lake, expected_rows, RawToLakeOptions::default()).await;
}

/// Runs the job with `options` (a short flush interval) until the lake has
/// `expected_rows` rows, then stops it.
async fn run_job_with(
    bus: Arc<dyn Bus>,
    lake: Lake,
    expected_rows: u64,
    options: RawToLakeOptions,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let options = RawToLakeOptions {
        flush_interval: Duration::from_millis(50),
        ..options
    };
    let job = tokio::spawn(RawToLake::new(bus, lake.clone(), options).run(stopped));
    for _ in 0..200 {
        if rows_in_lake(&lake).await.values().sum::<u64>() >= expected_rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.send(true).unwrap();
    job.await.unwrap().unwrap();
}

/// A crash after a commit record but before its files: removes the files.
async fn delete_files(lake: &Lake, commit: &logpipe_lake::CommitRecord) {
    assert!(!commit.files.is_empty());
    for file in &commit.files {
        lake.store()
            .delete(&StorePath::from(file.path.as_str()))
            .await
            .unwrap();
    }
}

/// Rows per request id, read back from every Parquet file in the lake.
async fn rows_in_lake(lake: &Lake) -> BTreeMap<String, u64> {
    use arrow::array::AsArray;
    use futures::TryStreamExt;
    let mut counts = BTreeMap::new();
    let files: Vec<_> = lake
        .store()
        .list(Some(&StorePath::from("logs/raw")))
        .try_collect()
        .await
        .unwrap();
    for meta in files
        .iter()
        .filter(|m| m.location.extension() == Some("parquet"))
    {
        let bytes = lake
            .store()
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch
                .column_by_name("request_id")
                .unwrap()
                .as_string::<i32>();
            for id in ids.iter().flatten() {
                *counts.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_commit_is_rolled_forward_exactly_once() {
    let (_dir, lake, bus) = lake_and_bus().await;
    let shared: Arc<dyn Bus> = Arc::new(bus.clone());

    let first: Vec<BusRecord> = (0..1000)
        .map(|i| {
            BusRecord::new(
                format!("svc-{}", i % 5).into_bytes(),
                log_json(i, (i % 2) as u64),
            )
        })
        .collect();
    bus.append("logs.raw", first).await.unwrap();
    // One invalid record from a "foreign producer": counted, skipped, never fatal.
    bus.append(
        "logs.raw",
        vec![BusRecord::new(
            b"x".to_vec(),
            b"{\"not\": \"a log\"}".to_vec(),
        )],
    )
    .await
    .unwrap();
    run_job_until_committed(shared.clone(), lake.clone(), 1000).await;
    let counts = rows_in_lake(&lake).await;
    assert_eq!(counts.len(), 1000);
    assert!(counts.values().all(|c| *c == 1));

    // Simulate a crash after the commit record but before its files: remove
    // the files of the newest commit.
    let latest = lake.latest_commit("raw").await.unwrap().unwrap();
    delete_files(&lake, &latest).await;
    assert!(rows_in_lake(&lake).await.len() < 1000);

    // More records arrive; the restarted job first completes the interrupted
    // commit, then continues after it.
    let second: Vec<BusRecord> = (1000..1500)
        .map(|i| BusRecord::new(format!("svc-{}", i % 5).into_bytes(), log_json(i, 0)))
        .collect();
    bus.append("logs.raw", second).await.unwrap();
    run_job_until_committed(shared, lake.clone(), 1500).await;
    let counts = rows_in_lake(&lake).await;
    assert_eq!(counts.len(), 1500, "every record is in the lake");
    let doubled: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        doubled.is_empty(),
        "records written more than once: {doubled:?}"
    );
    assert!(lake.missing_files(&latest).await.unwrap().is_empty());
    bus.shutdown();
}

/// Records in the collector's binary form and in JSON land alike, each
/// once; a damaged binary value is skipped without stopping the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_json_records_reach_the_lake_alike() {
    use logpipe_core::record::{Record, RecordKind, ValidationLimits, binary};
    let (_dir, lake, bus) = lake_and_bus().await;
    let shared: Arc<dyn Bus> = Arc::new(bus.clone());
    let limits = ValidationLimits::now();
    let records: Vec<BusRecord> = (0..1000)
        .map(|i| {
            let json = log_json(i, (i % 2) as u64);
            let value = if i % 2 == 0 {
                json
            } else {
                let text = std::str::from_utf8(&json).unwrap();
                binary::encode(&Record::parse(RecordKind::Log, text, &limits).unwrap())
            };
            BusRecord::new(format!("svc-{}", i % 5).into_bytes(), value)
        })
        .collect();
    bus.append("logs.raw", records).await.unwrap();
    let mut damaged = binary::encode(
        &Record::parse(
            RecordKind::Log,
            std::str::from_utf8(&log_json(5000, 0)).unwrap(),
            &limits,
        )
        .unwrap(),
    );
    damaged.truncate(damaged.len() - 1);
    bus.append("logs.raw", vec![BusRecord::new(b"x".to_vec(), damaged)])
        .await
        .unwrap();
    run_job_until_committed(shared, lake.clone(), 1000).await;
    // Every record once; the damaged one (r5000) skipped, not fatal.
    let counts = rows_in_lake(&lake).await;
    let expected: BTreeMap<String, u64> = (0..1000).map(|i| (format!("r{i}"), 1)).collect();
    assert_eq!(counts, expected);
    bus.shutdown();
}

/// Two jobs that both believe they own every partition (a group member that
/// lost its partitions without noticing, a "zombie"): each commits to the
/// same chain, so whoever commits second finds its step taken, drops it and
/// re-reads from the newest commit. Every record lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_member_is_fenced_and_nothing_is_doubled() {
    let (_dir, lake, bus) = lake_and_bus().await;
    let shared: Arc<dyn Bus> = Arc::new(bus.clone());
    let fenced_before = raw_metrics().steps_fenced.get();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let options = RawToLakeOptions {
        flush_interval: Duration::from_millis(20),
        ..RawToLakeOptions::default()
    };
    let jobs: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(
                RawToLake::new(shared.clone(), lake.clone(), options.clone()).run(stopped.clone()),
            )
        })
        .collect();
    let total = 6000;
    for wave in 0..30 {
        let records: Vec<BusRecord> = (wave * 200..(wave + 1) * 200)
            .map(|i| {
                BusRecord::new(
                    format!("svc-{}", i % 5).into_bytes(),
                    log_json(i, (i % 2) as u64),
                )
            })
            .collect();
        bus.append("logs.raw", records).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for _ in 0..400 {
        if rows_in_lake(&lake).await.values().sum::<u64>() >= total as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.send(true).unwrap();
    for job in jobs {
        job.await.unwrap().unwrap();
    }

    let fenced = raw_metrics().steps_fenced.get() - fenced_before;
    let counts = rows_in_lake(&lake).await;
    assert_eq!(counts.len(), total, "every record is in the lake");
    let doubled: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        doubled.is_empty(),
        "records written more than once: {doubled:?}"
    );
    assert!(
        fenced > 0,
        "the second committer of a step was never fenced"
    );
    bus.shutdown();
}

/// Log record `i` (key `svc-{i % 5}`), with the id `(request, i)` when
/// `request` is given, as the collector writes it for a request sent with an
/// `Idempotency-Key`.
fn record(i: usize, request: Option<u128>) -> BusRecord {
    use logpipe_core::dedup::{ENCODED_LEN, HEADER, RecordId};
    let mut out = BusRecord::new(format!("svc-{}", i % 5).into_bytes(), log_json(i, 0));
    if let Some(request) = request {
        let id = RecordId {
            request,
            index: i as u32,
        };
        out.headers = logpipe_bus::Headers::single(HEADER, ENCODED_LEN, |block| {
            block.extend_from_slice(&id.encode())
        });
    }
    out
}

fn records(range: impl IntoIterator<Item = usize>, request: Option<u128>) -> Vec<BusRecord> {
    range.into_iter().map(|i| record(i, request)).collect()
}

fn count_of(counts: &BTreeMap<String, u64>, range: impl IntoIterator<Item = usize>) -> Vec<u64> {
    let mut found: Vec<u64> = range
        .into_iter()
        .map(|i| counts.get(&format!("r{i}")).copied().unwrap_or(0))
        .collect();
    found.dedup();
    found
}

/// A client retried requests whose first attempt was stored after all: the
/// second copy of a record with an id is not written, in the same run, after
/// a restart (the check is rebuilt from the bus), and when an interrupted
/// commit is rebuilt. Records without an id, and copies further apart than
/// the window, are written (the check never drops what it cannot prove is a
/// copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_records_with_an_id_reach_the_lake_once() {
    let (_dir, lake, bus) = lake_and_bus().await;
    let shared: Arc<dyn Bus> = Arc::new(bus.clone());
    let options = RawToLakeOptions {
        dedup_window: 1000,
        ..RawToLakeOptions::default()
    };
    // Request A (300 records) and 50 records without an id; then a retry
    // of A's first 100 records and a second copy of the 50.
    for batch in [
        records(0..300, Some(1)),
        records(300..350, None),
        records(0..100, Some(1)),
        records(300..350, None),
    ] {
        bus.append("logs.raw", batch).await.unwrap();
    }
    run_job_with(shared.clone(), lake.clone(), 400, options.clone()).await;
    let counts = rows_in_lake(&lake).await;
    assert_eq!(count_of(&counts, 0..300), [1], "request A");
    assert_eq!(count_of(&counts, 300..350), [2], "records without an id");

    // The rest of A is retried after the job stopped, next to new request C.
    for batch in [records(100..300, Some(1)), records(400..500, Some(3))] {
        bus.append("logs.raw", batch).await.unwrap();
    }
    run_job_with(shared.clone(), lake.clone(), 500, options.clone()).await;
    let counts = rows_in_lake(&lake).await;
    assert_eq!(count_of(&counts, 0..300), [1], "request A after a restart");
    assert_eq!(count_of(&counts, 400..500), [1], "request C");
    let latest = lake.latest_commit("raw").await.unwrap().unwrap();
    assert_eq!(latest.dedup_window, 1000);
    assert_eq!(latest.duplicate_records, 200);

    // That commit's files are lost (a crash before they were written): the
    // rebuild drops the same copies, so it plans the same files.
    delete_files(&lake, &latest).await;
    run_job_with(shared.clone(), lake.clone(), 500, options.clone()).await;
    assert!(lake.missing_files(&latest).await.unwrap().is_empty());
    let counts = rows_in_lake(&lake).await;
    assert_eq!(
        count_of(&counts, 0..300),
        [1],
        "request A after a roll-forward"
    );
    assert_eq!(
        count_of(&counts, 400..500),
        [1],
        "request C after a roll-forward"
    );

    // The window: request D (all on key svc-0, one partition), 1500 other
    // records there, then D again (further apart than 1000 offsets: kept),
    // and request E twice in a row (dropped).
    let svc0 = |from: usize, n: usize| (from..from + 5 * n).step_by(5);
    for batch in [
        records(svc0(1000, 10), Some(4)),
        records(svc0(2000, 1500), None),
        records(svc0(1000, 10), Some(4)),
        records(svc0(20000, 10), Some(5)),
        records(svc0(20000, 10), Some(5)),
    ] {
        bus.append("logs.raw", batch).await.unwrap();
    }
    run_job_with(shared, lake.clone(), 500 + 20 + 1500 + 10, options).await;
    let counts = rows_in_lake(&lake).await;
    assert_eq!(
        count_of(&counts, svc0(1000, 10)),
        [2],
        "copies outside the window"
    );
    assert_eq!(
        count_of(&counts, svc0(20000, 10)),
        [1],
        "copies inside the window"
    );
    assert_eq!(count_of(&counts, svc0(2000, 1500)), [1]);
    bus.shutdown();
}

fn restarts_of_raw() -> u64 {
    job_metrics().restarts.get(&["raw"])
}

/// A poll that fails the way a broker that went away does: the job starts
/// again from its last commit by itself (counted in a metric) and every
/// record still lands exactly once. A failure that is not the bus's to
/// recover from (a corrupt log) still stops the job with its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_failure_restarts_the_job_from_its_last_commit() {
    let (_dir, lake, bus) = lake_and_bus().await;
    let faulty = FaultyBus::new(Arc::new(bus.clone()));
    let records = |range: std::ops::Range<usize>| -> Vec<BusRecord> {
        range
            .map(|i| BusRecord::new(format!("svc-{}", i % 5).into_bytes(), log_json(i, 0)))
            .collect()
    };
    let restarts_before = restarts_of_raw();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let options = RawToLakeOptions {
        flush_interval: Duration::from_millis(50),
        ..RawToLakeOptions::default()
    };
    let job = tokio::spawn(
        RawToLake::new(Arc::new(faulty.clone()), lake.clone(), options.clone()).run(stopped),
    );
    let wait_for_rows = async |rows: usize| {
        for _ in 0..400 {
            if rows_in_lake(&lake).await.len() >= rows {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the lake did not reach {rows} records");
    };
    bus.append("logs.raw", records(0..300)).await.unwrap();
    wait_for_rows(300).await;
    faulty.fail_next_poll(logpipe_bus::BusError::Kafka(
        "injected: broker transport failure".into(),
    ));
    // Appended while the job fails and waits to start again.
    bus.append("logs.raw", records(300..600)).await.unwrap();
    wait_for_rows(600).await;
    assert!(!faulty.poll_fault_pending(), "the fault was never hit");
    assert_eq!(
        restarts_of_raw() - restarts_before,
        1,
        "one restart counted"
    );
    bus.append("logs.raw", records(600..700)).await.unwrap();
    wait_for_rows(700).await;
    stop.send(true).unwrap();
    job.await.unwrap().unwrap();
    let counts = rows_in_lake(&lake).await;
    assert_eq!(counts.len(), 700, "every record is in the lake");
    let doubled: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(doubled.is_empty(), "records written twice: {doubled:?}");

    // Not transient: the job stops and says why.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    faulty.fail_next_poll(logpipe_bus::BusError::Corrupt(
        "injected: bad segment".into(),
    ));
    let error = RawToLake::new(Arc::new(faulty), lake.clone(), options)
        .run(stopped)
        .await
        .expect_err("a corrupt bus stops the job");
    assert!(
        error.to_string().contains("injected: bad segment"),
        "{error}"
    );
    assert_eq!(restarts_of_raw() - restarts_before, 1, "no restart for it");
    bus.shutdown();
}
