//! librdkafka's client context: its log lines in ours, and the connection
//! failure it reports first (a wrong address, TLS or SASL setting) kept for
//! the start-up error.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use logpipe_config::KafkaBusConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::lock;

/// Forwards librdkafka's log lines and global errors to `tracing`, and
/// remembers the newest reason a broker connection failed. librdkafka
/// retries a refused password or an unverified certificate forever and a
/// metadata request then only times out; with the reason kept, "cannot reach
/// the brokers" says why.
#[derive(Clone, Default)]
pub struct LogContext {
    last_failure: Arc<Mutex<Option<ConnectionFailure>>>,
}

/// Why a broker connection failed, and when.
#[derive(Clone, Debug)]
pub(super) struct ConnectionFailure {
    pub(super) at: Instant,
    pub(super) code: Option<RDKafkaErrorCode>,
    pub(super) reason: String,
}

impl LogContext {
    /// The newest connection failure since `since`, with what to check.
    pub(super) fn failure_since(&self, since: Instant) -> Option<String> {
        let failure = lock(&self.last_failure).clone()?;
        if failure.at < since {
            return None;
        }
        let check = match failure.code {
            Some(RDKafkaErrorCode::Authentication) => {
                "check sasl.mechanism, sasl.username and sasl.password in [bus.kafka.properties]"
            }
            Some(RDKafkaErrorCode::SSL) => {
                "check security.protocol and the ssl.* settings (ssl.ca.location) in [bus.kafka.properties]"
            }
            _ => "check bus.kafka.brokers and security.protocol in [bus.kafka.properties]",
        };
        Some(format!("{}; {check}", failure.reason))
    }
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker connections come and go (a restarted broker): librdkafka
        // reconnects by itself; appends that cannot wait fail as Busy.
        tracing::warn!(target: "librdkafka", %error, "{reason}");
        let code = error.rdkafka_error_code();
        // "All brokers are down" follows the failure that says why.
        if code != Some(RDKafkaErrorCode::AllBrokersDown) {
            *lock(&self.last_failure) = Some(ConnectionFailure {
                at: Instant::now(),
                code,
                reason: reason.to_string(),
            });
        }
    }
}

/// A client configuration with logpipe's settings, then the user's
/// (`bus.kafka.properties` override logpipe's own).
pub(super) fn client_config(options: &KafkaBusConfig, settings: &[(&str, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &options.brokers);
    for (key, value) in settings {
        config.set(*key, value);
    }
    for (key, value) in &options.properties {
        config.set(key, value);
    }
    config
}
