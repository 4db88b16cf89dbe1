//! Seed-shaped synthetic records, written straight into a JSON buffer.
//!
//! Every string comes from the constant lists below, so nothing needs JSON
//! escaping; that keeps generation at well over a million records per second
//! per core, so the load client is not what a benchmark measures.

use std::fmt::Write as _;

use logpipe_core::RecordKind;

const HOSTS: [&str; 3] = ["worker-1", "worker-2", "worker-3"];
const ENDPOINTS: [&str; 6] = [
    "/api/users",
    "/api/orders",
    "/api/payments",
    "/api/products",
    "/api/cart",
    "/api/login",
];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const EVENT_TYPES: [&str; 6] = ["CLICK", "VIEW", "PURCHASE", "LOGIN", "LOGOUT", "SEARCH"];
const ELEMENTS: [&str; 4] = [
    "add_to_cart_button",
    "buy_now_button",
    "search_box",
    "nav_link",
];
const DEVICES: [(&str, &str, &str); 4] = [
    ("mobile", "iOS", "Safari"),
    ("mobile", "Android", "Chrome"),
    ("desktop", "Windows", "Edge"),
    ("desktop", "macOS", "Firefox"),
];

#[derive(Debug, Clone)]
pub struct SyntheticOptions {
    pub services: Vec<String>,
    /// Share of logs at ERROR level.
    pub error_rate: f64,
    /// Unique prefix of request and event ids (e.g. a run id).
    pub id_prefix: String,
    pub seed: Option<u64>,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        SyntheticOptions {
            services: logpipe_core::record::DEFAULT_SERVICES
                .map(String::from)
                .to_vec(),
            error_rate: 0.05,
            id_prefix: format!("{:08x}", fastrand::u32(..)),
            seed: None,
        }
    }
}

/// Produces records; ids are `<prefix>-<sequence>`, unique per source.
pub struct SyntheticSource {
    options: SyntheticOptions,
    rng: fastrand::Rng,
    sequence: u64,
}

impl SyntheticSource {
    pub fn new(options: SyntheticOptions) -> SyntheticSource {
        let rng = match options.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        SyntheticSource {
            options,
            rng,
            sequence: 0,
        }
    }

    /// Starts ids at `sequence` (to give concurrent senders disjoint ids).
    pub fn with_sequence(mut self, sequence: u64) -> SyntheticSource {
        self.sequence = sequence;
        self
    }

    fn now_seconds() -> f64 {
        logpipe_core::time::now_micros() as f64 / 1e6
    }

    /// Appends one record of `kind` as JSON to `out`.
    pub fn write_record(&mut self, kind: RecordKind, out: &mut String) {
        match kind {
            RecordKind::Log => self.write_log(out),
            RecordKind::Event => self.write_event(out),
        }
    }

    /// Appends a JSON array of `count` records to `out`.
    pub fn write_batch(&mut self, kind: RecordKind, count: usize, out: &mut String) {
        out.push('[');
        for i in 0..count {
            if i > 0 {
                out.push(',');
            }
            self.write_record(kind, out);
        }
        out.push(']');
    }

    pub fn write_log(&mut self, out: &mut String) {
        let rng = &mut self.rng;
        let roll = rng.f64();
        let error_rate = self.options.error_rate;
        let (level, message, status, latency) = if roll < error_rate {
            let status = if rng.bool() { 500 } else { 503 };
            (
                "ERROR",
                "Request failed: upstream error",
                status,
                200.0 + rng.f64() * 800.0,
            )
        } else if roll < error_rate + 0.10 {
            ("WARN", "Slow response", 200, 150.0 + rng.f64() * 300.0)
        } else if roll < error_rate + 0.20 {
            ("DEBUG", "Cache lookup", 200, 1.0 + rng.f64() * 10.0)
        } else {
            let status = if rng.u8(0..20) == 0 { 404 } else { 200 };
            (
                "INFO",
                "Request processed successfully",
                status,
                10.0 + rng.f64() * 90.0,
            )
        };
        let service = &self.options.services[rng.usize(0..self.options.services.len())];
        let _ = write!(
            out,
            r#"{{"timestamp":{:.6},"level":"{level}","service":"{service}","host":"{}","message":"{message}","metadata":{{"request_id":"{}-{}","response_time_ms":{latency:.1},"status_code":{status},"endpoint":"{}","method":"{}"}}}}"#,
            Self::now_seconds(),
            HOSTS[rng.usize(0..HOSTS.len())],
            self.options.id_prefix,
            self.sequence,
            ENDPOINTS[rng.usize(0..ENDPOINTS.len())],
            METHODS[rng.usize(0..METHODS.len())],
        );
        self.sequence += 1;
    }

    pub fn write_event(&mut self, out: &mut String) {
        let rng = &mut self.rng;
        let event_type = EVENT_TYPES[rng.usize(0..EVENT_TYPES.len())];
        let (device, os, browser) = DEVICES[rng.usize(0..DEVICES.len())];
        let product = rng.u32(1..500);
        let _ = write!(
            out,
            r#"{{"event_id":"evt-{}-{}","timestamp":{:.6},"user_id":"user_{}","session_id":"sess_{:05x}","event_type":"{event_type}","event_data":{{"page":"/products/{product}","element":"{}","position":{{"x":{},"y":{}}}"#,
            self.options.id_prefix,
            self.sequence,
            Self::now_seconds(),
            rng.u32(1..10_000),
            rng.u32(0..0xfffff),
            ELEMENTS[rng.usize(0..ELEMENTS.len())],
            rng.u32(0..1200),
            rng.u32(0..800),
        );
        if event_type == "PURCHASE" {
            let _ = write!(out, r#","amount":{:.2}"#, 5.0 + rng.f64() * 200.0);
        }
        let _ = write!(
            out,
            r#"}},"device":{{"type":"{device}","os":"{os}","browser":"{browser}"}}}}"#
        );
        self.sequence += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logpipe_core::{ActivityEvent, LogRecord, ValidationLimits};

    #[test]
    fn synthetic_records_pass_validation_and_ids_are_unique() {
        let mut source = SyntheticSource::new(SyntheticOptions {
            seed: Some(7),
            error_rate: 0.5,
            ..SyntheticOptions::default()
        });
        let limits = ValidationLimits::now();
        let mut ids = std::collections::HashSet::new();
        let mut errors = 0;
        for _ in 0..500 {
            let mut text = String::new();
            source.write_log(&mut text);
            let record = LogRecord::parse(&text, &limits).unwrap_or_else(|e| panic!("{e}: {text}"));
            errors += usize::from(record.level == logpipe_core::Level::Error);
            assert!(ids.insert(record.metadata.request_id.unwrap()));
            let mut text = String::new();
            source.write_event(&mut text);
            ActivityEvent::parse(&text, &limits).unwrap_or_else(|e| panic!("{e}: {text}"));
        }
        assert!(
            (150..350).contains(&errors),
            "error share follows error_rate: {errors}"
        );
        let mut batch = String::new();
        source.write_batch(RecordKind::Log, 3, &mut batch);
        assert_eq!(
            logpipe_core::record::split_body(batch.as_bytes())
                .unwrap()
                .len(),
            3
        );
    }
}
