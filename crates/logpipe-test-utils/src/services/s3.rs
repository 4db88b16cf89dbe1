//! An S3 server per test, serving a temporary directory:
//! - versitygw (the Go module proxy; `scripts/test.sh` builds it into
//!   `$HOME/.cache/logpipe/tools/go`): honours conditional writes
//!   (`If-None-Match: *`) as AWS S3 does; each top-level folder of its
//!   directory is a bucket, each object a file.
//! - Garage 2.5 (the crate registry; installed into
//!   `$HOME/.cache/logpipe/tools/bin`): *ignores* them (a second create
//!   overwrites), to show what logpipe does on such a store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The bucket every test lake lives in.
pub const BUCKET: &str = "logpipe";

/// A running S3 server; stopped when dropped.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    region: &'static str,
    access_key: String,
    secret_key: String,
    dir: tempfile::TempDir,
}

/// `$LOGPIPE_TEST_<VAR>`, or `$HOME/<cached>`, which must exist.
fn tool(var: &str, cached: &str) -> PathBuf {
    if let Ok(path) = std::env::var(var) {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let path = Path::new(&home).join(cached);
    assert!(
        path.exists(),
        "{} is not installed (run ./scripts/test.sh, which installs it, or set {var})",
        path.display()
    );
    path
}

fn log_file(dir: &Path) -> (Stdio, Stdio) {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    (log.try_clone().unwrap().into(), log.into())
}

impl S3Server {
    /// versitygw: conditional writes honoured.
    pub fn start() -> S3Server {
        let port = free_port();
        S3Server::versitygw(None, &format!("127.0.0.1:{port}")).listening(port)
    }

    /// versitygw in network namespace `ns` (`services::hosts`), serving
    /// `addr:7070` to the other hosts.
    pub fn start_in_namespace(ns: &str, addr: &str) -> S3Server {
        S3Server::versitygw(Some(ns), &format!("{addr}:7070"))
    }

    /// versitygw serving a new temporary directory on `address`, in
    /// network namespace `ns` when given.
    fn versitygw(ns: Option<&str>, address: &str) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(BUCKET)).unwrap();
        let (access_key, secret_key) = ("logpipe-test", "logpipe-test-secret");
        let (stdout, stderr) = log_file(dir.path());
        let program = tool(
            "LOGPIPE_TEST_VERSITYGW",
            ".cache/logpipe/tools/go/versitygw",
        );
        let mut command = match ns {
            Some(ns) => {
                let mut ip = Command::new("ip");
                ip.args(["netns", "exec", ns]).arg(program);
                ip
            }
            None => Command::new(program),
        };
        let child = command
            .args(["--port", address])
            .args(["--access", access_key, "--secret", secret_key, "posix"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("versitygw starts");
        S3Server {
            child,
            endpoint: format!("http://{address}"),
            region: "us-east-1",
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            dir,
        }
    }

    /// Garage, single node, with the bucket and a key made at start:
    /// conditional writes ignored.
    pub fn garage() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let root = dir.path().display();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{root}/meta\"\ndata_dir = \"{root}/data\"\ndb_engine = \"lmdb\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
                "7".repeat(64)
            ),
        )
        .unwrap();
        let access_key = format!("GK{}", "1a".repeat(12));
        let secret_key = "5e".repeat(32);
        let (stdout, stderr) = log_file(dir.path());
        let child = Command::new(tool(
            "LOGPIPE_TEST_GARAGE",
            ".cache/logpipe/tools/bin/garage",
        ))
        .arg("-c")
        .arg(&config)
        .args(["server", "--single-node", "--default-bucket"])
        .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key)
        .env("GARAGE_DEFAULT_SECRET_KEY", &secret_key)
        .env("GARAGE_DEFAULT_BUCKET", BUCKET)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("garage starts");
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            region: "garage",
            access_key,
            secret_key,
            dir,
        }
        .listening(s3_port)
    }

    fn listening(self, port: u16) -> S3Server {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the S3 server did not listen on {port}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Keeps the served files after the test (to look into a failure);
    /// returns where they are.
    pub fn keep_files(&mut self) -> PathBuf {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        dir.keep()
    }

    /// Where versitygw keeps `s3://logpipe/KEY` (as a file).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.dir.path().join(BUCKET).join(key)
    }

    /// The storage options an outside S3 client (delta-rs, object_store)
    /// needs for this server, as JSON.
    pub fn storage_options(&self) -> String {
        serde_json::json!({
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ALLOW_HTTP": "true",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        })
        .to_string()
    }

    /// The environment that puts a logpipe's lake at `s3://logpipe/PREFIX`
    /// on this server.
    pub fn lake_env(&self, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            ("LOGPIPE__LAKE__ROOT", format!("s3://{BUCKET}/{prefix}")),
            ("LOGPIPE__LAKE__S3__ENDPOINT", self.endpoint.clone()),
            ("LOGPIPE__LAKE__S3__REGION", self.region.to_string()),
            ("LOGPIPE__LAKE__S3__ACCESS_KEY_ID", self.access_key.clone()),
            (
                "LOGPIPE__LAKE__S3__SECRET_ACCESS_KEY",
                self.secret_key.clone(),
            ),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
