//! The window summary header as the window job reads it from the bus: any
//! bytes decode or are refused, never panic; what decodes re-encodes to the
//! same bytes it was read from (prefix).
#![no_main]

use libfuzzer_sys::fuzz_target;
use logpipe_core::record::summary::LogSummary;

fuzz_target!(|data: &[u8]| {
    if let Some(summary) = LogSummary::decode(data) {
        let encoded = summary.encode();
        let again = LogSummary::decode(&encoded).expect("its own encoding decodes");
        assert_eq!(again.encode(), encoded);
    }
});
