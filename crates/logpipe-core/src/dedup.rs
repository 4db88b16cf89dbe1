//! Exactly once across HTTP retries: record ids, and the filter that drops a
//! retried record's second copy.
//!
//! **Why.** HTTP is at-least-once. When the collector's answer is lost, or
//! the collector answers 503 after the bus may already have stored the
//! records (a Kafka delivery that timed out is "possibly persisted": the
//! broker may have written it before it stopped answering), the client
//! retries and the records can be stored twice. No answer the collector can
//! give makes this safe: it cannot know whether a broker it cannot reach
//! wrote a batch.
//!
//! **How.** A client sends an `Idempotency-Key` header with a request, and
//! the same key with every retry of that request. The collector gives each
//! record of the request an id ([`RecordId`]): the request id, a 128-bit
//! hash of the key *and the body* (so a key reused by mistake for another
//! body never drops records), and the record's position in the body. The id
//! travels as a record header ([`HEADER`]). Copies of a record have the same
//! bus key and so land in the same partition; the raw→lake job drops a
//! record whose id appeared in the same partition within the previous
//! `window` offsets ([`Dedup`]).
//!
//! **Why a window of offsets, not of time or of a stored set.** The rule
//! depends only on the log: whether the record at offset `o` is dropped is
//! decided by the records in `[o - window, o)`. A job that restarts, takes a
//! partition over from another member, or rebuilds an interrupted commit
//! re-reads those offsets before where it starts, and drops exactly the
//! records a job that never stopped would have dropped. Nothing has to be
//! checkpointed, and the lake stays a function of the log. A retry's copy
//! lands within a few seconds of records of the first one (the client waits
//! `Retry-After`); the window must cover the records all clients write to one
//! partition in that time (the default, 500,000 offsets, covers 25 s at
//! 60,000 records/s over three partitions).
//!
//! ```text
//! logpipe.id header: request u128 big-endian, index u32 big-endian (20 bytes)
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use siphasher::sip128::{Hasher128, SipHasher13};

/// The bus record header that carries a [`RecordId`].
pub const HEADER: &str = "logpipe.id";
/// Encoded size of a [`RecordId`].
pub const ENCODED_LEN: usize = 20;
/// The HTTP request header a client names a request with.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest accepted `Idempotency-Key` value.
pub const MAX_KEY_BYTES: usize = 255;

/// Fixed SipHash keys: ids must be the same in every process and version
/// (they are compared across restarts and collectors).
const SIP_KEYS: (u64, u64) = (0x6c6f_6770_6970_652e, 0x6964_2d76_3100_0000);

/// One record of one request: which request, and where in its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordId {
    pub request: u128,
    /// Position in the request body (counting records that were rejected),
    /// so a retry of the same body gives each record the same id.
    pub index: u32,
}

impl RecordId {
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[..16].copy_from_slice(&self.request.to_be_bytes());
        out[16..].copy_from_slice(&self.index.to_be_bytes());
        out
    }

    /// `None` unless `bytes` is exactly an encoded id.
    pub fn decode(bytes: &[u8]) -> Option<RecordId> {
        let bytes: &[u8; ENCODED_LEN] = bytes.try_into().ok()?;
        let (request, index) = bytes.split_at(16);
        Some(RecordId {
            request: u128::from_be_bytes(request.try_into().ok()?),
            index: u32::from_be_bytes(index.try_into().ok()?),
        })
    }
}

/// The id of a request: a hash of its `Idempotency-Key` and its body.
pub fn request_id(key: &[u8], body: &[u8]) -> u128 {
    let mut hasher = SipHasher13::new_with_keys(SIP_KEYS.0, SIP_KEYS.1);
    hasher.write(&(key.len() as u64).to_le_bytes());
    hasher.write(key);
    hasher.write(body);
    hasher.finish128().as_u128()
}

/// Checks an `Idempotency-Key` header value: 1 to [`MAX_KEY_BYTES`]
/// printable ASCII characters, optionally in double quotes (the IETF
/// draft's structured-field string; the quotes are not part of the key).
pub fn parse_key(value: &[u8]) -> Result<&[u8], String> {
    let key = match value {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    };
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the Idempotency-Key header must be 1 to {MAX_KEY_BYTES} characters, not {}",
            key.len()
        ));
    }
    if let Some(bad) = key.iter().find(|b| !(0x20..0x7f).contains(*b)) {
        return Err(format!(
            "the Idempotency-Key header must be printable ASCII (found byte 0x{bad:02x}); a UUID is a good key"
        ));
    }
    Ok(key)
}

/// Request ids are already uniform hashes: use their low bits as they are.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, id: u128) {
        self.0 = id as u64;
    }
}

/// Largest window [`Dedup`] takes: offsets are kept as 32-bit distances
/// from a base no further back than a window and a quarter.
pub const MAX_WINDOW: u64 = 1 << 30;

/// The duplicate filter of one partition.
///
/// Remembers, per request, the offset where each of its records was last
/// seen: 8 bytes per record with an id in the window, plus vector growth
/// (the forgotten ones are swept out every quarter window).
#[derive(Debug)]
pub struct Dedup {
    window: u64,
    /// Offsets are stored as `offset - base`; each sweep moves `base` up to
    /// the oldest offset that can still match.
    base: u64,
    /// Request → (index, offset last seen - base), sorted by index.
    seen: HashMap<u128, Vec<(u32, u32)>, BuildHasherDefault<IdHasher>>,
    next_sweep: u64,
}

impl Dedup {
    /// A filter over `window` offsets (0: nothing is ever a repeat; at
    /// most [`MAX_WINDOW`]).
    pub fn new(window: u64) -> Dedup {
        Dedup {
            window: window.min(MAX_WINDOW),
            base: 0,
            seen: HashMap::default(),
            next_sweep: 0,
        }
    }

    /// Whether `id`, read at `offset`, appeared in `[offset - window,
    /// offset)`; remembers it either way. Offsets must come in increasing
    /// order (the order of the partition).
    pub fn is_repeat(&mut self, id: RecordId, offset: u64) -> bool {
        if self.window == 0 {
            return false;
        }
        if offset >= self.next_sweep {
            self.sweep(offset);
        }
        // Below the base: a record older than anything remembered, read
        // again; it is no copy of what the filter holds.
        let Some(distance) = offset.checked_sub(self.base) else {
            return false;
        };
        // Less than a window and a quarter (plus 1024) since the last sweep.
        let distance = distance as u32;
        let floor = offset.saturating_sub(self.window);
        let base = self.base;
        let records = self.seen.entry(id.request).or_default();
        // A request's records reach a partition in body order: an index
        // past the last one remembered is the common case, and new.
        if records.last().is_none_or(|(last, _)| *last < id.index) {
            records.push((id.index, distance));
            return false;
        }
        match records.binary_search_by_key(&id.index, |(index, _)| *index) {
            // The same record read again (never at a lower offset than a
            // copy) is not a copy of itself.
            Ok(at) if records[at].1 >= distance => false,
            Ok(at) => {
                let repeat = base + u64::from(records[at].1) >= floor;
                records[at].1 = distance;
                repeat
            }
            Err(at) => {
                records.insert(at, (id.index, distance));
                false
            }
        }
    }

    /// Records remembered (for tests and memory accounting).
    pub fn remembered(&self) -> usize {
        self.seen.values().map(Vec::len).sum()
    }

    /// Forgets what no later offset can match, and moves the base up to
    /// the oldest offset that still can.
    fn sweep(&mut self, offset: u64) {
        let new_base = offset.saturating_sub(self.window).max(self.base);
        let shift = new_base - self.base;
        self.seen.retain(|_, records| {
            records.retain_mut(|(_, at)| match u64::from(*at).checked_sub(shift) {
                Some(moved) => {
                    *at = moved as u32;
                    true
                }
                None => false,
            });
            !records.is_empty()
        });
        self.base = new_base;
        self.next_sweep = offset + (self.window / 4).max(1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_request_ids_are_stable() {
        let id = RecordId {
            request: request_id(b"key-1", b"[{}]"),
            index: 7,
        };
        assert_eq!(RecordId::decode(&id.encode()), Some(id));
        assert_eq!(RecordId::decode(&id.encode()[..19]), None);
        // Stored on the bus and compared across versions: never change it.
        assert_eq!(request_id(b"key-1", b"[{}]"), request_id(b"key-1", b"[{}]"));
        assert_eq!(
            format!("{:032x}", request_id(b"key-1", b"[{}]")),
            "73b9874bb740c1e5b2454d6fc4bacd64"
        );
        // The key and the body both count, and where one ends matters.
        assert_ne!(request_id(b"key-1", b"[{}]"), request_id(b"key-2", b"[{}]"));
        assert_ne!(
            request_id(b"key-1", b"[{}]"),
            request_id(b"key-1", b"[{} ]")
        );
        assert_ne!(request_id(b"ab", b"c"), request_id(b"a", b"bc"));
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(parse_key(b"abc-123").unwrap(), b"abc-123");
        assert_eq!(parse_key(b"\"abc\"").unwrap(), b"abc");
        assert!(parse_key(b"").unwrap_err().contains("1 to 255"));
        assert!(parse_key(b"\"\"").is_err());
        assert!(parse_key(&[b'a'; 256]).is_err());
        assert!(parse_key(b"a\tb").unwrap_err().contains("0x09"));
    }

    #[test]
    fn a_repeat_within_the_window_is_dropped_and_one_outside_is_not() {
        let id = |request, index| RecordId { request, index };
        let mut dedup = Dedup::new(10);
        assert!(!dedup.is_repeat(id(1, 0), 100));
        assert!(!dedup.is_repeat(id(1, 1), 101));
        assert!(!dedup.is_repeat(id(2, 0), 102));
        assert!(dedup.is_repeat(id(1, 0), 110)); // 10 offsets later: inside
        assert!(dedup.is_repeat(id(1, 1), 111));
        assert!(!dedup.is_repeat(id(2, 0), 113)); // 11 later: outside
        // A third copy counts from the second.
        assert!(dedup.is_repeat(id(1, 0), 120));
        assert!(!Dedup::new(0).is_repeat(id(1, 0), 5));
        // Offsets far from zero (a long-lived Kafka partition).
        let far = 1u64 << 40;
        let mut old_topic = Dedup::new(10);
        assert!(!old_topic.is_repeat(id(1, 0), far));
        assert!(old_topic.is_repeat(id(1, 0), far + 10));
        assert!(!old_topic.is_repeat(id(1, 0), far + 21));
        // Reading a record again is not reading a copy of it.
        assert!(!dedup.is_repeat(id(1, 0), 120));
    }

    /// The filter against the rule it implements, over random streams with
    /// many repeats; also checks that memory stays bounded by the window.
    #[test]
    fn the_filter_follows_the_offset_window_rule() {
        for seed in 0..10 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let window = rng.u64(1..3000);
            let mut dedup = Dedup::new(window);
            let mut log: Vec<(u64, RecordId)> = Vec::new();
            let mut offset = rng.u64(0..5000);
            for _ in 0..3000 {
                offset += rng.u64(1..4);
                let id = RecordId {
                    request: u128::from(rng.u32(0..40)) << 64 | u128::from(rng.u8(0..3)),
                    index: rng.u32(0..50),
                };
                let expected = log
                    .iter()
                    .any(|(at, seen)| *seen == id && *at + window >= offset);
                assert_eq!(dedup.is_repeat(id, offset), expected, "seed {seed}");
                log.push((offset, id));
                let in_window = log.iter().filter(|(at, _)| at + window >= offset).count();
                assert!(dedup.remembered() <= in_window + (window / 4).max(1024) as usize);
            }
        }
    }

    /// Re-reading `window` offsets before a start decides every later
    /// record as the filter that never stopped did.
    #[test]
    fn a_filter_warmed_up_from_the_window_agrees_with_one_that_never_stopped() {
        let mut rng = fastrand::Rng::with_seed(7);
        let log: Vec<(u64, RecordId)> = (0..5000u64)
            .map(|offset| {
                (
                    offset,
                    RecordId {
                        request: u128::from(rng.u32(0..30)),
                        index: rng.u32(0..20),
                    },
                )
            })
            .collect();
        let mut always = Dedup::new(400);
        let decisions: Vec<bool> = log
            .iter()
            .map(|(o, id)| always.is_repeat(*id, *o))
            .collect();
        for start in [0u64, 1, 399, 400, 1234, 4999] {
            let mut restarted = Dedup::new(400);
            for (offset, id) in &log[start.saturating_sub(400) as usize..start as usize] {
                restarted.is_repeat(*id, *offset);
            }
            for (offset, id) in &log[start as usize..] {
                assert_eq!(
                    restarted.is_repeat(*id, *offset),
                    decisions[*offset as usize],
                    "start {start}, offset {offset}"
                );
            }
        }
    }
}
