//! Starting the real `logpipe` binary for end-to-end tests, as InfluxDB's
//! `TestServer` does: on `127.0.0.1:0`, reading the address it prints,
//! killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::stdout_of;

/// The `logpipe` binary under test: `LOGPIPE_BIN`, else the one cargo
/// built next to the test executable (`target/<profile>/logpipe`; an
/// integration test of the binary's package makes cargo build it first).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LOGPIPE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> → target/<profile>/logpipe
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("logpipe"))
        .expect("the test executable lives in target/<profile>/deps")
}

/// How the binary is started.
enum Wrap {
    None,
    /// `ulimit -f` bytes.
    FileLimit(u64),
    /// In a network namespace (`ip netns exec NS`): another host.
    Netns(String),
    /// On a small tmpfs in a mount namespace of its own.
    SmallDisk {
        disk: PathBuf,
        size: u64,
        filler: u64,
    },
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
        Running::spawn_limited(args, data_dir, env, Wrap::None)
    }

    /// [`Running::start_role`] in network namespace `ns`
    /// (`services::hosts`): a process on another host.
    pub fn start_role_in(
        ns: &str,
        args: &[&str],
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Running {
        let mut running = Running::spawn_in(ns, args, data_dir, env);
        running.base_url = running.wait_for_url();
        running
    }

    /// [`Running::spawn`] in network namespace `ns`.
    pub fn spawn_in(ns: &str, args: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> Running {
        Running::spawn_limited(args, data_dir, env, Wrap::Netns(ns.to_string()))
    }

    /// [`Running::start_role`] in a mount namespace of its own where
    /// `disk` (a directory holding `data_dir`) is a tmpfs of `size` bytes,
    /// `filler` of them taken by a file `disk/filler` (remove it through
    /// [`Running::in_namespace`] to give the space back). Needs root, or
    /// unprivileged user namespaces (`unshare --map-root-user`).
    pub fn start_on_small_disk(
        args: &[&str],
        disk: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
        size: u64,
        filler: u64,
    ) -> Running {
        let wrap = Wrap::SmallDisk {
            disk: disk.to_path_buf(),
            size,
            filler,
        };
        let mut running = Running::spawn_limited(args, data_dir, env, wrap);
        running.base_url = running.wait_for_url();
        running
    }

    /// `path` (absolute) as the process sees it in its mount namespace.
    pub fn in_namespace(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.child.id())).join(relative)
    }

    /// [`Running::start_role`] with no file of the process growing past
    /// `bytes` (`ulimit -f`; SIGXFSZ ignored, so a write past it fails
    /// with EFBIG as on a full disk). Its log (stderr) counts too.
    pub fn start_with_file_limit(
        args: &[&str],
        data_dir: &Path,
        env: &[(&str, &str)],
        bytes: u64,
    ) -> Running {
        let mut running = Running::spawn_limited(args, data_dir, env, Wrap::FileLimit(bytes));
        running.base_url = running.wait_for_url();
        running
    }

    fn spawn_limited(args: &[&str], data_dir: &Path, env: &[(&str, &str)], wrap: Wrap) -> Running {
        std::fs::create_dir_all(data_dir).unwrap();
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = data_dir.with_extension(format!("{}-{n}.log", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = match wrap {
            Wrap::None => Command::new(binary()),
            Wrap::Netns(ns) => {
                // `ip netns exec` execs the program: the child is logpipe.
                let mut ip = Command::new("ip");
                ip.args(["netns", "exec", &ns]).arg(binary());
                ip
            }
            Wrap::FileLimit(bytes) => {
                let mut bash = Command::new("bash");
                // An ignored signal stays ignored across exec.
                bash.args(["-c", "trap '' XFSZ; ulimit -f \"$0\" && exec \"$@\""])
                    .arg(bytes.div_ceil(1024).to_string())
                    .arg(binary());
                bash
            }
            Wrap::SmallDisk { disk, size, filler } => {
                std::fs::create_dir_all(&disk).unwrap();
                let mut unshare = Command::new("unshare");
                // The effective user: root mounts in a
                // plain mount namespace, anyone else in a user namespace.
                let root = std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("Uid:"))
                            .map(|l| l.split_whitespace().nth(2) == Some("0"))
                    })
                    .unwrap_or(false);
                if !root {
                    unshare.arg("--map-root-user");
                }
                unshare
                    .args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(
                        "mount -t tmpfs -o size=\"$1\" tmpfs \"$2\" && \
                         head -c \"$3\" /dev/zero > \"$2/filler\" && shift 3 && exec \"$@\"",
                    )
                    .arg("sh")
                    .arg(size.to_string())
                    .arg(&disk)
                    .arg(filler.to_string())
                    .arg(binary());
                unshare
            }
        };
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

/// Runs `logpipe up ARGS` over `data_dir` with `env`, which must refuse to
/// start; its stderr (what it said why).
pub fn up_refused(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(binary())
        .args(UP)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "logpipe up started:\n{stderr}");
    stderr
}

/// `logpipe sql --format json` over `data_dir`.
pub fn sql_json(data_dir: &Path, sql: &str) -> Vec<serde_json::Value> {
    sql_json_env(data_dir, &[], sql)
}

/// [`sql_json`] with `env` set for `logpipe sql` (a lake elsewhere).
pub fn sql_json_env(data_dir: &Path, env: &[(&str, &str)], sql: &str) -> Vec<serde_json::Value> {
    let stdout = stdout_of(
        Command::new(binary())
            .args(["sql", "--format", "json", "--data-dir"])
            .arg(data_dir)
            .arg(sql)
            .envs(env.iter().copied()),
        "logpipe sql",
    );
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from logpipe sql ({e}): {}",
            String::from_utf8_lossy(&stdout)
        )
    })
}
