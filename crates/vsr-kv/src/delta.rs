//! [`KvDelta`]: the keys written after some op, which a lagging replica applies to catch up.
//!
//! Encoding (little-endian):
//!
//! ```text
//!   tag 0x44 ('D') | since: u64 | op: u64 | count: u32 | count × entry
//!   entry = key (u32 length + bytes) | version: u64 | option tag (0 tombstone, 1 live) [+ value]
//! ```
//!
//! The encoding is canonical: `decode` requires keys in strictly ascending order and every
//! version in `since + 1 ..= op`, so a decoded delta is one that [`KvStore`](crate::KvStore)
//! could have produced.

use bytes::{BufMut, Bytes};
use vsr::{Codec, CodecError, Op};

use crate::codec::{Reader, put_bytes, put_option};
use crate::store::Entry;

const TAG_DELTA: u8 = b'D';

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

/// Appends one entry's encoding; also what [`KvStore`](crate::KvStore)'s digest covers.
pub(crate) fn encode_entry(out: &mut Vec<u8>, key: &Bytes, entry: &Entry) {
    put_bytes(out, key);
    out.put_u64_le(entry.version.get());
    put_option(out, entry.value.as_ref());
}

/// Decodes one entry, checking its version is in `since + 1 ..= op`.
fn decode_entry(reader: &mut Reader<'_>, since: Op, op: Op) -> Result<(Bytes, Entry), CodecError> {
    let key = reader.key()?;
    let version = Op(reader.u64()?);
    if version <= since || version > op {
        return Err(reader.error("entry version outside since + 1 ..= op"));
    }
    let value = reader.option()?;
    Ok((key, Entry { version, value }))
}

impl Codec for KvDelta {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(TAG_DELTA);
        out.put_u64_le(self.since.get());
        out.put_u64_le(self.op.get());
        let count = u32::try_from(self.entries.len()).expect("delta has more than u32::MAX keys");
        out.put_u32_le(count);
        for (key, entry) in &self.entries {
            encode_entry(out, key, entry);
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut reader = Reader::new(bytes, "KvDelta");
        if reader.u8()? != TAG_DELTA {
            return Err(reader.error("unknown delta tag"));
        }
        let since = Op(reader.u64()?);
        let op = Op(reader.u64()?);
        let count = reader.u32()?;
        // No capacity from `count`: each entry is at least 14 bytes, so the loop ends on
        // truncation long before a hostile count could matter.
        let mut entries: Vec<(Bytes, Entry)> = Vec::new();
        for _ in 0..count {
            let (key, entry) = decode_entry(&mut reader, since, op)?;
            if entries.last().is_some_and(|(previous, _)| *previous >= key) {
                return Err(reader.error("keys not in strictly ascending order"));
            }
            entries.push((key, entry));
        }
        reader.finish()?;
        Ok(Self { since, op, entries })
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
    fn hostile_count_does_not_allocate() {
        let mut encoded = KvDelta::default().to_bytes();
        let count_at = encoded.len() - 4;
        encoded[count_at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(KvDelta::decode(&encoded).unwrap_err().reason, "truncated");
    }
}
