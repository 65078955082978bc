//! The `kv` target: the key-value store's codecs (operations, results, deltas).
//!
//! Input: a selector byte (mod 3: operation or query, result, delta), then the bytes to
//! decode.
//! Property: each encoding is canonical, so what decodes re-encodes to the same bytes; an
//! operation then executes on a store and a delta applies to one, and the store's own delta
//! since op 0 decodes again.

use vsr::{Codec, Op, StateMachine};
use vsr_kv::{KvDelta, KvOperation, KvQuery, KvResult, KvStore};

/// Runs one input; see the module docs.
pub fn kv(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Some(operation) = round_trip::<KvOperation>(bytes) {
                let mut store = KvStore::new();
                let result = store.apply(Op(1), operation);
                round_trip::<KvResult>(&result.to_bytes()).expect("a result decodes");
                store_delta_round_trips(&store);
            }
            if let Some(query) = round_trip::<KvQuery>(bytes) {
                // A get query answers what the logged get of the same bytes answers; a scan
                // answers a page within its limit; neither changes anything.
                let mut store = KvStore::new();
                store.apply(
                    Op(1),
                    KvOperation::Put {
                        key: bytes::Bytes::from_static(b"k"),
                        value: bytes::Bytes::from_static(b"v"),
                    },
                );
                let digest = store.digest();
                let scan_limit = match &query {
                    KvQuery::Scan { limit, .. } => Some(*limit),
                    KvQuery::Get { .. } => None,
                };
                let answer = store.query(query);
                assert_eq!(store.digest(), digest, "a query changes nothing");
                round_trip::<KvResult>(&answer.to_bytes()).expect("an answer decodes");
                match (scan_limit, answer) {
                    (Some(limit), KvResult::Page { entries, .. }) => {
                        assert!(entries.len() <= limit as usize, "a page within its limit");
                    }
                    (None, answer) => {
                        let operation = KvOperation::decode(bytes).expect("a get query is a get");
                        assert_eq!(store.apply(Op(2), operation), answer);
                    }
                    (Some(_), answer) => panic!("a scan answered {answer:?}"),
                }
            }
        }
        1 => {
            round_trip::<KvResult>(bytes);
        }
        _ => {
            if let Some(delta) = round_trip::<KvDelta>(bytes) {
                let mut store = KvStore::new();
                store.apply_delta(delta);
                store_delta_round_trips(&store);
            }
        }
    }
}

/// Decodes `bytes`; checks that what decodes re-encodes to `bytes`.
fn round_trip<T: Codec + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<T> {
    let value = T::decode(bytes).ok()?;
    assert_eq!(value.to_bytes(), bytes, "a value re-encodes to its bytes");
    Some(value)
}

/// The store's whole state decodes from its encoding.
fn store_delta_round_trips(store: &KvStore) {
    let delta = store.delta(Op(0));
    let decoded = KvDelta::decode(&delta.to_bytes()).expect("a store's delta decodes");
    assert_eq!(decoded, delta);
}
