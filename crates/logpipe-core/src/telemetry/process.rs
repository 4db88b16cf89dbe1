//! The process's own figures, read from `/proc` when `/metrics` is
//! scraped: CPU, memory, open files, start time (the names every
//! Prometheus client library uses, so stock dashboards work), the build,
//! and the free space where the data directory lives (the "disk nearly
//! full" alert).

use std::path::PathBuf;
use std::sync::OnceLock;

use super::{Family, MetricDef, MetricSet, MetricType};

pub static CPU_SECONDS: MetricDef = MetricDef {
    name: "process_cpu_seconds_total",
    help: "User and system CPU time spent by the process, in seconds.",
    kind: MetricType::Counter,
    labels: &[],
};
pub static RESIDENT_MEMORY: MetricDef = MetricDef {
    name: "process_resident_memory_bytes",
    help: "Resident memory of the process, in bytes.",
    kind: MetricType::Gauge,
    labels: &[],
};
pub static OPEN_FDS: MetricDef = MetricDef {
    name: "process_open_fds",
    help: "Open file descriptors of the process.",
    kind: MetricType::Gauge,
    labels: &[],
};
pub static MAX_FDS: MetricDef = MetricDef {
    name: "process_max_fds",
    help: "The process's limit of open file descriptors.",
    kind: MetricType::Gauge,
    labels: &[],
};
pub static START_TIME: MetricDef = MetricDef {
    name: "process_start_time_seconds",
    help: "Start of the process (Unix time).",
    kind: MetricType::Gauge,
    labels: &[],
};
pub static BUILD_INFO: MetricDef = MetricDef {
    name: "logpipe_build_info",
    help: "Always 1; the labels name the running build.",
    kind: MetricType::Gauge,
    labels: &["version"],
};
pub static DISK_FREE: MetricDef = MetricDef {
    name: "logpipe_data_dir_free_bytes",
    help: "Bytes available to logpipe on the file system of its data directory.",
    kind: MetricType::Gauge,
    labels: &[],
};
pub static DISK_SIZE: MetricDef = MetricDef {
    name: "logpipe_data_dir_size_bytes",
    help: "Size of the file system of the data directory, in bytes.",
    kind: MetricType::Gauge,
    labels: &[],
};

/// A family whose single value is read when it is rendered; absent when
/// it cannot be read (not Linux, no data directory).
pub struct Probe {
    def: &'static MetricDef,
    read: fn() -> Option<f64>,
}

impl Family for Probe {
    fn def(&self) -> &'static MetricDef {
        self.def
    }

    fn samples(&self) -> Vec<(Vec<String>, f64)> {
        (self.read)().map(|v| (Vec::new(), v)).into_iter().collect()
    }
}

struct BuildInfo;

impl Family for BuildInfo {
    fn def(&self) -> &'static MetricDef {
        &BUILD_INFO
    }

    fn samples(&self) -> Vec<(Vec<String>, f64)> {
        vec![(vec![env!("CARGO_PKG_VERSION").to_string()], 1.0)]
    }
}

pub struct ProcessMetrics {
    probes: [Probe; 7],
    build: BuildInfo,
}

impl MetricSet for ProcessMetrics {
    fn families(&self) -> Vec<&dyn Family> {
        let mut families: Vec<&dyn Family> = self.probes.iter().map(|p| p as &dyn Family).collect();
        families.push(&self.build);
        families
    }
}

crate::metric_set!(pub fn process_metrics() -> ProcessMetrics = ProcessMetrics {
    probes: [
        Probe { def: &CPU_SECONDS, read: || stat().map(|s| s.cpu_seconds) },
        Probe { def: &RESIDENT_MEMORY, read: resident_bytes },
        Probe { def: &OPEN_FDS, read: open_fds },
        Probe { def: &MAX_FDS, read: max_fds },
        Probe { def: &START_TIME, read: || stat().and_then(|s| s.start_seconds) },
        Probe { def: &DISK_FREE, read: || disk().map(|(free, _)| free) },
        Probe { def: &DISK_SIZE, read: || disk().map(|(_, size)| size) },
    ],
    build: BuildInfo,
});

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Where the disk figures look (the first call wins); until then they are
/// absent.
pub fn watch_data_dir(dir: PathBuf) {
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let _ = DATA_DIR.set(dir);
}

/// Clock ticks per second of `/proc/self/stat`'s times (USER_HZ, 100 on
/// every Linux architecture logpipe builds for).
const TICKS_PER_SECOND: f64 = 100.0;
/// Page size for `/proc/self/statm`.
const PAGE_BYTES: f64 = 4096.0;

struct Stat {
    cpu_seconds: f64,
    start_seconds: Option<f64>,
}

fn stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: fields count from its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let cpu_seconds = (field(14)? + field(15)?) / TICKS_PER_SECOND;
    let start_seconds = field(22).and_then(|ticks| Some(boot_time()? + ticks / TICKS_PER_SECOND));
    Some(Stat {
        cpu_seconds,
        start_seconds,
    })
}

fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn resident_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
}

fn open_fds() -> Option<f64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

fn max_fds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// (available, size) in bytes of the data directory's file system.
fn disk() -> Option<(f64, f64)> {
    let dir = DATA_DIR.get()?;
    // The directory may not exist yet (or only its parent, before the
    // first start): look at the nearest existing ancestor.
    let existing = dir.ancestors().find(|p| p.exists())?;
    let stats = rustix::fs::statvfs(existing).ok()?;
    let block = stats.f_frsize as f64;
    Some((stats.f_bavail as f64 * block, stats.f_blocks as f64 * block))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_figures_read_from_proc() {
        watch_data_dir(std::env::temp_dir().join("logpipe-not-created-yet/data"));
        process_metrics();
        let text = super::super::registry().render();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "logpipe_data_dir_free_bytes ",
            "logpipe_data_dir_size_bytes ",
            "logpipe_build_info{version=\"",
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing:\n{text}"
            );
        }
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        assert!(value("logpipe_data_dir_free_bytes") <= value("logpipe_data_dir_size_bytes"));
        assert!(value("logpipe_data_dir_size_bytes") > 0.0);
    }
}
