//! A replicated key-value store: the [`StateMachine`](vsr::StateMachine) that `vsr` replicates
//! in its examples, simulator and command-line tool.
//!
//! The crate is pure: no clock, no I/O, and every walk over the keys is in key order. Data flows
//! like this:
//!
//! ```text
//!   client bytes ──decode──▶ KvOperation ──KvStore::apply(op, ..)──▶ KvResult ──encode──▶ reply
//!
//!   lagging replica            up-to-date replica
//!   ───────────────            ──────────────────
//!   apply_delta(KvDelta) ◀──── delta(since)   (since = the last op the lagging replica executed)
//!
//!   checkpoint / state transfer:  frozen_delta(since) ──O(1) clone──▶ FrozenDelta
//!                                 ──pieces() on the storage thread or at the transfer's pace──▶
//!                                 the bytes of delta(since), at most 256 KiB a piece
//! ```
//!
//! - `codec.rs` owns the wire format helpers: little-endian integers, `u32` length prefixes, and
//!   the size limits [`KEY_SIZE_MAX`] and [`VALUE_SIZE_MAX`], enforced where bytes enter.
//! - `operation.rs` owns [`KvOperation`], [`KvQuery`] and [`KvResult`] and their encodings.
//! - `store.rs` owns [`KvStore`]: a persistent ordered map from key to its value (or
//!   tombstone) and version; `key.rs` owns the map's key type (short keys inline).
//! - `delta.rs` owns [`KvDelta`] and its streamable encoding: the keys written after some op,
//!   for checkpoints and state transfer.
//! - `frozen.rs` owns the frozen copy behind `frozen_delta` and its encoding in bounded pieces.
//!
//! Every encoding is a tag byte followed by fixed-width little-endian integers and `u32`
//! length-prefixed byte strings; `decode` rejects anything else (wrong tag, truncation, trailing
//! bytes, empty or oversized keys, oversized values) with a [`CodecError`](vsr::CodecError).

mod codec;
mod delta;
mod frozen;
mod key;
mod operation;
mod store;

pub use delta::KvDelta;
pub use operation::{
    KvOperation, KvQuery, KvResult, SCAN_EXAMINED_MAX, SCAN_LIMIT_MAX, SCAN_PAGE_BYTES_MAX,
};
pub use store::KvStore;

/// The largest key, in bytes, that an operation may carry. Keys must also be non-empty.
pub const KEY_SIZE_MAX: usize = 1024;

/// The largest value, in bytes, that an operation may carry.
pub const VALUE_SIZE_MAX: usize = 8 * 1024;

// The largest operation (a compare-and-swap with the largest key, expected and new values, plus
// tags and length prefixes) must fit in what a replica accepts.
const _: () = assert!(KEY_SIZE_MAX + 2 * VALUE_SIZE_MAX + 32 <= vsr::config::OPERATION_SIZE_MAX);
