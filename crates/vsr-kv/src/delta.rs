//! [`KvDelta`]: the keys written after some op, which a lagging replica applies to catch up.
//!
//! Encoding (little-endian):
//!
//! ```text
//!   tag 0x44 ('D') | since: u64 | op: u64 | entry* | end: u32 = 0
//!   entry = key (u32 length ≥ 1 + bytes) | version: u64 | option tag (0 tombstone, 1 live) [+ value]
//! ```
//!
//! The entries are not counted up front: a zero where the next key's length would be (no key is
//! empty) ends them. So a sender can stream a delta as it walks its keys, without a first pass
//! to count the entries after `since` (see `frozen.rs`).
//!
//! The encoding is canonical: `decode` requires keys in strictly ascending order and every
//! version in `since + 1 ..= op`, so a decoded delta is one that [`KvStore`](crate::KvStore)
//! could have produced.

use bytes::{BufMut, Bytes};
use vsr::{Codec, CodecError, Op};

use crate::codec::{Reader, put_bytes, put_option};
use crate::store::Entry;

const TAG_DELTA: u8 = b'D';

/// The size of a delta's header: tag, since and op.
pub(crate) const HEADER_SIZE: usize = 1 + 8 + 8;

/// The size of the end marker after the last entry.
pub(crate) const END_SIZE: usize = 4;

/// The size of the largest entry: key, version, option tag and value, with length prefixes.
pub(crate) const ENTRY_SIZE_MAX: usize =
    4 + crate::KEY_SIZE_MAX + 8 + 1 + 4 + crate::VALUE_SIZE_MAX;

/// The size of the smallest entry: a one-byte key, its version and a tombstone's tag.
const ENTRY_SIZE_MIN: usize = 4 + 1 + 8 + 1;

/// The changes a [`KvStore`](crate::KvStore) made after op `since`: every key (value or
/// tombstone) whose version is after `since`, in key order, and the last op the sender applied.
///
/// Built only by [`StateMachine::delta`](vsr::StateMachine::delta) or by `decode`. A delta since
/// op 0 is the whole state; the default delta is the whole state of an empty store.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KvDelta {
    since: Op,
    op: Op,
    entries: Vec<(Bytes, Entry)>,
}

impl KvDelta {
    /// A delta of `entries`, which must be in strictly ascending key order with versions in
    /// `since + 1 ..= op`.
    pub(crate) fn new(since: Op, op: Op, entries: Vec<(Bytes, Entry)>) -> Self {
        Self { since, op, entries }
    }

    /// The op after which these changes were made; 0 for a whole state.
    #[must_use]
    pub fn since(&self) -> Op {
        self.since
    }

    /// The last op the sender had applied when it built this delta.
    #[must_use]
    pub fn op(&self) -> Op {
        self.op
    }

    /// The number of keys (values and tombstones) this delta writes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether this delta writes no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn into_entries(self) -> Vec<(Bytes, Entry)> {
        self.entries
    }
}

/// Appends a delta's header.
pub(crate) fn encode_header(out: &mut Vec<u8>, since: Op, op: Op) {
    out.put_u8(TAG_DELTA);
    out.put_u64_le(since.get());
    out.put_u64_le(op.get());
}

/// Appends one entry's encoding; also what [`KvStore`](crate::KvStore)'s digest covers.
pub(crate) fn encode_entry(out: &mut Vec<u8>, key: &[u8], entry: &Entry) {
    debug_assert!(!key.is_empty(), "an empty key would read as the end marker");
    put_bytes(out, key);
    out.put_u64_le(entry.version.get());
    put_option(out, entry.value.as_ref());
}

/// The size of what [`encode_entry`] appends.
pub(crate) fn entry_size(key: &[u8], entry: &Entry) -> usize {
    4 + key.len() + 8 + 1 + entry.value.as_ref().map_or(0, |value| 4 + value.len())
}

/// Appends the end marker: a zero where the next key's length would be.
pub(crate) fn encode_end(out: &mut Vec<u8>) {
    out.put_u32_le(0);
}

/// Decodes the next entry, checking its version is in `since + 1 ..= op`, or `None` at the end
/// marker.
fn decode_entry(
    reader: &mut Reader<'_>,
    since: Op,
    op: Op,
) -> Result<Option<(Bytes, Entry)>, CodecError> {
    let Some(key) = reader.key_or_end()? else {
        return Ok(None);
    };
    let version = Op(reader.u64()?);
    if version <= since || version > op {
        return Err(reader.error("entry version outside since + 1 ..= op"));
    }
    let value = reader.option()?;
    Ok(Some((key, Entry { version, value })))
}

impl Codec for KvDelta {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_header(out, self.since, self.op);
        for (key, entry) in &self.entries {
            encode_entry(out, key, entry);
        }
        encode_end(out);
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut reader = Reader::new(bytes, "KvDelta");
        if reader.u8()? != TAG_DELTA {
            return Err(reader.error("unknown delta tag"));
        }
        let since = Op(reader.u64()?);
        let op = Op(reader.u64()?);
        let mut entries: Vec<(Bytes, Entry)> = Vec::new();
        // Every entry takes at least ENTRY_SIZE_MIN bytes, so the bytes bound the entries.
        for _ in 0..=bytes.len() / ENTRY_SIZE_MIN {
            let Some((key, entry)) = decode_entry(&mut reader, since, op)? else {
                reader.finish()?;
                return Ok(Self { since, op, entries });
            };
            if entries.last().is_some_and(|(previous, _)| *previous >= key) {
                return Err(reader.error("keys not in strictly ascending order"));
            }
            entries.push((key, entry));
        }
        Err(reader.error("truncated"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvStore;
    use vsr::StateMachine;

    fn entry(version: u64, value: Option<&'static [u8]>) -> Entry {
        Entry {
            version: Op(version),
            value: value.map(Bytes::from_static),
        }
    }

    fn sample() -> KvDelta {
        KvDelta::new(
            Op(3),
            Op(9),
            vec![
                (Bytes::from_static(b"a"), entry(4, Some(b"1"))),
                (Bytes::from_static(b"b"), entry(9, None)),
                (Bytes::from_static(b"c"), entry(5, Some(b""))),
            ],
        )
    }

    #[test]
    fn round_trip_and_every_truncation_rejected() {
        for delta in [sample(), KvDelta::default(), KvStore::new().delta(Op(0))] {
            let encoded = delta.to_bytes();
            assert_eq!(KvDelta::decode(&encoded).unwrap(), delta);
            for size in 0..encoded.len() {
                assert!(KvDelta::decode(&encoded[..size]).is_err(), "prefix {size}");
            }
            let mut longer = encoded;
            longer.push(0);
            assert!(KvDelta::decode(&longer).is_err());
        }
    }

    #[test]
    fn rejects_non_canonical_deltas() {
        let mut encoded = sample().to_bytes();
        encoded[0] = 0;
        assert_eq!(
            KvDelta::decode(&encoded).unwrap_err().reason,
            "unknown delta tag"
        );

        let unordered = KvDelta::new(
            Op(0),
            Op(9),
            vec![sample().entries[1].clone(), sample().entries[0].clone()],
        );
        let reason = KvDelta::decode(&unordered.to_bytes()).unwrap_err().reason;
        assert_eq!(reason, "keys not in strictly ascending order");

        let duplicate = KvDelta::new(
            Op(0),
            Op(9),
            vec![sample().entries[0].clone(), sample().entries[0].clone()],
        );
        assert!(KvDelta::decode(&duplicate.to_bytes()).is_err());

        for version in [3, 10] {
            let stale = KvDelta::new(
                Op(3),
                Op(9),
                vec![(Bytes::from_static(b"a"), entry(version, None))],
            );
            assert!(
                KvDelta::decode(&stale.to_bytes()).is_err(),
                "version {version}"
            );
        }
    }

    #[test]
    fn the_layout_is_header_entries_and_end_marker() {
        let mut expected = vec![b'D'];
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(&9u64.to_le_bytes());
        for (key, version, value) in [
            (b"a", 4u64, Some(&b"1"[..])),
            (b"b", 9, None),
            (b"c", 5, Some(b"")),
        ] {
            expected.extend_from_slice(&1u32.to_le_bytes());
            expected.extend_from_slice(key);
            expected.extend_from_slice(&version.to_le_bytes());
            match value {
                None => expected.push(0),
                Some(value) => {
                    expected.push(1);
                    expected.extend_from_slice(&u32::try_from(value.len()).unwrap().to_le_bytes());
                    expected.extend_from_slice(value);
                }
            }
        }
        expected.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(sample().to_bytes(), expected);
        assert_eq!(KvDelta::default().to_bytes().len(), HEADER_SIZE + END_SIZE);
        let (key, entry) = &sample().entries[0];
        assert_eq!(entry_size(key, entry), 4 + 1 + 8 + 1 + 4 + 1);
    }

    #[test]
    fn a_missing_end_marker_or_a_hostile_length_is_rejected() {
        let encoded = sample().to_bytes();
        let without_end = &encoded[..encoded.len() - END_SIZE];
        assert_eq!(
            KvDelta::decode(without_end).unwrap_err().reason,
            "truncated"
        );
        let mut hostile = encoded[..HEADER_SIZE].to_vec();
        hostile.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            KvDelta::decode(&hostile).unwrap_err().reason,
            "key longer than KEY_SIZE_MAX"
        );
    }
}
