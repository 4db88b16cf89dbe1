//! Harnesses for the real services tests run against (`./scripts/test.sh`
//! installs and starts what they need): a Kafka-protocol broker per test.

use std::time::{Duration, Instant};

pub mod kafka;

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (20 s at most) until something accepts connections on `address`.
pub fn wait_for_listener(address: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {address}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
