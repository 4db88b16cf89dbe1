//! Seed-shaped synthetic records, written straight into a JSON buffer.
//!
//! Every string comes from the constant lists below, so nothing needs JSON
//! escaping; that keeps generation at well over a million records per second
//! per core, so the load client is not what a benchmark measures.

use std::fmt::Write as _;

use logpipe_config::{IncidentConfig, IncidentKind};
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
    /// Anomalies to inject, timed from `started`.
    pub incidents: Vec<IncidentConfig>,
    pub started: std::time::Instant,
    /// Timestamps spread evenly over a past span instead of now.
    pub backdate: Option<Backdate>,
}

/// Record `i` of a load is stamped `start + i × step` (`logpipe generate
/// --spread-days`: history to backfill jobs over).
#[derive(Debug, Clone, Copy)]
pub struct Backdate {
    pub start_micros: i64,
    pub step_micros: f64,
}

/// Share of an error-burst service's logs that are ERROR.
pub const ERROR_BURST_SHARE: f64 = 0.5;
/// Latency multiplier during a latency spike.
pub const LATENCY_SPIKE_FACTOR: f64 = 10.0;

impl Default for SyntheticOptions {
    fn default() -> Self {
        SyntheticOptions {
            services: logpipe_core::record::DEFAULT_SERVICES
                .map(String::from)
                .to_vec(),
            error_rate: 0.05,
            id_prefix: format!("{:08x}", fastrand::u32(..)),
            seed: None,
            incidents: Vec::new(),
            started: std::time::Instant::now(),
            backdate: None,
        }
    }
}

/// Produces records; ids are `<prefix>-<sequence>`, unique per source.
pub struct SyntheticSource {
    options: SyntheticOptions,
    rng: fastrand::Rng,
    sequence: u64,
    /// The next record's index in the whole load (for [`Backdate`]).
    index: u64,
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
            index: 0,
        }
    }

    /// Starts ids at `sequence` (to give concurrent senders disjoint ids).
    pub fn with_sequence(mut self, sequence: u64) -> SyntheticSource {
        self.sequence = sequence;
        self
    }

    /// The next record's time: now, or its place in the backdated span.
    fn timestamp_seconds(&mut self) -> f64 {
        let index = self.index;
        self.index += 1;
        match self.options.backdate {
            None => logpipe_core::time::now_micros() as f64 / 1e6,
            Some(b) => (b.start_micros + (index as f64 * b.step_micros) as i64) as f64 / 1e6,
        }
    }

    /// Makes the next record the `index`-th of the whole load (a sender
    /// taking batch `k` of size `n` starts at `k × n`).
    pub fn at_index(&mut self, index: u64) {
        self.index = index;
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

    /// The incident of `kind` active on `service` now, if any.
    fn active(&self, service: &str, kind: IncidentKind) -> bool {
        if self.options.incidents.is_empty() {
            return false;
        }
        let elapsed = self.options.started.elapsed();
        self.options.incidents.iter().any(|incident| {
            incident.kind == kind
                && incident.service == service
                && elapsed >= incident.start
                && elapsed < incident.start + incident.duration
        })
    }

    /// A service to log for: uniform over the services that are not silenced.
    fn pick_service(&mut self) -> usize {
        let services = self.options.services.len();
        let first = self.rng.usize(0..services);
        (0..services)
            .map(|step| (first + step) % services)
            .find(|&i| !self.active(&self.options.services[i], IncidentKind::Silence))
            .unwrap_or(first)
    }

    pub fn write_log(&mut self, out: &mut String) {
        let timestamp = self.timestamp_seconds();
        let service_index = self.pick_service();
        let service = &self.options.services[service_index];
        let error_rate = if self.active(service, IncidentKind::ErrorBurst) {
            ERROR_BURST_SHARE
        } else {
            self.options.error_rate
        };
        let latency_factor = if self.active(service, IncidentKind::LatencySpike) {
            LATENCY_SPIKE_FACTOR
        } else {
            1.0
        };
        let rng = &mut self.rng;
        let roll = rng.f64();
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
        let latency = latency * latency_factor;
        let _ = write!(
            out,
            r#"{{"timestamp":{:.6},"level":"{level}","service":"{service}","host":"{}","message":"{message}","metadata":{{"request_id":"{}-{}","response_time_ms":{latency:.1},"status_code":{status},"endpoint":"{}","method":"{}"}}}}"#,
            timestamp,
            HOSTS[rng.usize(0..HOSTS.len())],
            self.options.id_prefix,
            self.sequence,
            ENDPOINTS[rng.usize(0..ENDPOINTS.len())],
            METHODS[rng.usize(0..METHODS.len())],
        );
        self.sequence += 1;
    }

    pub fn write_event(&mut self, out: &mut String) {
        let timestamp = self.timestamp_seconds();
        let rng = &mut self.rng;
        let event_type = EVENT_TYPES[rng.usize(0..EVENT_TYPES.len())];
        let (device, os, browser) = DEVICES[rng.usize(0..DEVICES.len())];
        let product = rng.u32(1..500);
        let _ = write!(
            out,
            r#"{{"event_id":"evt-{}-{}","timestamp":{:.6},"user_id":"user_{}","session_id":"sess_{:05x}","event_type":"{event_type}","event_data":{{"page":"/products/{product}","element":"{}","position":{{"x":{},"y":{}}}"#,
            self.options.id_prefix,
            self.sequence,
            timestamp,
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

    #[test]
    fn incidents_change_their_service_only_while_active() {
        let incident = |kind, service: &str, start| IncidentConfig {
            kind,
            service: service.to_string(),
            start,
            duration: std::time::Duration::from_secs(3600),
        };
        let mut source = SyntheticSource::new(SyntheticOptions {
            services: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            seed: Some(3),
            error_rate: 0.0,
            incidents: vec![
                incident(IncidentKind::ErrorBurst, "a", std::time::Duration::ZERO),
                incident(IncidentKind::Silence, "b", std::time::Duration::ZERO),
                incident(IncidentKind::LatencySpike, "c", std::time::Duration::ZERO),
                // Not started yet.
                incident(
                    IncidentKind::ErrorBurst,
                    "d",
                    std::time::Duration::from_secs(3600),
                ),
            ],
            ..SyntheticOptions::default()
        });
        let limits = ValidationLimits::now();
        let mut by_service: std::collections::BTreeMap<String, (u32, u32, f64)> =
            Default::default();
        for _ in 0..4000 {
            let mut text = String::new();
            source.write_log(&mut text);
            let record = LogRecord::parse(&text, &limits).unwrap();
            let entry = by_service.entry(record.service.clone()).or_default();
            entry.0 += 1;
            entry.1 += u32::from(record.level == logpipe_core::Level::Error);
            entry.2 = entry.2.max(record.metadata.response_time_ms.unwrap());
        }
        assert!(
            !by_service.contains_key("b"),
            "a silenced service sends nothing"
        );
        let (count, errors, _) = by_service["a"];
        let share = f64::from(errors) / f64::from(count);
        assert!((0.4..0.6).contains(&share), "error burst share {share}");
        assert_eq!(
            by_service["d"].1, 0,
            "an incident that has not started changes nothing"
        );
        assert!(by_service["c"].2 > 1000.0 && by_service["d"].2 < 1000.0);
    }

    #[test]
    fn backdated_records_are_stamped_by_their_index_in_the_load() {
        let mut source = SyntheticSource::new(SyntheticOptions {
            backdate: Some(Backdate {
                start_micros: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
                step_micros: 1_500_000.0,
            }),
            ..SyntheticOptions::default()
        });
        let stamp = |source: &mut SyntheticSource| {
            let mut text = String::new();
            source.write_record(RecordKind::Log, &mut text);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            value["timestamp"].as_f64().unwrap()
        };
        assert_eq!(stamp(&mut source), 1_767_225_600.0);
        assert_eq!(stamp(&mut source), 1_767_225_601.5);
        source.at_index(1000);
        assert_eq!(stamp(&mut source), 1_767_227_100.0);
    }
}
