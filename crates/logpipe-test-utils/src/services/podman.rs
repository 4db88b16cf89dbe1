//! Podman (Debian's `podman`, `runc`, `netavark`, `aardvark-dns`,
//! `iptables`, and `docker-compose` for Compose files) for the deployment
//! tests: images built by `deploy/container/image.sh`, containers and
//! Compose projects named per test and removed when dropped.
//!
//! No test packet leaves the machine: while a [`Podman`] lives, the host
//! drops whatever a container bridge (`podman*`) would forward to another
//! interface; containers still reach each other and the host reaches them
//! through ports published on 127.0.0.1. Podman's firewall chains and
//! bridges are removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::process::{bounded, checked, output_within};
use crate::repo;
use std::time::{Duration, Instant};

/// How long one podman or docker-compose command may run before the test
/// fails naming it (a stuck command would otherwise hold the suite).
const COMMAND_LIMIT: Duration = Duration::from_secs(180);
/// How long `image.sh` may take to build an image.
const IMAGE_LIMIT: Duration = Duration::from_secs(600);

/// Containers, images and firewall rules are the machine's, not a test's:
/// one podman test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const NO_EGRESS: [&str; 8] = [
    "FORWARD", "-i", "podman+", "!", "-o", "podman+", "-j", "DROP",
];

/// Podman for one test; see the module's documentation.
pub struct Podman {
    _one: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    service: Option<Child>,
    /// What the test made, removed on drop: `container:NAME`,
    /// `volume:NAME`, `image:TAG`.
    made: Vec<String>,
    /// Compose projects brought up, taken down on drop.
    projects: Vec<Project>,
}

/// A Compose project: its name, file and the environment its variables
/// need (to take it down too).
struct Project {
    name: String,
    file: PathBuf,
    env: Vec<(String, String)>,
}

impl Podman {
    pub fn start() -> Podman {
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let version = output_within(
            Command::new("podman").arg("--version"),
            COMMAND_LIMIT,
            "podman --version",
        );
        assert!(
            version.is_ok_and(|out| out.status.success()),
            "podman is not installed: install Debian's podman, runc, netavark, aardvark-dns, \
             iptables and docker-compose (./scripts/test.sh does)"
        );
        iptables(&["-I"], &NO_EGRESS);
        Podman {
            _one: one,
            dir: tempfile::tempdir().unwrap(),
            service: None,
            made: Vec::new(),
            projects: Vec::new(),
        }
    }

    /// A `podman` command with the settings this machine needs.
    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command.env("CONTAINERS_CONF", containers_conf());
        command
    }

    /// Runs `podman ARGS`; its stdout, or the test fails with its stderr.
    pub fn run(&self, args: &[&str]) -> String {
        checked(self.output(args), &format!("podman {}", args.join(" ")))
    }

    /// Runs `podman ARGS` (bounded like every command here) and returns its
    /// output whether or not it succeeded.
    pub fn output(&self, args: &[&str]) -> Output {
        bounded(
            self.command().args(args),
            COMMAND_LIMIT,
            &format!("podman {}", args.join(" ")),
        )
    }

    /// logpipe's image from the binary under test, on a runtime image of
    /// this machine's libraries (no registry here).
    pub fn logpipe_image(&mut self, tag: &str) {
        self.script(&[
            "--binary",
            crate::running::binary().to_str().unwrap(),
            "--runtime",
            "host",
            "--tag",
            tag,
        ]);
        self.made.push(format!("image:{tag}"));
    }

    /// Apache Kafka's image (`image.sh kafka`).
    pub fn kafka_image(&mut self, tag: &str) {
        self.script(&["kafka", tag]);
        self.made.push(format!("image:{tag}"));
    }

    /// An image of one of this machine's programs (`image.sh program`).
    pub fn program_image(&mut self, tag: &str, binary: &str, name: &str, paths: &[&str]) {
        let mut args = vec!["program", tag, binary, name];
        args.extend_from_slice(paths);
        self.script(&args);
        self.made.push(format!("image:{tag}"));
    }

    fn script(&self, args: &[&str]) {
        let what = format!("image.sh {}", args.join(" "));
        let output = bounded(
            Command::new(repo().join("deploy/container/image.sh"))
                .args(args)
                .env("CONTAINERS_CONF", containers_conf())
                .env("CONTAINER_ENGINE", "podman"),
            IMAGE_LIMIT,
            &what,
        );
        checked(output, &what);
    }

    /// Remembers a container or volume to remove on drop.
    pub fn made(&mut self, kind: &str, name: &str) {
        self.made.push(format!("{kind}:{name}"));
    }

    /// `podman healthcheck run NAME` until it passes.
    pub fn wait_healthy(&self, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let output = bounded(
                self.command().args(["healthcheck", "run", name]),
                COMMAND_LIMIT,
                &format!("podman healthcheck run {name}"),
            );
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not healthy within {within:?}: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                self.logs(name)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// What a container printed.
    pub fn logs(&self, name: &str) -> String {
        match output_within(
            self.command().args(["logs", name]),
            COMMAND_LIMIT,
            &format!("podman logs {name}"),
        ) {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(stuck) => stuck,
        }
    }

    /// `docker-compose` (Debian's 1.29) against podman's Docker API, for
    /// `project` and `file`, with `env`; its stdout, or the test fails.
    pub fn compose(&mut self, project: &str, file: &Path, env: &[(&str, &str)], args: &[&str]) {
        let socket = self.socket();
        if !self
            .projects
            .iter()
            .any(|p| p.name == project && p.file == file)
        {
            let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            self.projects.push(Project {
                name: project.to_string(),
                file: file.to_path_buf(),
                env: env.collect(),
            });
        }
        let what = format!("docker-compose {}", args.join(" "));
        let output = bounded(
            compose_command(&socket, project, file, env).args(args),
            COMMAND_LIMIT,
            &what,
        );
        checked(output, &what);
    }

    /// podman's Docker-compatible API socket, started on first use.
    fn socket(&mut self) -> PathBuf {
        let socket = self.dir.path().join("podman.sock");
        if self.service.is_none() {
            let log = std::fs::File::create(self.dir.path().join("service.log")).unwrap();
            let child = self
                .command()
                .args(["system", "service", "--time=0"])
                .arg(format!("unix://{}", socket.display()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            self.service = Some(child);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !socket.exists() {
                assert!(
                    Instant::now() < deadline,
                    "podman system service did not start"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        socket
    }
}

fn compose_command(socket: &Path, project: &str, file: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new("docker-compose");
    command
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("CONTAINERS_CONF", containers_conf())
        .args(["--ansi", "never", "-p", project, "-f"])
        .arg(file)
        .envs(env.iter().copied());
    command
}

impl Drop for Podman {
    fn drop(&mut self) {
        let socket = self.dir.path().join("podman.sock");
        for project in self.projects.iter().rev() {
            let env: Vec<(&str, &str)> = project
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let _ = output_within(
                compose_command(&socket, &project.name, &project.file, &env).args([
                    "down",
                    "-v",
                    "--remove-orphans",
                    "-t",
                    "5",
                ]),
                COMMAND_LIMIT,
                "docker-compose down",
            );
        }
        for made in self.made.iter().rev() {
            let (kind, name) = made.split_once(':').unwrap();
            let mut command = self.command();
            match kind {
                "container" => command.args(["rm", "-f", "-t", "5", name]),
                "volume" => command.args(["volume", "rm", "-f", name]),
                _ => command.args(["rmi", "-f", name]),
            };
            let _ = output_within(&mut command, COMMAND_LIMIT, &format!("podman rm {made}"));
        }
        if let Some(mut service) = self.service.take() {
            let _ = service.kill();
            let _ = service.wait();
        }
        let _ = output_within(
            self.command()
                .args(["rmi", "-f", "localhost/logpipe-runtime-host:latest"]),
            COMMAND_LIMIT,
            "podman rmi",
        );
        let _ = output_within(
            self.command().args(["image", "prune", "-f"]),
            COMMAND_LIMIT,
            "podman image prune",
        );
        iptables(&["-D"], &NO_EGRESS);
        remove_podman_firewall();
    }
}

/// `deploy/container/podman-containers.conf`.
fn containers_conf() -> PathBuf {
    repo().join("deploy/container/podman-containers.conf")
}

fn iptables(op: &[&str], rule: &[&str]) {
    let output = Command::new("iptables")
        .args(op)
        .args(rule)
        .output()
        .expect("iptables runs (Debian's iptables)");
    assert!(
        output.status.success() || op == ["-D"],
        "iptables {op:?} {rule:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// netavark's chains (filter and nat) and podman's bridges, once no
/// container is left.
fn remove_podman_firewall() {
    let running = output_within(
        Command::new("podman")
            .env("CONTAINERS_CONF", containers_conf())
            .args(["ps", "-aq"]),
        COMMAND_LIMIT,
        "podman ps",
    );
    if running.is_ok_and(|out| !out.stdout.is_empty()) {
        return;
    }
    for table in ["filter", "nat"] {
        let Ok(rules) = Command::new("iptables").args(["-t", table, "-S"]).output() else {
            continue;
        };
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        let chains: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .filter(|c| c.starts_with("NETAVARK"))
            .collect();
        for chain in &chains {
            let _ = Command::new("iptables")
                .args(["-t", table, "-F", chain])
                .output();
        }
        // The jumps into them from the built-in chains.
        for rule in rules
            .lines()
            .filter(|l| l.starts_with("-A ") && l.contains("NETAVARK"))
        {
            let _ = Command::new("iptables")
                .args(["-t", table, "-D"])
                .args(shell_words(rule.trim_start_matches("-A ")))
                .output();
        }
        for chain in &chains {
            let _ = Command::new("iptables")
                .args(["-t", table, "-X", chain])
                .output();
        }
    }
    if let Ok(links) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for link in String::from_utf8_lossy(&links.stdout).lines() {
            if let Some(name) = link
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n))
                && name.starts_with("podman")
            {
                let _ = Command::new("ip").args(["link", "delete", name]).output();
            }
        }
    }
}

/// A rule as `iptables -S` prints it, split as a shell would (its
/// comments are quoted).
fn shell_words(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}
