//! A Kafka-protocol broker for a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::process::stdout_of;
use crate::services::{free_port, wait_for_listener};

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
