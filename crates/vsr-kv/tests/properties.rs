//! Property tests of the key-value store through its public API only: results against a simple
//! model, codec round trips and rejection, and convergence through deltas.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use vsr::{Codec, Op, StateMachine, StateSize};
use vsr_kv::{KvDelta, KvOperation, KvQuery, KvResult, KvStore};

/// The largest piece of a frozen delta's encoding.
const PIECE_SIZE_MAX: usize = 256 * 1024;

/// Keys from a tiny alphabet, so operations collide on the same keys often; one is too long to
/// be stored inline.
const KEYS: [&[u8]; 7] = [
    b"a",
    b"b",
    b"c",
    b"ab",
    b"ba",
    b"abc",
    b"a-key-longer-than-twenty-two-bytes",
];

fn key() -> impl Strategy<Value = Bytes> {
    prop::sample::select(KEYS.to_vec()).prop_map(Bytes::from_static)
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(0u8..3, 0..3).prop_map(Bytes::from)
}

fn operation() -> impl Strategy<Value = KvOperation> {
    prop_oneof![
        (key(), value()).prop_map(|(key, value)| KvOperation::Put { key, value }),
        key().prop_map(|key| KvOperation::Get { key }),
        key().prop_map(|key| KvOperation::Delete { key }),
        (key(), prop::option::of(value()), value())
            .prop_map(|(key, expected, new)| KvOperation::CompareAndSwap { key, expected, new }),
    ]
}

fn result() -> impl Strategy<Value = KvResult> {
    prop_oneof![
        Just(KvResult::Ok),
        prop::option::of(value()).prop_map(KvResult::Value),
        any::<bool>().prop_map(KvResult::Swapped),
    ]
}

/// Operations, and a split point `k` within them.
fn history() -> impl Strategy<Value = (Vec<KvOperation>, usize)> {
    prop::collection::vec(operation(), 0..80).prop_flat_map(|operations| {
        let count = operations.len();
        (Just(operations), 0..=count)
    })
}

/// A store that executed `operations` at ops 1, 2, ...
fn execute(operations: &[KvOperation]) -> KvStore {
    let mut store = KvStore::new();
    for (index, operation) in operations.iter().enumerate() {
        store.apply(Op(op_of(index)), operation.clone());
    }
    store
}

fn op_of(index: usize) -> u64 {
    u64::try_from(index).unwrap() + 1
}

/// The delta after an encode/decode round trip, as a lagging replica would receive it.
fn transmit(delta: &KvDelta) -> KvDelta {
    let decoded = KvDelta::decode(&delta.to_bytes()).unwrap();
    assert_eq!(&decoded, delta);
    decoded
}

fn assert_same(left: &KvStore, right: &KvStore) {
    assert_eq!(left.digest(), right.digest());
    assert_eq!(left.len(), right.len());
    assert_eq!(left.size(), right.size());
    assert_eq!(left.op(), right.op());
    for key in KEYS {
        assert_eq!(left.get(key), right.get(key), "key {key:?}");
    }
}

/// What `operation` should answer against the model, updating it.
fn model_apply(model: &mut BTreeMap<Bytes, Bytes>, operation: KvOperation) -> KvResult {
    match operation {
        KvOperation::Put { key, value } => {
            model.insert(key, value);
            KvResult::Ok
        }
        KvOperation::Get { key } => KvResult::Value(model.get(&key).cloned()),
        KvOperation::Delete { key } => {
            model.remove(&key);
            KvResult::Ok
        }
        KvOperation::CompareAndSwap { key, expected, new } => {
            let swapped = model.get(&key) == expected.as_ref();
            if swapped {
                model.insert(key, new);
            }
            KvResult::Swapped(swapped)
        }
    }
}

proptest! {
    #[test]
    fn results_match_model(operations in prop::collection::vec(operation(), 0..80)) {
        let mut store = KvStore::new();
        let mut model = BTreeMap::new();
        for (index, operation) in operations.into_iter().enumerate() {
            let expected = model_apply(&mut model, operation.clone());
            prop_assert_eq!(store.apply(Op(op_of(index)), operation), expected);
        }
        prop_assert_eq!(store.len(), model.len());
        // The size kept as writes execute is the model's, walked.
        let bytes = model.iter().map(|(key, value)| (key.len() + value.len()) as u64).sum();
        let size = StateSize { keys: model.len() as u64, bytes };
        prop_assert_eq!(store.size(), Some(size));
        for key in KEYS {
            prop_assert_eq!(store.get(key), model.get(key));
        }
    }

    /// Paging through a scan of any prefix, any page size, keys only or not, lists exactly the
    /// model's live keys with that prefix, in order, each once.
    #[test]
    fn scans_page_through_the_model(operations in prop::collection::vec(operation(), 0..80), prefix in prop::sample::select(vec![&b""[..], b"a", b"ab", b"b", b"z"]), limit in 1u32..4, keys_only in any::<bool>()) {
        let mut store = KvStore::new();
        let mut model = BTreeMap::new();
        for (index, operation) in operations.into_iter().enumerate() {
            model_apply(&mut model, operation.clone());
            store.apply(Op(op_of(index)), operation);
        }
        let mut listed = Vec::new();
        let mut start = None;
        for _ in 0..=KEYS.len() {
            let query = KvQuery::Scan { prefix: Bytes::from_static(prefix), start: start.clone(), limit, keys_only };
            check_codec(&query);
            let page = store.query(query);
            check_codec(&page);
            let KvResult::Page { entries, next } = page else {
                panic!("a scan answers a page");
            };
            prop_assert!(entries.len() <= limit as usize);
            listed.extend(entries);
            start = next;
            if start.is_none() {
                break;
            }
        }
        prop_assert!(start.is_none(), "the scan ended");
        let expected: Vec<(Bytes, Option<Bytes>)> = model
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), (!keys_only).then(|| value.clone())))
            .collect();
        prop_assert_eq!(listed, expected);
    }

    #[test]
    fn delta_brings_lagging_store_level((operations, k) in history(), more in prop::collection::vec(operation(), 0..10)) {
        let mut sender = execute(&operations);
        let mut receiver = execute(&operations[..k]);
        let delta = sender.delta(Op(op_of(k) - 1));
        prop_assert!(delta.len() <= operations.len() - k, "a true delta");
        receiver.apply_delta(transmit(&delta));
        assert_same(&receiver, &sender);

        // Both keep agreeing afterwards.
        for (index, operation) in more.into_iter().enumerate() {
            let op = op_of(operations.len() + index);
            prop_assert_eq!(receiver.apply(Op(op), operation.clone()), sender.apply(Op(op), operation));
        }
        assert_same(&receiver, &sender);
    }

    #[test]
    fn full_delta_restores_empty_store(operations in prop::collection::vec(operation(), 0..80)) {
        let sender = execute(&operations);
        let mut restored = KvStore::new();
        restored.apply_delta(transmit(&sender.delta(Op(0))));
        assert_same(&restored, &sender);
    }

    #[test]
    fn codec_round_trips_and_rejects_truncation(operation in operation(), result in result(), (operations, k) in history()) {
        check_codec(&operation);
        check_codec(&result);
        check_codec(&execute(&operations).delta(Op(op_of(k) - 1)));
    }

    #[test]
    fn decode_never_panics(garbage in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = KvOperation::decode(&garbage);
        let _ = KvQuery::decode(&garbage);
        let _ = KvResult::decode(&garbage);
        let _ = KvDelta::decode(&garbage);
    }

    /// A frozen delta's pieces are the bytes of `delta(since)` at the moment of freezing, each
    /// within its bound, whatever the store executes afterwards.
    #[test]
    fn frozen_delta_is_the_delta_at_freezing((operations, k) in history(), since in any::<prop::sample::Index>(), more in prop::collection::vec(operation(), 0..20)) {
        let mut store = execute(&operations[..k]);
        let since = Op(u64::try_from(since.index(k + 1)).unwrap());
        let expected = store.delta(since).to_bytes();
        let frozen = store.frozen_delta(since);
        for (index, operation) in operations[k..].iter().chain(&more).enumerate() {
            store.apply(Op(op_of(k + index)), operation.clone());
        }
        let pieces: Vec<Bytes> = Arc::clone(&frozen).pieces().collect();
        prop_assert!(pieces.iter().all(|piece| piece.len() <= PIECE_SIZE_MAX));
        let bytes: Vec<u8> = pieces.concat();
        prop_assert_eq!(&bytes, &expected);
        prop_assert_eq!(frozen.pieces().collect::<Vec<Bytes>>(), pieces, "the same pieces again");
        // And a store frozen now gives today's delta.
        let now: Vec<u8> = store.frozen_delta(since).pieces().collect::<Vec<Bytes>>().concat();
        prop_assert_eq!(now, store.delta(since).to_bytes());
    }

    #[test]
    fn decode_survives_corruption(operations in prop::collection::vec(operation(), 1..20), flip in any::<prop::sample::Index>(), bits in 1u8..) {
        let mut encoded = execute(&operations).delta(Op(0)).to_bytes();
        let at = flip.index(encoded.len());
        encoded[at] ^= bits;
        if let Ok(delta) = KvDelta::decode(&encoded) {
            // Whatever decodes is canonical: it re-encodes to the same bytes.
            prop_assert_eq!(delta.to_bytes(), encoded);
        }
    }
}

fn check_codec<T: Codec + PartialEq + std::fmt::Debug>(value: &T) {
    let encoded = value.to_bytes();
    assert_eq!(&T::decode(&encoded).unwrap(), value);
    for size in 0..encoded.len() {
        assert!(
            T::decode(&encoded[..size]).is_err(),
            "prefix {size} of {value:?}"
        );
    }
    let mut longer = encoded;
    longer.push(0);
    assert!(T::decode(&longer).is_err());
}

#[test]
fn delta_after_few_changes_is_smaller_than_full_state() {
    let mut store = KvStore::new();
    for op in 1..=200u64 {
        let key = Bytes::copy_from_slice(&op.to_le_bytes());
        store.apply(
            Op(op),
            KvOperation::Put {
                key,
                value: Bytes::from_static(b"v"),
            },
        );
    }
    store.apply(
        Op(201),
        KvOperation::Delete {
            key: Bytes::copy_from_slice(&1u64.to_le_bytes()),
        },
    );
    store.apply(
        Op(202),
        KvOperation::Get {
            key: Bytes::from_static(b"x"),
        },
    );
    let partial = store.delta(Op(200));
    let full = store.delta(Op(0));
    assert_eq!(partial.len(), 1);
    assert_eq!(full.len(), 200);
    assert!(partial.to_bytes().len() * 100 < full.to_bytes().len());
    assert_eq!((partial.since(), partial.op()), (Op(200), Op(202)));
}
