//! Record headers: named binary values that travel next to a record's key
//! and value. On Kafka they are the record headers of the protocol; the
//! embedded log stores them inside its batch (see [`crate::format`]).
//!
//! The collector uses one to hand the window job a log record's window
//! fields in a few fixed bytes, so that job does not parse the JSON value a
//! second time (the raw→lake job already does).

use bytes::Bytes;

/// A record's headers as one encoded block: each header is
/// `name_len u32, name, value_len u32, value` (little-endian), in order.
/// Reading a block is allocation-free; a block read from a Kafka broker is
/// encoded once when the record arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Bytes);

impl Headers {
    /// Headers from an encoded block. A block that breaks off mid-header
    /// reads as ending there (the embedded log's checksum rules out a torn
    /// block; a block is never built from untrusted bytes).
    pub fn from_encoded(block: Bytes) -> Headers {
        Headers(block)
    }

    /// One header whose `value_len`-byte value `write` appends to the
    /// buffer it is given: one allocation, of the exact size (the collector
    /// builds one per log record).
    pub fn single(name: &str, value_len: usize, write: impl FnOnce(&mut Vec<u8>)) -> Headers {
        HeadersBuilder::with_capacity(8 + name.len() + value_len)
            .push(name, value_len, write)
            .finish()
    }

    /// The encoded block.
    pub fn encoded(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, value)| value)
    }

    /// `(name, value)` of each header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let name = take(&mut rest)?;
            let value = take(&mut rest)?;
            Some((name, value))
        })
    }
}

/// Builds a block header by header, each value written in place: one
/// allocation when the capacity given covers them all (8 bytes plus name and
/// value per header).
#[derive(Debug, Default)]
pub struct HeadersBuilder {
    block: Vec<u8>,
}

impl HeadersBuilder {
    pub fn with_capacity(bytes: usize) -> HeadersBuilder {
        HeadersBuilder {
            block: Vec::with_capacity(bytes),
        }
    }

    /// Adds a header whose `value_len`-byte value `write` appends.
    pub fn push(
        mut self,
        name: &str,
        value_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> HeadersBuilder {
        let block = &mut self.block;
        block.extend_from_slice(&(name.len() as u32).to_le_bytes());
        block.extend_from_slice(name.as_bytes());
        block.extend_from_slice(&(value_len as u32).to_le_bytes());
        let start = block.len();
        write(block);
        assert_eq!(
            block.len() - start,
            value_len,
            "header {name}: wrote a value of another length than declared"
        );
        self
    }

    pub fn finish(self) -> Headers {
        Headers(Bytes::from(self.block))
    }
}

/// Takes one length-prefixed field off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let length = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let field = rest.get(4..4usize.checked_add(length)?)?;
    *rest = &rest[4 + length..];
    Some(field)
}

impl Headers {
    /// Headers from `(name, value)` pairs whose encoded size (8 bytes plus
    /// name and value, each) is `size`: one allocation.
    pub fn from_pairs<'a>(
        size: usize,
        pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Headers {
        let mut block = Vec::with_capacity(size);
        for (name, value) in pairs {
            for field in [name.as_bytes(), value] {
                block.extend_from_slice(&(field.len() as u32).to_le_bytes());
                block.extend_from_slice(field);
            }
        }
        Headers(Bytes::from(block))
    }
}

impl<'a> FromIterator<(&'a str, &'a [u8])> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a [u8])>>(headers: I) -> Headers {
        Headers::from_pairs(0, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_a_broken_block_ends_early() {
        let headers: Headers = [("a", &b"1"[..]), ("empty", b""), ("a", b"second")]
            .into_iter()
            .collect();
        assert_eq!(headers.get("a"), Some(&b"1"[..]));
        assert_eq!(headers.get("empty"), Some(&b""[..]));
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.iter().count(), 3);
        assert!(Headers::default().is_empty());

        let block = headers.encoded();
        let cut = Headers::from_encoded(Bytes::copy_from_slice(&block[..block.len() - 1]));
        assert_eq!(cut.iter().count(), 2);
        let single = Headers::single("a", 3, |out| out.extend_from_slice(b"xyz"));
        assert_eq!(single.get("a"), Some(&b"xyz"[..]));
        assert_eq!(single.encoded().len(), 4 + 1 + 4 + 3);
        let two = HeadersBuilder::with_capacity(24)
            .push("a", 2, |out| out.extend_from_slice(b"12"))
            .push("bc", 3, |out| out.extend_from_slice(b"345"))
            .finish();
        assert_eq!(two.get("bc"), Some(&b"345"[..]));
        assert_eq!(two.encoded().len(), 24);

        let huge_length = Headers::from_encoded(Bytes::from_static(&[255, 255, 255, 255, 0]));
        assert_eq!(huge_length.iter().count(), 0);
    }
}
