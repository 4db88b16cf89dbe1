//! Golden-file tests of the three reports on a fixed, seeded data set, and
//! their PostgreSQL output against the real server `scripts/test.sh` starts.
//! `LOGPIPE_UPDATE_GOLDEN=1 cargo test -p logpipe-batch` rewrites the golden
//! files after an intended change (review the diff).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use logpipe_batch::{BatchRunner, Report};
use logpipe_config::Compression;
use logpipe_core::record::{LogRecord, ValidationLimits};
use logpipe_core::tables::LogBatchBuilder;
use logpipe_core::time::HourPartition;
use logpipe_lake::{Lake, LakeStore, encode_parquet};
use logpipe_query::{OutputFormat, QueryEngine};
use logpipe_sinks::StepSink;
use logpipe_sinks::postgres::{Postgres, PostgresSink};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};

const SERVICES: [&str; 3] = ["api-gateway", "order-service", "payment-service"];
const ENDPOINTS: [&str; 4] = ["/api/orders", "/api/pay", "/api/users", "/api/cart"];

/// 2026-01-05 (Monday) to 2026-01-11 (Sunday): 24 files, one per 7 hours,
/// of seeded records.
async fn seed_lake(dir: &Path) -> Lake {
    let lake = Lake::open(&store_of(dir), Compression::Zstd);
    let mut rng = fastrand::Rng::with_seed(20260111);
    let start = 1_767_571_200_i64; // 2026-01-05T00:00:00Z
    let limits = ValidationLimits::now();
    for hour in (0..7 * 24).step_by(7) {
        let mut builder = LogBatchBuilder::default();
        let mut partition = None;
        for _ in 0..400 {
            let ts = start + hour * 3600 + rng.i64(0..3600);
            let roll = rng.u32(0..100);
            let level = match roll {
                0..=6 => "ERROR",
                7..=16 => "WARN",
                17..=26 => "DEBUG",
                _ => "INFO",
            };
            let status = match level {
                "ERROR" => 500 + rng.i32(0..4),
                _ if roll.is_multiple_of(9) => 404,
                _ => 200,
            };
            let raw = format!(
                r#"{{"timestamp": {ts}, "level": "{level}", "service": "{}", "host": "h{}", "message": "m",
                    "metadata": {{"response_time_ms": {}, "status_code": {status}, "endpoint": "{}"}}}}"#,
                SERVICES[rng.usize(0..SERVICES.len())],
                rng.u8(1..4),
                rng.u32(1..2000) as f64 / 4.0,
                ENDPOINTS[rng.usize(0..ENDPOINTS.len())],
            );
            let record = LogRecord::parse(&raw, &limits).unwrap();
            partition = Some(HourPartition::of_micros(record.timestamp_micros));
            builder.append(&record);
        }
        let batch = builder.finish().unwrap();
        let path = format!(
            "logs/raw/{}/part-seed-{hour:03}.parquet",
            partition.unwrap().hive_path()
        );
        lake.store()
            .put(
                &StorePath::from(path),
                PutPayload::from(encode_parquet(&batch, Compression::Zstd).unwrap()),
            )
            .await
            .unwrap();
    }
    lake
}

/// The lake in `dir`.
fn store_of(dir: &Path) -> LakeStore {
    logpipe_lake::resolve(dir.to_str().unwrap()).unwrap()
}

async fn table_csv(dir: &Path, sql: &str) -> String {
    let engine = QueryEngine::open(&store_of(dir)).await.unwrap();
    engine
        .sql(sql, usize::MAX)
        .await
        .unwrap()
        .render(OutputFormat::Csv)
        .unwrap()
}

fn check_golden(name: &str, actual: &str) {
    // Read at run time, not compiled in: the target directory is shared
    // between clones, and a binary built in another clone would look for
    // that clone's files.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test");
    let path = Path::new(&manifest_dir).join(format!("tests/golden/{name}.csv"));
    if std::env::var_os("LOGPIPE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (LOGPIPE_UPDATE_GOLDEN=1 creates it)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "{name} differs from {}", path.display());
}

fn reports() -> [(Report, &'static str, &'static str); 3] {
    let date = NaiveDate::from_ymd_opt(2026, 1, 11).unwrap();
    [
        (
            Report::Daily { date },
            "daily_report",
            "SELECT * FROM daily_report WHERE date = '2026-01-11' ORDER BY service, level",
        ),
        (
            Report::weekly_of(date),
            "weekly_analysis",
            "SELECT * FROM weekly_analysis WHERE week = '2026-W02' ORDER BY date, service",
        ),
        (
            Report::Service {
                start: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
                end: date,
            },
            "service_analysis",
            "SELECT * FROM service_analysis ORDER BY service",
        ),
    ]
}

#[tokio::test]
async fn reports_match_their_golden_files_and_reruns_are_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = seed_lake(tmp.path()).await;
    let runner = BatchRunner::open(lake, Vec::new()).await.unwrap();
    for (report, name, query) in reports() {
        let first = runner.run(&report, &|_| {}).await.unwrap();
        assert!(first.rows > 0, "{name} wrote nothing");
        let csv = table_csv(tmp.path(), query).await;
        check_golden(name, &csv);
        let file = tmp.path().join(&first.output);
        let bytes = std::fs::read(&file).unwrap();
        // A re-run replaces the output with the same content, and leaves one file.
        let second = runner.run(&report, &|_| {}).await.unwrap();
        assert_eq!(second.rows, first.rows);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            bytes,
            "{name} re-run differs"
        );
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1,
            "{name}: one file per period"
        );
        assert_eq!(table_csv(tmp.path(), query).await, csv);
    }
    // Every run is in job_runs.
    let runs = table_csv(
        tmp.path(),
        "SELECT job, status, count(*) AS runs FROM job_runs GROUP BY job, status ORDER BY job",
    )
    .await;
    assert_eq!(
        runs,
        "job,status,runs\ndaily_report,succeeded,2\nservice_analysis,succeeded,2\nweekly_analysis,succeeded,2\n"
    );
}

#[tokio::test]
async fn reports_replace_their_period_in_postgres() {
    let admin = std::env::var("LOGPIPE_TEST_POSTGRES_URL").expect(
        "LOGPIPE_TEST_POSTGRES_URL is not set: run ./scripts/test.sh, which starts PostgreSQL 15",
    );
    let url = Postgres::lazy(&admin)
        .fresh_database("logpipe_reports")
        .await
        .unwrap();
    let postgres = Postgres::connect(&url).await.unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let lake = seed_lake(tmp.path()).await;
    let sink: Arc<dyn StepSink> = Arc::new(PostgresSink::new(postgres.clone()));
    let runner = BatchRunner::open(lake, vec![sink]).await.unwrap();
    for (report, name, _) in reports() {
        let first = runner.run(&report, &|_| {}).await.unwrap();
        runner.run(&report, &|_| {}).await.unwrap();
        let rows = postgres
            .query_text(&format!("SELECT count(*) FROM {name}"))
            .await
            .unwrap();
        assert_eq!(
            rows[0][0].as_deref(),
            Some(first.rows.to_string().as_str()),
            "{name}: a re-run replaces its rows"
        );
    }
    let totals = postgres
        .query_text("SELECT sum(count) FROM daily_report WHERE date = '2026-01-11'")
        .await
        .unwrap();
    let from_lake = table_csv(
        tmp.path(),
        "SELECT count(*) AS n FROM logs WHERE year = 2026 AND month = 1 AND day = 11",
    )
    .await;
    assert_eq!(
        format!("n\n{}\n", totals[0][0].as_deref().unwrap()),
        from_lake
    );
    let runs = postgres
        .query_text("SELECT count(*) FROM job_runs WHERE status = 'succeeded'")
        .await
        .unwrap();
    assert_eq!(runs[0][0].as_deref(), Some("6"));
}

#[tokio::test]
async fn a_failed_run_is_recorded_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = seed_lake(tmp.path()).await;
    // A lake whose daily output directory is a file cannot be written.
    std::fs::create_dir_all(tmp.path().join("reports/daily")).unwrap();
    std::fs::write(
        tmp.path().join("reports/daily/date=2026-01-11"),
        "not a directory",
    )
    .unwrap();
    let runner = BatchRunner::open(lake, Vec::new()).await.unwrap();
    let report = Report::Daily {
        date: NaiveDate::from_ymd_opt(2026, 1, 11).unwrap(),
    };
    assert!(runner.run(&report, &|_| {}).await.is_err());
    let runs = table_csv(
        tmp.path(),
        "SELECT job, status, error IS NOT NULL AS has_error FROM job_runs",
    )
    .await;
    assert_eq!(runs, "job,status,has_error\ndaily_report,failed,true\n");
}
