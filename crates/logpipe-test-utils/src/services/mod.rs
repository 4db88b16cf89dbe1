//! Harnesses for the real services tests run against (`./scripts/test.sh`
//! installs what they need): an Apache Kafka cluster per test, an S3
//! server per test, an HDFS per test, podman, and several hosts as
//! network namespaces.

pub mod hdfs;
pub mod hosts;
pub mod kafka;
pub mod mariadb;
pub mod podman;
pub mod s3;

/// Where [`free_port`] looks: below the kernel's ephemeral range (Linux's
/// default starts at 32768). A port handed out by `bind(0)` comes from that
/// range, and so does the source port of every outgoing connection, so one
/// found free can be taken by any of the suite's clients in the seconds a
/// JVM takes to bind it (a Kafka controller once failed to start that way).
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port free on 127.0.0.1 a moment ago, outside the ephemeral range.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = u32::from(PORTS.end - PORTS.start);
    // Each test process starts at its own place (its pid), so concurrent
    // test binaries rarely try the same ports.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        let port = PORTS.start + ((start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?} on 127.0.0.1");
}
