//! Several hosts on one machine: one network namespace per host, each with
//! its own address on a bridge of the test's own, and the others' names in
//! its hosts file (`/etc/netns/NS/hosts`, which `ip netns exec` puts in
//! place of `/etc/hosts`). Needs root.
//!
//! No packet can leave the machine: before anything is made, the test's
//! range is made unreachable from the host namespace (`ip route add
//! unreachable`), the bridge has no address there, and the namespaces
//! have no route beyond their own /24. So the test's clients run inside a
//! namespace too ([`Hosts::command`]). Everything made is removed on drop.

use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Hosts {
    /// `lpN`: names of namespaces, bridge and links start with it.
    prefix: String,
    /// `10.231.N`: the test's /24.
    subnet: String,
    names: Vec<String>,
    made_route: bool,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs (Debian's iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Hosts {
    /// Namespaces named after `names` (`master`, `worker1`, …), at
    /// 10.231.N.1, .2, … in that order.
    pub fn create(names: &[&str]) -> Hosts {
        let n = std::process::id() % 200 + 20;
        let mut hosts = Hosts {
            prefix: format!("lp{n}"),
            subnet: format!("10.231.{n}"),
            names: names.iter().map(|s| s.to_string()).collect(),
            made_route: false,
        };
        let range = format!("{}.0/24", hosts.subnet);
        // Before anything else: nothing for the range leaves this machine.
        ip(&["route", "add", "unreachable", &range]);
        hosts.made_route = true;
        let bridge = hosts.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["link", "set", &bridge, "up"]);
        let mut hosts_file = String::from("127.0.0.1 localhost\n");
        for name in names {
            hosts_file.push_str(&format!("{} {name}\n", hosts.addr(name)));
        }
        for (i, name) in names.iter().enumerate() {
            let ns = hosts.namespace(name);
            let (outside, inside) = (
                format!("{}h{i}", hosts.prefix),
                format!("{}n{i}", hosts.prefix),
            );
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &outside, "master", &bridge]);
            ip(&["link", "set", &outside, "up"]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", hosts.addr(name)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let etc = format!("/etc/netns/{ns}");
            std::fs::create_dir_all(&etc).unwrap();
            std::fs::write(format!("{etc}/hosts"), &hosts_file).unwrap();
        }
        hosts
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    fn index(&self, host: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == host)
            .unwrap_or_else(|| panic!("no host {host}"))
    }

    /// The namespace of `host`.
    pub fn namespace(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// The address of `host`.
    pub fn addr(&self, host: &str) -> String {
        format!("{}.{}", self.subnet, self.index(host) + 1)
    }

    /// `program` run on `host`.
    pub fn command(&self, host: &str, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(host)])
            .arg(program);
        command
    }

    /// Takes `host` off the network (its link to the bridge goes down).
    pub fn cut(&self, host: &str) {
        ip(&[
            "link",
            "set",
            &format!("{}h{}", self.prefix, self.index(host)),
            "down",
        ]);
    }

    /// Puts `host` back on the network.
    pub fn heal(&self, host: &str) {
        ip(&[
            "link",
            "set",
            &format!("{}h{}", self.prefix, self.index(host)),
            "up",
        ]);
    }

    /// Waits until `addr:port` accepts connections from `host`.
    pub fn wait_port(&self, host: &str, addr: &str, port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self
                .command(host, "bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{addr}/{port}")])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            if status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{addr}:{port} not reachable from {host} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in &self.names {
            let ns = self.namespace(name);
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
        if self.made_route {
            let _ = Command::new("ip")
                .args([
                    "route",
                    "del",
                    "unreachable",
                    &format!("{}.0/24", self.subnet),
                ])
                .output();
        }
    }
}
