//! An S3 server per test: versitygw (the Go module proxy; `scripts/test.sh`
//! installs it into `$HOME/.cache/logpipe/tools/go`) serving a temporary
//! directory, where each top-level folder is a bucket. It honours
//! conditional writes (`If-None-Match: *`) as AWS S3 does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The bucket every test lake lives in.
pub const BUCKET: &str = "logpipe";
const ACCESS_KEY: &str = "logpipe-test";
const SECRET_KEY: &str = "logpipe-test-secret";

/// A running versitygw; stopped when dropped.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    dir: tempfile::TempDir,
}

fn versitygw() -> PathBuf {
    if let Ok(path) = std::env::var("LOGPIPE_TEST_VERSITYGW") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let path = Path::new(&home).join(".cache/logpipe/tools/go/versitygw");
    assert!(
        path.exists(),
        "versitygw is not installed at {} (run ./scripts/test.sh, which installs it, or set LOGPIPE_TEST_VERSITYGW)",
        path.display()
    );
    path
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(BUCKET)).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("versitygw.log")).unwrap();
        let child = Command::new(versitygw())
            .args(["--port", &format!("127.0.0.1:{port}")])
            .args(["--access", ACCESS_KEY, "--secret", SECRET_KEY, "posix"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("versitygw starts");
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "versitygw did not listen on {port}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("versitygw.log")).unwrap_or_default()
    }

    /// Where the server keeps `s3://logpipe/KEY` (as a file).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.dir.path().join(BUCKET).join(key)
    }

    /// The environment that puts a logpipe's lake at `s3://logpipe/PREFIX`
    /// on this server.
    pub fn lake_env(&self, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            ("LOGPIPE__LAKE__ROOT", format!("s3://{BUCKET}/{prefix}")),
            ("LOGPIPE__LAKE__S3__ENDPOINT", self.endpoint.clone()),
            ("LOGPIPE__LAKE__S3__REGION", "us-east-1".to_string()),
            ("LOGPIPE__LAKE__S3__ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            (
                "LOGPIPE__LAKE__S3__SECRET_ACCESS_KEY",
                SECRET_KEY.to_string(),
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
