//! Starting the real `logpipe` binary for end-to-end tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_logpipe")
}

/// A running `logpipe up`, killed when dropped.
pub struct Running {
    pub child: Child,
    pub base_url: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

/// `logpipe up` without the generator, on a free loopback port.
pub const UP: &[&str] = &["up", "--no-generator", "--listen", "127.0.0.1:0"];

impl Running {
    /// Starts `logpipe up --no-generator` on 127.0.0.1:0 over `data_dir`
    /// and waits until it prints its address.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Running {
        Running::start_role(UP, data_dir, env)
    }

    /// [`Running::start`] with `--config CONFIG`.
    pub fn start_with_config(data_dir: &Path, env: &[(&str, &str)], config: &Path) -> Running {
        let config = config.to_str().unwrap();
        Running::start_role(&[UP, &["--config", config]].concat(), data_dir, env)
    }

    /// Starts `logpipe ARGS… --data-dir DIR` and waits until it prints
    /// `listening on URL`.
    pub fn start_role(args: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Running {
        let mut running = Running::spawn(args, data_dir, env);
        running.base_url = running.wait_for_url();
        running
    }

    /// Starts `logpipe ARGS… --data-dir DIR` without waiting for anything.
    pub fn spawn(args: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Running {
        std::fs::create_dir_all(data_dir).unwrap();
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = data_dir.with_extension(format!("{}-{n}.log", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = Command::new(binary());
        command
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .env("LOGPIPE_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start logpipe");
        Running {
            child,
            base_url: String::new(),
            data_dir: data_dir.to_path_buf(),
            log_path,
        }
    }

    fn wait_for_url(&mut self) -> String {
        let stdout = self.child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = sender.send(url.trim().to_string());
                }
            }
        });
        match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = self.child.kill();
                panic!("logpipe did not start; its log:\n{}", self.log());
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait_for_exit(Duration::from_secs(30), "after SIGTERM")
    }

    /// Waits up to `limit` for the process to exit; fails the test (with
    /// the log) otherwise, saying `when`.
    pub fn wait_for_exit(&mut self, limit: Duration, when: &str) -> std::process::ExitStatus {
        self.wait_for_exit_or(limit, when, |_| false)
            .expect("only an exit ends the wait")
    }

    /// Waits up to `limit` for the process to exit (its status) or for
    /// `done` to hold (`None`); fails the test (with the log) otherwise,
    /// saying `when`.
    pub fn wait_for_exit_or(
        &mut self,
        limit: Duration,
        when: &str,
        done: impl Fn(&Running) -> bool,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if done(self) {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "logpipe did not stop within {limit:?} {when}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// SIGKILL: no draining, no flushing.
    pub fn kill_hard(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` and returns its stdout; fails the test (with the
/// command's stderr) unless it succeeds.
pub fn stdout_of(command: &mut Command, what: &str) -> Vec<u8> {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `logpipe sql --format json` over `data_dir`.
pub fn sql_json(data_dir: &Path, sql: &str) -> Vec<serde_json::Value> {
    let stdout = stdout_of(
        Command::new(binary())
            .args(["sql", "--format", "json", "--data-dir"])
            .arg(data_dir)
            .arg(sql),
        "logpipe sql",
    );
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from logpipe sql ({e}): {}",
            String::from_utf8_lossy(&stdout)
        )
    })
}

/// POSTs `body`, returning status and parsed JSON answer.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let response = client.post(url).body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Polls the query API until `sql`'s first row's `n` reaches `expected`.
pub async fn wait_for_count(
    client: &reqwest::Client,
    base_url: &str,
    sql: &str,
    expected: u64,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let (status, answer) = post(
            client,
            &format!("{base_url}/api/query"),
            serde_json::json!({ "sql": sql }).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let n = answer["rows"][0]["n"].as_u64().unwrap_or(0);
        if n >= expected {
            assert_eq!(n, expected, "more rows than sent: {answer}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "only {n} of {expected} rows after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Kafka-protocol broker of a test: the one at
/// `LOGPIPE_TEST_KAFKA_BROKERS` when set (Apache Kafka, Redpanda, …), else a
/// private tansu (`LOGPIPE_TEST_TANSU`, installed by ./scripts/test.sh) on
/// 127.0.0.1 and a free port, killed when dropped.
pub struct Broker {
    /// What clients bootstrap from.
    pub brokers: String,
    /// Where tansu itself listens (`brokers`, unless a TLS terminator
    /// stands in front of it).
    listen: String,
    child: Option<Child>,
    /// The TLS terminator of a secured broker.
    proxy: Option<Child>,
    /// tansu's arguments, to start it again on the same port and storage.
    args: Vec<String>,
    /// tansu's working directory (its SQLite file) and output, for a
    /// broker with stored data.
    dir: Option<PathBuf>,
}

impl Broker {
    /// A broker whose data lives in memory (lost when it stops).
    pub fn start() -> Broker {
        if let Some(brokers) = outside_broker() {
            return Broker {
                listen: brokers.clone(),
                brokers,
                child: None,
                proxy: None,
                args: Vec::new(),
                dir: None,
            };
        }
        let port = free_port();
        Broker::tansu("memory://tansu/", None, port, port)
    }

    /// A private tansu that keeps its data in an SQLite file in `dir`, so
    /// it survives a restart or `kill -9`. None when the tests run against
    /// an outside broker, which a test cannot restart.
    pub fn start_persistent(dir: &Path) -> Option<Broker> {
        if outside_broker().is_some() {
            return None;
        }
        // tansu reads the path after `sqlite://` relative to its working
        // directory (an absolute path loses its leading slash).
        let port = free_port();
        Some(Broker::tansu("sqlite://tansu.db", Some(dir), port, port))
    }

    /// A private tansu (SQLite in `dir`) that requires SASL/SCRAM-SHA-512
    /// from user `logpipe` with `password`, behind a TLS terminator whose
    /// self-signed certificate for 127.0.0.1 is `dir/cert.pem`. tansu 0.6
    /// takes `--cert` but never uses it, so Python's `ssl` module terminates
    /// TLS in front of it (as a load balancer may) and tansu advertises the
    /// terminator's port. None against an outside broker.
    pub fn start_secured(dir: &Path, password: &str) -> Option<Broker> {
        if outside_broker().is_some() {
            return None;
        }
        let (port, tls_port) = (free_port(), free_port());
        // Users are created while the broker does not require them yet
        // (tansu refuses `user create` from an unauthenticated client).
        let mut broker = Broker::tansu("sqlite://tansu.db", Some(dir), port, port);
        let tansu = std::env::var("LOGPIPE_TEST_TANSU").unwrap();
        stdout_of(
            Command::new(tansu).args([
                "user",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{port}"),
                "logpipe",
                password,
            ]),
            "tansu user create",
        );
        broker.kill();
        broker.args = tansu_args("sqlite://tansu.db", port, tls_port);
        broker.args.push("--authentication".into());
        broker.restart();

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
        let python = std::env::var("LOGPIPE_TEST_PYTHON")
            .expect("LOGPIPE_TEST_PYTHON is not set: run ./scripts/test.sh");
        broker.proxy = Some(
            Command::new(python)
                .arg("-c")
                .arg(TLS_TERMINATOR)
                .args([tls_port.to_string(), port.to_string()])
                .arg(dir.join("cert.pem"))
                .arg(dir.join("key.pem"))
                .stdout(Stdio::null())
                .spawn()
                .expect("start the TLS terminator"),
        );
        broker.brokers = format!("127.0.0.1:{tls_port}");
        wait_for_listener(&broker.brokers, "the TLS terminator");
        Some(broker)
    }

    fn tansu(storage: &str, dir: Option<&Path>, port: u16, advertised_port: u16) -> Broker {
        let mut broker = Broker {
            brokers: format!("127.0.0.1:{advertised_port}"),
            listen: format!("127.0.0.1:{port}"),
            child: None,
            proxy: None,
            args: tansu_args(storage, port, advertised_port),
            dir: dir.map(Path::to_path_buf),
        };
        broker.run();
        broker
    }

    /// Starts the tansu process and waits until it listens.
    fn run(&mut self) {
        let tansu = std::env::var("LOGPIPE_TEST_TANSU").expect(
            "neither LOGPIPE_TEST_KAFKA_BROKERS nor LOGPIPE_TEST_TANSU is set: run ./scripts/test.sh, \
             which installs the tansu broker",
        );
        let mut command = Command::new(tansu);
        command.args(&self.args);
        match &self.dir {
            Some(dir) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("tansu.log"))
                    .unwrap();
                command
                    .current_dir(dir)
                    .stdout(log.try_clone().unwrap())
                    .stderr(log);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        self.child = Some(command.spawn().expect("start tansu"));
        wait_for_listener(&self.listen, "tansu");
    }

    /// Whether this test controls the broker process (outage tests).
    pub fn controllable(&self) -> bool {
        self.child.is_some()
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the broker: it keeps its
    /// data but answers nothing meanwhile, like a hung or unreachable host.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a broker this test started");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `kill -9`: the broker process dies at once, as in a crash.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("a broker this test started");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is still running");
        self.run();
    }

    /// What tansu printed, for a failure report.
    pub fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|dir| std::fs::read_to_string(dir.join("tansu.log")).ok())
            .unwrap_or_default()
    }
}

/// The bootstrap address of an outside broker the tests must use instead of
/// their own tansu (`LOGPIPE_TEST_KAFKA_BROKERS`).
fn outside_broker() -> Option<String> {
    std::env::var("LOGPIPE_TEST_KAFKA_BROKERS").ok()
}

/// `tansu broker` listening on 127.0.0.1:`port` and advertising
/// 127.0.0.1:`advertised_port` (a TLS terminator's, if one stands in front).
fn tansu_args(storage: &str, port: u16, advertised_port: u16) -> Vec<String> {
    [
        "broker",
        "--listener-url",
        &format!("tcp://127.0.0.1:{port}"),
        "--advertised-listener-url",
        &format!("tcp://127.0.0.1:{advertised_port}"),
        "--storage-engine",
        storage,
    ]
    .map(String::from)
    .to_vec()
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (20 s at most) until something accepts connections on `address`.
fn wait_for_listener(address: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {address}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Terminates TLS on 127.0.0.1:ARGV1 and forwards each connection to
/// 127.0.0.1:ARGV2 (certificate ARGV3, key ARGV4).
const TLS_TERMINATOR: &str = r#"
import asyncio, ssl, sys
listen_port, target_port, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()
async def handle(client_reader, client_writer):
    try:
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, ssl=context)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"#;

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(proxy) = &mut self.proxy {
            let _ = proxy.kill();
            let _ = proxy.wait();
        }
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a Python snippet with the test venv (`LOGPIPE_TEST_PYTHON`, which
/// has confluent-kafka and duckdb) and returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let python = std::env::var("LOGPIPE_TEST_PYTHON")
        .expect("LOGPIPE_TEST_PYTHON is not set: run ./scripts/test.sh");
    let stdout = stdout_of(
        Command::new(python).arg("-c").arg(script).args(args),
        "python",
    );
    String::from_utf8(stdout).unwrap()
}

/// Fails unless every id of `acked` has a row in `counts` (id → rows in
/// the lake); `log` is printed with the failure.
pub fn assert_none_missing(
    acked: &std::collections::BTreeSet<String>,
    counts: &std::collections::BTreeMap<String, u64>,
    log: &str,
) {
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged records missing from the lake, e.g. {missing:?}:\n{log}"
    );
}

/// Fails unless every id of `acked` is in the lake, and every id in the
/// lake is there once.
pub fn assert_exactly_once(
    acked: &std::collections::BTreeSet<String>,
    counts: &std::collections::BTreeMap<String, u64>,
    log: &str,
) {
    assert_none_missing(acked, counts, log);
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        doubled.is_empty(),
        "records in the lake more than once: {doubled:?}"
    );
}
