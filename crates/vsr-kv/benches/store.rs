//! Micro-benchmarks of the key-value store: executing a put and a get, and the whole-state
//! operations (a full delta and its encoding, a frozen delta pulled in pieces as a checkpoint
//! writer does, a digest), for stores of 10,000 and 1,000,000 keys of 16 bytes with 100-byte
//! values. `cargo bench -p vsr-kv --bench store`.

use bytes::Bytes;
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use vsr::{Codec, Op, StateMachine};
use vsr_kv::{KvOperation, KvQuery, KvStore};

fn main() {
    divan::main();
}

const SIZES: [u64; 2] = [10_000, 1_000_000];

fn key(index: u64) -> Bytes {
    // Spread like hashed keys, 16 bytes.
    let mixed = index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&mixed.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    Bytes::copy_from_slice(&key)
}

fn put(index: u64) -> KvOperation {
    KvOperation::Put {
        key: key(index),
        value: Bytes::from(vec![7u8; 100]),
    }
}

fn store(keys: u64) -> KvStore {
    let mut store = KvStore::new();
    for index in 0..keys {
        store.apply(Op(index + 1), put(index));
    }
    store
}

/// One put overwriting an existing key.
#[divan::bench(args = SIZES)]
fn put_existing_key(bencher: Bencher, keys: u64) {
    let mut store = store(keys);
    let mut op = keys + 1;
    bencher.bench_local(|| {
        op += 1;
        black_box(store.apply(Op(op), put(op % keys)));
    });
}

/// One get of an existing key.
#[divan::bench(args = SIZES)]
fn get_existing_key(bencher: Bencher, keys: u64) {
    let store = store(keys);
    let mut index = 0;
    bencher.bench_local(|| {
        index += 1;
        black_box(store.query(KvQuery::Get {
            key: key(index % keys),
        }));
    });
}

/// `frozen_delta(0)` and all its pieces: what a checkpoint writer pulls, off the event loop.
#[divan::bench(args = SIZES, sample_count = 5, sample_size = 1)]
fn frozen_delta_pulled(bencher: Bencher, keys: u64) {
    let store = store(keys);
    bencher.counter(ItemsCount::new(keys)).bench_local(|| {
        let pieces = store.frozen_delta(Op(0)).pieces();
        black_box(pieces.map(|piece| piece.len()).sum::<usize>())
    });
}

/// `delta(0)` and its encoding in one buffer.
#[divan::bench(args = SIZES, sample_count = 5, sample_size = 1)]
fn full_delta_encoded(bencher: Bencher, keys: u64) {
    let store = store(keys);
    bencher.counter(ItemsCount::new(keys)).bench_local(|| {
        let mut out = Vec::new();
        store.delta(Op(0)).encode(&mut out);
        black_box(out.len())
    });
}

/// The digest of the whole state.
#[divan::bench(args = SIZES, sample_count = 5, sample_size = 1)]
fn digest(bencher: Bencher, keys: u64) {
    let store = store(keys);
    bencher
        .counter(ItemsCount::new(keys))
        .bench_local(|| black_box(store.digest()));
}
