//! A record in binary form as the jobs read it off the embedded bus: any
//! bytes decode or are refused with a reason, never panic; what decodes
//! encodes to bytes that decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logpipe_core::record::{RecordKind, ValidationLimits, binary};

fuzz_target!(|data: &[u8]| {
    let limits = ValidationLimits::structure_only();
    for kind in RecordKind::ALL {
        if let Ok(record) = binary::decode(kind, data, &limits) {
            let again = binary::decode(kind, &binary::encode(&record), &limits)
                .expect("its own encoding decodes");
            assert_eq!(again, record);
        }
    }
});
