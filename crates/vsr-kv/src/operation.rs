//! What clients ask the store to do ([`KvOperation`]) and what it answers ([`KvResult`]).
//!
//! Both travel inside VSR requests and replies as opaque bytes; the encodings here are the only
//! way in from the network, so `decode` enforces every size limit.
//!
//! | operation        | tag | body                                             |
//! |------------------|-----|--------------------------------------------------|
//! | `Put`            | 0   | key, value                                       |
//! | `Get`            | 1   | key                                              |
//! | `Delete`         | 2   | key                                              |
//! | `CompareAndSwap` | 3   | key, option tag (0 none, 1 some) [+ value], new  |
//!
//! | result           | tag | body                                             |
//! |------------------|-----|--------------------------------------------------|
//! | `Ok`             | 0   | —                                                |
//! | `Value`          | 1   | option tag (0 none, 1 some) [+ value]            |
//! | `Swapped`        | 2   | one byte, 0 or 1                                 |
//! | `Page`           | 3   | `u32` count, count × (key, option value), option next key |
//!
//! | query            | tag | body                                             |
//! |------------------|-----|--------------------------------------------------|
//! | `Get`            | 1   | key                                              |
//! | `Scan`           | 4   | prefix (may be empty), option start key, `u32` limit, flags (bit 0: keys only) |
//!
//! A query ([`KvQuery`]) is answered without entering the log; its tags share the operations'
//! numbering, so a `Get` query and a `Get` operation have the same bytes.
//!
//! Keys and values are a `u32` little-endian length followed by the bytes.

use bytes::{BufMut, Bytes};
use vsr::{Codec, CodecError};

use crate::codec::{Reader, key_valid, put_bytes, put_option, value_valid};
use crate::{KEY_SIZE_MAX, VALUE_SIZE_MAX};

const TAG_PUT: u8 = 0;
const TAG_GET: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_COMPARE_AND_SWAP: u8 = 3;
const TAG_SCAN: u8 = 4;

const TAG_OK: u8 = 0;
const TAG_VALUE: u8 = 1;
const TAG_SWAPPED: u8 = 2;
const TAG_PAGE: u8 = 3;

/// The flag of a scan that asks for keys only.
const SCAN_KEYS_ONLY: u8 = 1;

/// The most entries one scan page holds ([`KvQuery::Scan`]'s `limit`).
pub const SCAN_LIMIT_MAX: u32 = 1000;

/// The most bytes of keys and values one scan page holds: a page stays far below a message's
/// bound ([`vsr::config::MESSAGE_BODY_SIZE_MAX`]) whatever the keys and values.
pub const SCAN_PAGE_BYTES_MAX: usize = 1 << 20;

/// The most keys one scan page examines, deleted ones included: a page of a range full of
/// deleted keys ends early (with a `next` key) rather than walking all of them in one turn.
pub const SCAN_EXAMINED_MAX: usize = 10_000;

// A full page (its entries at the byte bound, plus one more entry, the next key and the
// prefixes) fits in a message.
const _: () = assert!(
    SCAN_PAGE_BYTES_MAX + 2 * KEY_SIZE_MAX + VALUE_SIZE_MAX + 16 * (SCAN_LIMIT_MAX as usize + 2)
        < vsr::config::MESSAGE_BODY_SIZE_MAX
);
/// An operation a client asks the store to execute.
///
/// Keys must be non-empty and at most [`KEY_SIZE_MAX`](crate::KEY_SIZE_MAX) bytes, values at
/// most [`VALUE_SIZE_MAX`](crate::VALUE_SIZE_MAX) bytes. `decode` rejects operations that break
/// these limits; an invalid operation built in-process is executed as a no-op (see
/// [`KvOperation::is_valid`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOperation {
    /// Sets `key` to `value`. Answers [`KvResult::Ok`].
    Put {
        /// The key to write.
        key: Bytes,
        /// Its new value.
        value: Bytes,
    },
    /// Reads `key`. Answers [`KvResult::Value`].
    Get {
        /// The key to read.
        key: Bytes,
    },
    /// Removes `key`, leaving a tombstone. Answers [`KvResult::Ok`].
    Delete {
        /// The key to remove.
        key: Bytes,
    },
    /// Sets `key` to `new` if its current value is `expected`. Answers [`KvResult::Swapped`].
    CompareAndSwap {
        /// The key to write.
        key: Bytes,
        /// The value `key` must hold now; `None` means "`key` must be absent".
        expected: Option<Bytes>,
        /// Its new value, if the comparison succeeds.
        new: Bytes,
    },
}

/// A read the store answers without entering the log ([`vsr::StateMachine::query`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvQuery {
    /// Reads `key`. Answers [`KvResult::Value`].
    Get {
        /// The key to read.
        key: Bytes,
    },
    /// Lists, in key order, the live keys that start with `prefix`, from `start` on (or from
    /// the prefix's first key). Answers one [`KvResult::Page`] of at most `limit` entries
    /// (1 to [`SCAN_LIMIT_MAX`]), [`SCAN_PAGE_BYTES_MAX`] bytes and [`SCAN_EXAMINED_MAX`] keys
    /// examined. Each page is read at one state; the pages of a long scan are not.
    Scan {
        /// Only keys that start with these bytes (empty: every key).
        prefix: Bytes,
        /// The first key to list, if not the prefix's first: a page's `next`.
        start: Option<Bytes>,
        /// The most entries to answer.
        limit: u32,
        /// Answer keys without their values.
        keys_only: bool,
    },
}

/// What executing a [`KvOperation`] or answering a [`KvQuery`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// A put or delete was executed.
    Ok,
    /// A get's answer: the value, or `None` if the key is absent.
    Value(Option<Bytes>),
    /// Whether a compare-and-swap wrote its new value.
    Swapped(bool),
    /// A scan's page: keys with their values (`None` when keys only were asked for), and the
    /// key to start the next page from, `None` when the range is exhausted.
    Page {
        /// The entries, in key order.
        entries: Vec<(Bytes, Option<Bytes>)>,
        /// Where the next page starts, if the range goes on.
        next: Option<Bytes>,
    },
}

impl KvOperation {
    /// The key this operation reads or writes.
    #[must_use]
    pub fn key(&self) -> &Bytes {
        match self {
            Self::Put { key, .. }
            | Self::Get { key }
            | Self::Delete { key }
            | Self::CompareAndSwap { key, .. } => key,
        }
    }

    /// Whether every key and value is within the documented limits, i.e. whether `decode` would
    /// accept this operation's encoding. The store executes an invalid operation as a no-op.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        let values_valid = match self {
            Self::Put { value, .. } => value_valid(value),
            Self::Get { .. } | Self::Delete { .. } => true,
            Self::CompareAndSwap { expected, new, .. } => {
                value_valid(new) && expected.as_ref().is_none_or(|value| value_valid(value))
            }
        };
        key_valid(self.key()) && values_valid
    }
}

impl Codec for KvOperation {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Put { key, value } => {
                out.put_u8(TAG_PUT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Self::Get { key } => {
                out.put_u8(TAG_GET);
                put_bytes(out, key);
            }
            Self::Delete { key } => {
                out.put_u8(TAG_DELETE);
                put_bytes(out, key);
            }
            Self::CompareAndSwap { key, expected, new } => {
                out.put_u8(TAG_COMPARE_AND_SWAP);
                put_bytes(out, key);
                put_option(out, expected.as_ref());
                put_bytes(out, new);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut reader = Reader::new(bytes, "KvOperation");
        let operation = match reader.u8()? {
            TAG_PUT => Self::Put {
                key: reader.key()?,
                value: reader.value()?,
            },
            TAG_GET => Self::Get { key: reader.key()? },
            TAG_DELETE => Self::Delete { key: reader.key()? },
            TAG_COMPARE_AND_SWAP => Self::CompareAndSwap {
                key: reader.key()?,
                expected: reader.option()?,
                new: reader.value()?,
            },
            _ => return Err(reader.error("unknown operation tag")),
        };
        reader.finish()?;
        Ok(operation)
    }
}

impl Codec for KvQuery {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Get { key } => {
                out.put_u8(TAG_GET);
                put_bytes(out, key);
            }
            Self::Scan {
                prefix,
                start,
                limit,
                keys_only,
            } => {
                out.put_u8(TAG_SCAN);
                put_bytes(out, prefix);
                put_option(out, start.as_ref());
                out.put_u32_le(*limit);
                out.put_u8(if *keys_only { SCAN_KEYS_ONLY } else { 0 });
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut reader = Reader::new(bytes, "KvQuery");
        let query = match reader.u8()? {
            TAG_GET => Self::Get { key: reader.key()? },
            TAG_SCAN => {
                let prefix = reader.prefix()?;
                let start = reader.option_key()?;
                let limit = reader.u32()?;
                if limit == 0 || limit > SCAN_LIMIT_MAX {
                    return Err(reader.error("scan limit outside 1..=SCAN_LIMIT_MAX"));
                }
                let keys_only = match reader.u8()? {
                    0 => false,
                    SCAN_KEYS_ONLY => true,
                    _ => return Err(reader.error("unknown scan flags")),
                };
                Self::Scan {
                    prefix,
                    start,
                    limit,
                    keys_only,
                }
            }
            _ => return Err(reader.error("unknown query tag")),
        };
        reader.finish()?;
        Ok(query)
    }
}

impl Codec for KvResult {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ok => out.put_u8(TAG_OK),
            Self::Value(value) => {
                out.put_u8(TAG_VALUE);
                put_option(out, value.as_ref());
            }
            Self::Swapped(swapped) => {
                out.put_u8(TAG_SWAPPED);
                out.put_u8(u8::from(*swapped));
            }
            Self::Page { entries, next } => {
                out.put_u8(TAG_PAGE);
                out.put_u32_le(u32::try_from(entries.len()).expect("a page is bounded"));
                for (key, value) in entries {
                    put_bytes(out, key);
                    put_option(out, value.as_ref());
                }
                put_option(out, next.as_ref());
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut reader = Reader::new(bytes, "KvResult");
        let result = match reader.u8()? {
            TAG_OK => Self::Ok,
            TAG_VALUE => Self::Value(reader.option()?),
            TAG_SWAPPED => match reader.u8()? {
                0 => Self::Swapped(false),
                1 => Self::Swapped(true),
                _ => return Err(reader.error("swapped flag is neither 0 nor 1")),
            },
            TAG_PAGE => {
                let count = reader.u32()?;
                if count > SCAN_LIMIT_MAX {
                    return Err(reader.error("page longer than SCAN_LIMIT_MAX"));
                }
                let mut entries = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    entries.push((reader.key()?, reader.option()?));
                }
                Self::Page {
                    entries,
                    next: reader.option_key()?,
                }
            }
            _ => return Err(reader.error("unknown result tag")),
        };
        reader.finish()?;
        Ok(result)
    }
}

/// The name of the operation encoded in `bytes`, from its tag alone: `put`, `get`, `delete`,
/// `cas`, or `invalid` for bytes no operation starts with ([`vsr::StateMachine::operation_name`]).
pub(crate) fn operation_name(bytes: &[u8]) -> &'static str {
    match bytes.first() {
        Some(&TAG_PUT) => "put",
        Some(&TAG_GET) => "get",
        Some(&TAG_DELETE) => "delete",
        Some(&TAG_COMPARE_AND_SWAP) => "cas",
        _ => "invalid",
    }
}

/// The name of the query encoded in `bytes`, from its tag alone: `get`, `scan`, or `invalid`
/// ([`vsr::StateMachine::query_name`]).
pub(crate) fn query_name(bytes: &[u8]) -> &'static str {
    match bytes.first() {
        Some(&TAG_GET) => "get",
        Some(&TAG_SCAN) => "scan",
        _ => "invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KEY_SIZE_MAX, VALUE_SIZE_MAX};

    #[test]
    fn operations_and_queries_are_named_by_their_tag() {
        let key = Bytes::from_static(b"k");
        let value = Bytes::from_static(b"v");
        let operations = [
            (
                KvOperation::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
                "put",
            ),
            (KvOperation::Get { key: key.clone() }, "get"),
            (KvOperation::Delete { key: key.clone() }, "delete"),
            (
                KvOperation::CompareAndSwap {
                    key: key.clone(),
                    expected: None,
                    new: value,
                },
                "cas",
            ),
        ];
        for (operation, name) in operations {
            assert_eq!(operation_name(&operation.to_bytes()), name);
        }
        let scan = KvQuery::Scan {
            prefix: Bytes::new(),
            start: None,
            limit: 1,
            keys_only: true,
        };
        assert_eq!(query_name(&scan.to_bytes()), "scan");
        assert_eq!(query_name(&KvQuery::Get { key }.to_bytes()), "get");
        for garbage in [&[][..], &[9], &[TAG_SCAN, 0]] {
            let expected = if garbage.first() == Some(&TAG_SCAN) {
                "scan"
            } else {
                "invalid"
            };
            assert_eq!(query_name(garbage), expected);
        }
        assert_eq!(operation_name(&[]), "invalid");
        assert_eq!(operation_name(&[TAG_SCAN]), "invalid");
    }

    fn bytes(data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }

    fn operations() -> Vec<KvOperation> {
        vec![
            KvOperation::Put {
                key: bytes(b"k"),
                value: bytes(b"v"),
            },
            KvOperation::Put {
                key: bytes(b"k"),
                value: Bytes::new(),
            },
            KvOperation::Get { key: bytes(b"key") },
            KvOperation::Delete { key: bytes(b"key") },
            KvOperation::CompareAndSwap {
                key: bytes(b"k"),
                expected: None,
                new: bytes(b"n"),
            },
            KvOperation::CompareAndSwap {
                key: bytes(b"k"),
                expected: Some(bytes(b"old")),
                new: bytes(b"new"),
            },
        ]
    }

    fn results() -> Vec<KvResult> {
        vec![
            KvResult::Ok,
            KvResult::Value(None),
            KvResult::Value(Some(bytes(b"value"))),
            KvResult::Swapped(false),
            KvResult::Swapped(true),
            KvResult::Page {
                entries: vec![],
                next: None,
            },
            KvResult::Page {
                entries: vec![(bytes(b"a"), Some(bytes(b"1"))), (bytes(b"b"), None)],
                next: Some(bytes(b"c")),
            },
        ]
    }

    /// Round trips, and rejects every strict prefix and every one-byte extension.
    fn check_codec<T: Codec + PartialEq + std::fmt::Debug>(value: &T) {
        let encoded = value.to_bytes();
        assert_eq!(&T::decode(&encoded).unwrap(), value);
        for size in 0..encoded.len() {
            assert!(
                T::decode(&encoded[..size]).is_err(),
                "prefix {size} of {value:?}"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(T::decode(&longer).unwrap_err().reason, "trailing bytes");
    }

    #[test]
    fn operation_codec() {
        for operation in operations() {
            check_codec(&operation);
        }
    }

    #[test]
    fn query_codec() {
        let query = KvQuery::Get { key: bytes(b"key") };
        check_codec(&query);
        // The same bytes as the logged get.
        assert_eq!(
            query.to_bytes(),
            KvOperation::Get { key: bytes(b"key") }.to_bytes()
        );
        for tag in [TAG_PUT, TAG_DELETE, TAG_COMPARE_AND_SWAP, 9] {
            let mut encoded = vec![tag];
            put_bytes(&mut encoded, b"key");
            assert_eq!(
                KvQuery::decode(&encoded).unwrap_err().reason,
                "unknown query tag"
            );
        }
        let mut empty_key = vec![TAG_GET];
        put_bytes(&mut empty_key, b"");
        assert!(KvQuery::decode(&empty_key).is_err());
    }

    #[test]
    fn scan_codec_and_limits() {
        let scan = |prefix: &[u8], start: Option<&[u8]>, limit, keys_only| KvQuery::Scan {
            prefix: bytes(prefix),
            start: start.map(bytes),
            limit,
            keys_only,
        };
        for query in [
            scan(b"", None, 1, false),
            scan(b"user/", Some(b"user/17"), SCAN_LIMIT_MAX, true),
        ] {
            check_codec(&query);
        }
        for bad in [0, SCAN_LIMIT_MAX + 1] {
            let encoded = scan(b"p", None, bad, false).to_bytes();
            assert_eq!(
                KvQuery::decode(&encoded).unwrap_err().reason,
                "scan limit outside 1..=SCAN_LIMIT_MAX"
            );
        }
        let mut flags = scan(b"p", None, 5, false).to_bytes();
        *flags.last_mut().unwrap() = 7;
        assert_eq!(
            KvQuery::decode(&flags).unwrap_err().reason,
            "unknown scan flags"
        );
        let long = scan(&[b'x'; KEY_SIZE_MAX + 1], None, 5, false).to_bytes();
        assert!(KvQuery::decode(&long).is_err());
        // An empty start key is no key.
        let empty_start = scan(b"p", Some(b""), 5, false).to_bytes();
        assert!(KvQuery::decode(&empty_start).is_err());
        // A page claiming more entries than a page holds is refused before anything is read.
        let mut long_page = vec![TAG_PAGE];
        long_page.extend_from_slice(&(SCAN_LIMIT_MAX + 1).to_le_bytes());
        assert_eq!(
            KvResult::decode(&long_page).unwrap_err().reason,
            "page longer than SCAN_LIMIT_MAX"
        );
    }

    #[test]
    fn result_codec() {
        for result in results() {
            check_codec(&result);
        }
    }

    #[test]
    fn encoding_is_compact_little_endian() {
        let put = KvOperation::Put {
            key: bytes(b"k"),
            value: bytes(b"vv"),
        };
        assert_eq!(
            put.to_bytes(),
            [0, 1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'v']
        );
        assert_eq!(KvResult::Swapped(true).to_bytes(), [2, 1]);
    }

    #[test]
    fn decode_rejects_bad_tags_and_flags() {
        assert_eq!(
            KvOperation::decode(&[4]).unwrap_err().reason,
            "unknown operation tag"
        );
        assert_eq!(
            KvResult::decode(&[9]).unwrap_err().reason,
            "unknown result tag"
        );
        assert!(KvResult::decode(&[2, 2]).is_err());
        assert!(KvResult::decode(&[1, 2]).is_err());
        assert!(KvOperation::decode(&[]).is_err());
    }

    #[test]
    fn decode_enforces_limits() {
        let empty = KvOperation::Get { key: Bytes::new() };
        assert_eq!(
            KvOperation::decode(&empty.to_bytes()).unwrap_err().reason,
            "empty key"
        );

        let key = Bytes::from(vec![7; KEY_SIZE_MAX + 1]);
        let long_key = KvOperation::Delete { key };
        assert!(KvOperation::decode(&long_key.to_bytes()).is_err());
        assert!(!long_key.is_valid());

        let value = Bytes::from(vec![7; VALUE_SIZE_MAX + 1]);
        let long_value = KvOperation::Put {
            key: bytes(b"k"),
            value: value.clone(),
        };
        assert!(KvOperation::decode(&long_value.to_bytes()).is_err());
        let long_expected = KvOperation::CompareAndSwap {
            key: bytes(b"k"),
            expected: Some(value),
            new: bytes(b""),
        };
        assert!(KvOperation::decode(&long_expected.to_bytes()).is_err());
        assert!(!long_expected.is_valid());

        let largest = KvOperation::Put {
            key: Bytes::from(vec![1; KEY_SIZE_MAX]),
            value: Bytes::from(vec![2; VALUE_SIZE_MAX]),
        };
        assert!(largest.is_valid());
        check_codec(&largest);
    }
}
