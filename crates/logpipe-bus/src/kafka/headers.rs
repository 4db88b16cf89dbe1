//! Record headers between logpipe's form and librdkafka's.

use rdkafka::message::{Header, Headers as _, OwnedHeaders};

use crate::Headers;

/// The librdkafka form of a record's headers. Header names are Kafka
/// strings; a name that is not UTF-8 cannot have come from [`Headers`]'s
/// constructors and is skipped.
pub(super) fn kafka_headers(headers: &Headers) -> OwnedHeaders {
    headers
        .iter()
        .filter_map(|(name, value)| Some((std::str::from_utf8(name).ok()?, value)))
        .fold(OwnedHeaders::new(), |out, (key, value)| {
            out.insert(Header {
                key,
                value: Some(value),
            })
        })
}

/// A Kafka message's headers as one block, sized exactly (one
/// allocation).
pub(super) fn our_headers(headers: &rdkafka::message::BorrowedHeaders) -> Headers {
    let pairs = || headers.iter().map(|h| (h.key, h.value.unwrap_or_default()));
    let size = pairs().map(|(k, v)| 8 + k.len() + v.len()).sum();
    Headers::from_pairs(size, pairs())
}
