//! The store itself: an ordered map from key to its latest value (or tombstone) and version.
//!
//! The map is persistent ([`imbl::OrdMap`], a B-tree with shared nodes): a clone shares every
//! node and a write copies only the path to its key, and only while a clone still shares it. So freezing the
//! state for a checkpoint or a state transfer ([`KvStore::frozen_delta`](vsr::StateMachine::frozen_delta),
//! see `frozen.rs`) costs nothing on the replica's event loop, and deltas and digests walk the
//! keys in order without sorting. Short keys sit inline in the map's nodes (see `key.rs`).
//!
//! [`KvStore::apply`](vsr::StateMachine::apply) executes committed operations in op order. Every
//! write records its op as the key's *version*, and a delete leaves a tombstone carrying its
//! version instead of removing the key, so [`KvStore::delta`](vsr::StateMachine::delta) can list
//! exactly the keys written after any op, deletions included.
//!
//! Known cost: tombstones are never removed, so a store that deletes many distinct keys grows
//! without bound. Compacting tombstones older than every replica's checkpoint is out of scope.

use std::borrow::Borrow;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use imbl::OrdMap;
use vsr::checksum::Checksum;
use vsr::{DeltaSource, Op, StateMachine, StateSize};

use crate::delta::{KvDelta, encode_entry};
use crate::frozen::FrozenDelta;
use crate::key::Key;
use crate::operation::{SCAN_EXAMINED_MAX, SCAN_LIMIT_MAX, SCAN_PAGE_BYTES_MAX};
use crate::{KvOperation, KvQuery, KvResult};

/// Every key's latest write, in key order; a clone shares the whole map.
pub(crate) type Entries = OrdMap<Key, Entry>;

/// One key's latest write: its value (`None` for a tombstone) and the op that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The op of the last write to the key.
    pub(crate) version: Op,
    /// The value, or `None` if the last write was a delete.
    pub(crate) value: Option<Bytes>,
}

/// The replicated key-value state machine.
///
/// Deterministic: the same operations at the same ops give the same results, the same deltas
/// and the same [`digest`](vsr::StateMachine::digest) on every replica. Cloning it is O(1): the
/// clone shares the map until either side writes.
#[derive(Clone, Debug)]
pub struct KvStore {
    /// Live values and tombstones, in key order.
    entries: Entries,
    /// How many entries are live (not tombstones).
    live_count: usize,
    /// Bytes of the live entries' keys and values.
    live_bytes: u64,
    /// The highest op applied, directly or through a delta.
    op: Op,
}

impl Default for KvStore {
    fn default() -> Self {
        Self {
            entries: OrdMap::new(),
            live_count: 0,
            live_bytes: 0,
            op: Op(0),
        }
    }
}

impl KvStore {
    /// An empty store that has applied no op.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, or `None` if it is absent (never written, or deleted).
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.entries.get(key).and_then(|entry| entry.value.as_ref())
    }

    /// The number of live keys (tombstones excluded).
    #[must_use]
    pub fn len(&self) -> usize {
        self.live_count
    }

    /// Bytes of the live keys and their values (tombstones and the map's own structure
    /// excluded), kept as writes execute.
    #[must_use]
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Whether no key is live (there may still be tombstones).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live_count == 0
    }

    /// The highest op applied, directly or through a delta; 0 for a new store.
    #[must_use]
    pub fn op(&self) -> Op {
        self.op
    }

    /// One page of a scan ([`KvQuery::Scan`]): the live keys starting with `prefix`, from
    /// `start` (or the prefix's first key) on, bounded by `limit` entries, the page's bytes and
    /// the keys examined; `next` is the first key not examined when a bound cut the page.
    fn scan(&self, prefix: &[u8], start: Option<&[u8]>, limit: u32, keys_only: bool) -> KvResult {
        let from = start.filter(|start| *start > prefix).unwrap_or(prefix);
        let limit = usize::try_from(limit.min(SCAN_LIMIT_MAX)).expect("small");
        let mut entries = Vec::new();
        let mut bytes = 0;
        let range = (Bound::Included(from), Bound::Unbounded);
        for (examined, (key, entry)) in self.entries.range::<_, [u8]>(range).enumerate() {
            let key_bytes: &[u8] = key.borrow();
            if !key_bytes.starts_with(prefix) {
                break;
            }
            let value = entry.value.as_ref().filter(|_| !keys_only);
            let size = key_bytes.len() + value.map_or(0, Bytes::len);
            if entries.len() == limit
                || examined == SCAN_EXAMINED_MAX
                || (bytes + size > SCAN_PAGE_BYTES_MAX && !entries.is_empty())
            {
                return KvResult::Page {
                    entries,
                    next: Some(key.to_bytes()),
                };
            }
            if entry.value.is_some() {
                bytes += size;
                entries.push((key.to_bytes(), value.cloned()));
            }
        }
        if vsr::bug!(ScanSkipsLastKey) {
            entries.pop();
        }
        KvResult::Page {
            entries,
            next: None,
        }
    }

    /// Records `entry` as the latest write to `key`, keeping the live count and bytes in step.
    fn write(&mut self, key: Bytes, entry: Entry) {
        let key_bytes = key.len() as u64;
        let bytes_new = entry
            .value
            .as_ref()
            .map(|value| key_bytes + value.len() as u64);
        // An existing key is overwritten in place (one walk down the tree); only a new key
        // needs the insertion's walk.
        let bytes_old = if let Some(old) = self.entries.get_mut(&key[..]) {
            let old = std::mem::replace(old, entry).value;
            old.map(|value| key_bytes + value.len() as u64)
        } else {
            self.entries.insert(Key::from(key), entry);
            None
        };
        match (bytes_old.is_some(), bytes_new.is_some()) {
            (false, true) => self.live_count += 1,
            (true, false) => self.live_count -= 1,
            _ => {}
        }
        self.live_bytes = self.live_bytes - bytes_old.unwrap_or(0) + bytes_new.unwrap_or(0);
    }

    /// Executes a valid operation at `op`.
    fn execute(&mut self, op: Op, operation: KvOperation) -> KvResult {
        match operation {
            KvOperation::Put { key, value } => {
                self.write(
                    key,
                    Entry {
                        version: op,
                        value: Some(value),
                    },
                );
                KvResult::Ok
            }
            KvOperation::Get { key } => KvResult::Value(self.get(&key).cloned()),
            KvOperation::Delete { key } => {
                // Deleting an absent key changes nothing, so it needs no tombstone.
                if self.get(&key).is_some() {
                    self.write(
                        key,
                        Entry {
                            version: op,
                            value: None,
                        },
                    );
                }
                KvResult::Ok
            }
            KvOperation::CompareAndSwap { key, expected, new } => {
                let swapped = self.get(&key) == expected.as_ref();
                if swapped {
                    self.write(
                        key,
                        Entry {
                            version: op,
                            value: Some(new),
                        },
                    );
                }
                KvResult::Swapped(swapped)
            }
        }
    }
}

/// What an invalid operation answers: the answer of an operation that changed nothing.
fn result_invalid(operation: &KvOperation) -> KvResult {
    match operation {
        KvOperation::Put { .. } | KvOperation::Delete { .. } => KvResult::Ok,
        KvOperation::Get { .. } => KvResult::Value(None),
        KvOperation::CompareAndSwap { .. } => KvResult::Swapped(false),
    }
}

impl StateMachine for KvStore {
    type Operation = KvOperation;
    type Result = KvResult;
    type Delta = KvDelta;
    type Query = KvQuery;

    /// Executes `operation` at `op`. Never panics: an operation outside the size limits (which
    /// `decode` would have rejected) changes nothing, and a compare-and-swap whose expectation
    /// does not hold answers `Swapped(false)`.
    fn apply(&mut self, op: Op, operation: KvOperation) -> KvResult {
        self.op = self.op.max(op);
        if operation.is_valid() {
            self.execute(op, operation)
        } else {
            result_invalid(&operation)
        }
    }

    /// Reads a key: the same answer a logged get would give at this state.
    fn query(&self, query: KvQuery) -> KvResult {
        match query {
            KvQuery::Get { key } => KvResult::Value(self.get(&key).cloned()),
            KvQuery::Scan {
                prefix,
                start,
                limit,
                keys_only,
            } => self.scan(&prefix, start.as_deref(), limit, keys_only),
        }
    }

    /// Every value and tombstone whose version is after `since`, and the last op applied.
    /// `delta(Op(0))` is the whole state.
    fn delta(&self, since: Op) -> KvDelta {
        let entries = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.version > since)
            .map(|(key, entry)| (key.to_bytes(), entry.clone()))
            .collect();
        KvDelta::new(since, self.op, entries)
    }

    /// Overwrites every key in `delta`. A delta since op 0 is a whole state, so it first empties
    /// the store: restoring a checkpoint onto any store reproduces the sender exactly.
    ///
    /// Otherwise the store must have executed exactly the ops up to `delta.since()` (the state
    /// transfer protocol's job); then it ends equal to the sender.
    fn apply_delta(&mut self, delta: KvDelta) {
        if delta.since() == Op(0) {
            *self = Self::default();
        }
        let op = delta.op();
        for (key, entry) in delta.into_entries() {
            self.write(key, entry);
        }
        self.op = self.op.max(op);
    }

    /// `delta(since)`, frozen in O(1): a clone of the map, encoded in bounded pieces as it is
    /// pulled (see `frozen.rs`). Later writes to the store do not reach it.
    fn frozen_delta(&self, since: Op) -> Arc<dyn DeltaSource> {
        Arc::new(FrozenDelta::new(self.entries.clone(), since, self.op))
    }

    /// A checksum over every value and tombstone with its version, in key order. The last op
    /// applied is not included: a get changes no state.
    fn operation_name(operation: &[u8]) -> &'static str {
        crate::operation::operation_name(operation)
    }

    fn query_name(query: &[u8]) -> &'static str {
        crate::operation::query_name(query)
    }

    /// The live keys and their bytes, kept as writes execute: O(1).
    fn size(&self) -> Option<StateSize> {
        Some(StateSize {
            keys: self.live_count as u64,
            bytes: self.live_bytes,
        })
    }

    fn digest(&self) -> u128 {
        let mut checksum = Checksum::default();
        let mut scratch = Vec::new();
        for (key, entry) in &self.entries {
            scratch.clear();
            encode_entry(&mut scratch, key.as_slice(), entry);
            checksum.update(&scratch);
        }
        checksum.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }

    fn put(key: &[u8], value: &[u8]) -> KvOperation {
        KvOperation::Put {
            key: bytes(key),
            value: bytes(value),
        }
    }

    fn cas(key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> KvOperation {
        KvOperation::CompareAndSwap {
            key: bytes(key),
            expected: expected.map(bytes),
            new: bytes(new),
        }
    }

    fn scan(store: &KvStore, prefix: &[u8], start: Option<&[u8]>, limit: u32) -> KvResult {
        store.query(KvQuery::Scan {
            prefix: bytes(prefix),
            start: start.map(bytes),
            limit,
            keys_only: false,
        })
    }

    fn page(entries: &[(&[u8], &[u8])], next: Option<&[u8]>) -> KvResult {
        KvResult::Page {
            entries: entries
                .iter()
                .map(|(key, value)| (bytes(key), Some(bytes(value))))
                .collect(),
            next: next.map(bytes),
        }
    }

    #[test]
    fn scans_list_live_keys_in_order_by_prefix_and_page() {
        let mut store = KvStore::new();
        for (op, key) in [b"b/2", b"a/1", b"b/1", b"b/3", b"c/1"].iter().enumerate() {
            store.apply(Op(op as u64 + 1), put(*key, *key));
        }
        store.apply(Op(6), KvOperation::Delete { key: bytes(b"b/2") });
        assert_eq!(
            scan(&store, b"b/", None, 10),
            page(&[(b"b/1", b"b/1"), (b"b/3", b"b/3")], None),
            "in order, the deleted key left out, the prefix respected"
        );
        assert_eq!(
            scan(&store, b"", None, 2),
            page(&[(b"a/1", b"a/1"), (b"b/1", b"b/1")], Some(b"b/2"))
        );
        // The next page starts where the previous one stopped (at a deleted key here).
        assert_eq!(
            scan(&store, b"", Some(b"b/2"), 2),
            page(&[(b"b/3", b"b/3"), (b"c/1", b"c/1")], None)
        );
        // A start before the prefix starts at the prefix; one after it, where it says.
        assert_eq!(
            scan(&store, b"b/", Some(b"a"), 1),
            page(&[(b"b/1", b"b/1")], Some(b"b/2"))
        );
        assert_eq!(scan(&store, b"b/", Some(b"b/4"), 5), page(&[], None));
        let keys_only = store.query(KvQuery::Scan {
            prefix: bytes(b"c"),
            start: None,
            limit: 5,
            keys_only: true,
        });
        assert_eq!(
            keys_only,
            KvResult::Page {
                entries: vec![(bytes(b"c/1"), None)],
                next: None
            }
        );
    }

    #[test]
    fn a_scan_page_is_bounded_by_bytes_and_by_keys_examined() {
        let mut store = KvStore::new();
        let value = vec![7u8; crate::VALUE_SIZE_MAX];
        let keys = SCAN_PAGE_BYTES_MAX / value.len() + 10;
        for index in 0..keys {
            let key = format!("big/{index:06}");
            store.apply(Op(index as u64 + 1), put(key.as_bytes(), &value));
        }
        let KvResult::Page { entries, next } = scan(&store, b"big/", None, SCAN_LIMIT_MAX) else {
            panic!("a scan answers a page");
        };
        let size: usize = entries
            .iter()
            .map(|(key, value)| key.len() + value.as_ref().map_or(0, Bytes::len))
            .sum();
        assert!(size <= SCAN_PAGE_BYTES_MAX && entries.len() < keys);
        assert!(next.is_some());
        // Deleted keys: a page stops after SCAN_EXAMINED_MAX of them, with a next key.
        let mut store = KvStore::new();
        let mut op = 0;
        for index in 0..SCAN_EXAMINED_MAX + 5 {
            let key = bytes(format!("gone/{index:06}").as_bytes());
            op += 1;
            store.apply(Op(op), put(&key, b"v"));
            op += 1;
            store.apply(Op(op), KvOperation::Delete { key });
        }
        store.apply(Op(op + 1), put(b"gone/999999", b"last"));
        let first = scan(&store, b"gone/", None, 10);
        let KvResult::Page { entries, next } = first else {
            panic!("a scan answers a page");
        };
        assert!(entries.is_empty());
        let next = next.expect("cut by the keys examined");
        assert_eq!(
            scan(&store, b"gone/", Some(&next), 10),
            page(&[(b"gone/999999", b"last")], None)
        );
    }

    #[test]
    fn put_get_delete() {
        let mut store = KvStore::new();
        assert_eq!(store.apply(Op(1), put(b"a", b"1")), KvResult::Ok);
        assert_eq!(
            store.apply(Op(2), KvOperation::Get { key: bytes(b"a") }),
            KvResult::Value(Some(bytes(b"1")))
        );
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.apply(Op(3), KvOperation::Delete { key: bytes(b"a") }),
            KvResult::Ok
        );
        assert_eq!(store.get(b"a"), None);
        assert!(store.is_empty());
        assert_eq!(
            store.apply(Op(4), KvOperation::Get { key: bytes(b"a") }),
            KvResult::Value(None)
        );
        assert_eq!(store.op(), Op(4));
    }

    #[test]
    fn the_size_follows_every_kind_of_write() {
        let mut store = KvStore::new();
        let size = |keys, bytes| Some(StateSize { keys, bytes });
        assert_eq!(store.size(), size(0, 0));
        store.apply(Op(1), put(b"a", b"123"));
        store.apply(Op(2), put(b"bb", b"4"));
        assert_eq!(store.size(), size(2, 4 + 3));
        store.apply(Op(3), put(b"a", b"1"));
        assert_eq!(
            store.size(),
            size(2, 2 + 3),
            "an overwrite replaces the value's bytes"
        );
        store.apply(Op(4), KvOperation::Delete { key: bytes(b"bb") });
        store.apply(Op(5), KvOperation::Delete { key: bytes(b"zz") });
        assert_eq!(store.size(), size(1, 2), "a tombstone is not live");
        store.apply(Op(6), cas(b"bb", None, b"xyz"));
        store.apply(Op(7), cas(b"a", Some(b"wrong"), b"long value"));
        assert_eq!(store.size(), size(2, 2 + 5));
        let mut restored = KvStore::new();
        restored.apply(Op(1), put(b"gone", b"soon"));
        restored.apply_delta(store.delta(Op(0)));
        assert_eq!(
            restored.size(),
            store.size(),
            "a whole delta replaces the state"
        );
        assert_eq!(store.live_bytes(), 7);
    }

    #[test]
    fn compare_and_swap() {
        let mut store = KvStore::new();
        assert_eq!(
            store.apply(Op(1), cas(b"k", Some(b"x"), b"1")),
            KvResult::Swapped(false)
        );
        assert_eq!(store.get(b"k"), None);
        assert_eq!(
            store.apply(Op(2), cas(b"k", None, b"1")),
            KvResult::Swapped(true)
        );
        assert_eq!(
            store.apply(Op(3), cas(b"k", None, b"2")),
            KvResult::Swapped(false)
        );
        assert_eq!(
            store.apply(Op(4), cas(b"k", Some(b"2"), b"3")),
            KvResult::Swapped(false)
        );
        assert_eq!(
            store.apply(Op(5), cas(b"k", Some(b"1"), b"3")),
            KvResult::Swapped(true)
        );
        assert_eq!(store.get(b"k"), Some(&bytes(b"3")));
        store.apply(Op(6), KvOperation::Delete { key: bytes(b"k") });
        assert_eq!(
            store.apply(Op(7), cas(b"k", Some(b"3"), b"4")),
            KvResult::Swapped(false)
        );
        assert_eq!(
            store.apply(Op(8), cas(b"k", None, b"4")),
            KvResult::Swapped(true)
        );
        assert_eq!(store.get(b"k"), Some(&bytes(b"4")));
    }

    #[test]
    fn reads_and_failed_writes_change_no_version() {
        let mut store = KvStore::new();
        store.apply(Op(1), put(b"k", b"v"));
        let digest = store.digest();
        store.apply(Op(2), KvOperation::Get { key: bytes(b"k") });
        store.apply(Op(3), cas(b"k", Some(b"other"), b"w"));
        store.apply(
            Op(4),
            KvOperation::Delete {
                key: bytes(b"absent"),
            },
        );
        assert_eq!(store.digest(), digest);
        assert_eq!(store.delta(Op(1)).len(), 0);
        assert_eq!(store.delta(Op(1)).op(), Op(4));
    }

    #[test]
    fn a_query_answers_as_a_logged_get_and_changes_nothing() {
        let mut store = KvStore::new();
        store.apply(Op(1), put(b"k", b"v"));
        store.apply(
            Op(2),
            KvOperation::Delete {
                key: bytes(b"gone"),
            },
        );
        let (digest, delta) = (store.digest(), store.delta(Op(0)));
        for key in [&b"k"[..], b"gone", b"never"] {
            let answer = store.query(KvQuery::Get { key: bytes(key) });
            let logged = store
                .clone()
                .apply(Op(3), KvOperation::Get { key: bytes(key) });
            assert_eq!(answer, logged);
        }
        assert_eq!(
            store.query(KvQuery::Get { key: bytes(b"k") }),
            KvResult::Value(Some(bytes(b"v")))
        );
        assert_eq!(store.digest(), digest);
        assert_eq!(store.delta(Op(0)), delta);
    }

    #[test]
    fn invalid_operations_are_no_ops() {
        let mut store = KvStore::new();
        let digest = store.digest();
        assert_eq!(store.apply(Op(1), put(b"", b"v")), KvResult::Ok);
        let long_key = vec![0; crate::KEY_SIZE_MAX + 1];
        assert_eq!(
            store.apply(Op(2), cas(&long_key, None, b"v")),
            KvResult::Swapped(false)
        );
        let long_value = vec![0; crate::VALUE_SIZE_MAX + 1];
        assert_eq!(store.apply(Op(3), put(b"k", &long_value)), KvResult::Ok);
        assert_eq!(
            store.apply(Op(4), KvOperation::Get { key: Bytes::new() }),
            KvResult::Value(None)
        );
        assert_eq!(store.digest(), digest);
        assert!(store.is_empty());
    }

    #[test]
    fn digest_sees_values_tombstones_and_versions() {
        let mut a = KvStore::new();
        a.apply(Op(1), put(b"k", b"v"));
        let mut b = KvStore::new();
        b.apply(Op(2), put(b"k", b"v"));
        assert_ne!(a.digest(), b.digest(), "versions differ");
        a.apply(Op(3), KvOperation::Delete { key: bytes(b"k") });
        assert_ne!(a.digest(), KvStore::new().digest(), "a tombstone is state");
    }

    #[test]
    fn delta_carries_tombstones_and_is_true() {
        let mut sender = KvStore::new();
        for op in 1..=100u64 {
            sender.apply(Op(op), put(&op.to_le_bytes(), b"v"));
        }
        let mut receiver = sender.clone();
        sender.apply(
            Op(101),
            KvOperation::Delete {
                key: bytes(&7u64.to_le_bytes()),
            },
        );
        sender.apply(Op(102), put(b"new", b"n"));
        let delta = sender.delta(Op(100));
        assert_eq!(delta.len(), 2);
        assert_eq!(sender.delta(Op(0)).len(), 101);
        receiver.apply_delta(delta);
        assert_eq!(receiver.digest(), sender.digest());
        assert_eq!(receiver.len(), sender.len());
        assert_eq!(receiver.get(&7u64.to_le_bytes()), None);
        assert_eq!(receiver.op(), Op(102));
    }

    /// Two stores holding the same state give byte-identical deltas and equal digests, however
    /// their maps were built (key by key in op order, or from a delta).
    #[test]
    fn deltas_and_digests_are_in_key_order() {
        use vsr::Codec;

        let mut a = KvStore::new();
        for op in 1..=200u64 {
            a.apply(Op(op), put(&(op * 7919 % 1000).to_be_bytes(), b"v"));
        }
        // Keys that tie on their first eight bytes, and keys that are prefixes of others.
        let tied: [&[u8]; 7] = [
            b"shared-prefix-b",
            b"a",
            b"shared-prefix-a",
            b"shared-p",
            b"a\0",
            b"shared-prefix",
            b"a\0\0\0\0\0\0\0\x01",
        ];
        for (op, key) in (201u64..).zip(tied) {
            a.apply(Op(op), put(key, b"v"));
        }
        let mut b = KvStore::new();
        b.apply_delta(a.delta(Op(0)));
        let (mut a_bytes, mut b_bytes) = (Vec::new(), Vec::new());
        a.delta(Op(0)).encode(&mut a_bytes);
        b.delta(Op(0)).encode(&mut b_bytes);
        assert_eq!(a_bytes, b_bytes);
        assert_eq!(a.digest(), b.digest());
        let keys: Vec<Bytes> = a
            .delta(Op(0))
            .into_entries()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys.len(), 207);
        assert!(keys.is_sorted(), "a delta lists its keys in order");
    }

    #[test]
    fn full_delta_replaces_any_store() {
        let mut sender = KvStore::new();
        sender.apply(Op(1), put(b"a", b"1"));
        sender.apply(Op(2), put(b"b", b"2"));
        sender.apply(Op(3), KvOperation::Delete { key: bytes(b"a") });
        let mut other = KvStore::new();
        other.apply(Op(1), put(b"z", b"9"));
        for mut receiver in [KvStore::new(), other] {
            receiver.apply_delta(sender.delta(Op(0)));
            assert_eq!(receiver.digest(), sender.digest());
            assert_eq!(receiver.len(), 1);
            assert_eq!(receiver.get(b"z"), None);
            assert_eq!(receiver.op(), Op(3));
        }
    }
}
