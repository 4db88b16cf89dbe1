//! A batch job of the user's own, added as a user would: the example file
//! copied into a jobs directory, its schedule edited, `logpipe up`
//! restarted. It runs on its schedule and by hand, a backfill writes one
//! partition per day and resumes, a re-run replaces, and `logpipe sql`,
//! DuckDB and Spark read the same rows; a job with a typo stops the start
//! naming its file, line and column.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::common::{Running, binary, sql_json, sql_json_env, stdout_of};

const LEVELS: [&str; 4] = ["DEBUG", "ERROR", "INFO", "WARN"];

/// (date, level) → records sent.
type Counts = BTreeMap<(String, String), u64>;

/// Posts day `k`'s logs (20 + 3k records, levels cycling), at noon UTC.
async fn send_day(
    client: &reqwest::Client,
    base_url: &str,
    day: NaiveDate,
    k: u64,
    counts: &mut Counts,
) {
    let noon = day.and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp();
    let records: Vec<Value> = (0..20 + 3 * k)
        .map(|i| {
            let level = LEVELS[((i * 7 + k) % 4) as usize];
            *counts
                .entry((day.to_string(), level.to_string()))
                .or_default() += 1;
            json!({"timestamp": noon + i as i64, "level": level, "service": "api", "message": "m"})
        })
        .collect();
    let response = client
        .post(format!("{base_url}/api/collect/logs"))
        .json(&records)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        response.text().await.unwrap()
    );
}

fn jobs_cli(data: &Path, jobs: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("jobs")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("LOGPIPE__JOBS__DIR", jobs)
        .output()
        .unwrap()
}

fn rows_of(rows: &[Value]) -> Counts {
    rows.iter()
        .map(|row| {
            (
                (
                    row["date"].as_str().unwrap().to_string(),
                    row["level"].as_str().unwrap().to_string(),
                ),
                row["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_your_own_runs_on_schedule_by_hand_and_in_a_backfill() {
    let python = std::env::var("LOGPIPE_TEST_PYTHON")
        .expect("LOGPIPE_TEST_PYTHON is not set: run ./scripts/test.sh, which installs DuckDB");
    // Before anything starts: the Spark job at the end needs pyspark.
    crate::common::spark_python();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let jobs_env = jobs.to_str().unwrap();
    let env = [
        ("LOGPIPE__JOBS__DIR", jobs_env),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ("LOGPIPE__LAKE__FLUSH_INTERVAL", "300ms"),
    ];

    // Seven days of logs, the last one yesterday.
    let today = Utc::now().date_naive();
    let days: Vec<NaiveDate> = (1..=7).rev().map(|k| today - Days::new(k)).collect();
    let running = Running::start(&data, &env);
    let client = reqwest::Client::new();
    let mut counts = Counts::new();
    for (k, day) in days.iter().enumerate() {
        send_day(&client, &running.base_url, *day, k as u64, &mut counts).await;
    }
    let total: u64 = counts.values().sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql_json(&data, "SELECT count(*) AS n FROM logs")[0]["n"].as_u64() != Some(total) {
        assert!(
            Instant::now() < deadline,
            "the lake did not reach {total} records"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(running.terminate().success());

    // Copy the example, edit its schedule to every 2 seconds, restart.
    let example = crate::common::repo().join("examples/jobs/my_job.sql");
    let text = std::fs::read_to_string(example).unwrap();
    assert!(text.contains("-- schedule: 0 2 * * *"));
    std::fs::write(
        jobs.join("my_job.sql"),
        text.replace("-- schedule: 0 2 * * *", "-- schedule: */2 * * * * *"),
    )
    .unwrap();
    let yesterday = days[6].to_string();
    let output = |day: &str| data.join(format!("results/my_job/date={day}/part-0.parquet"));
    let running = Running::start(&data, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !output(&yesterday).exists() {
        assert!(
            Instant::now() < deadline,
            "the scheduled run did not write {}:\n{}",
            output(&yesterday).display(),
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The console's API lists it and runs it by hand.
    let listed: Value = client
        .get(format!("{}/api/jobs", running.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine = listed["batch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "my_job")
        .cloned();
    assert_eq!(
        mine.map(|job| (
            job["schedule"].clone(),
            job["output"].clone(),
            job["built_in"].clone()
        )),
        Some((
            json!("*/2 * * * * *"),
            json!("results/my_job"),
            json!(false)
        ))
    );
    let first = days[0].to_string();
    let started = client
        .post(format!("{}/api/jobs/run", running.base_url))
        .json(&json!({"report": "my_job", "date": first}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        started.status().as_u16(),
        202,
        "{}",
        started.text().await.unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !output(&first).exists() {
        assert!(
            Instant::now() < deadline,
            "the run from the API did not write {first}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(running.terminate().success());
    let runs = sql_json(
        &data,
        "SELECT target, status FROM job_runs WHERE job = 'my_job' ORDER BY finished_at LIMIT 1",
    );
    assert_eq!(runs, [json!({"target": yesterday, "status": "succeeded"})]);

    // A backfill of the seven days: the first and the last are done, the
    // other five run.
    let backfill = jobs_cli(
        &data,
        &jobs,
        &["run", "my_job", "--from", &first, "--to", &yesterday],
    );
    let printed = String::from_utf8_lossy(&backfill.stdout);
    assert!(
        backfill.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&backfill.stderr)
    );
    assert_eq!(printed.lines().count(), 7, "{printed}");
    assert_eq!(printed.matches("skipped").count(), 2, "{printed}");
    assert!(
        printed.contains(&format!("[1/7] my_job {first}: done before, skipped")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("[7/7] my_job {yesterday}: done before, skipped")),
        "{printed}"
    );
    let partitions = std::fs::read_dir(data.join("results/my_job"))
        .unwrap()
        .count();
    assert_eq!(partitions, 7, "one partition per day");

    // A re-run replaces its day: still one file, no row twice.
    let again = days[3].to_string();
    let rerun = jobs_cli(&data, &jobs, &["run", "my_job", "--date", &again]);
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_eq!(
        std::fs::read_dir(output(&again).parent().unwrap())
            .unwrap()
            .count(),
        1
    );
    let forced = jobs_cli(
        &data,
        &jobs,
        &[
            "run", "my_job", "--from", &first, "--to", &yesterday, "--force",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&forced.stdout)
            .matches("rows in")
            .count(),
        7
    );

    // logpipe sql, DuckDB and Spark read the same rows: what was sent.
    // `logpipe sql` knows the job's table from the same `[jobs] dir`.
    let sql = stdout_of(
        Command::new(binary())
            .args(["sql", "--format", "json", "--data-dir"])
            .arg(&data)
            .arg("SELECT date, level, count FROM my_job ORDER BY date, level")
            .env("LOGPIPE__JOBS__DIR", &jobs),
        "logpipe sql",
    );
    let ours = rows_of(&serde_json::from_slice::<Vec<Value>>(&sql).unwrap());
    assert_eq!(ours, counts, "logpipe sql reads every (day, level) once");
    let duckdb = format!(
        "import duckdb, json\n\
         rows = duckdb.sql(\"SELECT CAST(date AS VARCHAR) AS date, level, count FROM \
         read_parquet('{}/results/my_job/**/*.parquet', hive_partitioning = true)\").fetchall()\n\
         print(json.dumps([{{'date': d, 'level': l, 'count': c}} for d, l, c in rows]))",
        data.display()
    );
    let rows: Vec<Value> = serde_json::from_slice(&stdout_of(
        Command::new(&python).args(["-c", &duckdb]),
        "duckdb",
    ))
    .unwrap();
    assert_eq!(
        rows_of(&rows),
        counts,
        "DuckDB reads the plain Hive tree the same"
    );

    let spark = crate::common::spark_job(
        "my_new_job.py",
        &[
            data.as_os_str(),
            again.as_ref(),
            dir.path().join("spark-out").as_os_str(),
        ],
        &[],
        "the Spark job",
    );
    let expected: BTreeMap<String, u64> = counts
        .iter()
        .filter(|((day, _), _)| *day == again)
        .map(|((_, level), n)| (level.clone(), *n))
        .collect();
    let of = |key: &str| -> BTreeMap<String, u64> {
        serde_json::from_value(spark[key].clone()).unwrap()
    };
    assert_eq!(of("seed"), expected, "the seed's Spark job over the lake");
    assert_eq!(
        of("logpipe"),
        expected,
        "Spark reading logpipe's job output"
    );

    // A typo stops the start and `jobs check`, naming file, line, column.
    let broken = "-- period: day\nSELECT level, count(*) AS count\nFROM logs\nWHERE year = {year} AND levle = 'ERROR'\nGROUP BY level\n";
    std::fs::write(jobs.join("broken.sql"), broken).unwrap();
    let place = format!(
        "{}:4:{}:",
        jobs.join("broken.sql").display(),
        broken.lines().nth(3).unwrap().find("levle").unwrap() + 1
    );
    let check = jobs_cli(&data, &jobs, &["check"]);
    let printed = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains(&place) && printed.contains("levle"),
        "{printed}"
    );
    assert!(
        printed.contains("ok     my_job → results/my_job (level, count)"),
        "{printed}"
    );
    let stderr = crate::common::up_refused(&data, &[], &env);
    assert!(stderr.contains(&place), "{stderr}");
}

/// The seed's activity aggregation as a streaming job: per event type per
/// 10-second window, events, distinct users and purchases.
pub(crate) const ACTIVITY: &str = "-- kind: stream\n-- lateness: 2s\n-- idle_close: 2s\n\
    SELECT window_start, window_end, event_type,\n\
    count(*) AS events,\n\
    count(DISTINCT user_id) AS users,\n\
    count(*) FILTER (WHERE event_type = 'PURCHASE') AS purchases\n\
    FROM events\n\
    GROUP BY tumble(timestamp, INTERVAL '10 seconds'), event_type\n";

/// 2026-01-11T00:00:00Z.
const T0: i64 = 1_768_089_600;
const TYPES: [&str; 4] = ["CLICK", "VIEW", "PURCHASE", "SEARCH"];

/// Second `s` of events: 12 events over 4 types and 7 users, sent with an
/// Idempotency-Key so a retry after a kill stores nothing twice.
pub(crate) async fn send_events_second(client: &reqwest::Client, base_url: &str, s: i64) {
    let events: Vec<Value> = (0..12)
        .map(|i| {
            json!({
                "event_id": format!("e-{s}-{i}"),
                "timestamp": T0 + s,
                "user_id": format!("user_{}", (s * 3 + i) % 7),
                "event_type": TYPES[((s + i * 5) % 4) as usize],
            })
        })
        .collect();
    let response = client
        .post(format!("{base_url}/api/collect/activities"))
        .header("Idempotency-Key", format!("second-{s}"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        response.text().await.unwrap()
    );
}

/// Waits up to a minute for the lake directories `tables` (a streaming
/// job's table is there once its first window closed), then for the first
/// row of `sql` to satisfy `done`; fails with that row and the log.
async fn wait_for_first_row(
    data: &Path,
    jobs: &Path,
    running: &Running,
    tables: &[&str],
    sql: &str,
    done: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tables.iter().all(|table| data.join(table).exists()) {
        assert!(
            Instant::now() < deadline,
            "no window of {tables:?} closed:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let rows = sql_with_jobs(data, jobs, sql);
        if done(&rows[0]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every record counted yet: {}\n{}",
            rows[0],
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) fn sql_with_jobs(data: &Path, jobs: &Path, sql: &str) -> Vec<Value> {
    sql_json_env(data, &[("LOGPIPE__JOBS__DIR", jobs.to_str().unwrap())], sql)
}

/// A streaming SQL job under load, killed with SIGKILL twice mid-load and
/// restarted: once its windows have closed, its rows equal the same
/// aggregation run as a batch query over the lake, window by window, none
/// missing or doubled. A statement outside the subset stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_sql_job_equals_the_batch_aggregation_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join("activity.sql"), ACTIVITY).unwrap();
    // A second job over the same topic (read and parsed once for both):
    // 30-second windows every 10 seconds.
    std::fs::write(
        jobs.join("rolling.sql"),
        "-- kind: stream\n-- lateness: 2s\n-- idle_close: 2s\n\
         SELECT window_start, count(*) AS events, count(DISTINCT user_id) AS users FROM events\n\
         GROUP BY hop(timestamp, INTERVAL '10 seconds', INTERVAL '30 seconds')\n",
    )
    .unwrap();
    let jobs_env = jobs.to_str().unwrap();
    let env = [
        ("LOGPIPE__JOBS__DIR", jobs_env),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
    ];
    let client = reqwest::Client::new();
    let seconds = 300;
    let mut running = Running::start(&data, &env);
    for s in 0..seconds {
        send_events_second(&client, &running.base_url, s).await;
        if s == 100 || s == 200 {
            // Let the job take a step or two, then kill it mid-work.
            tokio::time::sleep(Duration::from_millis(700 + 300 * (s as u64 / 100))).await;
            running.kill_hard();
            running = Running::start(&data, &env);
        }
    }
    let total = seconds as u64 * 12;
    // Under load, after the last restart, the first window may take a
    // moment to close.
    wait_for_first_row(
        &data,
        &jobs,
        &running,
        &["streams/activity", "streams/rolling"],
        "SELECT (SELECT CAST(coalesce(sum(events), 0) AS BIGINT) FROM activity) AS n, \
         (SELECT CAST(coalesce(sum(events), 0) AS BIGINT) FROM rolling) AS r",
        |row| row["n"].as_u64() == Some(total) && row["r"].as_u64() == Some(3 * total),
    )
    .await;
    // Per job on /metrics: every record counted once since the last start
    // at most, the rows written, the state held.
    let metrics = running.metrics().await;
    for job in ["activity", "rolling"] {
        for family in [
            "logpipe_sql_job_records_total",
            "logpipe_sql_job_windows_closed_total",
            "logpipe_sql_job_open_windows",
        ] {
            assert!(
                metrics.contains(&format!("{family}{{job_name=\"{job}\"}}")),
                "{family} of {job} missing:\n{metrics}"
            );
        }
    }
    assert!(running.terminate().success());

    assert_activity_equals_the_batch_aggregation(&data, &jobs, 30);

    // The hopping job: each 30-second window counts the events of its
    // three 10-second slices, none missing or doubled.
    let rolling = sql_with_jobs(
        &data,
        &jobs,
        "SELECT CAST(to_unixtime(window_start) AS BIGINT) AS w, events, users FROM rolling ORDER BY w",
    );
    let expected: Vec<Value> = (-2..30)
        .map(|k: i64| {
            let start = k * 10;
            let seconds = (start.max(0)..(start + 30).min(seconds)).count() as u64;
            json!({"w": T0 + start, "events": seconds * 12, "users": 7})
        })
        .collect();
    assert_eq!(rolling, expected, "hopping windows");

    // A streaming job is not run by hand.
    let by_hand = jobs_cli(&data, &jobs, &["run", "activity"]);
    assert!(!by_hand.status.success());
    assert!(
        String::from_utf8_lossy(&by_hand.stderr).contains("activity is a streaming job"),
        "{}",
        String::from_utf8_lossy(&by_hand.stderr)
    );

    // Outside the subset: refused at start, naming file, line and column.
    std::fs::write(
        jobs.join("sorted.sql"),
        "-- kind: stream\nSELECT window_start, count(*) AS n FROM logs\nGROUP BY tumble(timestamp, INTERVAL '5 seconds')\nORDER BY n\n",
    )
    .unwrap();
    let check = jobs_cli(&data, &jobs, &["check"]);
    let printed = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("ok     activity → streams/activity (stream (10 s windows))"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("wrong  {}:4:", jobs.join("sorted.sql").display())),
        "{printed}"
    );
    let stderr = crate::common::up_refused(&data, &[], &env);
    assert!(
        stderr.contains(&format!("{}:4:", jobs.join("sorted.sql").display()))
            && stderr.contains("ORDER BY"),
        "{stderr}"
    );
}

/// The `activity` job's rows (see [`ACTIVITY`]) equal the same aggregation
/// run as a batch query over the lake, window by window: `windows` 10-second
/// windows of 4 event types, none missing or doubled.
pub(crate) fn assert_activity_equals_the_batch_aggregation(
    data: &Path,
    jobs: &Path,
    windows: usize,
) {
    let streamed = sql_with_jobs(
        data,
        jobs,
        "SELECT CAST(window_start AS VARCHAR) AS w, event_type, events, users, purchases \
         FROM activity ORDER BY w, event_type",
    );
    let batch = sql_with_jobs(
        data,
        jobs,
        "SELECT CAST(date_bin(INTERVAL '10 seconds', timestamp, TIMESTAMP '1970-01-01T00:00:00Z') AS VARCHAR) AS w, \
         event_type, count(*) AS events, count(DISTINCT user_id) AS users, \
         count(*) FILTER (WHERE event_type = 'PURCHASE') AS purchases \
         FROM events GROUP BY 1, 2 ORDER BY w, event_type",
    );
    assert_eq!(
        batch.len(),
        windows * 4,
        "the windows of 4 event types in the lake"
    );
    assert_eq!(
        streamed.len(),
        batch.len(),
        "one row per window and type, none doubled"
    );
    for (stream_row, batch_row) in streamed.iter().zip(&batch) {
        assert_eq!(
            stream_row, batch_row,
            "the streamed window differs from the batch aggregation"
        );
    }
}

/// `n` more PURCHASE events in second `s` (an incident the alert sees).
async fn send_purchases(client: &reqwest::Client, base_url: &str, s: i64, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|j| {
            json!({
                "event_id": format!("p-{s}-{j}"),
                "timestamp": T0 + s,
                "user_id": "buyer",
                "event_type": "PURCHASE",
            })
        })
        .collect();
    let response = client
        .post(format!("{base_url}/api/collect/activities"))
        .header("Idempotency-Key", format!("purchases-{s}"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

/// (window start in Unix seconds, event_type) → (events, purchases).
type StreamRows = BTreeMap<(i64, String), (i64, i64)>;

fn stream_rows(rows: &[Value], window: impl Fn(&Value) -> i64) -> StreamRows {
    let mut out = StreamRows::new();
    for row in rows {
        let key = (
            window(&row["window_start"]),
            row["event_type"].as_str().unwrap().to_string(),
        );
        let value = (
            row["events"].as_i64().unwrap(),
            row["purchases"].as_i64().unwrap(),
        );
        let before = out.insert(key.clone(), value);
        assert!(
            before.is_none() || before == Some(value),
            "window {key:?} was delivered as {before:?} and as {value:?}"
        );
    }
    out
}

/// A streaming job's sinks and alert rule through a kill -9 mid-load: its
/// rows upserted into a PostgreSQL table it creates and posted to its
/// webhook equal its lake table; a purchase burst fires its alert once and
/// resolves it once (lake `alerts` table, Alertmanager webhook, metrics).
/// A batch job's `-- webhook:` gets its period's rows too, and a rule on a
/// column the job does not have stops the start at its line and column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_job_feeds_postgres_its_webhook_and_alerts_across_a_kill() {
    let url = crate::analytics::fresh_database("logpipe_stream_sinks").await;
    let (rows_url, posted) = crate::analytics::webhook_server();
    let (alerts_url, alerted) = crate::analytics::webhook_server();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("busy.sql"),
        format!(
            "-- kind: stream\n-- lateness: 2s\n-- idle_close: 2s\n-- webhook: {rows_url}\n\
             -- alert: ManyPurchases when purchases > 40 for 2 windows severity critical\n\
             SELECT window_start, event_type, count(*) AS events,\n\
             count(*) FILTER (WHERE event_type = 'PURCHASE') AS purchases\n\
             FROM events GROUP BY tumble(timestamp, INTERVAL '10 seconds'), event_type\n"
        ),
    )
    .unwrap();
    std::fs::write(
        jobs.join("per_type.sql"),
        format!(
            "-- period: day\n-- postgres: false\n-- webhook: {rows_url}\n\
             SELECT event_type, count(*) AS n FROM events\n\
             WHERE year = {{year}} AND month = {{month}} AND day = {{day}}\n\
             GROUP BY event_type ORDER BY event_type\n"
        ),
    )
    .unwrap();
    let env = [
        ("LOGPIPE__JOBS__DIR", jobs.to_str().unwrap()),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
        ("LOGPIPE__POSTGRES__URL", url.as_str()),
        ("LOGPIPE__ALERTS__WEBHOOK_URL", alerts_url.as_str()),
    ];
    let client = reqwest::Client::new();
    let seconds = 160;
    let mut running = Running::start(&data, &env);
    for s in 0..seconds {
        send_events_second(&client, &running.base_url, s).await;
        // Windows 60..100 s: 5 more purchases a second, 80 per window.
        if (60..100).contains(&s) {
            send_purchases(&client, &running.base_url, s, 5).await;
        }
        if s == 85 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            running.kill_hard();
            running = Running::start(&data, &env);
        }
    }
    let postgres = logpipe_sinks::postgres::Postgres::lazy(&url);
    let total = seconds as u64 * 12 + 40 * 5;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let in_postgres = postgres
            .query_text("SELECT coalesce(sum(events), 0) FROM busy")
            .await
            .ok()
            .and_then(|rows| rows[0][0].clone())
            .unwrap_or_default();
        if in_postgres == total.to_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL's busy table holds {in_postgres:?} of {total} events:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = running.metrics().await;
    for line in [
        "logpipe_sql_job_alerts_total{job_name=\"busy\",rule=\"ManyPurchases\",state=\"RESOLVED\"} 1",
        "logpipe_sql_job_alerts_firing{job_name=\"busy\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(running.terminate().success());

    // The lake table, PostgreSQL and the webhook hold the same rows.
    let lake = sql_with_jobs(
        &data,
        &jobs,
        "SELECT CAST(to_unixtime(window_start) AS BIGINT) AS window_start, event_type, events, purchases FROM busy",
    );
    let lake = stream_rows(&lake, |w| w.as_i64().unwrap());
    assert_eq!(lake.len(), 16 * 4, "16 windows of 4 types");
    assert_eq!(lake[&(T0 + 70, "PURCHASE".to_string())], (80, 80));
    let in_postgres: Vec<Value> = postgres
        .query_text("SELECT extract(epoch FROM window_start)::bigint, event_type, events, purchases FROM busy")
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let cell = |i: usize| row[i].clone().unwrap().parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(row[i].clone().unwrap()));
            json!({"window_start": cell(0), "event_type": cell(1), "events": cell(2), "purchases": cell(3)})
        })
        .collect();
    assert_eq!(
        stream_rows(&in_postgres, |w| w.as_i64().unwrap()),
        lake,
        "PostgreSQL = lake"
    );
    let bodies = posted.lock().unwrap().clone();
    let streamed: Vec<Value> = bodies
        .iter()
        .filter(|body| body["job"] == "busy")
        .flat_map(|body| body["rows"].as_array().unwrap().clone())
        .collect();
    let at = |w: &Value| {
        chrono::DateTime::parse_from_rfc3339(w.as_str().unwrap())
            .unwrap_or_else(|e| panic!("window_start {w}: {e}"))
            .timestamp()
    };
    assert_eq!(
        stream_rows(&streamed, at),
        lake,
        "webhook = lake (a re-sent step has the same rows)"
    );

    // One incident: FIRING at the second busy window, RESOLVED after two
    // normal ones; once in the lake, at the Alertmanager webhook too.
    let alerts = sql_json(
        &data,
        "SELECT state, service, CAST(to_unixtime(window_start) AS BIGINT) AS w, severity FROM alerts \
         WHERE rule = 'ManyPurchases' ORDER BY detected_at",
    );
    assert_eq!(
        alerts,
        [
            json!({"state": "FIRING", "service": "event_type=PURCHASE", "w": T0 + 70, "severity": "critical"}),
            json!({"state": "RESOLVED", "service": "event_type=PURCHASE", "w": T0 + 110, "severity": "critical"}),
        ]
    );
    let notified: Vec<(String, String)> = alerted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|body| body.as_array().unwrap().clone())
        .map(|alert| {
            let resolved = alert.get("endsAt").is_some();
            (
                alert["labels"]["alertname"].as_str().unwrap().to_string(),
                resolved.to_string(),
            )
        })
        .collect();
    assert!(
        notified.contains(&("ManyPurchases".to_string(), "false".to_string())),
        "{notified:?}"
    );
    assert!(
        notified.contains(&("ManyPurchases".to_string(), "true".to_string())),
        "{notified:?}"
    );

    // The batch job's period goes to its webhook.
    let date = chrono::DateTime::from_timestamp(T0, 0)
        .unwrap()
        .date_naive()
        .to_string();
    let run = jobs_cli(&data, &jobs, &["run", "per_type", "--date", &date]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let period = posted
        .lock()
        .unwrap()
        .iter()
        .find(|body| body["job"] == "per_type")
        .cloned()
        .expect("the batch job's rows posted");
    assert_eq!(period["period"], date);
    let counts: BTreeMap<String, i64> = period["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["event_type"].as_str().unwrap().to_string(),
                row["n"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts["PURCHASE"], 480 + 200);
    assert_eq!(counts["CLICK"], 480);

    // A rule on a column the job does not have: refused at its place.
    let text = std::fs::read_to_string(jobs.join("busy.sql")).unwrap();
    std::fs::write(
        jobs.join("busy.sql"),
        text.replace("when purchases", "when buyers"),
    )
    .unwrap();
    let stderr = crate::common::up_refused(&data, &[], &env);
    assert!(
        stderr.contains(&format!("{}:5:11:", jobs.join("busy.sql").display()))
            && stderr.contains("\"buyers\", which is not an aggregate column")
            && stderr.contains("(events, purchases)"),
        "{stderr}"
    );
}

/// Jobs due in the same round run in dependency order, and a job whose
/// input job failed in that round is not run: it is recorded `skipped` in
/// `job_runs` with the reason, while the failed one is recorded `failed`
/// with DataFusion's error. Both plan fine at start (the failure is in the
/// data: a message that is not a number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_input_failed_in_its_round_is_skipped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("broken.sql"),
        "-- schedule: */2 * * * * *\nSELECT CAST(message AS INT) AS n FROM logs\n",
    )
    .unwrap();
    std::fs::write(
        jobs.join("reader.sql"),
        "-- schedule: */2 * * * * *\nSELECT count(*) AS n FROM broken\n",
    )
    .unwrap();
    let env = [
        ("LOGPIPE__JOBS__DIR", jobs.to_str().unwrap()),
        // The scheduler runs (the built-in reports' crons are hours away).
    ];
    let running = Running::start(&data, &env);
    let client = reqwest::Client::new();
    let log =
        json!([{"timestamp": T0, "level": "INFO", "service": "api", "message": "not a number"}]);
    let response = client
        .post(format!("{}/api/collect/logs", running.base_url))
        .json(&log)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let runs = sql_json(
            &data,
            "SELECT job AS job_name, status, error FROM job_runs WHERE job IN ('broken', 'reader') \
             ORDER BY started_at, job_name",
        );
        let reader_skipped = runs
            .iter()
            .any(|r| r["job_name"] == "reader" && r["status"] == "skipped");
        if reader_skipped {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "no skipped run of reader in {runs:?}:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Rounds before the log was in the lake succeeded; in the round that
    // skipped reader, broken ran first and failed on the message.
    let at = runs
        .iter()
        .position(|r| r["job_name"] == "reader" && r["status"] == "skipped")
        .unwrap();
    assert_eq!(
        runs[at]["error"],
        json!("broken, whose output it reads, did not succeed in this round")
    );
    let failed = &runs[at - 1];
    assert_eq!(
        (&failed["job_name"], &failed["status"]),
        (&json!("broken"), &json!("failed")),
        "{runs:?}"
    );
    assert!(
        failed["error"].as_str().unwrap().contains("not a number"),
        "{runs:?}"
    );
    assert!(running.terminate().success());
}

/// The built-in window job is a streaming SQL job: the statement `logpipe
/// jobs show windows` prints, copied into the jobs directory under another
/// name as a user would, runs as a job of the user's own and writes the
/// same rows as the built-in job's `windows` table, every column, window
/// by window; and the same SQL run as a batch query over the lake (with
/// `date_bin` for `tumble`) gives the same counts, error rates and status
/// classes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_job_is_its_sql_file_and_a_copy_writes_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let shown = jobs_cli(&data, &jobs, &["show", "windows"]);
    assert!(shown.status.success(), "{shown:?}");
    let statement = String::from_utf8(shown.stdout).unwrap();
    assert!(statement.starts_with("-- kind: stream\n"), "{statement}");
    // The same lateness and idle close as the built-in job below.
    std::fs::write(
        jobs.join("my_windows.sql"),
        format!("-- lateness: 2s\n-- idle_close: 2s\n{statement}"),
    )
    .unwrap();
    let env = [
        ("LOGPIPE__JOBS__DIR", jobs.to_str().unwrap()),
        ("LOGPIPE__WINDOWS__ALLOWED_LATENESS", "2s"),
        ("LOGPIPE__WINDOWS__IDLE_CLOSE", "2s"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
    ];
    let running = Running::start(&data, &env);
    let client = reqwest::Client::new();
    let seconds = 60;
    for second in 0..seconds {
        let response = client
            .post(format!("{}/api/collect/logs", running.base_url))
            .body(crate::analytics::second_of_logs(second))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    let total = seconds as u64 * 30;
    wait_for_first_row(
        &data,
        &jobs,
        &running,
        &["streams/my_windows", "windows"],
        "SELECT (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM windows) AS builtin, \
         (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM my_windows) AS copy",
        |row| row["builtin"].as_u64() == Some(total) && row["copy"].as_u64() == Some(total),
    )
    .await;
    assert!(running.terminate().success());
    let listed = jobs_cli(&data, &jobs, &["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    for job in ["windows", "my_windows"] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{job} ")) && l.contains("stream (5 s windows)")),
            "{listed}"
        );
    }

    let rows = |table: &str| {
        sql_with_jobs(
            &data,
            &jobs,
            &format!("SELECT * FROM {table} ORDER BY window_start, service, level"),
        )
    };
    let (builtin, copy) = (rows("windows"), rows("my_windows"));
    // 12 windows of 3 services, a row per level seen.
    assert!(builtin.len() >= 12 * 3, "{builtin:?}");
    assert_eq!(
        copy, builtin,
        "the copy's rows differ from the built-in job's"
    );
    assert!(builtin.iter().all(|row| row["p95_ms"].as_f64().is_some()));

    let streamed = sql_with_jobs(
        &data,
        &jobs,
        "SELECT CAST(window_start AS VARCHAR) AS w, service, level, count, service_count, \
         error_rate, status_2xx, status_5xx FROM windows ORDER BY w, service, level",
    );
    let bin = "date_bin(INTERVAL '5 seconds', timestamp, TIMESTAMP '1970-01-01T00:00:00Z')";
    let batch = sql_with_jobs(
        &data,
        &jobs,
        &format!(
            "WITH l AS (SELECT {bin} AS w, service, level, count(*) AS count FROM logs GROUP BY 1, 2, 3), \
             s AS (SELECT {bin} AS w, service, count(*) AS service_count, \
                   avg(CASE WHEN level = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate, \
                   count(*) FILTER (WHERE status_code >= 200 AND status_code < 300) AS status_2xx, \
                   count(*) FILTER (WHERE status_code >= 500) AS status_5xx \
                   FROM logs GROUP BY 1, 2) \
             SELECT CAST(l.w AS VARCHAR) AS w, l.service, l.level, l.count, s.service_count, \
             s.error_rate, s.status_2xx, s.status_5xx \
             FROM l JOIN s ON l.w = s.w AND l.service = s.service ORDER BY w, service, level"
        ),
    );
    assert_eq!(
        streamed, batch,
        "the window job differs from its SQL run over the lake"
    );
}

/// `-- retention:` on a streaming job: its table's expired hours go whole,
/// as `[lake.retention]` does the built-in tables', and the young hour
/// stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_jobs_table_keeps_what_its_retention_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("per_service.sql"),
        "-- kind: stream\n-- retention: 2h\n-- lateness: 1s\n-- idle_close: 1s\n\
         SELECT window_start, service, count(*) AS n FROM logs\n\
         GROUP BY tumble(timestamp, INTERVAL '1 minute'), service\n",
    )
    .unwrap();
    let env = [
        ("LOGPIPE__JOBS__DIR", jobs.to_str().unwrap()),
        ("LOGPIPE__LAKE__RETENTION__INTERVAL", "1s"),
        ("LOGPIPE__LAKE__RETENTION__GRACE", "1s"),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
    ];
    let running = Running::start(&data, &env);
    let now = Utc::now().timestamp();
    // The young records in the last second of their minute: with no newer
    // record, their window closes by idle time, which moves the watermark
    // on from them at wall-clock speed; from the start of the minute that
    // took up to a minute and outran the deadline below.
    let young = (now - 3600) / 60 * 60 + 59;
    let logs: Vec<Value> = [("old", now - 5 * 3600), ("young", young)]
        .iter()
        .flat_map(|(age, at)| {
            (0..10).map(move |i| {
                json!({"timestamp": at, "level": "INFO", "service": "api",
                       "message": "m", "metadata": {"request_id": format!("{age}-{i}")}})
            })
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{}/api/collect/logs", running.base_url))
        .json(&logs)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let old_hour = logpipe_core::time::HourPartition::of_micros((now - 5 * 3600) * 1_000_000);
    let young_hour = logpipe_core::time::HourPartition::of_micros(young * 1_000_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let expired = running.log().lines().any(|l| {
            l.contains("retention deleted an expired partition") && l.contains("per_service")
        });
        // The table is there once a Parquet file of it is; only the young
        // hour's counts, as retention may take the old hour's file away
        // between this look and the query.
        let found = Command::new("find")
            .arg(
                data.join("streams/per_service")
                    .join(young_hour.hive_path()),
            )
            .args(["-name", "*.parquet"])
            .output()
            .map(|out| !out.stdout.is_empty())
            .unwrap_or(false);
        let kept = found.then(|| {
            sql_with_jobs(
                &data,
                &jobs,
                "SELECT CAST(coalesce(sum(n), 0) AS BIGINT) AS n FROM per_service",
            )[0]["n"]
                .as_u64()
        });
        if expired && kept == Some(Some(10)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired: {expired}, rows kept: {kept:?}\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !data
            .join("streams/per_service")
            .join(old_hour.hive_path())
            .exists()
    );
    assert!(running.terminate().success());
}

/// A batch job's `-- retention:` deletes its periods that ended longer ago
/// (here its days, kept 2 days), by the process that runs the batch jobs,
/// and keeps the younger ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_jobs_table_keeps_the_periods_its_retention_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("heartbeat.sql"),
        "-- retention: 2d\nSELECT DATE '{date}' AS day, 1 AS beats\n",
    )
    .unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let today = Utc::now().date_naive();
    let from = (today - chrono::Days::new(6)).to_string();
    let to = (today - chrono::Days::new(1)).to_string();
    let ran = jobs_cli(
        &data,
        &jobs,
        &["run", "heartbeat", "--from", &from, "--to", &to],
    );
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let days = || -> Vec<String> {
        let mut days: Vec<String> = std::fs::read_dir(data.join("jobs/heartbeat"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        days.sort();
        days
    };
    assert_eq!(days().len(), 6, "{:?}", days());
    let env = [
        ("LOGPIPE__JOBS__DIR", jobs.to_str().unwrap()),
        ("LOGPIPE__LAKE__RETENTION__INTERVAL", "1s"),
        ("LOGPIPE__LAKE__RETENTION__GRACE", "1s"),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        // The scheduler's process runs the batch jobs' retention.
        ("LOGPIPE__REPORTS__SCHEDULE", "true"),
    ];
    let running = Running::start(&data, &env);
    // Kept: the days that ended less than 2 days ago (yesterday and the
    // day before).
    let kept: Vec<String> = (1..=2)
        .rev()
        .map(|ago| format!("date={}", today - chrono::Days::new(ago)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while days() != kept {
        assert!(
            Instant::now() < deadline,
            "days left: {:?}, want {kept:?}\n{}",
            days(),
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let beats = sql_with_jobs(
        &data,
        &jobs,
        "SELECT CAST(sum(beats) AS BIGINT) AS n FROM heartbeat",
    );
    assert_eq!(beats[0]["n"], 2, "{beats:?}");
    assert!(running.terminate().success());
}
