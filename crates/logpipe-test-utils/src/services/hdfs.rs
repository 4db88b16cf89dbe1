//! A real HDFS per test: Hadoop's MiniDFSCluster (a NameNode and a
//! DataNode in one JVM, from Maven Central's jars) started by
//! `deploy/hdfs/hdfs.sh` of this checkout on ports the kernel picks, with
//! its data in a temporary directory. `scripts/test.sh` fetches the jars
//! once into `$HOME/.cache/logpipe/hdfs`.

use std::path::PathBuf;
use std::process::Command;

/// `deploy/hdfs/hdfs.sh` of this checkout.
pub fn hdfs_sh() -> PathBuf {
    crate::repo().join("deploy/hdfs/hdfs.sh")
}

/// A running MiniDFSCluster; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct HdfsServer {
    /// `hdfs://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl HdfsServer {
    pub fn start() -> HdfsServer {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("bash")
            .arg(hdfs_sh())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("bash runs deploy/hdfs/hdfs.sh");
        assert!(
            output.status.success(),
            "deploy/hdfs/hdfs.sh start failed (it needs a JDK 17 and Maven, or jars \
             fetched by ./scripts/test.sh):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        assert!(
            url.starts_with("hdfs://"),
            "no address from hdfs.sh: {url:?}"
        );
        HdfsServer { url, dir }
    }

    /// The environment that puts a logpipe's lake at `hdfs://…/PATH`.
    pub fn lake_env(&self, path: &str) -> Vec<(&'static str, String)> {
        vec![("LOGPIPE__LAKE__ROOT", format!("{}/{path}", self.url))]
    }

    /// The NameNode's and DataNode's log (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("minidfs.log")).unwrap_or_default()
    }
}

impl Drop for HdfsServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(hdfs_sh())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}
