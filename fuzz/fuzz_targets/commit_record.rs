//! A lake commit record as read back from the store: any bytes are a
//! record or a `BadCommit`, never a panic; a record read writes back to
//! JSON that reads as the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logpipe_lake::CommitRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = serde_json::from_slice::<CommitRecord>(data) {
        let json = serde_json::to_vec(&record).expect("a record serializes");
        let again: CommitRecord = serde_json::from_slice(&json).expect("its JSON reads back");
        assert_eq!(serde_json::to_vec(&again).expect("serializes"), json);
    }
});
