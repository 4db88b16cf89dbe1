//! Timestamps as text (ISO 8601) and as epoch seconds: no panic, and a
//! parsed time printed as RFC 3339 parses back to the same microsecond.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logpipe_core::time::{epoch_seconds_to_micros, micros_to_rfc3339, parse_iso8601_micros};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(micros) = parse_iso8601_micros(text)
    {
        let printed = micros_to_rfc3339(micros);
        assert_eq!(
            parse_iso8601_micros(&printed),
            Ok(micros),
            "{text:?} → {printed}"
        );
    }
    if let Some(bytes) = data.get(..8) {
        let seconds = f64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        let _ = epoch_seconds_to_micros(seconds);
    }
});
