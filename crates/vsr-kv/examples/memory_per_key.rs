//! Memory per key and apply speed of a [`KvStore`], in release mode:
//!
//! ```sh
//! cargo run --release -p vsr-kv --example memory_per_key -- 1000000 100
//! ```
//!
//! Fills a store with `keys` puts of 16-byte keys and `value_size`-byte values, and prints the
//! resident set's growth per key (from `/proc/self/statm`, Linux only) against the raw key and
//! value bytes, the time per put (new keys, then overwrites in a scattered order) and per get,
//! and how long `frozen_delta(0)` holds the caller and how long its pieces take to pull.

use std::time::{Duration, Instant};

use bytes::Bytes;
use vsr::{Op, StateMachine};
use vsr_kv::{KvOperation, KvQuery, KvStore};

/// Resident set size in bytes, or 0 where `/proc/self/statm` cannot be read.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A 16-byte key, spread like a hashed one.
fn key(index: u64) -> Bytes {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&index.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    Bytes::copy_from_slice(&key)
}

fn put(index: u64, value_size: usize) -> KvOperation {
    KvOperation::Put {
        key: key(index),
        value: Bytes::from(vec![7u8; value_size]),
    }
}

fn per_key(duration: Duration, keys: u64) -> f64 {
    duration.as_secs_f64() * 1e9 / keys as f64
}

fn main() {
    let mut arguments = std::env::args().skip(1);
    let keys: u64 = arguments
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let value_size: usize = arguments.next().and_then(|a| a.parse().ok()).unwrap_or(100);

    let before = resident_bytes();
    let mut store = KvStore::new();
    let start = Instant::now();
    for index in 0..keys {
        store.apply(Op(index + 1), put(index, value_size));
    }
    let fill = start.elapsed();
    let grown = resident_bytes().saturating_sub(before);
    let raw = 16 + value_size as u64;
    println!(
        "{keys} keys x (16 + {value_size}) bytes: resident +{} MiB, {:.0} bytes/key, \
         {:.0} over the {raw} raw bytes ({:.2}x)",
        grown >> 20,
        grown as f64 / keys as f64,
        grown as f64 / keys as f64 - raw as f64,
        grown as f64 / keys as f64 / raw as f64,
    );

    let mut op = keys;
    let start = Instant::now();
    for index in 0..keys {
        op += 1;
        store.apply(Op(op), put(index * 7919 % keys, value_size));
    }
    let overwrite = start.elapsed();
    let start = Instant::now();
    let mut found = 0u64;
    for index in 0..keys {
        let query = KvQuery::Get {
            key: key(index * 104_729 % keys),
        };
        found += u64::from(store.query(query) != vsr_kv::KvResult::Value(None));
    }
    let get = start.elapsed();
    assert_eq!(found, keys);
    println!(
        "put (new key) {:.0} ns, put (existing key) {:.0} ns, get {:.0} ns",
        per_key(fill, keys),
        per_key(overwrite, keys),
        per_key(get, keys),
    );

    let start = Instant::now();
    let frozen = store.frozen_delta(Op(0));
    let freeze = start.elapsed();
    let start = Instant::now();
    let (mut pieces, mut bytes, mut largest) = (0u64, 0u64, 0usize);
    for piece in frozen.pieces() {
        pieces += 1;
        bytes += piece.len() as u64;
        largest = largest.max(piece.len());
    }
    println!(
        "frozen_delta(0) {:.1} ms; pulling it {:.0} ms: {} MiB in {pieces} pieces, largest {largest} bytes",
        freeze.as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3,
        bytes >> 20,
    );
}
