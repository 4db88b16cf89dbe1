//! A Kafka broker for a test: Apache Kafka (KRaft) from Maven Central,
//! started by `deploy/kafka/kafka.sh` (the profile users run) in a directory
//! of the test's own, on free loopback ports, and stopped when dropped.
//!
//! `LOGPIPE_TEST_KAFKA_BROKERS=HOST:PORT` makes every test use that broker
//! instead (a cluster you run); the tests that stop, restart or configure
//! the broker are skipped then. A test that needs no broker control starts
//! its own broker anyway: tests do not share topics, groups or offsets.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::stdout_of;
use crate::services::free_port;

/// Broker settings every test broker gets: retention applied within a
/// second (the retention test), not every five minutes.
const TEST_PROPERTIES: &str = "log.retention.check.interval.ms=500\n";

/// A Kafka cluster of one or three nodes for one test.
pub struct Broker {
    /// What clients bootstrap from.
    pub brokers: String,
    /// Node 1's PLAINTEXT address: the admin's (ACLs, topic changes).
    admin: String,
    /// The cluster's state (`kafka.sh start DIR`); `None` for an outside one.
    dir: Option<PathBuf>,
    /// Keeps a temporary state directory alive.
    _temp: Option<tempfile::TempDir>,
    nodes: u32,
    /// Nodes this test stopped (not restarted yet).
    stopped: Vec<u32>,
}

/// `deploy/kafka/kafka.sh` of this checkout.
pub fn kafka_sh() -> PathBuf {
    crate::repo().join("deploy/kafka/kafka.sh")
}

/// The bootstrap address of an outside broker the tests must use
/// (`LOGPIPE_TEST_KAFKA_BROKERS`).
fn outside_broker() -> Option<String> {
    std::env::var("LOGPIPE_TEST_KAFKA_BROKERS").ok()
}

/// A base port with `span` free ports above it (a node uses three, and
/// node n of a cluster starts ten above node n-1).
fn free_base(span: u16) -> u16 {
    for _ in 0..50 {
        let base = free_port();
        if base.checked_add(span).is_none() {
            continue;
        }
        let free = (0..span)
            .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no {span} free ports in a row on 127.0.0.1");
}

impl Broker {
    /// A one-node cluster of this test's own.
    pub fn start() -> Broker {
        match outside_broker() {
            Some(brokers) => Broker {
                admin: brokers.split(',').next().unwrap_or_default().to_string(),
                brokers,
                dir: None,
                _temp: None,
                nodes: 1,
                stopped: Vec::new(),
            },
            None => {
                let temp = tempfile::tempdir().unwrap();
                let mut broker = Broker::launch(temp.path(), 1, &[]);
                broker._temp = Some(temp);
                broker
            }
        }
    }

    /// A one-node cluster of this test's own with `properties` added to
    /// its server properties (later keys win). `None` against an outside
    /// broker.
    pub fn start_with(dir: &Path, properties: &str) -> Option<Broker> {
        outside_broker()
            .is_none()
            .then(|| Broker::launch_with(&dir.join("kafka"), 1, &[], properties))
    }

    /// A one-node cluster whose data lives in `dir/kafka`, to be stopped and
    /// restarted on it. `None` against an outside broker.
    pub fn start_persistent(dir: &Path) -> Option<Broker> {
        outside_broker()
            .is_none()
            .then(|| Broker::launch(&dir.join("kafka"), 1, &[]))
    }

    /// A three-node cluster (replication factor 3, `min.insync.replicas` 2)
    /// in `dir/kafka`. `None` against an outside broker.
    pub fn start_cluster(dir: &Path) -> Option<Broker> {
        outside_broker()
            .is_none()
            .then(|| Broker::launch(&dir.join("kafka"), 3, &[]))
    }

    /// A one-node cluster that also serves SASL_SSL (SCRAM-SHA-512, user
    /// `logpipe` with `password`) with a self-signed certificate for
    /// 127.0.0.1 in `dir/cert.pem`; `brokers` is the SASL_SSL address.
    /// `None` against an outside broker.
    pub fn start_secured(dir: &Path, password: &str) -> Option<Broker> {
        if outside_broker().is_some() {
            return None;
        }
        stdout_of(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
                .args(["-days", "2", "-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .arg("-keyout")
                .arg(dir.join("key.pem"))
                .arg("-out")
                .arg(dir.join("cert.pem")),
            "openssl req (a self-signed certificate)",
        );
        let scram = format!("logpipe:{password}");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let mut broker = Broker::launch(
            &dir.join("kafka"),
            1,
            &[
                ("KAFKA_SCRAM", scram.as_str()),
                ("KAFKA_TLS_CERT", cert.to_str().unwrap()),
                ("KAFKA_TLS_KEY", key.to_str().unwrap()),
            ],
        );
        // The SASL_SSL listener is two ports above the plaintext one.
        let port: u16 = broker.brokers.rsplit(':').next().unwrap().parse().unwrap();
        broker.brokers = format!("127.0.0.1:{}", port + 2);
        Some(broker)
    }

    fn launch(dir: &Path, nodes: u32, env: &[(&str, &str)]) -> Broker {
        Broker::launch_with(dir, nodes, env, "")
    }

    fn launch_with(dir: &Path, nodes: u32, env: &[(&str, &str)], extra: &str) -> Broker {
        // Ports are free when picked but another test's process may take
        // one before the broker binds it: then start over on others.
        for attempt in 0.. {
            std::fs::create_dir_all(dir).unwrap();
            let properties = dir.join("test.properties");
            let base = free_base(if nodes == 1 { 3 } else { 23 });
            // `{PORT}` in `extra` is node 1's client port.
            let extra = extra.replace("{PORT}", &base.to_string());
            std::fs::write(&properties, format!("{TEST_PROPERTIES}{extra}")).unwrap();
            let mut command = Command::new("bash");
            command
                .arg(kafka_sh())
                .arg("start")
                .arg(dir)
                .arg(nodes.to_string())
                .arg(base.to_string())
                .env("KAFKA_PROPERTIES", &properties);
            for (key, value) in env {
                command.env(key, value);
            }
            let output = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !output.status.success() {
                // A port taken between the check and the bind shows as
                // "already in use", or only as the node exiting at start
                // (the bind error is then above the log's tail): start
                // over on other ports.
                if attempt < 3
                    && (stderr.contains("already in use")
                        || stderr.contains("exited while starting"))
                {
                    let _ = Command::new("bash")
                        .arg(kafka_sh())
                        .arg("stop")
                        .arg(dir)
                        .output();
                    let _ = std::fs::remove_dir_all(dir);
                    continue;
                }
                panic!("kafka.sh start (Apache Kafka for a test) failed:\n{stderr}");
            }
            let brokers = String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .trim()
                .to_string();
            return Broker {
                admin: brokers.split(',').next().unwrap_or_default().to_string(),
                brokers,
                dir: Some(dir.to_path_buf()),
                _temp: None,
                nodes,
                stopped: Vec::new(),
            };
        }
        unreachable!("the loop returns or panics")
    }

    /// Whether this test controls the broker processes (outage tests).
    pub fn controllable(&self) -> bool {
        self.dir.is_some()
    }

    fn dir(&self) -> &Path {
        self.dir.as_deref().expect("a broker this test started")
    }

    fn pid(&self, node: u32) -> String {
        std::fs::read_to_string(self.dir().join(format!("node{node}/pid")))
            .unwrap()
            .trim()
            .to_string()
    }

    fn kafka_sh(&self, args: &[&str]) -> Vec<u8> {
        stdout_of(
            Command::new("bash").arg(kafka_sh()).args(args),
            &format!("kafka.sh {}", args.join(" ")),
        )
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) every node: they keep their
    /// data but answer nothing meanwhile, like a hung or unreachable host.
    pub fn signal(&self, signal: &str) {
        for node in 1..=self.nodes {
            let status = Command::new("kill")
                .args([signal, &self.pid(node)])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    /// `kill -9` of every node, as in a crash of the whole cluster.
    pub fn kill(&mut self) {
        for node in 1..=self.nodes {
            self.kill_node(node);
        }
    }

    /// Starts every stopped node again on its data.
    pub fn restart(&mut self) {
        assert!(!self.stopped.is_empty(), "the broker is still running");
        for node in std::mem::take(&mut self.stopped) {
            self.start_node(node);
        }
    }

    /// `kill -9` of one node.
    pub fn kill_node(&mut self, node: u32) {
        let dir = self.dir().to_str().unwrap().to_string();
        self.kafka_sh(&["kill", &dir, &node.to_string()]);
        self.stopped.push(node);
    }

    /// A clean shutdown of one node (`SIGTERM`, waiting until it exited).
    pub fn stop_node(&mut self, node: u32) {
        let dir = self.dir().to_str().unwrap().to_string();
        self.kafka_sh(&["stop-node", &dir, &node.to_string()]);
        self.stopped.push(node);
    }

    /// Sets `config` (`key=value`) on `topic` with Kafka's own tool.
    pub fn alter_topic(&self, topic: &str, config: &str) {
        let dir = self.dir().to_str().unwrap().to_string();
        self.kafka_sh(&[
            "cli",
            &dir,
            "org.apache.kafka.tools.ConfigCommand",
            "--bootstrap-server",
            &self.admin,
            "--alter",
            "--entity-type",
            "topics",
            "--entity-name",
            topic,
            "--add-config",
            config,
        ]);
    }

    /// Runs Kafka's ACL tool with `args` on the admin (PLAINTEXT) listener,
    /// e.g. `--add --deny-principal User:logpipe …`.
    pub fn acl(&self, args: &[&str]) {
        let dir = self.dir().to_str().unwrap().to_string();
        let mut command = vec![
            "cli",
            &dir,
            "org.apache.kafka.tools.AclCommand",
            "--bootstrap-server",
            &self.admin,
        ];
        command.extend_from_slice(args);
        self.kafka_sh(&command);
    }

    /// The fewest in-sync replicas of any partition of `topic`.
    pub fn in_sync(&self, topic: &str) -> usize {
        let dir = self.dir().to_str().unwrap().to_string();
        let out = self.kafka_sh(&["in-sync", &dir, topic]);
        String::from_utf8_lossy(&out).trim().parse().unwrap_or(0)
    }

    /// Starts one node again on its data and waits until it serves.
    pub fn start_node(&mut self, node: u32) {
        let dir = self.dir().to_str().unwrap().to_string();
        self.kafka_sh(&["start-node", &dir, &node.to_string()]);
        self.stopped.retain(|n| *n != node);
    }

    /// The node leading `partition` of `topic`.
    pub fn leader(&self, topic: &str, partition: u32) -> u32 {
        let dir = self.dir().to_str().unwrap().to_string();
        let out = self.kafka_sh(&["leader", &dir, topic, &partition.to_string()]);
        String::from_utf8_lossy(&out)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "no leader of {topic}/{partition}: {:?}",
                    String::from_utf8_lossy(&out)
                )
            })
    }

    /// Per partition of `topic`: the high watermark and the last stable
    /// offset (what `read_committed` readers can reach). An acknowledged
    /// record missing from the lake with the stable offset below the high
    /// watermark means an open transaction holds the partition (one left
    /// open by a broker restart blocks every record after it), not a record
    /// that was never written.
    pub fn stable_offsets(&self, topic: &str) -> String {
        let script = "import sys\nfrom confluent_kafka import Consumer, TopicPartition\n\
            out = []\n\
            try:\n\
            \x20   for level in ('read_uncommitted', 'read_committed'):\n\
            \x20       c = Consumer({'bootstrap.servers': sys.argv[1], 'group.id': 'logpipe-test-offsets', 'isolation.level': level})\n\
            \x20       parts = sorted(c.list_topics(sys.argv[2], timeout=10).topics[sys.argv[2]].partitions)\n\
            \x20       out.append(level + ' ' + str([c.get_watermark_offsets(TopicPartition(sys.argv[2], p), timeout=10)[1] for p in parts]))\n\
            \x20       c.close()\n\
            except Exception as error:\n\
            \x20   out.append('not read: ' + str(error))\n\
            print(sys.argv[2] + ' end offsets: ' + '; '.join(out))";
        crate::process::python(script, &[&self.brokers, topic])
    }

    /// For a failure report on a transaction held open: each partition's
    /// high watermark and stable offset, the producers the partition
    /// leaders track with their open transaction's first offset (Kafka's
    /// `kafka-transactions.sh describe-producers`), and what the nodes
    /// logged about transaction state, markers, recovery and truncation in
    /// this run and the one before a restart. Empty against an outside
    /// broker (its logs and tools are not this test's).
    pub fn transactions_report(&self, topic: &str, partitions: u32) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let mut report = vec![self.stable_offsets(topic)];
        for partition in 0..partitions {
            let output = Command::new("bash")
                .arg(kafka_sh())
                .args(["cli", dir.to_str().unwrap()])
                .args(["org.apache.kafka.tools.TransactionsCommand"])
                .args(["--bootstrap-server", &self.admin, "describe-producers"])
                .args(["--topic", topic, "--partition", &partition.to_string()])
                .output();
            let text = match output {
                Ok(output) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
                Err(error) => format!("not run: {error}"),
            };
            report.push(format!(
                "--- producers of {topic}-{partition}:\n{}",
                text.trim_end()
            ));
        }
        const ABOUT: [&str; 5] = [
            "Truncat",
            "TransactionCoordinator id=",
            "marker",
            "hanging",
            "ERROR",
        ];
        // Recovery lines are one per partition: only `topic`'s.
        const RECOVERY: [&str; 2] = ["unflushed", "Producer state recovery"];
        let about = |line: &&str| {
            ABOUT.iter().any(|about| line.contains(about))
                || (line.contains(&format!("partition={topic}-"))
                    && RECOVERY.iter().any(|about| line.contains(about)))
        };
        for node in 1..=self.nodes {
            for file in ["server.log.prev", "server.log"] {
                let log = std::fs::read_to_string(dir.join(format!("node{node}/{file}")))
                    .unwrap_or_default();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(about)
                    .filter(|line| !line.contains("Elected as the txn coordinator"))
                    // The coordinator retries markers to its own node while
                    // a restarted node's listener is not up yet: one line
                    // per 50 ms.
                    .filter(|line| !line.contains("could not be established"))
                    .collect();
                let shown = &lines[lines.len().saturating_sub(120)..];
                report.push(format!(
                    "--- node {node} {file}: {} of {} lines about transactions and recovery\n{}",
                    shown.len(),
                    lines.len(),
                    shown.join("\n")
                ));
            }
        }
        report.join("\n")
    }

    /// What the nodes logged, for a failure report.
    pub fn log(&self) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        (1..=self.nodes)
            .map(|node| {
                let log = std::fs::read_to_string(dir.join(format!("node{node}/server.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                format!(
                    "--- node {node} (last lines)\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Broker {
    /// A Kafka Connect worker (4.3.1, with Debezium's MariaDB connector)
    /// for this cluster, started by `kafka.sh connect`; stopped with the
    /// broker. Returns its REST URL. Needs a cluster this test started.
    pub fn start_connect(&self) -> String {
        for attempt in 0.. {
            let port = free_port().to_string();
            let output = Command::new("bash")
                .arg(kafka_sh())
                .args(["connect", self.dir().to_str().unwrap(), &port])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.success() {
                return String::from_utf8(output.stdout)
                    .unwrap()
                    .lines()
                    .last()
                    .unwrap()
                    .trim()
                    .to_string();
            }
            if attempt < 3 && stderr.contains("already in use") {
                continue;
            }
            panic!("kafka.sh connect (Kafka Connect for a test) failed:\n{stderr}");
        }
        unreachable!("the loop returns or panics")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let Some(dir) = &self.dir else { return };
        if let Ok(pid) = std::fs::read_to_string(dir.join("connect/pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        // Thaw a frozen node first, so it can be stopped; then kill: the
        // data is the test's to throw away.
        for node in 1..=self.nodes {
            if let Ok(pid) = std::fs::read_to_string(dir.join(format!("node{node}/pid"))) {
                let pid = pid.trim();
                let _ = Command::new("kill").args(["-CONT", pid]).status();
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}
