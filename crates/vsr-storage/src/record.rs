//! WAL records: a checksummed header and a payload, and the encoding of one [`Entry`].
//!
//! A record is [`RECORD_HEADER_SIZE`] header bytes followed by `payload_size` payload bytes.
//! The header has its own checksum and a checksum of the payload, so a reader can tell a torn
//! payload (header valid, payload not) from garbage. An entry record repeats the entry's op,
//! view, checksum and parent in the header: when only the payload is damaged, the reader still
//! knows which entry it lost.
//!
//! | offset | size | field              | meaning                                         |
//! |-------:|-----:|--------------------|-------------------------------------------------|
//! |      0 |   16 | `checksum`         | checksum of header bytes 16..96                 |
//! |     16 |   16 | `checksum_payload` | checksum of the payload (also when empty)       |
//! |     32 |    4 | `magic`            | `VSRW`                                          |
//! |     36 |    1 | `kind`             | 1 entry, 2 truncate                             |
//! |     37 |    3 | reserved           | 0                                               |
//! |     40 |    4 | `payload_size`     | bytes of payload after the header               |
//! |     44 |    4 | reserved           | 0                                               |
//! |     48 |    8 | `op`               | the entry's op, or the truncate's last kept op  |
//! |     56 |    8 | `view`             | the entry's view (0 for truncate)               |
//! |     64 |   16 | `entry_checksum`   | the entry's checksum (0 for truncate)           |
//! |     80 |   16 | `entry_parent`     | the entry's parent (0 for truncate)             |
//!
//! An entry payload is the entry exactly as `vsr::wire` encodes it inside a prepare
//! ([`vsr::wire::encode_entry`], read back with [`vsr::wire::decode_entry`], which also verifies
//! the entry's checksum): `checksum` u128, `parent` u128, `client` u128, `op` u64, `view` u64,
//! `session` u64, `request` u64, body size u32, operation u8, body. A truncate has an empty
//! payload.

use vsr::checksum::checksum;
use vsr::config::MESSAGE_BODY_SIZE_MAX;
use vsr::wire::{ENTRY_HEADER_SIZE, decode_entry, encode_entry};
use vsr::{Entry, EntryChecksum, Op, View};

/// Size of a record header in bytes.
pub(crate) const RECORD_HEADER_SIZE: usize = 96;

/// Bytes of the magic number, at [`MAGIC_OFFSET`] in every record header.
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"VSRW";

/// Where the magic number sits in a record header.
pub(crate) const MAGIC_OFFSET: usize = 32;

/// Largest payload: the largest entry a prepare can carry.
pub(crate) const PAYLOAD_SIZE_MAX: usize = ENTRY_HEADER_SIZE + MESSAGE_BODY_SIZE_MAX;
const _: () = assert!(PAYLOAD_SIZE_MAX <= u32::MAX as usize);

const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;

/// A verified record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// Checksum of the payload.
    pub(crate) checksum_payload: u128,
    /// Entry or truncate.
    pub(crate) kind: RecordKind,
    /// Payload bytes after the header.
    pub(crate) payload_size: u32,
    /// The entry's op, or the truncate's last kept op.
    pub(crate) op: u64,
    /// The entry's view (0 for truncate).
    pub(crate) view: u64,
    /// The entry's checksum (0 for truncate).
    pub(crate) entry_checksum: EntryChecksum,
    /// The entry's parent (0 for truncate).
    pub(crate) entry_parent: EntryChecksum,
}

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// An entry appended to the log.
    Entry,
    /// Every entry after `op` removed.
    Truncate,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// Append this entry.
    Append(Entry),
    /// Remove every entry after `op`.
    Truncate {
        /// The last op kept.
        op: Op,
    },
}

impl RecordHeader {
    /// Total size of the record this header starts.
    pub(crate) fn record_size(&self) -> usize {
        RECORD_HEADER_SIZE + self.payload_size as usize
    }
}

/// Appends the record for an entry to `out`.
pub(crate) fn encode_entry_record(entry: &Entry, out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(ENTRY_HEADER_SIZE + entry.body.len());
    encode_entry(entry, &mut payload);
    let header = RecordHeader {
        checksum_payload: checksum(&payload),
        kind: RecordKind::Entry,
        payload_size: u32::try_from(payload.len()).expect("entries are bounded"),
        op: entry.op.get(),
        view: entry.view.get(),
        entry_checksum: entry.checksum,
        entry_parent: entry.parent,
    };
    encode_header(&header, out);
    out.extend_from_slice(&payload);
}

/// Appends the record for a truncate to `out`.
pub(crate) fn encode_truncate_record(op: Op, out: &mut Vec<u8>) {
    let header = RecordHeader {
        checksum_payload: checksum(&[]),
        kind: RecordKind::Truncate,
        payload_size: 0,
        op: op.get(),
        view: 0,
        entry_checksum: EntryChecksum(0),
        entry_parent: EntryChecksum(0),
    };
    encode_header(&header, out);
}

fn encode_header(header: &RecordHeader, out: &mut Vec<u8>) {
    let mut bytes = [0u8; RECORD_HEADER_SIZE];
    bytes[16..32].copy_from_slice(&header.checksum_payload.to_le_bytes());
    bytes[32..36].copy_from_slice(&RECORD_MAGIC);
    bytes[36] = match header.kind {
        RecordKind::Entry => KIND_ENTRY,
        RecordKind::Truncate => KIND_TRUNCATE,
    };
    bytes[40..44].copy_from_slice(&header.payload_size.to_le_bytes());
    bytes[48..56].copy_from_slice(&header.op.to_le_bytes());
    bytes[56..64].copy_from_slice(&header.view.to_le_bytes());
    bytes[64..80].copy_from_slice(&header.entry_checksum.get().to_le_bytes());
    bytes[80..96].copy_from_slice(&header.entry_parent.get().to_le_bytes());
    let sealed = checksum(&bytes[16..]);
    bytes[..16].copy_from_slice(&sealed.to_le_bytes());
    out.extend_from_slice(&bytes);
}

/// Whether every byte of `bytes` is zero: never-written (preallocated) space.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|byte| *byte == 0)
}

/// Verifies and decodes a record header; `None` if it is not a valid header.
pub(crate) fn decode_header(bytes: &[u8; RECORD_HEADER_SIZE]) -> Option<RecordHeader> {
    if bytes[32..36] != RECORD_MAGIC || u128_at(bytes, 0) != checksum(&bytes[16..]) {
        return None;
    }
    if !is_zero(&bytes[37..40]) || !is_zero(&bytes[44..48]) {
        return None;
    }
    let header = RecordHeader {
        checksum_payload: u128_at(bytes, 16),
        kind: match bytes[36] {
            KIND_ENTRY => RecordKind::Entry,
            KIND_TRUNCATE => RecordKind::Truncate,
            _ => return None,
        },
        payload_size: u32::from_le_bytes(bytes[40..44].try_into().expect("4 bytes")),
        op: u64_at(bytes, 48),
        view: u64_at(bytes, 56),
        entry_checksum: EntryChecksum(u128_at(bytes, 64)),
        entry_parent: EntryChecksum(u128_at(bytes, 80)),
    };
    let size_ok = match header.kind {
        RecordKind::Entry => {
            (ENTRY_HEADER_SIZE..=PAYLOAD_SIZE_MAX).contains(&(header.payload_size as usize))
        }
        RecordKind::Truncate => {
            header.payload_size == 0
                && header.view == 0
                && header.entry_checksum == EntryChecksum(0)
                && header.entry_parent == EntryChecksum(0)
        }
    };
    size_ok.then_some(header)
}

/// Verifies and decodes the payload of a record whose header passed [`decode_header`].
pub(crate) fn decode_payload(header: &RecordHeader, payload: &[u8]) -> Option<Record> {
    if payload.len() != header.payload_size as usize || checksum(payload) != header.checksum_payload
    {
        return None;
    }
    match header.kind {
        RecordKind::Truncate => Some(Record::Truncate { op: Op(header.op) }),
        RecordKind::Entry => {
            let entry = decode_entry(payload).ok()?;
            let agrees = entry.op == Op(header.op)
                && entry.view == View(header.view)
                && entry.checksum == header.entry_checksum
                && entry.parent == header.entry_parent;
            agrees.then_some(Record::Append(entry))
        }
    }
}

pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

pub(crate) fn u128_at(bytes: &[u8], offset: usize) -> u128 {
    u128::from_le_bytes(bytes[offset..offset + 16].try_into().expect("16 bytes"))
}

/// Decodes a whole record from `bytes` (header and payload, nothing else).
pub(crate) fn decode_record(bytes: &[u8]) -> Option<Record> {
    let header = decode_header(bytes.first_chunk::<RECORD_HEADER_SIZE>()?)?;
    if bytes.len() != header.record_size() {
        return None;
    }
    decode_payload(&header, &bytes[RECORD_HEADER_SIZE..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use vsr::Operation;
    use vsr::{Op, View};

    fn arbitrary_entry() -> impl Strategy<Value = Entry> {
        let operation = prop_oneof![
            Just(Operation::Register),
            Just(Operation::StateMachine),
            Just(Operation::Noop)
        ];
        (
            any::<(u64, u64, u128, u128, u64, u64)>(),
            operation,
            prop::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(
                |((op, view, parent, client, session, request), operation, body)| {
                    Entry {
                        op: Op(op),
                        view: View(view),
                        parent: EntryChecksum(parent),
                        client,
                        session,
                        request,
                        operation,
                        body: Bytes::from(body),
                        checksum: EntryChecksum(0),
                    }
                    .sealed()
                },
            )
    }

    fn assert_corruption_detected(bytes: &[u8]) {
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                decode_record(&flipped),
                None,
                "bit {bit} flipped went unnoticed"
            );
        }
        for size in 0..bytes.len() {
            assert_eq!(
                decode_record(&bytes[..size]),
                None,
                "truncation to {size} went unnoticed"
            );
        }
    }

    #[test]
    fn an_entry_payload_is_the_prepare_body() {
        let entry = Entry {
            op: Op(7),
            view: View(2),
            parent: EntryChecksum(99),
            client: 5,
            session: 3,
            request: 4,
            operation: Operation::StateMachine,
            body: Bytes::from_static(b"ab"),
            checksum: EntryChecksum(0),
        }
        .sealed();
        let mut record = Vec::new();
        encode_entry_record(&entry, &mut record);
        let prepare = vsr::Envelope {
            cluster: 1,
            epoch: 0,
            sender: vsr::Sender::Replica(0),
            message: vsr::Message::Prepare(vsr::Prepare {
                view: View(2),
                commit: Op(0),
                entries: vec![entry.clone()],
                round: 0,
            }),
        };
        let frame = vsr::wire::encode(&prepare);
        assert_eq!(
            &frame[vsr::wire::HEADER_SIZE + vsr::wire::ENTRIES_COUNT_SIZE..],
            &record[RECORD_HEADER_SIZE..]
        );
        assert_eq!(decode_record(&record), Some(Record::Append(entry)));
    }

    #[test]
    fn truncate_round_trips_and_detects_corruption() {
        let mut bytes = Vec::new();
        encode_truncate_record(Op(42), &mut bytes);
        assert_eq!(decode_record(&bytes), Some(Record::Truncate { op: Op(42) }));
        assert_corruption_detected(&bytes);
    }

    #[test]
    fn an_invalid_entry_is_rejected_even_with_a_valid_record() {
        let mut entry = Entry {
            op: Op(1),
            view: View(1),
            parent: EntryChecksum(0),
            client: 1,
            session: 1,
            request: 1,
            operation: Operation::Noop,
            body: Bytes::new(),
            checksum: EntryChecksum(0),
        }
        .sealed();
        entry.request = 2; // checksum no longer matches
        let mut bytes = Vec::new();
        encode_entry_record(&entry, &mut bytes);
        assert_eq!(decode_record(&bytes), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn entry_records_round_trip_and_detect_every_flip_and_truncation(entry in arbitrary_entry()) {
            let mut bytes = Vec::new();
            encode_entry_record(&entry, &mut bytes);
            prop_assert_eq!(decode_record(&bytes), Some(Record::Append(entry)));
            assert_corruption_detected(&bytes);
        }
    }
}
