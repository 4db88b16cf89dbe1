//! Golden-file tests of the three reports on a fixed, seeded data set, and
//! their PostgreSQL output against the real server `scripts/test.sh` starts.
//! `LOGPIPE_UPDATE_GOLDEN=1 cargo test -p logpipe-batch` rewrites the golden
//! files after an intended change (review the diff).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use logpipe_batch::{BatchRunner, Period, Report};
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
                PutPayload::from(encode_parquet(batch.clone(), Compression::Zstd).unwrap()),
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

/// A runner of the built-in jobs only.
async fn runner(lake: Lake, sinks: Vec<Arc<dyn StepSink>>) -> BatchRunner {
    let jobs = logpipe_batch::job::load(None, &[]).unwrap();
    BatchRunner::open(lake, sinks, jobs).await.unwrap()
}

fn reports(runner: &BatchRunner) -> [(Report, &'static str, &'static str); 3] {
    let date = NaiveDate::from_ymd_opt(2026, 1, 11).unwrap();
    let job = |name: &str| runner.job(name).unwrap();
    [
        (
            Report::new(job("daily_report"), Period::Day(date)),
            "daily_report",
            "SELECT * FROM daily_report WHERE date = '2026-01-11' ORDER BY service, level",
        ),
        (
            Report::new(job("weekly_analysis"), Period::week_of(date)),
            "weekly_analysis",
            "SELECT * FROM weekly_analysis WHERE week = '2026-W02' ORDER BY date, service",
        ),
        (
            Report::new(
                job("service_analysis"),
                Period::Range(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), date),
            ),
            "service_analysis",
            "SELECT * FROM service_analysis ORDER BY service",
        ),
    ]
}

#[tokio::test]
async fn reports_match_their_golden_files_and_reruns_are_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = seed_lake(tmp.path()).await;
    let runner = runner(lake, Vec::new()).await;
    for (report, name, query) in reports(&runner) {
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
    let runner = runner(lake, vec![sink]).await;
    for (report, name, _) in reports(&runner) {
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
    let runner = runner(lake, Vec::new()).await;
    let report = Report::new(
        runner.job("daily_report").unwrap(),
        Period::Day(NaiveDate::from_ymd_opt(2026, 1, 11).unwrap()),
    );
    assert!(runner.run(&report, &|_| {}).await.is_err());
    let runs = table_csv(
        tmp.path(),
        "SELECT job, status, error IS NOT NULL AS has_error FROM job_runs",
    )
    .await;
    assert_eq!(runs, "job,status,has_error\ndaily_report,failed,true\n");
}

/// A users' jobs directory: one job reading the lake, one reading that
/// job's output, and the runner placing the second after the first.
fn jobs_dir(tmp: &Path, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = tmp.join("jobs-src");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

const ERRORS_BY_LEVEL: &str = "-- period: day\n\
    SELECT level, count(*) AS count\n\
    FROM logs\n\
    WHERE year = {year} AND month = {month} AND day = {day}\n\
    GROUP BY level\n";

/// Reads errors_by_level's output: it must run after it.
const ERROR_SHARE: &str = "-- period: day\n-- output: results/error_share\n\
    SELECT CAST(sum(CASE WHEN level = 'ERROR' THEN count ELSE 0 END) AS DOUBLE) / sum(count) AS share\n\
    FROM errors_by_level\n\
    WHERE date = '{date}'\n";

#[tokio::test]
async fn users_jobs_run_after_their_inputs_and_a_wrong_one_is_placed() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = seed_lake(tmp.path()).await;
    // a_share sorts first by name; it reads errors_by_level, so runs after.
    let dir = jobs_dir(
        tmp.path(),
        &[
            ("a_share.sql", ERROR_SHARE),
            ("errors_by_level.sql", ERRORS_BY_LEVEL),
        ],
    );
    let jobs = logpipe_batch::job::load(Some(&dir), &[]).unwrap();
    let runner = BatchRunner::open(lake, Vec::new(), jobs).await.unwrap();
    let names: Vec<_> = runner.jobs().iter().map(|j| j.name).collect();
    assert_eq!(
        names,
        [
            "daily_report",
            "weekly_analysis",
            "service_analysis",
            "errors_by_level",
            "a_share"
        ]
    );
    assert_eq!(runner.jobs()[4].inputs, ["errors_by_level"]);
    // Planned before either ran: a_share against errors_by_level's
    // planned columns.
    let today = NaiveDate::from_ymd_opt(2026, 1, 12).unwrap();
    for check in runner.check(today).await {
        assert!(
            check.outcome.is_ok(),
            "{}: {:?}",
            check.job.name,
            check.outcome.err()
        );
    }
    let day = Period::Day(NaiveDate::from_ymd_opt(2026, 1, 11).unwrap());
    for name in ["errors_by_level", "a_share"] {
        let report = Report::new(runner.job(name).unwrap(), day);
        assert!(!runner.done(&report).await.unwrap());
        runner.run(&report, &|_| {}).await.unwrap();
        assert!(runner.done(&report).await.unwrap());
    }
    assert!(
        tmp.path()
            .join("jobs/errors_by_level/date=2026-01-11/part-0.parquet")
            .exists()
    );
    let engine = QueryEngine::open(&store_of(tmp.path())).await.unwrap();
    engine.add_tables(&runner.job_tables());
    let total = engine
        .sql(
            "SELECT sum(count) AS n FROM errors_by_level WHERE date = '2026-01-11'",
            10,
        )
        .await
        .unwrap();
    let lake_total = engine
        .sql(
            "SELECT count(*) AS n FROM logs WHERE year = 2026 AND month = 1 AND day = 11",
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        total.render(OutputFormat::Csv).unwrap(),
        lake_total.render(OutputFormat::Csv).unwrap()
    );

    // A typo in a column is refused with the file, line and column.
    let typo = "-- period: day\nSELECT level,\n       count(*) AS count\nFROM logs\nWHERE year = {year} AND levle = 'ERROR'\nGROUP BY level\n";
    let dir = jobs_dir(tmp.path(), &[("typo.sql", typo)]);
    std::fs::remove_file(dir.join("a_share.sql")).unwrap();
    std::fs::remove_file(dir.join("errors_by_level.sql")).unwrap();
    let jobs = logpipe_batch::job::load(Some(&dir), &[]).unwrap();
    let lake = Lake::open(&store_of(tmp.path()), Compression::Zstd);
    let runner = BatchRunner::open(lake, Vec::new(), jobs).await.unwrap();
    let checks = runner.check(today).await;
    let error = checks
        .iter()
        .find(|c| c.job.name == "typo")
        .unwrap()
        .outcome
        .as_ref()
        .unwrap_err()
        .to_string();
    let column = typo.lines().nth(4).unwrap().find("levle").unwrap() + 1;
    assert!(
        error.starts_with(&format!("{}:5:{column}: ", dir.join("typo.sql").display())),
        "{error}"
    );
    assert!(error.contains("levle"), "{error}");

    // A syntax error too, at parse time.
    std::fs::write(
        dir.join("typo.sql"),
        "-- period: day\nSELECT level\nFORM logs\n",
    )
    .unwrap();
    let jobs = logpipe_batch::job::load(Some(&dir), &[]).unwrap();
    let lake = Lake::open(&store_of(tmp.path()), Compression::Zstd);
    let error = BatchRunner::open(lake, Vec::new(), jobs)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with(&format!("{}:3:", dir.join("typo.sql").display())),
        "{error}"
    );

    // Jobs that read each other in a circle are refused, naming them.
    std::fs::remove_file(dir.join("typo.sql")).unwrap();
    let dir = jobs_dir(
        tmp.path(),
        &[
            ("ping.sql", "SELECT * FROM pong WHERE date = '{date}'"),
            ("pong.sql", "SELECT * FROM ping WHERE date = '{date}'"),
        ],
    );
    let jobs = logpipe_batch::job::load(Some(&dir), &[]).unwrap();
    let lake = Lake::open(&store_of(tmp.path()), Compression::Zstd);
    let error = BatchRunner::open(lake, Vec::new(), jobs)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("ping reads pong; pong reads ping"),
        "{error}"
    );
}

/// `-- postgres: false` keeps a job's rows in the lake only; without it a
/// job's period is replaced in its PostgreSQL table like a report's.
#[tokio::test]
async fn a_job_writes_postgres_unless_its_header_says_not() {
    let admin = std::env::var("LOGPIPE_TEST_POSTGRES_URL").expect(
        "LOGPIPE_TEST_POSTGRES_URL is not set: run ./scripts/test.sh, which starts PostgreSQL 15",
    );
    let url = Postgres::lazy(&admin)
        .fresh_database("logpipe_job_sinks")
        .await
        .unwrap();
    let postgres = Postgres::connect(&url).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let lake = seed_lake(tmp.path()).await;
    let dir = jobs_dir(
        tmp.path(),
        &[
            ("errors_by_level.sql", ERRORS_BY_LEVEL),
            (
                "lake_only.sql",
                &format!("-- postgres: false\n{ERRORS_BY_LEVEL}"),
            ),
        ],
    );
    let jobs = logpipe_batch::job::load(Some(&dir), &[]).unwrap();
    let sink: Arc<dyn StepSink> = Arc::new(PostgresSink::new(postgres.clone()));
    let runner = BatchRunner::open(lake, vec![sink], jobs).await.unwrap();
    let day = Period::Day(NaiveDate::from_ymd_opt(2026, 1, 11).unwrap());
    for name in ["errors_by_level", "lake_only"] {
        let summary = runner
            .run(&Report::new(runner.job(name).unwrap(), day), &|_| {})
            .await
            .unwrap();
        assert_eq!(summary.sinks.is_empty(), name == "lake_only", "{name}");
    }
    let tables = postgres
        .query_text(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_name IN ('errors_by_level', 'lake_only') ORDER BY 1",
        )
        .await
        .unwrap();
    assert_eq!(tables, vec![vec![Some("errors_by_level".to_string())]]);
}
