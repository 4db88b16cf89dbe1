//! A MariaDB server for a test: Debian's MariaDB 10.11 (`./scripts/test.sh`
//! installs it), a data directory of the test's own, a free loopback port,
//! and the binlog settings a change data capture source needs. Killed when
//! dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::services::free_port;

/// A running `mariadbd`.
pub struct MariaDb {
    pub port: u16,
    socket: PathBuf,
    dir: PathBuf,
    child: Child,
    _temp: tempfile::TempDir,
}

/// Whether this machine has MariaDB (the CDC tests skip with a message
/// when it does not, outside `./scripts/test.sh`).
pub fn installed() -> bool {
    Command::new("mariadbd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl MariaDb {
    /// A fresh server with `binlog_format=ROW`, full row images and row
    /// metadata, GTIDs in strict mode: what Debezium and logpipe's source
    /// ask for (docs/cdc.md).
    pub fn start() -> MariaDb {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let data = dir.join("data");
        let root = root();
        if root {
            let _ = Command::new("chown")
                .args(["mysql:mysql"])
                .arg(&dir)
                .status();
        }
        let mut install = Command::new("mariadb-install-db");
        install
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if root {
            install.arg("--user=mysql");
        }
        let (code, output) = crate::process::code_and_output(&mut install);
        assert_eq!(code, Some(0), "mariadb-install-db failed:\n{output}");
        let port = free_port();
        let socket = dir.join("sock");
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut server = Command::new("mariadbd");
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--server-id=1",
                "--log-bin=mysql-bin",
            ])
            .args([
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
            ])
            .args(["--gtid-strict-mode=ON", "--innodb-buffer-pool-size=64M"])
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .stdout(Stdio::null())
            .stderr(log);
        if root {
            server.arg("--user=mysql");
        }
        let child = server.spawn().expect("mariadbd (Debian's mariadb-server)");
        let mut db = MariaDb {
            port,
            socket,
            dir,
            child,
            _temp: temp,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while db.try_sql("SELECT 1").is_err() {
            if let Ok(Some(status)) = db.child.try_wait() {
                panic!("mariadbd exited ({status}) at start:\n{}", db.log());
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd not ready in 60 s:\n{}",
                db.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        db
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Where the server's files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `sql` as root over the socket; the result rows tab-separated.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let output = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .map_err(|e| format!("mariadb (the client): {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// [`MariaDb::try_sql`], panicking with the server's message.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|error| panic!("MariaDB refused {sql:?}: {error}"))
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
