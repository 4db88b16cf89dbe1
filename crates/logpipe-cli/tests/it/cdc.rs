//! Change data capture, seed 003's architecture with logpipe in Spark's
//! place: MariaDB 10.11 → Debezium's MariaDB connector on Kafka Connect →
//! Apache Kafka → `logpipe cdc` → PostgreSQL, under concurrent writes,
//! kill -9 of the sink and schema changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use logpipe_sinks::postgres::Postgres;

use crate::analytics::fresh_database;
use crate::common::running::Running;
use crate::common::services::kafka::Broker;
use crate::common::services::mariadb::{self, MariaDb};

/// The seed's car-service tables, with a counter each update increments.
const SCHEMA: &str = "
CREATE DATABASE car;
USE car;
CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdcpw';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, LOCK TABLES, BINLOG MONITOR ON *.* TO 'cdc'@'%';
CREATE TABLE car.uservehicle (
  id INT AUTO_INCREMENT PRIMARY KEY,
  user_id INT NOT NULL,
  vin CHAR(17) NOT NULL,
  model VARCHAR(64),
  price DECIMAL(10,2),
  registered_on DATE,
  updated_at DATETIME(3),
  active BOOLEAN NOT NULL DEFAULT 1,
  updates INT NOT NULL DEFAULT 0
);
CREATE TABLE car.driving_session (
  session_id BIGINT AUTO_INCREMENT PRIMARY KEY,
  vehicle_id INT NOT NULL,
  started_at DATETIME(6) NOT NULL,
  ended_at DATETIME(6),
  distance_km DECIMAL(8,3),
  harsh_brakes SMALLINT NOT NULL DEFAULT 0,
  route TEXT
);
INSERT INTO car.uservehicle (user_id, vin, model, price, registered_on, updated_at)
  SELECT seq % 97, CONCAT('KMH', LPAD(seq, 14, '0')), ELT(1 + seq % 4, 'Avante', 'Sonata', 'Tucson', 'Ioniq 5'),
         10000 + seq * 13.37, DATE '2020-01-01' + INTERVAL seq DAY, TIMESTAMP '2024-01-01 00:00:00.000' + INTERVAL seq * 1001 SECOND
  FROM seq_1_to_500;
INSERT INTO car.driving_session (vehicle_id, started_at, ended_at, distance_km, harsh_brakes, route)
  SELECT 1 + seq % 500, TIMESTAMP '2024-02-01 00:00:00' + INTERVAL seq * 61.123456 SECOND,
         TIMESTAMP '2024-02-01 00:30:00' + INTERVAL seq * 61.123456 SECOND, seq * 0.731, seq % 5,
         CONCAT('route ', seq, ' \"via\" ring road')
  FROM seq_1_to_1000;
";

/// One writer transaction: inserts, updates (the counter), deletes, on
/// both tables; after the schema change it also sets the new column.
fn write_round(db: &MariaDb, round: u32, altered: bool) {
    let color = if altered {
        format!(", color = ELT(1 + {round} % 3, 'white', 'black', 'blue')")
    } else {
        String::new()
    };
    let sql = format!(
        "START TRANSACTION;
         INSERT INTO car.uservehicle (user_id, vin, model, price, registered_on, updated_at)
           VALUES ({round} % 97, CONCAT('NEW', LPAD({round}, 14, '0')), 'Kona', 23456.78 + {round},
                   DATE '2025-06-01' + INTERVAL {round} DAY, NOW(3));
         UPDATE car.uservehicle SET updates = updates + 1, price = price + 1.01,
           updated_at = NOW(3){color} ORDER BY RAND() LIMIT 4;
         DELETE FROM car.uservehicle WHERE id % 7 = {round} % 7 ORDER BY RAND() LIMIT 1;
         INSERT INTO car.driving_session (vehicle_id, started_at, distance_km, route)
           VALUES (1 + {round} % 500, NOW(6), NULL, NULL);
         UPDATE car.driving_session SET ended_at = NOW(6), distance_km = {round} * 0.5,
           harsh_brakes = harsh_brakes + 1 WHERE ended_at IS NULL ORDER BY RAND() LIMIT 1;
         DELETE FROM car.driving_session ORDER BY RAND() LIMIT 1;
         COMMIT;"
    );
    db.sql(&sql);
}

const SOURCE_VEHICLES: &str = "SELECT CONCAT_WS('|', id, user_id, vin, IFNULL(model, '-'), IFNULL(price, '-'),
  IFNULL(registered_on, '-'), IFNULL(DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f'), '-'), active, updates,
  IFNULL(color, '-')) FROM car.uservehicle ORDER BY id";
const TARGET_VEHICLES: &str = "SELECT concat_ws('|', id, user_id, vin, coalesce(model, '-'), coalesce(price::text, '-'),
  coalesce(registered_on::text, '-'), coalesce(to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS.US'), '-'), active, updates,
  coalesce(color, '-')) FROM inventory.uservehicle ORDER BY id";
const SOURCE_SESSIONS: &str = "SELECT CONCAT_WS('|', session_id, vehicle_id, DATE_FORMAT(started_at, '%Y-%m-%d %H:%i:%s.%f'),
  IFNULL(DATE_FORMAT(ended_at, '%Y-%m-%d %H:%i:%s.%f'), '-'), IFNULL(distance_km, '-'), harsh_brakes, IFNULL(route, '-'))
  FROM car.driving_session ORDER BY session_id";
const TARGET_SESSIONS: &str = "SELECT concat_ws('|', session_id, vehicle_id, to_char(started_at, 'YYYY-MM-DD HH24:MI:SS.US'),
  coalesce(to_char(ended_at, 'YYYY-MM-DD HH24:MI:SS.US'), '-'), coalesce(distance::text, '-'), harsh_brakes, coalesce(route, '-'))
  FROM inventory.driving_sessions ORDER BY session_id";

async fn target_lines(pg: &Postgres, sql: &str) -> Vec<String> {
    match pg.query_text(sql).await {
        Ok(rows) => rows
            .into_iter()
            .map(|row| row.into_iter().next().flatten().unwrap_or_default())
            .collect(),
        // The table is not there yet, or lacks the new column yet.
        Err(_) => Vec::new(),
    }
}

fn source_lines(db: &MariaDb, sql: &str) -> Vec<String> {
    db.sql(sql).lines().map(str::to_string).collect()
}

/// `logpipe_cdc_lag_events` summed over sinks.
fn lag_events(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("logpipe_cdc_lag_events{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The first lines where two tables differ, for the failure message.
fn difference(source: &[String], target: &[String]) -> String {
    let only_source: Vec<&String> = source
        .iter()
        .filter(|l| !target.contains(l))
        .take(5)
        .collect();
    let only_target: Vec<&String> = target
        .iter()
        .filter(|l| !source.contains(l))
        .take(5)
        .collect();
    format!(
        "{} source rows, {} target rows; only in the source: {only_source:#?}; only in the target: {only_target:#?}",
        source.len(),
        target.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_change_events_reach_postgres_exactly_as_the_source_across_kills_and_schema_changes()
 {
    if !mariadb::installed() {
        eprintln!("skipped: MariaDB is not installed (./scripts/test.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start_persistent(dir.path()) else {
        eprintln!("skipped: needs a Kafka cluster this test starts (Kafka Connect runs beside it)");
        return;
    };
    let db = Arc::new(MariaDb::start());
    db.sql(SCHEMA);
    let connect = broker.start_connect();

    // Writers from before the snapshot until the end: Debezium's snapshot
    // and its switch to the binlog happen under load.
    let stop = Arc::new(AtomicBool::new(false));
    let altered = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU32::new(0));
    let writer = {
        let (db, stop, altered, rounds) =
            (db.clone(), stop.clone(), altered.clone(), rounds.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let round = rounds.fetch_add(1, Ordering::SeqCst);
                write_round(&db, round, altered.load(Ordering::SeqCst));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let client = reqwest::Client::new();
    let registered = client
        .post(format!("{connect}/connectors"))
        .json(&serde_json::json!({
            "name": "car-cdc",
            "config": {
                "connector.class": "io.debezium.connector.mariadb.MariaDbConnector",
                "tasks.max": "1",
                "database.hostname": "127.0.0.1",
                "database.port": db.port.to_string(),
                "database.user": "cdc",
                "database.password": "cdcpw",
                "database.server.id": "5401",
                "topic.prefix": "car",
                "database.include.list": "car",
                "schema.history.internal.kafka.bootstrap.servers": broker.brokers,
                "schema.history.internal.kafka.topic": "schema-changes.car",
                "topic.creation.default.replication.factor": "1",
                "topic.creation.default.partitions": "3"
            }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        registered.status().as_u16(),
        201,
        "{}",
        registered.text().await.unwrap()
    );

    let url = fresh_database("cdc_inventory").await;
    let pg = Postgres::lazy(&url);
    // The password comes from a file, as from a Kubernetes secret (trust
    // authentication ignores it; the file must still be read).
    std::fs::write(dir.path().join("pg-password"), "not-in-the-config\n").unwrap();
    let config = dir.path().join("cdc.toml");
    std::fs::write(
        &config,
        format!(
            r#"[bus]
kind = "kafka"
[bus.kafka]
brokers = "{brokers}"

[[cdc.sinks]]
name = "inventory"
url = "{url}"
password_file = "{password}"
schema = "inventory"
topics = ["car.car.uservehicle", "car.car.driving_session"]
batch = 300

[[cdc.sinks.tables]]
topic = "car.car.driving_session"
table = "inventory.driving_sessions"
columns = {{ distance_km = "distance" }}
"#,
            brokers = broker.brokers,
            password = dir.path().join("pg-password").display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let args = [
        "cdc",
        "--config",
        config.as_str(),
        "--listen",
        "127.0.0.1:0",
    ];
    let data = dir.path().join("data");

    // kill -9 three times while changes flow; a schema change between.
    let mut sink = Running::start_role(&args, &data, &[]);
    for kill in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        if kill == 1 {
            db.sql("ALTER TABLE car.uservehicle ADD COLUMN color VARCHAR(16)");
            altered.store(true, Ordering::SeqCst);
            db.sql("ALTER TABLE car.driving_session MODIFY vehicle_id BIGINT NOT NULL");
        }
        sink.kill_hard();
        sink = Running::start_role(&args, &data, &[]);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let written = rounds.load(Ordering::SeqCst);
    assert!(written > 100, "the writer made only {written} transactions");

    let source_vehicles = source_lines(&db, SOURCE_VEHICLES);
    let source_sessions = source_lines(&db, SOURCE_SESSIONS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let vehicles = target_lines(&pg, TARGET_VEHICLES).await;
        let sessions = target_lines(&pg, TARGET_SESSIONS).await;
        if vehicles == source_vehicles && sessions == source_sessions {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the target never equalled the source.\nuservehicle: {}\ndriving_session: {}\nsink log:\n{}",
            difference(&source_vehicles, &vehicles),
            difference(&source_sessions, &sessions),
            sink.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The schema changes reached the target's columns.
    let types = pg
        .query_text(
            "SELECT table_name || '.' || column_name || ':' || udt_name FROM information_schema.columns
             WHERE table_schema = 'inventory' AND column_name IN ('color', 'vehicle_id', 'distance', 'price')
             ORDER BY 1",
        )
        .await
        .unwrap();
    let types: Vec<String> = types.into_iter().filter_map(|r| r[0].clone()).collect();
    assert_eq!(
        types,
        [
            "driving_sessions.distance:numeric",
            "driving_sessions.vehicle_id:int8",
            "uservehicle.color:text",
            "uservehicle.price:numeric"
        ]
    );

    // Caught up: nothing left on the bus, every change and delete counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut metrics = sink.metrics().await;
    while lag_events(&metrics) != 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        metrics = sink.metrics().await;
    }
    assert_eq!(lag_events(&metrics), 0.0, "{metrics}");
    assert!(
        metrics.contains(r#"logpipe_cdc_changes_applied_total{sink="inventory",table="inventory.driving_sessions",op="delete"}"#),
        "{metrics}"
    );
    let positions = pg
        .query_text(
            "SELECT count(*)::text FROM inventory.logpipe_cdc_positions WHERE sink = 'inventory'",
        )
        .await
        .unwrap();
    assert_eq!(
        positions[0][0].as_deref(),
        Some("6"),
        "two topics of three partitions"
    );
    eprintln!(
        "CDC: {written} writer transactions; {} vehicles and {} sessions equal in MariaDB and PostgreSQL after 3 kills",
        source_vehicles.len(),
        source_sessions.len()
    );
    drop(sink);
}
