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

/// `color` is there once the writer altered the table.
fn source_vehicles(color: bool) -> String {
    let color = if color { "IFNULL(color, '-')" } else { "'-'" };
    format!("SELECT CONCAT_WS('|', id, user_id, vin, IFNULL(model, '-'), IFNULL(price, '-'),
  IFNULL(registered_on, '-'), IFNULL(DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f'), '-'), active, updates,
  {color}) FROM car.uservehicle ORDER BY id")
}
fn target_vehicles(schema: &str, color: bool) -> String {
    let color = if color { "coalesce(color, '-')" } else { "'-'" };
    format!("SELECT concat_ws('|', id, user_id, vin, coalesce(model, '-'), coalesce(price::text, '-'),
  coalesce(registered_on::text, '-'), coalesce(to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS.US'), '-'), active, updates,
  {color}) FROM {schema}.uservehicle ORDER BY id")
}
const SOURCE_SESSIONS: &str = "SELECT CONCAT_WS('|', session_id, vehicle_id, DATE_FORMAT(started_at, '%Y-%m-%d %H:%i:%s.%f'),
  IFNULL(DATE_FORMAT(ended_at, '%Y-%m-%d %H:%i:%s.%f'), '-'), IFNULL(distance_km, '-'), harsh_brakes, IFNULL(route, '-'))
  FROM car.driving_session ORDER BY session_id";
fn target_sessions(schema: &str) -> String {
    format!("SELECT concat_ws('|', session_id, vehicle_id, to_char(started_at, 'YYYY-MM-DD HH24:MI:SS.US'),
  coalesce(to_char(ended_at, 'YYYY-MM-DD HH24:MI:SS.US'), '-'), coalesce(distance::text, '-'), harsh_brakes, coalesce(route, '-'))
  FROM {schema}.driving_sessions ORDER BY session_id")
}

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

/// Writes rounds into `db` from a thread until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    altered: Arc<AtomicBool>,
    rounds: Arc<AtomicU32>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(db: &Arc<MariaDb>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let altered = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU32::new(0));
        let thread = {
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
        Writer {
            stop,
            altered,
            rounds,
            thread,
        }
    }

    /// `ADD COLUMN color` (set by later rounds) and `MODIFY … BIGINT`.
    fn alter(&self, db: &MariaDb) {
        db.sql("ALTER TABLE car.uservehicle ADD COLUMN color VARCHAR(16)");
        self.altered.store(true, Ordering::SeqCst);
        db.sql("ALTER TABLE car.driving_session MODIFY vehicle_id BIGINT NOT NULL");
    }

    /// Stops and returns how many transactions were written.
    fn finish(self) -> u32 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        self.rounds.load(Ordering::SeqCst)
    }
}

/// Registers Debezium's MariaDB connector for `db`'s `car` database on
/// `connect`, writing `car.car.<table>` with three partitions each.
async fn register_debezium(connect: &str, db: &MariaDb, brokers: &str) {
    let registered = reqwest::Client::new()
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
                "schema.history.internal.kafka.bootstrap.servers": brokers,
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
}

/// A `[[cdc.sinks]]` block writing `topic_prefix`'s two tables into `schema`.
fn sink_block(name: &str, url: &str, topic_prefix: &str, schema: &str) -> String {
    format!(
        r#"
[[cdc.sinks]]
name = "{name}"
url = "{url}"
schema = "{schema}"
topics = ["{topic_prefix}.car.uservehicle", "{topic_prefix}.car.driving_session"]
batch = 300

[[cdc.sinks.tables]]
topic = "{topic_prefix}.car.driving_session"
table = "{schema}.driving_sessions"
columns = {{ distance_km = "distance" }}
"#
    )
}

/// Waits until `schema`'s tables equal the source's, row by row.
async fn wait_equal(
    db: &MariaDb,
    pg: &Postgres,
    schema: &str,
    limit: Duration,
    log: impl Fn() -> String,
) -> (usize, usize) {
    let color = !db
        .sql("SHOW COLUMNS FROM car.uservehicle LIKE 'color'")
        .trim()
        .is_empty();
    let source_vehicles = source_lines(db, &source_vehicles(color));
    let source_sessions = source_lines(db, SOURCE_SESSIONS);
    let deadline = Instant::now() + limit;
    loop {
        let vehicles = target_lines(pg, &target_vehicles(schema, color)).await;
        let sessions = target_lines(pg, &target_sessions(schema)).await;
        if vehicles == source_vehicles && sessions == source_sessions {
            return (vehicles.len(), sessions.len());
        }
        assert!(
            Instant::now() < deadline,
            "{schema} never equalled the source.\nuservehicle: {}\ndriving_session: {}\nlog:\n{}",
            difference(&source_vehicles, &vehicles),
            difference(&source_sessions, &sessions),
            log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `logpipe cdc --config DIR/cdc.toml --listen 127.0.0.1:0` over `DIR/data`
/// with `env`, to start (and start again after a kill).
struct Cdc {
    config: String,
    data: std::path::PathBuf,
    env: Vec<(&'static str, &'static str)>,
}

impl Cdc {
    /// Writes `config` to `dir/cdc.toml`.
    fn new(dir: &std::path::Path, config: &str, env: &[(&'static str, &'static str)]) -> Cdc {
        let path = dir.join("cdc.toml");
        std::fs::write(&path, config).unwrap();
        Cdc {
            config: path.to_str().unwrap().to_string(),
            data: dir.join("data"),
            env: env.to_vec(),
        }
    }

    fn start(&self) -> Running {
        let args = ["cdc", "--config", &self.config, "--listen", "127.0.0.1:0"];
        Running::start_role(&args, &self.data, &self.env)
    }
}

/// MariaDB, Kafka with Kafka Connect beside it, the seed's tables. `None`
/// (the test skips) without MariaDB or a Kafka this test can start.
fn services(dir: &std::path::Path) -> Option<(Arc<MariaDb>, Broker, String)> {
    if !mariadb::installed() {
        eprintln!("skipped: MariaDB is not installed (./scripts/test.sh installs it)");
        return None;
    }
    let Some(broker) = Broker::start_persistent(dir) else {
        eprintln!("skipped: needs a Kafka cluster this test starts (Kafka Connect runs beside it)");
        return None;
    };
    let db = car_database()?;
    let connect = broker.start_connect();
    Some((db, broker, connect))
}

/// A private MariaDB holding the seed's tables; `None` (the test skips)
/// without MariaDB.
fn car_database() -> Option<Arc<MariaDb>> {
    if !mariadb::installed() {
        eprintln!("skipped: MariaDB is not installed (./scripts/test.sh installs it)");
        return None;
    }
    let db = Arc::new(MariaDb::start());
    db.sql(SCHEMA);
    Some(db)
}

fn kafka_config(brokers: &str) -> String {
    format!("[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"{brokers}\"\n")
}

/// Seed 003 as it was, logpipe in Spark's place: Debezium's events,
/// snapshot and switch to the binlog under a writer, applied by `logpipe
/// cdc` killed three times, across `ADD COLUMN` and `MODIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_change_events_reach_postgres_exactly_as_the_source_across_kills_and_schema_changes()
 {
    let dir = tempfile::tempdir().unwrap();
    let Some((db, broker, connect)) = services(dir.path()) else {
        return;
    };
    // The writer runs from before the snapshot until the end.
    let writer = Writer::start(&db);
    register_debezium(&connect, &db, &broker.brokers).await;

    let url = fresh_database("cdc_inventory").await;
    let pg = Postgres::lazy(&url);
    // The password comes from a file, as from a Kubernetes secret (trust
    // authentication ignores it; the file must still be read).
    std::fs::write(dir.path().join("pg-password"), "not-in-the-config\n").unwrap();
    let block = sink_block("inventory", &url, "car", "inventory").replace(
        "schema = ",
        &format!(
            "password_file = \"{}\"\nschema = ",
            dir.path().join("pg-password").display()
        ),
    );
    let cdc = Cdc::new(dir.path(), &(kafka_config(&broker.brokers) + &block), &[]);

    // kill -9 three times while changes flow; the schema changes between.
    let mut sink = cdc.start();
    for kill in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        if kill == 1 {
            writer.alter(&db);
        }
        sink.kill_hard();
        sink = cdc.start();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let written = writer.finish();
    assert!(written > 100, "the writer made only {written} transactions");
    let (vehicles, sessions) = wait_equal(&db, &pg, "inventory", Duration::from_secs(120), || {
        sink.log()
    })
    .await;

    // The schema changes reached the target's columns.
    assert_eq!(
        column_types(&pg, "inventory").await,
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
        "CDC: {written} writer transactions; {vehicles} vehicles and {sessions} sessions equal in MariaDB and PostgreSQL after 3 kills"
    );
}

/// The target's column types of interest, `table.column:udt`.
async fn column_types(pg: &Postgres, schema: &str) -> Vec<String> {
    pg.query_text(&format!(
        "SELECT table_name || '.' || column_name || ':' || udt_name FROM information_schema.columns
         WHERE table_schema = '{schema}' AND column_name IN ('color', 'vehicle_id', 'distance', 'price')
         ORDER BY 1"
    ))
    .await
    .unwrap()
    .into_iter()
    .filter_map(|r| r[0].clone())
    .collect()
}

/// Reads both families of change topics (confluent-kafka, as any Debezium
/// consumer would) and compares, per primary key, the streamed changes'
/// `op`, `before` and `after`. Each stream is first freed of the records a
/// restarted producer appended again (same source coordinates and row).
const COMPARE_STREAMS: &str = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
brokers, a, b = sys.argv[1:4]
keys = {"car.uservehicle": "id", "car.driving_session": "session_id"}
def read(topic):
    c = Consumer({"bootstrap.servers": brokers, "group.id": "compare-" + topic, "enable.auto.commit": False})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out, idle = [], 0
    while idle < 6:
        m = c.poll(0.5)
        if m is None:
            idle += 1
            continue
        idle = 0
        if m.error() or not m.value():
            continue
        out.append((m.partition(), m.offset(), json.loads(m.value())["payload"]))
    c.close()
    return out
def per_key(prefix, table):
    seen, changes, count = set(), {}, 0
    for _, _, p in sorted(read(prefix + "." + table), key=lambda e: (e[0], e[1])):
        if p["op"] == "r":
            continue
        s = p["source"]
        ident = json.dumps([s["file"], s["pos"], s.get("row"), p["op"], p["before"], p["after"]], sort_keys=True)
        if ident in seen:
            continue
        seen.add(ident)
        count += 1
        row = p["after"] or p["before"]
        changes.setdefault(str(row[keys[table]]), []).append([p["op"], p["before"], p["after"]])
    return changes, count
result = {}
for table in keys:
    ca, na = per_key(a, table)
    cb, nb = per_key(b, table)
    differing = [k for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)]
    result[table] = {"a": na, "b": nb, "differing": len(differing),
                     "first": [[k, ca.get(k), cb.get(k)] for k in differing[:2]]}
print(json.dumps(result))
"#;

/// logpipe's own source beside Debezium on the same MariaDB: both streams
/// into PostgreSQL through one `logpipe cdc` (source and sinks), killed
/// twice mid-stream with schema changes between; both targets equal the
/// source, and the two event streams agree change by change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logpipes_binlog_source_agrees_with_debezium_and_reaches_postgres_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    let Some((db, broker, connect)) = services(dir.path()) else {
        return;
    };
    register_debezium(&connect, &db, &broker.brokers).await;
    let url = fresh_database("cdc_source").await;
    let pg = Postgres::lazy(&url);
    let source = format!(
        r#"
[[cdc.sources]]
name = "lp"
url = "mysql://cdc@127.0.0.1:{port}"
password_env = "CAR_DB_PASSWORD"
server_id = 5402
tables = ["car.uservehicle", "car.driving_session"]
partitions = 3
batch = 200
"#,
        port = db.port
    );
    let command = Cdc::new(
        dir.path(),
        &(kafka_config(&broker.brokers)
            + &source
            + &sink_block("from_debezium", &url, "car", "dbz")
            + &sink_block("from_logpipe", &url, "lp", "lp")),
        &[("CAR_DB_PASSWORD", "cdcpw")],
    );

    let mut cdc = command.start();
    // Both snapshots first: then every later change is streamed by both.
    wait_equal(&db, &pg, "lp", Duration::from_secs(60), || cdc.log()).await;
    wait_equal(&db, &pg, "dbz", Duration::from_secs(120), || cdc.log()).await;
    let writer = Writer::start(&db);
    for kill in 0..2 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        if kill == 1 {
            writer.alter(&db);
        }
        cdc.kill_hard();
        cdc = command.start();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let written = writer.finish();
    let (vehicles, sessions) =
        wait_equal(&db, &pg, "lp", Duration::from_secs(120), || cdc.log()).await;
    wait_equal(&db, &pg, "dbz", Duration::from_secs(120), || cdc.log()).await;
    assert_eq!(
        column_types(&pg, "lp").await,
        column_types(&pg, "dbz").await
    );

    let compared: serde_json::Value = serde_json::from_str(&crate::common::process::python(
        COMPARE_STREAMS,
        &[&broker.brokers, "car", "lp"],
    ))
    .unwrap();
    for table in ["car.uservehicle", "car.driving_session"] {
        let t = &compared[table];
        assert_eq!(
            t["differing"], 0,
            "{table}: Debezium's and logpipe's changes differ: {t:#}"
        );
        assert!(t["a"].as_u64().unwrap() > 100, "{table}: {t:#}");
        assert_eq!(t["a"], t["b"], "{table}: {t:#}");
    }
    let metrics = cdc.metrics().await;
    assert!(
        metrics.contains(
            "logpipe_cdc_source_changes_total{source=\"lp\",table=\"car.uservehicle\",op=\"u\"}"
        ),
        "{metrics}"
    );
    eprintln!(
        "CDC source: {written} writer transactions, {vehicles} vehicles and {sessions} sessions; changes agree with Debezium: {compared}"
    );
}

/// One machine, one process, no Kafka and no JVM: `logpipe cdc` with a
/// source and a sink on the embedded bus keeps PostgreSQL equal to MariaDB
/// across a snapshot, a writer, a kill -9 and the schema changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_sink_on_the_embedded_bus_need_no_kafka() {
    let Some(db) = car_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database("cdc_one_pc").await;
    let pg = Postgres::lazy(&url);
    std::fs::write(dir.path().join("car-password"), "cdcpw\n").unwrap();
    let source = format!(
        r#"
[[cdc.sources]]
name = "car"
url = "mysql://cdc@127.0.0.1:{port}"
password_file = "{password}"
tables = ["car.uservehicle", "car.driving_session"]
"#,
        port = db.port,
        password = dir.path().join("car-password").display()
    );
    let command = Cdc::new(
        dir.path(),
        &(source + &sink_block("inventory", &url, "car", "inventory")),
        &[],
    );
    let mut cdc = command.start();
    wait_equal(&db, &pg, "inventory", Duration::from_secs(60), || cdc.log()).await;
    let metrics = cdc.metrics().await;
    assert!(
        metrics.contains(r#"logpipe_cdc_snapshot_rows{source="car",table="car.driving_session",what="copied"} 1000"#),
        "{metrics}"
    );
    let writer = Writer::start(&db);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cdc.kill_hard();
    writer.alter(&db);
    cdc = command.start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = writer.finish();
    let (vehicles, sessions) =
        wait_equal(&db, &pg, "inventory", Duration::from_secs(60), || cdc.log()).await;
    eprintln!(
        "CDC on the embedded bus: {written} writer transactions, {vehicles} vehicles and {sessions} sessions equal"
    );
}

/// `database`'s vehicles in MariaDB, decimals as doubles (the target's
/// DECIMAL has another scale than the source's).
fn mariadb_vehicles(database: &str, color: bool) -> String {
    let color = if color { "IFNULL(color, '-')" } else { "'-'" };
    format!("SELECT CONCAT_WS('|', id, user_id, vin, IFNULL(model, '-'), IFNULL(CAST(price AS DOUBLE), '-'),
  IFNULL(registered_on, '-'), IFNULL(DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f'), '-'), active, updates,
  {color}) FROM {database}.uservehicle ORDER BY id")
}

fn mariadb_sessions(table: &str, distance: &str) -> String {
    format!("SELECT CONCAT_WS('|', session_id, vehicle_id, DATE_FORMAT(started_at, '%Y-%m-%d %H:%i:%s.%f'),
  IFNULL(DATE_FORMAT(ended_at, '%Y-%m-%d %H:%i:%s.%f'), '-'), IFNULL(CAST({distance} AS DOUBLE), '-'), harsh_brakes,
  IFNULL(route, '-')) FROM {table} ORDER BY session_id")
}

/// Seed 003's own target: the inventory database on MariaDB. Source and
/// sink in one `logpipe cdc` on the embedded bus, killed once under the
/// writer, the schema changes between: `inventory_db` equals `car`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_a_mariadb_inventory_database_exactly_as_the_source() {
    let Some(db) = car_database() else { return };
    db.sql(
        "CREATE DATABASE inventory_db; CREATE USER 'inventory'@'%' IDENTIFIED BY 'invpw';
         GRANT ALL ON inventory_db.* TO 'inventory'@'%';",
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mysql://inventory@127.0.0.1:{}/inventory_db", db.port);
    let sink = sink_block("inventory", &url, "car", "inventory_db").replace(
        "schema = ",
        "password_env = \"INVENTORY_PASSWORD\"\nschema = ",
    );
    let source = format!(
        r#"
[[cdc.sources]]
name = "car"
url = "mysql://cdc:cdcpw@127.0.0.1:{port}"
tables = ["car.uservehicle", "car.driving_session"]
"#,
        port = db.port
    );
    let command = Cdc::new(
        dir.path(),
        &(source + &sink),
        &[("INVENTORY_PASSWORD", "invpw")],
    );
    let wait = |cdc: &Running| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let color = !db
                .sql("SHOW COLUMNS FROM car.uservehicle LIKE 'color'")
                .trim()
                .is_empty();
            let source = (
                source_lines(&db, &mariadb_vehicles("car", color)),
                source_lines(&db, &mariadb_sessions("car.driving_session", "distance_km")),
            );
            let target = (
                db.try_sql(&mariadb_vehicles("inventory_db", color))
                    .unwrap_or_default(),
                db.try_sql(&mariadb_sessions(
                    "inventory_db.driving_sessions",
                    "distance",
                ))
                .unwrap_or_default(),
            );
            let target: (Vec<String>, Vec<String>) = (
                target.0.lines().map(str::to_string).collect(),
                target.1.lines().map(str::to_string).collect(),
            );
            if source == target {
                return source.0.len() + source.1.len();
            }
            assert!(
                Instant::now() < deadline,
                "inventory_db never equalled car.\nuservehicle: {}\ndriving_session: {}\nlog:\n{}",
                difference(&source.0, &target.0),
                difference(&source.1, &target.1),
                cdc.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let mut cdc = command.start();
    wait(&cdc);
    let writer = Writer::start(&db);
    std::thread::sleep(Duration::from_secs(3));
    cdc.kill_hard();
    writer.alter(&db);
    cdc = command.start();
    std::thread::sleep(Duration::from_secs(3));
    let written = writer.finish();
    let rows = wait(&cdc);
    let positions =
        db.sql("SELECT COUNT(*) FROM inventory_db.logpipe_cdc_positions WHERE sink = 'inventory'");
    assert_eq!(positions.trim(), "6", "two topics of three partitions");
    let types = db.sql(
        "SELECT CONCAT(TABLE_NAME, '.', COLUMN_NAME, ':', DATA_TYPE) FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = 'inventory_db' AND COLUMN_NAME IN ('color', 'vehicle_id') ORDER BY 1",
    );
    assert_eq!(
        types.trim(),
        "driving_sessions.vehicle_id:bigint\nuservehicle.color:longtext"
    );
    eprintln!(
        "CDC into MariaDB: {written} writer transactions, {rows} rows equal in car and inventory_db"
    );
}

/// A model service for the scoring hook: answers `{"score": id / 2}`, but
/// HTTP 500 for odd ids while the file named by its argument exists.
/// Prints its port.
const SCORER: &str = r#"
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        row = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if row["id"] % 2 and os.path.exists(sys.argv[1]):
            self.send_response(500)
            self.end_headers()
            return
        body = json.dumps({"score": row["id"] / 2}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer.request_queue_size = 64
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// `[scored = id / 2, without a score, updated once]` counts of `uservehicle`.
const SCORED: &str = "SELECT count(*) FILTER (WHERE score = id / 2.0)::text, count(*) FILTER (WHERE score IS NULL)::text,
    count(*) FILTER (WHERE updates = 1)::text FROM uservehicle";

/// The first row of `sql` as text (empty while it fails, e.g. before the
/// sink made the table).
async fn first_row(pg: &Postgres, sql: &str) -> Vec<String> {
    pg.query_text(sql)
        .await
        .unwrap_or_default()
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// Waits up to `limit` until `sql`'s first row is `want`; fails the test
/// saying `what`, with the last row and `cdc`'s log.
async fn wait_row(
    pg: &Postgres,
    sql: &str,
    want: &[&str],
    limit: Duration,
    cdc: &Running,
    what: &str,
) {
    let deadline = Instant::now() + limit;
    loop {
        let row = first_row(pg, sql).await;
        if row == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {row:?}, want {want:?}\n{}",
            cdc.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The seed's model service: every upserted vehicle is POSTed to a scorer
/// and its answer stored beside the row. While the scorer fails (odd ids),
/// sink `scored` (`on_failure = "null"`) writes those rows without a score
/// and holds nothing, and sink `waiting` (`on_failure = "wait"`) writes
/// nothing; when the scorer recovers, `waiting` has every row, each with
/// its score, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scoring_hook_stores_each_rows_score_and_never_loses_a_change() {
    let Some(db) = car_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let failing = dir.path().join("odd-ids-fail");
    std::fs::write(&failing, "").unwrap();
    let mut scorer = std::process::Command::new("python3")
        .args(["-c", SCORER])
        .arg(&failing)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(scorer.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let url = fresh_database("cdc_score").await;
    let waiting_url = fresh_database("cdc_score_wait").await;
    let pg = Postgres::lazy(&url);
    let waiting_pg = Postgres::lazy(&waiting_url);
    // Two sinks of the same topic, one per on_failure policy.
    let sink = |name: &str, url: &str, on_failure: &str| {
        format!(
            r#"
[[cdc.sinks]]
name = "{name}"
url = "{url}"
topics = ["car.car.uservehicle"]

[[cdc.sinks.tables]]
topic = "car.car.uservehicle"
table = "uservehicle"
score = {{ url = "http://127.0.0.1:{port}/predict", on_failure = "{on_failure}", retries = 1, timeout = "2s" }}
"#,
            port = port.trim()
        )
    };
    let config = format!(
        "[[cdc.sources]]\nname = \"car\"\nurl = \"mysql://cdc:cdcpw@127.0.0.1:{}\"\ntables = [\"car.uservehicle\"]\n{}{}",
        db.port,
        sink("scored", &url, "null"),
        sink("waiting", &waiting_url, "wait")
    );
    let command = Cdc::new(dir.path(), &config, &[]);
    let cdc = command.start();
    db.sql("UPDATE car.uservehicle SET updates = updates + 1 WHERE id <= 20");
    let scored = ["250", "250", "20"];
    wait_row(
        &pg,
        SCORED,
        &scored,
        Duration::from_secs(60),
        &cdc,
        "scores never arrived",
    )
    .await;
    let metrics = cdc.metrics().await;
    assert!(
        metrics.contains(r#"logpipe_cdc_scores_total{sink="scored",outcome="failed"}"#),
        "{metrics}"
    );
    // The waiting sink has written no row without its score while the
    // scorer failed (a batch with an odd id waits whole).
    let held = first_row(&waiting_pg, SCORED).await;
    assert!(
        held.is_empty() || held[1] == "0",
        "rows written without their scores: {held:?}"
    );
    std::fs::remove_file(&failing).unwrap();
    let waited = ["500", "0", "20"];
    wait_row(
        &waiting_pg,
        SCORED,
        &waited,
        Duration::from_secs(60),
        &cdc,
        "the waiting sink never caught up",
    )
    .await;
    let _ = scorer.kill();
    let _ = scorer.wait();
    eprintln!(
        "scoring hook: on_failure=null {scored:?}, on_failure=wait after the scorer recovered {waited:?} \
         (scored, without a score, updated)"
    );
}

/// A snapshot cut by kill -9 resumes: the tables it had finished are not
/// copied again, the one it was copying is, and the binlog is still read
/// from the first snapshot's position, so changes made while it was down
/// (an update of a finished table, deletes in the cut one) reach the
/// target after the copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cut_by_a_kill_resumes_without_copying_finished_tables_again() {
    const READINGS: u32 = 200_000;
    let Some(db) = car_database() else { return };
    db.sql(&format!(
        "USE car; CREATE TABLE car.odometer (reading_id BIGINT PRIMARY KEY, vehicle_id INT NOT NULL, km DOUBLE NOT NULL);
         INSERT INTO car.odometer SELECT seq, 1 + seq % 500, seq * 1.5 FROM seq_1_to_{READINGS};"
    ));
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database("cdc_resume").await;
    let pg = Postgres::lazy(&url);
    let config = format!(
        r#"
[[cdc.sources]]
name = "car"
url = "mysql://cdc:cdcpw@127.0.0.1:{port}"
tables = ["car.uservehicle", "car.driving_session", "car.odometer"]
batch = 1000

[[cdc.sinks]]
name = "inventory"
url = "{url}"
topics = ["car.car.uservehicle", "car.car.driving_session", "car.car.odometer"]
"#,
        port = db.port
    );
    let command = Cdc::new(dir.path(), &config, &[]);
    let cdc = command.start();
    // Killed while the odometer is being copied: the two tables before it
    // are finished.
    let copying = r#"logpipe_cdc_snapshot_rows{source="car",table="car.odometer",what="copied"} "#;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = cdc.metrics().await;
        let copied: Option<f64> = metrics
            .lines()
            .find_map(|line| line.strip_prefix(copying)?.trim().parse().ok());
        if let Some(copied) = copied {
            assert!(
                copied < f64::from(READINGS) / 2.0,
                "the snapshot went too fast to be cut ({copied} rows copied)"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the odometer was never copied\n{}",
            cdc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.sql(
        "UPDATE car.uservehicle SET updates = updates + 1 WHERE id <= 10;
         DELETE FROM car.odometer WHERE reading_id <= 100;",
    );
    cdc.kill_hard();
    let cdc = command.start();
    let readings = (READINGS - 100).to_string();
    wait_row(
        &pg,
        "SELECT (SELECT count(*) FROM uservehicle)::text, (SELECT sum(updates) FROM uservehicle)::text,
                (SELECT count(*) FROM driving_session)::text, (SELECT count(*) FROM odometer)::text",
        &["500", "10", "1000", &readings],
        Duration::from_secs(120),
        &cdc,
        "the target never reached the source",
    )
    .await;
    // The restarted source copied only the odometer.
    let metrics = cdc.metrics().await;
    let reads = |table: &str| {
        metrics.lines().any(|line| {
            line.starts_with(&format!(
                r#"logpipe_cdc_source_changes_total{{source="car",table="{table}",op="r"}}"#
            ))
        })
    };
    assert!(
        !reads("car.uservehicle") && !reads("car.driving_session") && reads("car.odometer"),
        "{metrics}"
    );
    let log = cdc.log();
    assert!(
        log.contains("table copied before, not copied again"),
        "{log}"
    );
    eprintln!(
        "CDC snapshot resumed after a kill: only car.odometer copied again; target equals source"
    );
}

/// `[uservehicle rows, sum(updates), driving_session rows]` of a target.
const TARGET_COUNTS: &str = "SELECT (SELECT count(*) FROM uservehicle)::text,
    (SELECT coalesce(sum(updates), 0) FROM uservehicle)::text, (SELECT count(*) FROM driving_session)::text";

async fn wait_counts(pg: &Postgres, want: &[&str], cdc: &Running, what: &str) {
    wait_row(pg, TARGET_COUNTS, want, Duration::from_secs(60), cdc, what).await;
}

/// The binlog a stopped source was to resume from is purged: with
/// `purged = "fail"` (the default) it stops saying what was lost and what
/// to set; with `purged = "snapshot"` it copies the tables again and the
/// changes made in the lost binlog reach the target. A source with
/// `snapshot = "never"` sends only changes made after it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_position_fails_or_snapshots_again_and_snapshot_never_sends_only_new_changes() {
    let Some(db) = car_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database("cdc_purged").await;
    let later_url = fresh_database("cdc_never").await;
    let pg = Postgres::lazy(&url);
    let later_pg = Postgres::lazy(&later_url);
    let config = |purged: &str, with_later: bool| {
        let mut text = format!(
            r#"
[[cdc.sources]]
name = "car"
url = "mysql://cdc:cdcpw@127.0.0.1:{port}"
tables = ["car.uservehicle", "car.driving_session"]
purged = "{purged}"

[[cdc.sinks]]
name = "inventory"
url = "{url}"
topics = ["car.car.uservehicle", "car.car.driving_session"]
"#,
            port = db.port
        );
        if with_later {
            text.push_str(&format!(
                r#"
[[cdc.sources]]
name = "later"
url = "mysql://cdc:cdcpw@127.0.0.1:{port}"
server_id = 5401
tables = ["car.uservehicle"]
snapshot = "never"

[[cdc.sinks]]
name = "later"
url = "{later_url}"
topics = ["later.car.uservehicle"]
"#,
                port = db.port
            ));
        }
        text
    };
    let cdc = Cdc::new(dir.path(), &config("fail", false), &[]).start();
    wait_counts(&pg, &["500", "0", "1000"], &cdc, "the first snapshot").await;
    cdc.kill_hard();
    // While it is down: changes, then their binlog purged.
    db.sql(
        "UPDATE car.uservehicle SET updates = updates + 1 WHERE id <= 10;
         INSERT INTO car.driving_session (vehicle_id, started_at) VALUES (1, NOW(6));
         FLUSH BINARY LOGS;
         DO SLEEP(1);
         PURGE BINARY LOGS BEFORE NOW();",
    );
    let mut failing = Cdc::new(dir.path(), &config("fail", false), &[]).start();
    let status = failing.wait_for_exit(Duration::from_secs(60), "with its position purged");
    let log = failing.log();
    assert!(
        !status.success()
            && log.contains("changes since then are lost")
            && log.contains("cdc.sources.purged = \"snapshot\""),
        "{status}\n{log}"
    );
    let cdc = Cdc::new(dir.path(), &config("snapshot", true), &[]).start();
    wait_counts(
        &pg,
        &["500", "10", "1001"],
        &cdc,
        "the snapshot after the purge",
    )
    .await;
    // The `never` source follows the binlog from where it was at start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cdc
        .log()
        .contains("CDC source following the binlog source=later")
    {
        assert!(Instant::now() < deadline, "{}", cdc.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.sql("UPDATE car.uservehicle SET updates = updates + 1 WHERE id BETWEEN 101 AND 105");
    wait_counts(
        &pg,
        &["500", "15", "1001"],
        &cdc,
        "the changes after the purge",
    )
    .await;
    let later = loop {
        let rows = later_pg
            .query_text("SELECT string_agg(id::text, ',' ORDER BY id) FROM uservehicle")
            .await
            .ok()
            .and_then(|rows| rows.into_iter().next()?.into_iter().next()?);
        if rows.as_deref() == Some("101,102,103,104,105") {
            break rows;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "the snapshot = \"never\" target: {rows:?}\n{}",
            cdc.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!(
        "purged = fail stopped, purged = snapshot copied again; snapshot = never sent only {later:?}"
    );
}

/// On a terminal `logpipe cdc` shows the snapshot's progress (rows, rows/s,
/// the table being copied) and then what it copied: run under `script`,
/// which gives it a terminal.
#[test]
fn a_terminal_shows_the_snapshots_progress() {
    let Some(db) = car_database() else { return };
    db.sql(
        "USE car; CREATE TABLE car.odometer (reading_id BIGINT PRIMARY KEY, km DOUBLE NOT NULL);
         INSERT INTO car.odometer SELECT seq, seq * 1.5 FROM seq_1_to_150000;",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[[cdc.sources]]\nname = \"car\"\nurl = \"mysql://cdc:cdcpw@127.0.0.1:{}\"\ntables = [\"car.odometer\"]\n",
            db.port
        ),
    )
    .unwrap();
    let command = format!(
        "{} cdc --config {} --data-dir {}",
        crate::common::running::binary().display(),
        config.display(),
        dir.path().join("data").display()
    );
    let mut script = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = script.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains("rows copied in") && Instant::now() < deadline {
        if let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    let _ = script.kill();
    let _ = script.wait();
    assert!(
        seen.contains("snapshot car: ")
            && seen.contains("rows/s (table 1/1 car.odometer, ~")
            && seen.contains("snapshot car: 150,000 rows copied in"),
        "{seen}"
    );
    let shown: Vec<&str> = seen
        .split(['\r', '\n'])
        .filter(|line| line.contains("snapshot car"))
        .collect();
    eprintln!("on a terminal: {shown:?}");
}

/// `ENUM` and `SET` columns arrive as their text (Debezium's `Enum` and
/// `EnumSet`): from the snapshot's rows, and from the binlog, which carries
/// only their numbers and bits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_and_set_columns_arrive_as_their_text() {
    let Some(db) = car_database() else { return };
    db.sql(
        "CREATE TABLE car.trims (id INT PRIMARY KEY, trim ENUM('base', 'sport', 'it''s lux') NOT NULL,
           options SET('roof', 'tow', 'heat', 'sat nav') NOT NULL);
         INSERT INTO car.trims VALUES (1, 'base', ''), (2, 'sport', 'roof,heat'), (3, 'it''s lux', 'tow');",
    );
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database("cdc_enums").await;
    let pg = Postgres::lazy(&url);
    let config = format!(
        r#"
[[cdc.sources]]
name = "car"
url = "mysql://cdc:cdcpw@127.0.0.1:{port}"
tables = ["car.trims"]

[[cdc.sinks]]
name = "inventory"
url = "{url}"
topics = ["car.car.trims"]
"#,
        port = db.port
    );
    let cdc = Cdc::new(dir.path(), &config, &[]).start();
    let source = || {
        source_lines(
            &db,
            "SELECT CONCAT_WS('|', id, trim, options) FROM car.trims ORDER BY id",
        )
        .join("\n")
    };
    let target =
        "SELECT string_agg(concat_ws('|', id, trim, options), E'\\n' ORDER BY id) FROM trims";
    wait_row(
        &pg,
        target,
        &[&source()],
        Duration::from_secs(60),
        &cdc,
        "the snapshot",
    )
    .await;
    // From the binlog: numbers and bits turned into their text.
    db.sql(
        "UPDATE car.trims SET trim = 'it''s lux', options = 'roof,tow,heat' WHERE id = 1;
         UPDATE car.trims SET options = '' WHERE id = 2;
         INSERT INTO car.trims VALUES (4, 'sport', 'heat,tow,sat nav');",
    );
    let want = source();
    assert!(want.contains("1|it's lux|roof,tow,heat"), "{want}");
    wait_row(
        &pg,
        target,
        &[&want],
        Duration::from_secs(60),
        &cdc,
        "the binlog's changes",
    )
    .await;
}
