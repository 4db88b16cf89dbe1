//! A request body: split (JSON array or NDJSON) and each record validated
//! as a log and as an event. Whatever the bytes, no panic; a log that
//! validates has a window summary that decodes to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logpipe_core::record::summary::LogSummary;
use logpipe_core::record::{ActivityEvent, LogRecord, ValidationLimits, split_body};

fuzz_target!(|body: &[u8]| {
    let limits = ValidationLimits::now();
    let Ok(records) = split_body(body) else {
        return;
    };
    for raw in records.into_iter().flatten() {
        if let Ok(log) = LogRecord::parse(raw, &limits) {
            let summary = LogSummary::of(&log);
            let encoded = summary.encode();
            let decoded = LogSummary::decode(&encoded).expect("a summary decodes");
            assert_eq!(decoded.encode(), encoded, "the summary round-trips");
        }
        let _ = ActivityEvent::parse(raw, &limits);
    }
});
