//! A bus segment as a crash or a bad disk could leave it: the batch header
//! and record decoders over the bytes, then the bytes as the only segment
//! of a partition, opened by the embedded bus (recovery truncates a torn
//! tail or refuses damage) and read by `logpipe check`. No panic, ever.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logpipe_bus::EmbeddedBus;
use logpipe_bus::embedded::check::check_bus_dir;
use logpipe_bus::embedded::format::{BatchHeader, HEADER_BYTES, decode_records, verify_batch};
use logpipe_config::EmbeddedBusConfig;

fuzz_target!(|data: &[u8]| {
    if let Some(head) = data.get(..HEADER_BYTES)
        && let Some(header) = BatchHeader::decode(head.try_into().expect("header size"))
    {
        if verify_batch(&header, data) {
            let batch = Bytes::copy_from_slice(data);
            for _record in decode_records(&batch) {}
        }
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let partition = dir.path().join("logs.raw").join("0");
    std::fs::create_dir_all(&partition).expect("partition directory");
    std::fs::write(partition.join(format!("{:020}.log", 0)), data).expect("segment");
    let _ = check_bus_dir(dir.path());
    let _ = EmbeddedBus::open(dir.path(), &EmbeddedBusConfig::default());
});
