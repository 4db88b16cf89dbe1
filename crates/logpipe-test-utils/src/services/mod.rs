//! Harnesses for the real services tests run against (`./scripts/test.sh`
//! installs what they need): an Apache Kafka cluster per test.

pub mod kafka;

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
