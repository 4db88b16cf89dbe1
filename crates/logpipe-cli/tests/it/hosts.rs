//! The seed's three-machine layout on one machine: network namespaces
//! `master`, `worker1` and `worker2` on a bridge of the test's own, each
//! with its own address, data directory and hosts file. The master runs
//! Apache Kafka (deploy/kafka/kafka.sh, bound to the master's address), the
//! S3 server of the lake (versitygw) and the collector; each worker runs a
//! `logpipe stream` process of one consumer group. Every address is a
//! host name (`master:9092`, `http://master:7070`), as a real deployment's
//! would be. No packet leaves the machine (`services::hosts`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::repo;
use crate::common::running::{Running, binary};
use crate::common::services::hosts::Hosts;
use crate::common::services::s3::S3Server;

/// Kafka on the master, stopped when dropped.
struct MasterKafka<'a> {
    hosts: &'a Hosts,
    dir: std::path::PathBuf,
}

impl MasterKafka<'_> {
    fn script(&self, args: &[&str]) {
        let output = self
            .hosts
            .command("master", repo().join("deploy/kafka/kafka.sh"))
            .args(args)
            .env("KAFKA_HOST", self.hosts.addr("master"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kafka.sh {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for MasterKafka<'_> {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("deploy/kafka/kafka.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// `logpipe sql` on the master, over the lake `env` points at.
fn sql_on_master(hosts: &Hosts, data: &Path, env: &[(&str, &str)], sql: &str) -> Vec<Value> {
    let output = hosts
        .command("master", binary())
        .args(["sql", "--format", "json", "--data-dir"])
        .arg(data)
        .arg(sql)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "logpipe sql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Under a steady load from the master, a worker is killed with SIGKILL
/// and started again, the other worker is cut off the network for 14 s
/// and healed, and the master's broker is restarted: every record the
/// collector acknowledged is in the lake on S3 exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_lose_nothing_across_a_killed_worker_a_partition_and_a_broker_restart() {
    let hosts = Hosts::create(&["master", "worker1", "worker2"]);
    let tmp = tempfile::tempdir().unwrap();
    let master_ns = hosts.namespace("master");
    let master = hosts.addr("master");

    let kafka = MasterKafka {
        hosts: &hosts,
        dir: tmp.path().join("kafka"),
    };
    kafka.script(&["start", kafka.dir.to_str().unwrap(), "1", "9092"]);
    let mut s3 = S3Server::start_in_namespace(&master_ns, &master);
    hosts.wait_port("worker1", &master, 7070, Duration::from_secs(20));

    let mut lake_env = s3.lake_env("hosts");
    for (key, value) in lake_env.iter_mut() {
        if *key == "LOGPIPE__LAKE__S3__ENDPOINT" {
            *value = "http://master:7070".to_string();
        }
    }
    let mut env: Vec<(&str, &str)> = vec![
        ("LOGPIPE__BUS__KIND", "kafka"),
        ("LOGPIPE__BUS__KAFKA__BROKERS", "master:9092"),
        ("LOGPIPE__BUS__KAFKA__GROUP", "three-hosts"),
        ("LOGPIPE__BUS__KAFKA__SESSION_TIMEOUT", "6s"),
        ("LOGPIPE__LAKE__FLUSH_INTERVAL", "300ms"),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
        ("LOGPIPE__REPORTS__SCHEDULE", "false"),
        // Each listens on its host's address, reachable by the others.
        ("LOGPIPE__AUTH__ALLOW_UNAUTHENTICATED", "true"),
        // Each lake commit in the log, to follow a missing record.
        (
            "LOGPIPE_LOG",
            "info,logpipe_lake::commit=debug,logpipe_bus=debug",
        ),
    ];
    env.extend(lake_env.iter().map(|(k, v)| (*k, v.as_str())));

    let data = |host: &str| tmp.path().join(format!("data-{host}"));
    let collector = Running::start_role_in(
        &master_ns,
        &["collector", "--listen", &format!("{master}:8081")],
        &data("master"),
        &env,
    );
    let worker = |host: &str| {
        Running::start_role_in(
            &hosts.namespace(host),
            &["stream", "--listen", &format!("{}:9100", hosts.addr(host))],
            &data(host),
            &env,
        )
    };
    let worker1 = worker("worker1");
    let worker2 = worker("worker2");

    // 45 s of logs at 1,000/s from the master, retried (with the same
    // Idempotency-Key) through every outage below.
    let count = 45_000;
    let mut load: Child = hosts
        .command("master", binary())
        .args(["generate", "--target", "http://master:8081", "--count"])
        .arg(count.to_string())
        .args([
            "--rate",
            "1000",
            "--batch-size",
            "100",
            "--concurrency",
            "2",
        ])
        .args(["--retry-for-secs", "180"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let at = |seconds: u64| async move {
        let when = started + Duration::from_secs(seconds);
        tokio::time::sleep_until(when.into()).await;
    };

    at(6).await;
    worker1.kill_hard();
    at(12).await;
    let worker1 = worker("worker1");
    at(16).await;
    hosts.cut("worker2");
    at(30).await;
    hosts.heal("worker2");
    at(34).await;
    kafka.script(&["stop-node", kafka.dir.to_str().unwrap(), "1"]);
    at(38).await;
    kafka.script(&["start-node", kafka.dir.to_str().unwrap(), "1"]);

    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = load.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the load did not finish");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let output = load.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let logs = || {
        format!(
            "load:\n{report}\ncollector:\n{}\nworker1:\n{}\nworker2:\n{}",
            collector.log(),
            worker1.log(),
            worker2.log()
        )
    };
    assert!(
        status.success(),
        "not every record was acknowledged:\n{}",
        logs()
    );

    // Every acknowledged record in the lake, once.
    let sql = "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM logs";
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = sql_on_master(&hosts, &data("master"), &env, sql);
        if rows[0]["n"].as_u64() >= Some(count) || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if rows[0] != serde_json::json!({"n": count, "d": count}) {
        let offsets = hosts
            .command("master", repo().join("deploy/kafka/kafka.sh"))
            .arg("cli")
            .arg(&kafka.dir)
            .args([
                "org.apache.kafka.tools.GetOffsetShell",
                "--bootstrap-server",
            ])
            .arg(format!("{master}:9092"))
            .args(["--topic", "logs.raw"])
            .output()
            .unwrap();
        panic!(
            "the lake holds {} of {count} acknowledged records\nlogs.raw ends at:\n{}\n{}\nkept: {:?} and the lake in {:?}",
            rows[0],
            String::from_utf8_lossy(&offsets.stdout),
            logs(),
            tmp.keep(),
            s3.keep_files()
        );
    }
    // Whether this run hit the late create (it does in about half the
    // runs: the cut catches worker2 between sending a commit and its
    // answer); every record is in the lake either way.
    let late = [&worker1, &worker2]
        .iter()
        .any(|w| w.log().contains("reached the store after newer ones"));
    eprintln!("a late commit record was refused: {late}");
    // The partitioned worker is back in the group and serving.
    let ready = hosts
        .command("master", binary())
        .args([
            "ready",
            "--url",
            &format!("http://{}:9100/ready", hosts.addr("worker2")),
        ])
        .output()
        .unwrap();
    assert!(
        ready.status.success(),
        "worker2: {}",
        String::from_utf8_lossy(&ready.stderr)
    );
    assert!(
        worker2.terminate().success(),
        "worker2 did not stop cleanly"
    );
}
